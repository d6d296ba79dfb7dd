//! # neurostream-sources
//!
//! Readers of data into frames:
//!
//! | kind | reads |
//! | --- | --- |
//! | `arrow_tcp` | live Arrow IPC streams of activations over TCP, one stream per connection |
//! | `csv` | delimited text (OpenBCI, device exports): a row per sample, a column per channel, a marker column |
//! | `edf` | an EDF/EDF+/BDF/BDF+ recording in physical units, annotations as markers, replayed fast or in real time |
//! | `brainvision` | a BrainVision recording (`.vhdr`/`.eeg`/`.vmrk`) in the engine's units, markers as markers |
//! | `xdf` | one stream of an XDF recording (LabRecorder), string streams as markers after clock correction |
//! | `eeglab` | a continuous EEGLAB dataset (`.set`, samples in it or in its `.fdt`) in µV, its events as markers |
//! | `gdf` | a GDF 1.x/2.x recording (biosig, BCI Competition) in the engine's units, its event table as markers |
//! | `fif` | a raw FIF recording (MEG/EEG; split files followed) in fT, fT/cm and µV, annotations and stim events as markers |
//! | `push` | arrays pushed from the embedding program (the Python package's numpy/Arrow input) |
//! | `lsl` | a Lab Streaming Layer inlet (liblsl loaded at run time): float32 chunks, corrected time stamps, a marker stream as markers |
//! | `array` | a `.npy` or `.safetensors` tensor of activations (f32/f16/bf16/f64), memory-mapped |
//! | `parquet` | a Parquet file, a directory of them, or a glob, in the activation or signal layout; row groups spread over workers |
//! | `synthetic_eeg` | seeded EEG-like signals: alpha/beta sinusoids plus 1/f noise, optional marker events |
//! | `synthetic_activations` | seeded activations: sparse combinations of planted unit directions plus noise |

#![warn(missing_docs)]

pub mod array_source;
pub mod arrow_tcp;
pub mod brainvision;
pub mod csv_source;
pub mod edf;
pub mod eeglab;
pub mod fif;
mod file_streams;
pub mod gdf;
mod gzip_file;
mod hash;
pub mod ipc_limit;
pub mod lsl_source;
pub mod parquet_source;
pub mod push_source;
pub mod recording;
pub mod recording_set;
pub mod synthetic_activations;
pub mod synthetic_eeg;
mod waker;
pub mod xdf;

use neurostream_engine::Registry;

/// The most channels a signal source accepts (a recording's header, a device's stream info,
/// a generator's setting): more is a corrupt or lying input, and every frame holds them all.
pub const MAX_CHANNELS: usize = 65_536;

pub use array_source::{ArraySource, ArraySourceConfig, ArraySourceKind};
pub use arrow_tcp::{ArrowTcpConfig, ArrowTcpKind};
pub use brainvision::{BrainVisionSourceConfig, BrainVisionSourceKind};
pub use csv_source::{CsvSourceConfig, CsvSourceKind};
pub use edf::{EdfSourceConfig, EdfSourceKind};
pub use eeglab::{EeglabSourceConfig, EeglabSourceKind};
pub use fif::{FifSourceConfig, FifSourceKind};
pub use gdf::{GdfSourceConfig, GdfSourceKind};
pub use lsl_source::{LslSourceConfig, LslSourceKind};
pub use parquet_source::{ParquetSourceConfig, ParquetSourceKind};
pub use push_source::{PushSourceConfig, PushSourceKind};
pub use synthetic_activations::{SyntheticActivations, SyntheticActivationsConfig, SyntheticActivationsKind};
pub use synthetic_eeg::{SyntheticEeg, SyntheticEegConfig, SyntheticEegKind};
pub use xdf::{XdfSourceConfig, XdfSourceKind};

/// Registers every source kind of this crate.
pub fn register(registry: &mut Registry) {
    registry
        .add_source(ArraySourceKind)
        .add_source(ArrowTcpKind)
        .add_source(BrainVisionSourceKind)
        .add_source(CsvSourceKind)
        .add_source(EdfSourceKind)
        .add_source(EeglabSourceKind)
        .add_source(FifSourceKind)
        .add_source(GdfSourceKind)
        .add_source(LslSourceKind)
        .add_source(ParquetSourceKind)
        .add_source(PushSourceKind)
        .add_source(SyntheticEegKind)
        .add_source(SyntheticActivationsKind)
        .add_source(XdfSourceKind);
}

/// Indices `0..n` of the chunks worker `index` of `peers` reads: every `peers`-th, starting at `index`.
pub(crate) fn worker_chunks(n: u64, index: usize, peers: usize) -> impl Iterator<Item = u64> {
    (index as u64..n).step_by(peers.max(1))
}
