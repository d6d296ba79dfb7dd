//! The live view of a run (`neurostream run PIPELINE --ui`): a page served by the engine that
//! shows the pipeline's graph with each node's rate, busy time, queue depth, p99 latency and
//! drops; every signal stream as scrolling traces (decimated on the server, markers as lines);
//! band power and decoder outputs; feature densities, the most active features, top examples
//! and alerts of SAE monitoring; drift scores and cluster tables.
//!
//! How: the run's [`UiState`] is its [`BatchObserver`](neurostream_engine::BatchObserver):
//! every batch a source or operator emits is folded, by reference on the worker that emits it,
//! into a bounded, decimated picture (no copy of the data, no extra dataflow operators). The
//! server ([`serve`]) pushes a JSON snapshot of it to every viewer once per second over a
//! WebSocket, each viewer with its own small drop-oldest queue, so viewers never slow the run.
//! A viewer is sent the traces of the channels it shows only ([`Selection`]); viewers that
//! show the same share one rendering.
//!
//! In a multi-process run, process 0 serves the view: every other process watches its own
//! batches and sends its picture to process 0 once per second on the cluster's connections
//! ([`neurostream_engine::RunOptions::follower_observer`]), where counters are summed and the
//! views of one stream merged.

mod server;
mod state;
mod views;

pub use server::{serve, UiServer, MAX_CLIENT_MESSAGE, MAX_VIEWERS, MIN_RESEND, SEND_TIMEOUT, TICK, VIEWER_QUEUE};
pub use state::{Selection, UiState, MAX_SELECTED_STREAMS};
pub use views::{COLUMNS, DEFAULT_TRACES, MAX_TRACED_CHANNELS, TRACE_SECONDS};
