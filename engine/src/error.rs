//! The engine's error type. Messages name the file, stream, row and field involved.

use std::path::PathBuf;

/// Everything that can go wrong while validating or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A pipeline file or spec is invalid; each entry is one problem with its location.
    #[error("invalid pipeline:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    /// A node's configuration is wrong (bad value, unknown key, missing file).
    #[error("{node}: {message}")]
    Config {
        /// The node, e.g. `[operators.norm]`.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// Data does not have the shape a step expects.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A row holds NaN or infinity and the policy is to fail.
    #[error(
        "stream {stream}: non-finite value at {row}, channel {channel} ({name}); set on_invalid = \"drop\" to drop such rows"
    )]
    NonFinite {
        /// Stream name.
        stream: String,
        /// Row description (sample or seq/pos).
        row: String,
        /// Channel index.
        channel: usize,
        /// Channel name.
        name: String,
    },
    /// Reading an input failed.
    #[error("{path}: {message}")]
    Input {
        /// The file involved.
        path: PathBuf,
        /// What went wrong, with row group or row where known.
        message: String,
    },
    /// Writing an output failed.
    #[error("{path}: {message}")]
    Output {
        /// The file involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The compute device could not be set up or failed.
    #[error("device: {0}")]
    Device(String),
    /// A checkpoint could not be written, read or used (corrupt, from another pipeline).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The timely runtime failed (communication, worker panic).
    #[error("runtime: {0}")]
    Runtime(String),
    /// An I/O error with context. The OS error is part of the message and deliberately not
    /// reported as a `source`, so error chains (`{:#}`) do not print it twice.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        error: std::io::Error,
    },
}

impl EngineError {
    /// A problem with an input file, naming it (and the row group or row in `message`).
    pub fn input(path: &std::path::Path, message: impl Into<String>) -> EngineError {
        EngineError::Input {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> EngineError {
        EngineError::Io {
            context: context.into(),
            error: source,
        }
    }

    /// A configuration error for a node.
    pub fn config(node: impl Into<String>, message: impl Into<String>) -> EngineError {
        EngineError::Config {
            node: node.into(),
            message: message.into(),
        }
    }
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The message a panic carried (its `&str` or `String` payload), or "" for any other payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
