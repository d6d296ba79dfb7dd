//! The sink driver: writes what the frontier has passed, in event-time order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::Operator as _;
use timely::dataflow::StreamVec;

use crate::device::ComputeDevice;
use crate::frame::{Batch, Frame};
use crate::node::{Placement, Sink, WorkerPos};

use super::{NodeStats, Shared};

pub(super) fn build_sink<'s, P>(
    input: StreamVec<'s, u64, Batch>,
    pact: P,
    name: &str,
    sink: Arc<dyn Sink>,
    device: ComputeDevice,
    pos: WorkerPos,
    shared: Arc<Shared>,
) where
    P: ParallelizationContract<u64, Vec<Batch>>,
{
    let name = name.to_string();
    let mut writer = if sink.placement() == Placement::Single && pos.index != 0 {
        None
    } else {
        let opened = sink.open_on(pos, &device).and_then(|mut w| {
            if shared.checkpoint.is_some() {
                let state = shared.restored(|c| c.sinks.get(&name), pos.index);
                w.start_checkpointed(state.as_ref().map(|s| s.state.as_slice()))?;
            }
            Ok(w)
        });
        match opened {
            Ok(w) => Some(w),
            Err(e) => {
                shared.fail(format!("`{name}`: {e}"));
                None
            }
        }
    };
    let mut stash: BTreeMap<u64, Vec<Batch>> = BTreeMap::new();
    let mut stats = NodeStats::default();
    let live = shared.node_metrics(&name);
    let mut finished = false;
    let scope = input.scope();
    let _ = input.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        pact,
        &name.clone(),
        move |_cap, info| {
            let activator = shared.activator(&scope, info.address);
            move |(input, frontier), _output| {
                input.for_each(|cap, data| {
                    if let Some(c) = cap.retain_least(0) {
                        stash.entry(*c.time()).or_default().append(data);
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let batches = entry.remove();
                    let Some(w) = writer.as_mut() else { continue };
                    for mut b in batches {
                        if let Batch::End(end) = &b {
                            if let Err(e) = w.end_stream(&end.stream) {
                                shared.fail(format!("`{name}`: {e}"));
                                break;
                            }
                            continue;
                        }
                        // The runtime keeps rows on a GPU only between GPU operators; this is the
                        // backstop that a sink never writes a frame whose values are elsewhere.
                        if let Err(e) = b.materialize() {
                            shared.fail(format!("`{name}`: {e}"));
                            break;
                        }
                        let (rows, bytes) = (b.rows() as u64, b.payload_bytes() as u64);
                        let arrival = match &b {
                            Batch::Dense(Frame { arrival_ns, .. }) => *arrival_ns,
                            _ => None,
                        };
                        stats.rows_in += rows;
                        stats.bytes_in += bytes;
                        let t0 = Instant::now();
                        let r = w.write_owned(b);
                        let busy = t0.elapsed();
                        stats.busy += busy;
                        if let Some(m) = &live {
                            m.batch(rows, 0, bytes, busy);
                        }
                        if let Some(at) = arrival {
                            let latency = crate::frame::now_ns() - at;
                            stats.latencies.record(latency);
                            if let Some(m) = &live {
                                m.latency.observe_ns(latency);
                            }
                        }
                        if let Err(e) = r {
                            shared.fail(format!("`{name}`: {e}"));
                            break;
                        }
                    }
                }
                // A checkpoint: the frontier at its target means every earlier batch is written.
                if let Some((ck, id)) = shared.checkpoint_due(&name, pos.index, true, &frontier.frontier(), &activator) {
                    let commit = writer.as_mut().map(|w| w.precommit()).transpose();
                    if let Err(e) = commit.and_then(|c| ck.report_sink(id, &name, pos.index, c)) {
                        shared.fail(format!("`{name}`: {e}"));
                    }
                }
                if frontier.is_empty() && !finished {
                    finished = true;
                    if let Some(w) = writer.take() {
                        let failure = shared.first_error();
                        match w.finish(failure.as_deref()) {
                            Ok(lines) => shared
                                .sink_lines
                                .lock()
                                .unwrap()
                                .extend(lines.into_iter().map(|l| format!("{name}: {l}"))),
                            Err(e) => shared.fail(format!("`{name}`: {e}")),
                        }
                    }
                    shared.add_stats(&name, pos.index, &stats);
                    shared.sinks_finished.fetch_add(1, std::sync::atomic::Ordering::Release);
                }
            }
        },
    );
}
