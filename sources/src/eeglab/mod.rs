//! EEGLAB datasets: a reader of MATLAB level-5 MAT-files ([`mat`]), the dataset's header,
//! channels and events ([`dataset`]) and the `eeglab` source ([`source`]).

pub mod dataset;
pub mod mat;
pub mod source;

pub use dataset::{Dataset, Samples};
pub use source::{EeglabSourceConfig, EeglabSourceKind};
