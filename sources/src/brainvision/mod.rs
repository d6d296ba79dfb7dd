//! BrainVision recordings (BrainProducts; `.vhdr` header, `.eeg` data, `.vmrk` markers): the
//! header and marker files ([`header`]) and the `brainvision` source ([`source`]).

pub mod header;
pub mod source;

pub use header::{ChannelInfo, Header, MarkerEntry, SampleFormat};
pub use source::{BrainVisionSourceConfig, BrainVisionSourceKind};
