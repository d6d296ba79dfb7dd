//! EEGLAB datasets: readers of MATLAB MAT-files (level 5: [`mat`]; v7.3, HDF5: [`mat73`]), the dataset's header,
//! channels and events ([`dataset`]) and the `eeglab` source ([`source`]).

pub mod dataset;
pub mod mat;
pub mod mat73;
pub mod source;

pub use dataset::{Dataset, Samples};
pub use source::{EeglabSourceConfig, EeglabSourceKind};
