//! The slot where a live reader keeps its worker's waker, shared with the threads that feed it.

use std::sync::{Arc, Mutex};

use neurostream_engine::SourceWaker;

/// The reader's waker, once the runtime has given it one: producer threads call
/// [`WakerSlot::wake`] after each item they hand over and when they end, so the worker runs the
/// source at once instead of finding the data at its next poll.
#[derive(Clone, Default)]
pub(crate) struct WakerSlot(Arc<Mutex<Option<SourceWaker>>>);

impl WakerSlot {
    /// Keeps `waker` (from [`neurostream_engine::SourceReader::set_waker`]).
    pub(crate) fn set(&self, waker: SourceWaker) {
        *self.0.lock().unwrap() = Some(waker);
    }

    /// Wakes the reader's worker (nothing before a waker is set: the worker's first run finds
    /// what arrived before).
    pub(crate) fn wake(&self) {
        if let Some(w) = self.0.lock().unwrap().as_ref() {
            w();
        }
    }
}
