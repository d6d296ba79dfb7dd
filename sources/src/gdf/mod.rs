//! GDF recordings (versions 1.x and 2.x): the header and event table ([`header`]) and the
//! `gdf` source ([`source`]).

pub mod header;
pub mod source;

pub use header::{GdfEvent, Header, SampleType, Signal};
pub use source::{GdfSourceConfig, GdfSourceKind};
