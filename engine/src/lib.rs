//! # neurostream-engine
//!
//! The spine of neurostream: the data model ([`Frame`], [`SparseFrame`], [`Schema`]), pipeline
//! specifications (TOML files and [`PipelineBuilder`]), validation into a [`CompiledPipeline`],
//! the timely dataflow [`runtime`], and the compute [`device`] (wgpu or CPU).
//!
//! Sources, operators and sinks live in their own crates and plug in through the traits of
//! [`node`], registered in a [`Registry`].

#![warn(missing_docs)]

pub mod allocator;
pub mod background;
pub mod checkpoint;
pub mod cluster;
pub mod device;
pub mod dsp;
pub mod error;
pub mod files;
pub mod frame;
pub mod http;
pub mod huge_pages;
pub mod kernels;
pub mod layout;
pub mod lsl;
pub mod metrics;
pub mod net;
pub mod node;
pub mod parquet_read;
pub mod process;
pub mod reference;
pub mod resident;
pub mod runtime;
pub mod schema;
pub mod settings;
pub mod spec;
pub mod suggest;
pub mod table;
pub mod tensor;

pub use checkpoint::{CheckpointOptions, Checkpointing, Delivery, SinkCommit};
pub use device::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy, GpuContext, GpuPass, PooledBuffer};
pub use error::{panic_message, EngineError, Result};
pub use frame::{now_ns, stream_names, Batch, Frame, Marker, RowIndex, SparseFrame, StreamEnd};
pub use metrics::{Metrics, MetricsServer};
pub use node::{
    parse_config, ConfigTable, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning, Placement, RegisteredKind,
    Registry, Sink, SinkKind, SinkWriter, Source, SourceKind, SourceReader, SourceWaker, WorkerPos,
};
pub use resident::{DeviceInput, DevicePairs, DeviceRows, PairsPart, Rows};
pub use runtime::{
    run, BatchObserver, ClusterConfig, NodeStats, ObserverFactory, RunOptions, RunProgress, RunReport, PICTURE_PERIOD,
};
pub use schema::{Channel, Schema, StreamKind};
pub use spec::{CompiledPipeline, NodeConfig, OnInvalid, Overload, PipelineBuilder, PipelineSettings, PipelineSpec};
pub use table::TableFrame;

/// The toml crate node configs are parsed with.
pub use toml;
/// The wgpu crate the kernels are written against (re-exported so versions always agree).
pub use wgpu;
