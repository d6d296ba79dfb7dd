//! The checkpoint control dataflow of a multi-process run: carries the coordinators' messages
//! ([`Envelope`]) between processes on timely's own connections, so a checkpoint crosses
//! processes the way data does and a lost peer fails the run the same way.
//!
//! Every worker builds it (timely needs the same dataflows everywhere), but only the first
//! worker of each process sends and receives: its source drains the coordinator's outbox, an
//! exchange routes each message to the first worker of the process it is addressed to, and a
//! sink hands it to that process's coordinator. The source holds its capability until the run's
//! checkpoints are over (the final one is durable and, on the leader, every follower has
//! finished its outputs), so the leader's run ends only after every follower's files are final.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator as _;
use timely::dataflow::Scope;

use crate::checkpoint::{ControlMessage, Coordinator, Envelope, Role};
use crate::node::WorkerPos;

use super::Shared;

/// Builds the control dataflow's operators on this worker (`workers` per process).
pub(super) fn build_control(scope: Scope<'_, u64>, pos: WorkerPos, workers: usize, sinks: usize, shared: Arc<Shared>) {
    let coordinator: Arc<Coordinator> = shared.checkpoint.clone().expect("control runs with checkpoints");
    let first_of_process = pos.index.is_multiple_of(workers);
    let sender = coordinator.clone();
    let sender_shared = shared.clone();
    let stream = source::<_, CapacityContainerBuilder<Vec<Envelope>>, _, _>(scope, "checkpoint-control", move |cap, info| {
        let mut cap = first_of_process.then_some(cap);
        let activator = scope.activator_for(info.address.clone());
        if cap.is_some() {
            sender.register_outbox(scope.worker().sync_activator_for(info.address.to_vec()));
        }
        let (coordinator, shared) = (sender, sender_shared);
        let mut finished_sent = false;
        move |output| {
            let Some(c) = cap.as_ref() else { return };
            let outbox = coordinator.take_outbox();
            if !outbox.is_empty() {
                output.session(c).give_iterator(outbox.into_iter());
            }
            let local_done = coordinator.finished() && shared.sinks_finished.load(Ordering::Acquire) == sinks * workers;
            let over = match coordinator.role() {
                Role::Follower { process } => {
                    if local_done && !finished_sent {
                        finished_sent = true;
                        output.session(c).give(Envelope {
                            to: 0,
                            message: ControlMessage::Finished { process },
                        });
                    }
                    finished_sent
                }
                Role::Leader { .. } => coordinator.finished() && coordinator.followers_finished(),
                Role::Single => true,
            };
            if over || shared.failed() {
                cap = None;
            } else {
                // Messages wake it at once; the timer notices the local sinks finishing.
                activator.activate_after(Duration::from_millis(5));
            }
        }
    });
    stream.sink(
        Exchange::new(move |e: &Envelope| (e.to * workers) as u64),
        "checkpoint-control-receive",
        move |(input, _frontier)| {
            input.for_each(|_cap, data| {
                for envelope in data.drain(..) {
                    if let Err(e) = coordinator.receive(envelope.message) {
                        shared.fail(format!("checkpoint: {e}"));
                    }
                }
            });
        },
    );
}
