//! `neurostream._native`: the engine inside the Python interpreter.
//!
//! The pure-Python package `neurostream` (python/neurostream) is the public API; this module
//! gives it what needs the engine: validating and running pipeline text (`run::Run`), pushing
//! arrays into `push` sources (`push::PushProducer`), and turning outputs into Arrow objects.
//! Every call that waits or computes releases the GIL.

mod arrow_in;
mod convert;
mod errors;
mod push;
mod run;

use pyo3::prelude::*;

/// The engine's version (the Rust crates' version).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Checks pipeline TOML `text` (relative paths resolved against `base_dir`; `origin` names the
/// file in messages). Returns the pipeline's description, one line per node; raises
/// `neurostream.ValidationError` listing every problem.
#[pyfunction]
#[pyo3(signature = (text, base_dir, origin=None))]
fn validate(py: Python<'_>, text: &str, base_dir: &str, origin: Option<&str>) -> PyResult<Vec<String>> {
    let compiled = py.detach(|| run::compile(text, base_dir, origin));
    Ok(compiled.map_err(|e| errors::to_py(py, e))?.describe())
}

/// Converts a pipeline given as nested dicts (the TOML keys) into TOML text.
#[pyfunction]
fn toml_from_dict(spec: &Bound<'_, PyAny>) -> PyResult<String> {
    convert::dict_to_toml(spec)
}

/// Every registered kind: `(section, kind, one-line description, reference text of its keys)`.
#[pyfunction]
fn kinds() -> Vec<(&'static str, &'static str, &'static str, String)> {
    neurostream::registry()
        .reference()
        .iter()
        .map(|d| (d.section, d.kind, d.summary, neurostream::reference::text(d)))
        .collect()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::init_logging();
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(toml_from_dict, m)?)?;
    m.add_function(wrap_pyfunction!(kinds, m)?)?;
    m.add_class::<run::Run>()?;
    m.add_class::<push::PushProducer>()?;
    m.add_class::<arrow_in::ArrowInput>()?;
    Ok(())
}
