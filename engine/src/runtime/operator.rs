//! The operator driver: routes, orders and processes batches, takes part in checkpoints.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::Operator as _;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::checkpoint::Checkpointing;
use crate::device::ComputeDevice;
use crate::frame::Batch;
use crate::node::{Operator, Partitioning, WorkerPos};

use super::{NodeStats, Shared};

/// The device an operator computes on, and whether its output may stay there.
pub(super) struct OperatorDevice {
    /// Where its instances compute.
    pub device: ComputeDevice,
    /// Every consumer takes rows on this device (see `device_resident_outputs`).
    pub keep_output: bool,
}

pub(super) fn build_operator<'s, P>(
    input: StreamVec<'s, u64, Batch>,
    pact: P,
    name: &str,
    op: Arc<dyn Operator>,
    placement: OperatorDevice,
    pos: WorkerPos,
    shared: Arc<Shared>,
) -> StreamVec<'s, u64, Batch>
where
    P: ParallelizationContract<u64, Vec<Batch>>,
{
    let name = name.to_string();
    let ordered = op.partitioning() == Partitioning::ByStream;
    let holds_back = op.holds_back();
    let takes_device_rows = op.takes_device_rows();
    let one_output_per_input = op.one_output_per_input();
    let output_schema = op.output_schema();
    let OperatorDevice {
        device,
        keep_output: keep_on_device,
    } = placement;
    let scope = input.scope();
    input.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        pact,
        &name.clone(),
        move |initial, info| {
            let activator = shared.activator(&scope, info.address);
            let checkpointing = op.checkpointing();
            let mut instance = match op.instantiate(&device).and_then(|mut i| {
                if let Some(state) = shared.restored(|c| c.operators.get(&name), pos.index) {
                    i.restore(&state)?;
                }
                if keep_on_device {
                    i.keep_output_on_device();
                }
                if holds_back {
                    i.defer_output();
                }
                Ok(i)
            }) {
                Ok(i) => Some(i),
                Err(e) => {
                    shared.fail(format!("`{name}`: {e}"));
                    None
                }
            };
            let mut stash: BTreeMap<u64, (Capability<u64>, Vec<Batch>)> = BTreeMap::new();
            // Operators that hold rows back keep a capability from the start: restored state may
            // have rows to emit at the end even when no input reaches this worker after a resume.
            let mut held: Option<Capability<u64>> = holds_back.then_some(initial);
            // With one output per input: the times of the inputs whose output is still held back,
            // oldest first, so each output leaves at its input's time (see `emit`).
            let mut waiting: VecDeque<Capability<u64>> = VecDeque::new();
            let mut stats = NodeStats::default();
            let live = shared.node_metrics(&name);
            let mut finished = false;
            let mut out: Vec<Batch> = Vec::new();
            move |(input, frontier), output| {
                let mut ready: Vec<(Capability<u64>, Vec<Batch>)> = Vec::new();
                input.for_each(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    if ordered {
                        let entry = stash.entry(*c.time()).or_insert_with(|| (c, Vec::new()));
                        entry.1.append(data);
                    } else {
                        ready.push((c, std::mem::take(data)));
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    ready.push(entry.remove());
                }
                for (cap, batches) in ready {
                    let Some(inst) = instance.as_mut() else { continue };
                    if shared.failed() {
                        continue;
                    }
                    for mut batch in batches {
                        if let Batch::End(end) = batch {
                            // The stream's last rows came before it (its time is later): the
                            // instance emits what it kept for the stream, then the end travels on.
                            let t0 = Instant::now();
                            let r = inst.end_stream(&end.stream, &mut out);
                            stats.busy += t0.elapsed();
                            if let Err(e) = r {
                                shared.fail(format!("`{name}`: stream {}: {e}", end.stream));
                                out.clear();
                                break;
                            }
                            stats.rows_out += emit(
                                &mut out,
                                &mut waiting,
                                &cap,
                                |b| shared.observe(&name, b),
                                |c, b| output.session(c).give_iterator(b),
                            );
                            let end = Batch::End(crate::frame::StreamEnd {
                                schema: output_schema.clone(),
                                ..end
                            });
                            shared.observe(&name, &end);
                            output.session(&cap).give(end);
                            continue;
                        }
                        let (rows_in, bytes_in) = (batch.rows() as u64, batch.payload_bytes() as u64);
                        stats.rows_in += rows_in;
                        stats.bytes_in += bytes_in;
                        let t0 = Instant::now();
                        // Backstop: only operators that take device rows get them.
                        let r = match takes_device_rows {
                            true => Ok(()),
                            false => batch.materialize(),
                        }
                        .and_then(|()| inst.process(batch, &mut out));
                        if one_output_per_input {
                            waiting.push_back(cap.clone());
                        }
                        let busy = t0.elapsed();
                        stats.busy += busy;
                        if let Some(m) = &live {
                            m.batch(rows_in, out.iter().map(|b| b.rows() as u64).sum(), bytes_in, busy);
                        }
                        if let Err(e) = r {
                            shared.fail(format!("`{name}`: {e}"));
                            out.clear();
                            break;
                        }
                        stats.rows_out += emit(
                            &mut out,
                            &mut waiting,
                            &cap,
                            |b| shared.observe(&name, b),
                            |c, b| output.session(c).give_iterator(b),
                        );
                    }
                    if holds_back {
                        held = Some(cap);
                    }
                }
                // Operators that hold rows back may have some due now (a latency budget ran out);
                // not while a checkpoint is taken, when nothing may be emitted past its target time.
                let checkpointing_now = shared.checkpoint.as_ref().is_some_and(|c| c.in_progress());
                if let (Some(inst), Some(cap), false, false) =
                    (instance.as_mut(), held.as_ref(), shared.failed(), checkpointing_now)
                {
                    let t0 = Instant::now();
                    let r = inst.poll(&mut out);
                    stats.busy += t0.elapsed();
                    match r {
                        Ok(next) => {
                            stats.rows_out += emit(
                                &mut out,
                                &mut waiting,
                                cap,
                                |b| shared.observe(&name, b),
                                |c, b| output.session(c).give_iterator(b),
                            );
                            if let Some(after) = next {
                                activator.activate_after(after);
                            }
                        }
                        Err(e) => {
                            shared.fail(format!("`{name}`: {e}"));
                            out.clear();
                        }
                    }
                }
                // The held capability only needs to cover what may still arrive: keep it at the
                // input frontier so it never holds the watermark back behind processed data.
                if let (Some(h), Some(&f)) = (held.as_mut(), frontier.frontier().first()) {
                    if f > *h.time() {
                        h.downgrade(&f);
                    }
                }
                // A checkpoint: once the input frontier reaches its target every earlier batch has
                // been processed and no later one exists yet, so the state is exactly the cut.
                if let Some((ck, id)) = shared.checkpoint_due(&name, pos.index, false, &frontier.frontier(), &activator) {
                    // Held rows leave before the cut, each at its input's time (before it).
                    if let (true, Some(inst), Some(cap)) = (one_output_per_input, instance.as_mut(), held.as_ref()) {
                        match inst.release_held(&mut out) {
                            Ok(()) => {
                                stats.rows_out += emit(
                                    &mut out,
                                    &mut waiting,
                                    cap,
                                    |b| shared.observe(&name, b),
                                    |c, b| output.session(c).give_iterator(b),
                                );
                            }
                            Err(e) => {
                                shared.fail(format!("`{name}`: {e}"));
                                out.clear();
                            }
                        }
                    }
                    let state = match (checkpointing, instance.as_ref()) {
                        (Checkpointing::Snapshot, Some(inst)) => inst.snapshot().map(Some),
                        _ => Ok(None),
                    };
                    if let Err(e) = state.and_then(|st| ck.report_operator(id, &name, pos.index, st)) {
                        shared.fail(format!("`{name}`: {e}"));
                    }
                    // Rows still held (an instance that could not release them) are in the
                    // snapshot and belong after the cut: their times go, so the frontier may pass.
                    waiting.clear();
                }
                if frontier.is_empty() && stash.is_empty() && !finished {
                    finished = true;
                    if let (Some(inst), false) = (instance.as_mut(), shared.failed()) {
                        match inst.finish(&mut out) {
                            Ok(()) if !out.is_empty() => match &held {
                                Some(cap) => {
                                    stats.rows_out += emit(
                                        &mut out,
                                        &mut waiting,
                                        cap,
                                        |b| shared.observe(&name, b),
                                        |c, b| output.session(c).give_iterator(b),
                                    );
                                }
                                None => {
                                    shared.fail(format!(
                                        "`{name}` emitted rows at the end without holding a capability (declare holds_back)"
                                    ));
                                    out.clear();
                                }
                            },
                            Ok(()) => {}
                            Err(e) => shared.fail(format!("`{name}`: {e}")),
                        }
                    }
                    held = None;
                    waiting.clear();
                    shared.add_stats(&name, pos.index, &stats);
                }
            }
        },
    )
}

/// Emits the batches in `out` (each shown to `observe` first) and returns their rows. They go in
/// order: while `waiting` holds input times (an operator with one output per input), each batch
/// at the oldest of them, taken; the rest at `fallback` (the current or held capability),
/// together.
fn emit(
    out: &mut Vec<Batch>,
    waiting: &mut VecDeque<Capability<u64>>,
    fallback: &Capability<u64>,
    observe: impl Fn(&Batch),
    mut give: impl FnMut(&Capability<u64>, std::vec::Drain<'_, Batch>),
) -> u64 {
    let rows = out.iter().map(|b| b.rows() as u64).sum();
    out.iter().for_each(observe);
    while !out.is_empty() {
        let Some(time) = waiting.pop_front() else {
            give(fallback, out.drain(..));
            break;
        };
        give(&time, out.drain(..1));
    }
    rows
}
