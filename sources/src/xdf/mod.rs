//! XDF recordings (LabRecorder's Extensible Data Format: the streams of an LSL session with
//! their clock offsets): the file ([`mod@file`]) and the `xdf` source ([`source`]).

pub mod file;
pub mod source;

pub use file::{ChannelDesc, ChannelFormat, StreamData, StreamHeader, XdfFile};
pub use source::{XdfSourceConfig, XdfSourceKind};
