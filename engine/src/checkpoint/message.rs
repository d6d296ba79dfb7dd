//! What the coordinators of a multi-process run tell each other. Process 0 leads: it decides
//! when a checkpoint starts, the target times and when it is durable; every other process
//! pauses, aligns and snapshots its own workers and sends its part to the leader. The messages
//! travel on timely's own connections (a small control dataflow, see `runtime::control`).

use serde::{Deserialize, Serialize};

use super::{SinkCommit, SourcePosition};

/// One message between coordinators, addressed to a process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The process it goes to.
    pub to: usize,
    /// What it says.
    pub message: ControlMessage,
}

/// The steps of a checkpoint that cross processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// Follower → leader: every reader of `process` has ended (the final checkpoint may start).
    Exhausted {
        /// The follower.
        process: usize,
    },
    /// Leader → followers: take checkpoint `id` (`final_`: the one after every source ended).
    Start {
        /// Checkpoint id.
        id: u64,
        /// True for the final checkpoint.
        final_: bool,
    },
    /// Follower → leader: every reader of `process` has paused for checkpoint `id`.
    Paused {
        /// Checkpoint id.
        id: u64,
        /// The follower.
        process: usize,
        /// Per source: its readers' latest pause time there (event time), and whether all of
        /// them had ended.
        sources: Vec<PauseSummary>,
    },
    /// Leader → followers: the target time of every source for checkpoint `id`.
    Targets {
        /// Checkpoint id.
        id: u64,
        /// (qualified source name, target event time).
        targets: Vec<(String, u64)>,
    },
    /// Follower → leader: the follower's workers' share of checkpoint `id`.
    Part {
        /// Checkpoint id.
        id: u64,
        /// The follower.
        process: usize,
        /// Its positions, states and pre-commits.
        part: Part,
    },
    /// Leader → followers: checkpoint `id` is durable; commit your staged files and go on.
    Committed {
        /// Checkpoint id.
        id: u64,
    },
    /// Follower → leader: after the final checkpoint, every sink of `process` has written its
    /// final files (the leader records the run complete only once all have).
    Finished {
        /// The follower.
        process: usize,
    },
}

/// One process's pause for one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PauseSummary {
    /// Qualified source name.
    pub source: String,
    /// The latest of its readers' next event times (or, for an ended reader, one past its last).
    pub latest: u64,
    /// Whether every one of its readers in that process had ended.
    pub ended: bool,
}

/// A process's share of a checkpoint, by global worker index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// (source, worker, position).
    pub sources: Vec<(String, usize, SourcePosition)>,
    /// (operator, worker, state; `None`: stateless).
    pub operators: Vec<(String, usize, Option<Vec<u8>>)>,
    /// (sink, worker, pre-commit; `None`: no writer on that worker).
    pub sinks: Vec<(String, usize, Option<SinkCommit>)>,
}
