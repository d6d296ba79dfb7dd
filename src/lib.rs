//! # neurostream
//!
//! A streaming dataflow engine for model activations and neural signals. This facade crate
//! re-exports the engine and registers every source, operator and sink kind; the
//! `neurostream` binary is its command line.
//!
//! ```no_run
//! use neurostream::{registry, PipelineSpec, RunOptions};
//! let spec = PipelineSpec::from_file("examples/quickstart.toml".as_ref()).unwrap();
//! let pipeline = spec.compile(&registry()).unwrap();
//! let report = neurostream::run(pipeline, RunOptions::default()).unwrap();
//! println!("{:?}", report.sink_lines);
//! ```

pub mod dashboard;
pub mod fuzz_support;
pub mod geometry;
mod json;
pub mod stats_tables;
pub mod ui;

pub use neurostream_engine::*;
#[cfg(feature = "language-models")]
pub use neurostream_models as models;
pub use neurostream_operators as operators;
pub use neurostream_sinks as sinks;
pub use neurostream_sources as sources;

/// A registry holding every built-in source, operator and sink kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    neurostream_sources::register(&mut r);
    #[cfg(feature = "language-models")]
    neurostream_models::register(&mut r);
    #[cfg(not(feature = "language-models"))]
    r.leave_out("language_model", "language-models");
    neurostream_operators::register(&mut r);
    neurostream_sinks::register(&mut r);
    r
}
