//! Raw FIF recordings (Neuromag/Elekta/MEGIN MEG, MNE-Python's `raw.save`): the file format
//! ([`mod@file`]) and the `fif` source ([`source`]).

pub mod file;
pub mod source;

pub use file::{Buffer, FifAnnotation, FifChannel, FifRecording, SampleType};
pub use source::{FifSourceConfig, FifSourceKind};
