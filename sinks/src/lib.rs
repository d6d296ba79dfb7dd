//! # neurostream-sinks
//!
//! Writers of frames:
//!
//! | kind | writes |
//! | --- | --- |
//! | `parquet` | Parquet through arrow-rs, each file written to a temporary name, fsynced and renamed |
//! | `edf` | an EDF+ or BDF+ file: physical ranges from the data, markers as annotations |
//! | `console` | a per-stream, per-channel summary (rows, mean, std, min, max) printed at the end |
//! | `lsl` | a Lab Streaming Layer outlet (liblsl loaded at run time): each row a float32 sample, markers on a string outlet |
//! | `arrow_tcp` | live subscribers over TCP: a result table (e.g. `alerts`) or the frames, as Arrow IPC |
//! | `websocket` | live subscribers for browsers: the same outputs as JSON or Arrow IPC WebSocket messages |
//! | `channel` | in-process subscribers of a Rust program that embeds the engine |

#![warn(missing_docs)]

pub mod arrow_tcp_sink;
pub mod channel_sink;
pub mod console;
pub mod edf_sink;
pub mod live;
pub mod lsl_sink;
pub mod parquet_sink;
pub mod websocket_sink;

use neurostream_engine::Registry;

pub use arrow_tcp_sink::{ArrowTcpSinkConfig, ArrowTcpSinkKind};
pub use channel_sink::{subscribe, ChannelSinkConfig, ChannelSinkKind, Subscription};
pub use console::{ConsoleSinkConfig, ConsoleSinkKind};
pub use edf_sink::{EdfSinkConfig, EdfSinkKind};
pub use live::SlowPolicy;
pub use lsl_sink::{LslSinkConfig, LslSinkKind};
pub use parquet_sink::{Compression, OnFailure, ParquetSinkConfig, ParquetSinkKind};
pub use websocket_sink::{WebSocketSinkConfig, WebSocketSinkKind};

/// Registers every sink kind of this crate.
pub fn register(registry: &mut Registry) {
    registry
        .add_sink(ParquetSinkKind)
        .add_sink(ConsoleSinkKind)
        .add_sink(ArrowTcpSinkKind)
        .add_sink(ChannelSinkKind)
        .add_sink(WebSocketSinkKind)
        .add_sink(LslSinkKind)
        .add_sink(EdfSinkKind);
}
