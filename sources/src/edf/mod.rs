//! EDF, EDF+, BDF and BDF+ recordings: the header ([`header`]), the annotation lists of EDF+
//! ([`tal`]), reading and decoding records ([`mod@file`]), and the `edf` source ([`source`]).

pub mod file;
pub mod header;
pub mod source;
pub mod tal;

pub use file::EdfFile;
pub use header::{Format, Header, SignalHeader};
pub use source::{EdfSourceConfig, EdfSourceKind};
pub use tal::Annotation;
