//! Engine errors as the package's Python exceptions (defined in `neurostream/errors.py`), and
//! the engine's log output.

use neurostream::EngineError;
use pyo3::prelude::*;

/// `neurostream.ValidationError(message, problems)` for an invalid pipeline, else
/// `neurostream.PipelineError(message)`, with the engine's text (file:line, stream, row, field).
pub fn to_py(py: Python<'_>, e: EngineError) -> PyErr {
    let (class, args): (&str, (String, Vec<String>)) = match e {
        EngineError::Invalid(problems) => {
            let message = EngineError::Invalid(problems.clone()).to_string();
            ("ValidationError", (message, problems))
        }
        other => ("PipelineError", (other.to_string(), Vec::new())),
    };
    raise(py, class, args)
}

/// An instance of the exception class `class` of `neurostream.errors`, built from `args`.
pub fn raise(py: Python<'_>, class: &str, args: (String, Vec<String>)) -> PyErr {
    let made = py
        .import("neurostream.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args.clone()));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(args.0),
    }
}

/// Sends the engine's log (warnings and errors by default) to stderr, once per process.
/// `NEUROSTREAM_LOG` (or `RUST_LOG`) takes a tracing filter such as `info`.
pub fn init_logging() {
    let filter = std::env::var("NEUROSTREAM_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
