//! # neurostream-sinks
//!
//! Writers of frames:
//!
//! | kind | writes |
//! | --- | --- |
//! | `parquet` | Parquet through arrow-rs, each file written to a temporary name, fsynced and renamed |
//! | `console` | a per-stream, per-channel summary (rows, mean, std, min, max) printed at the end |

#![warn(missing_docs)]

pub mod console;
pub mod parquet_sink;

use neurostream_engine::Registry;

pub use console::{ConsoleSinkConfig, ConsoleSinkKind};
pub use parquet_sink::{Compression, ParquetSinkConfig, ParquetSinkKind};

/// Registers every sink kind of this crate.
pub fn register(registry: &mut Registry) {
    registry.add_sink(ParquetSinkKind).add_sink(ConsoleSinkKind);
}
