//! BrainVision recordings (BrainProducts; `.vhdr` header, `.eeg` data, `.vmrk` markers): the
//! header and marker files ([`header`]), ASCII data files ([`ascii`]) and the `brainvision` source ([`source`]).

pub mod ascii;
pub mod header;
pub mod source;

pub use header::{AsciiLayout, ChannelInfo, DataFormat, Header, MarkerEntry, SampleFormat};
pub use source::{BrainVisionSourceConfig, BrainVisionSourceKind};
