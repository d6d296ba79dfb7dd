//! Exactly-once restart: aligned checkpoints of sources, operators and sinks.
//!
//! Every `every` seconds the [`Coordinator`] takes a checkpoint in three steps:
//!
//! 1. **Pause**: each source (on every worker) stops before its next batch and reports that
//!    batch's event time.
//! 2. **Align**: the target time `T` of a source is the latest of those times over the workers;
//!    every reader emits its batches before `T` and stops at the first one at or after it. No
//!    data at or after `T` exists anywhere in the dataflow during the checkpoint (operators do
//!    not poll either), so when an operator's or sink's input frontier reaches `T` it has seen
//!    exactly the data before `T`: operators then snapshot their state and sinks *pre-commit*
//!    (close and fsync what they wrote into a staged file).
//! 3. **Commit**: when every node of every worker has reported, the checkpoint (source
//!    positions, operator states, staged files) is written atomically into the directory and
//!    only then are the staged files renamed to their committed names.
//!
//! Resuming (`neurostream run --resume`) reads the newest checkpoint, finishes its commits
//! (idempotent), skips each reader past the batches it had emitted, restores operator state and
//! lets sinks drop anything written after the checkpoint. Output is identical, row for row, to
//! an uninterrupted run. When every source is exhausted a final checkpoint is taken before
//! operators flush and sinks write their final files, so a crash during the end is covered too.

mod coordinator;
mod message;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use coordinator::{CheckpointedNodes, Coordinator, Gate, Role};
pub use message::{ControlMessage, Envelope, Part, PauseSummary};
pub use store::{commit_staged, read_checkpoint, sync_staged, CheckpointStore, Fingerprint};

/// The subdirectory of a checkpoint directory that holds live sources' journals.
pub const JOURNAL_DIR: &str = "journal";

/// Event time an exhausted source holds its capability at while it waits for the final checkpoint.
pub const EXHAUSTED: u64 = u64::MAX - 1;

/// Where a source reader was when a checkpoint was taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Batches the reader had returned (emitted, or dropped whole for NaN/Inf).
    pub batches: u64,
    /// Rows in those batches.
    pub rows: u64,
    /// Event time of the next batch; `None` when the reader was exhausted.
    pub next_time: Option<u64>,
    /// One past the event time of the last batch it emitted (0 before the first).
    pub end_time: u64,
}

/// A file a sink closed for a checkpoint: written and fsynced under `staged`, renamed to
/// `committed` once the checkpoint that lists it is durable. `staged == committed` is a file
/// that stays open under its name (a sink's growing output): it is only fsynced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Where the sink wrote it.
    pub staged: PathBuf,
    /// Its name once committed.
    pub committed: PathBuf,
}

/// What a sink writer hands to a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkCommit {
    /// The writer's own state (opaque bytes), given back on resume.
    pub state: Vec<u8>,
    /// Files to commit with the checkpoint.
    pub files: Vec<StagedFile>,
}

/// One checkpoint: everything needed to resume a run where it was taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number, from 1.
    pub id: u64,
    /// True for the checkpoint taken after every source was exhausted.
    pub final_: bool,
    /// Source positions, per worker.
    pub sources: BTreeMap<String, Vec<Option<SourcePosition>>>,
    /// Operator states, per worker (`None`: stateless).
    pub operators: BTreeMap<String, Vec<Option<Vec<u8>>>>,
    /// Sink states and committed files, per worker (`None`: no writer on that worker).
    pub sinks: BTreeMap<String, Vec<Option<SinkCommit>>>,
}

impl Checkpoint {
    /// Every file committed by this checkpoint.
    pub fn staged_files(&self) -> Vec<StagedFile> {
        self.sinks
            .values()
            .flatten()
            .flatten()
            .flat_map(|c| c.files.iter().cloned())
            .collect()
    }

    /// The files committed by this checkpoint for the given workers (global indices): in a
    /// multi-process run each process commits its own workers' outputs.
    pub fn staged_files_of(&self, workers: std::ops::Range<usize>) -> Vec<StagedFile> {
        self.sinks
            .values()
            .flat_map(|per| per.iter().enumerate())
            .filter(|(w, _)| workers.contains(w))
            .filter_map(|(_, c)| c.as_ref())
            .flat_map(|c| c.files.iter().cloned())
            .collect()
    }
}

/// Checkpointing settings of a run.
#[derive(Clone, Debug)]
pub struct CheckpointOptions {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Time between checkpoints (wall clock).
    pub every: Duration,
    /// Continue from the directory's newest checkpoint instead of starting afresh.
    pub resume: bool,
}

/// How an operator takes part in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpointing {
    /// No state between batches: nothing to save.
    Stateless,
    /// State saved by [`OperatorInstance::snapshot`](crate::OperatorInstance::snapshot).
    Snapshot,
    /// Cannot be checkpointed (yet): a checkpointed run refuses the pipeline.
    Unsupported,
}

/// What a sink guarantees across a resumed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Output identical to an uninterrupted run (two-phase commit tied to the checkpoints).
    ExactlyOnce,
    /// Rows emitted after the last checkpoint are delivered again after a resume (live consumers).
    AtLeastOnce,
    /// Cannot be checkpointed: a checkpointed run refuses the pipeline.
    Unsupported,
}

/// Encodes operator or sink state for a checkpoint (postcard). Checkpoints are for resuming a
/// run with the same binary, not a long-term format: a checkpoint of another version may be
/// refused.
pub fn encode_state<T: Serialize>(state: &T) -> crate::Result<Vec<u8>> {
    postcard::to_stdvec(state).map_err(|e| crate::EngineError::Checkpoint(format!("cannot encode state: {e}")))
}

/// Encodes per-stream state (a map from stream name to `T`), sorted by stream so the bytes are
/// deterministic.
pub fn encode_streams<T: Serialize>(streams: &std::collections::HashMap<std::sync::Arc<str>, T>) -> crate::Result<Vec<u8>> {
    let mut v: Vec<(&str, &T)> = streams.iter().map(|(k, t)| (&**k, t)).collect();
    v.sort_by_key(|(k, _)| *k);
    encode_state(&v)
}

/// Decodes per-stream state written by [`encode_streams`].
pub fn decode_streams<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> crate::Result<Vec<(std::sync::Arc<str>, T)>> {
    let v: Vec<(String, T)> = decode_state(bytes, what)?;
    Ok(v.into_iter().map(|(k, t)| (std::sync::Arc::from(k), t)).collect())
}

/// Decodes state written by [`encode_state`]; `what` names the node in the error.
pub fn decode_state<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> crate::Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| crate::EngineError::Checkpoint(format!("{what}: the saved state does not decode ({e})")))
}
