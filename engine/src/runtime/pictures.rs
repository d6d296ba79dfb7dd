//! The picture dataflow of a watched multi-process run: every process other than 0 sends its
//! observer's picture ([`BatchObserver::export_picture`](super::BatchObserver::export_picture))
//! to process 0 every [`PICTURE_PERIOD`], and once more when its own part of the run is over,
//! on timely's own connections, so the live view of process 0 shows the whole run.
//!
//! Every worker builds it (timely needs the same dataflows everywhere); only the first worker
//! of each follower sends, and worker 0 receives.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator as _;
use timely::dataflow::Scope;

use crate::node::WorkerPos;

use super::{Shared, PICTURE_PERIOD};

/// How often a sender looks whether its process's part of the run is over.
const POLL: Duration = Duration::from_millis(50);

/// Builds the picture dataflow's operators on this worker (`workers` per process, `sinks` sink
/// nodes in the pipeline).
pub(super) fn build_pictures(scope: Scope<'_, u64>, pos: WorkerPos, workers: usize, sinks: usize, shared: Arc<Shared>) {
    let process = pos.index / workers;
    let sends = process > 0 && pos.index.is_multiple_of(workers) && shared.observer.is_some();
    let sender = shared.clone();
    let stream = source::<_, CapacityContainerBuilder<Vec<(usize, Vec<u8>)>>, _, _>(scope, "pictures", move |cap, info| {
        let mut cap = sends.then_some(cap);
        let activator = scope.activator_for(info.address.clone());
        let shared = sender;
        let mut next = Instant::now() + PICTURE_PERIOD;
        move |output| {
            let Some(c) = cap.as_ref() else { return };
            let over = shared.failed() || shared.sinks_finished.load(Ordering::Acquire) == sinks * workers;
            if over || Instant::now() >= next {
                next = Instant::now() + PICTURE_PERIOD;
                if let Some(picture) = shared.observer.as_ref().and_then(|o| o.export_picture()) {
                    output.session(c).give((process, picture));
                }
            }
            if over {
                cap = None;
            } else {
                activator.activate_after(POLL.min(next.saturating_duration_since(Instant::now())));
            }
        }
    });
    stream.sink(
        Exchange::new(|_: &(usize, Vec<u8>)| 0u64),
        "pictures-receive",
        move |(input, _frontier)| {
            input.for_each(|_cap, data| {
                for (process, picture) in data.drain(..) {
                    if let Some(Err(e)) = shared.observer.as_ref().map(|o| o.import_picture(process, &picture)) {
                        tracing::warn!("live view: the picture of process {process} was not taken: {e}");
                    }
                }
            });
        },
    );
}
