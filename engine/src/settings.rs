//! The `[pipeline]` settings and the policies nodes share (NaN/Inf, overload, GPU fallback).
//! Their own module so that the node traits and the pipeline specs both use them without
//! depending on each other.

use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;

/// What to do with rows holding NaN or infinity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Fail the run with an error naming the stream, row and channel (default).
    #[default]
    Error,
    /// Drop the row, count it, and report the count at the end.
    Drop,
}

/// What a source does while the pipeline behind it is too slow (its rows in flight exceed the
/// flow-control window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overload {
    /// Stop reading until the pipeline catches up (the default; live senders then buffer or
    /// block on their side).
    #[default]
    Block,
    /// Keep reading into a buffer of at most this many rows, dropping the oldest buffered rows
    /// (real-time streams where fresh data matters); counted and reported.
    DropOldest(u64),
    /// Keep reading and drop what arrives until the pipeline catches up; counted and reported.
    DropNewest,
}

/// What to do when the GPU asked for cannot be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuFallback {
    /// Fail with a clear error (default).
    #[default]
    Error,
    /// Report the problem, then compute on the CPU.
    Cpu,
}

/// The `[pipeline]` table: settings for the whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Pipeline name, used in logs and file metadata.
    pub name: String,
    /// Compute device for every operator unless overridden: `auto`, `cpu` or `gpu`.
    pub device: DeviceChoice,
    /// What to do when `gpu` is asked for and cannot be used.
    pub gpu_fallback: GpuFallback,
    /// Accept a software Vulkan driver (lavapipe) when `gpu` is asked for (for testing).
    pub allow_software_gpu: bool,
    /// NaN/Inf policy for every source unless overridden.
    pub on_invalid: OnInvalid,
    /// Worker threads per process when the command line does not say.
    pub workers: usize,
    /// Flow control: a source pauses while more than this many megabytes of its rows
    /// (estimated from its width) are between it and the sinks.
    pub max_in_flight_mb: f64,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            name: "pipeline".into(),
            device: DeviceChoice::Auto,
            gpu_fallback: GpuFallback::Error,
            allow_software_gpu: false,
            on_invalid: OnInvalid::Error,
            workers: 1,
            max_in_flight_mb: 256.0,
        }
    }
}
