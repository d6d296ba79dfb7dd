//! The source driver: one worker's reader of a source, as a timely source operator.
//!
//! [`SourceDriver::step`] runs once per activation and goes through the concerns in order, each
//! its own method: the checkpoint gate (pause at a checkpoint's target time), the watermark
//! (hold the capability at the next batch's time), flow control (wait while the sinks trail by
//! more than the window; meanwhile the overload policies drain a live source), then one batch
//! (the NaN/Inf policy, metrics and progress) is emitted. Every way of ending goes through
//! [`SourceDriver::shutdown`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, StreamVec};

use crate::checkpoint::{Gate, SourcePosition, EXHAUSTED};
use crate::error::{EngineError, Result};
use crate::frame::Batch;
use crate::metrics::NodeMetrics;
use crate::node::{Source, SourceReader, WorkerPos};
use crate::spec::{OnInvalid, Overload};

use super::journal::JournaledReader;
use super::{NodeStats, Shared};

/// Applies the NaN/Inf policy to a batch: error, or drop rows and count them.
fn check_invalid(batch: &mut Batch, policy: OnInvalid, location: &str) -> Result<u64> {
    let Batch::Dense(frame) = batch else {
        return Ok(0);
    };
    let Some((row, channel)) = frame.first_non_finite() else {
        return Ok(0);
    };
    match policy {
        OnInvalid::Error => Err(EngineError::NonFinite {
            stream: if location.is_empty() {
                frame.stream.to_string()
            } else {
                format!("{} ({location})", frame.stream)
            },
            row: frame.index.describe_row(row),
            channel,
            name: frame.schema.channels.get(channel).map(|c| c.name.clone()).unwrap_or_default(),
        }),
        OnInvalid::Drop => {
            let w = frame.width();
            let keep: Vec<bool> = frame.data.chunks(w.max(1)).map(|r| r.iter().all(|v| v.is_finite())).collect();
            let dropped = keep.iter().filter(|k| !**k).count() as u64;
            frame.retain_rows(&keep);
            Ok(dropped)
        }
    }
}

/// Bounds the rows between a source and the sinks: the source waits while the sinks' frontier
/// is more than `window` event-time units (rows) behind its next batch.
pub(super) struct FlowControl {
    pub(super) probe: ProbeHandle<u64>,
    pub(super) window: u64,
}

/// When the driver wants to run again.
enum Wake {
    /// At once: there is more to do.
    Now,
    /// Shortly: it is waiting (a checkpoint, the sinks, a live source with nothing ready).
    Soon,
    /// When its reader's waker calls (a live source with nothing ready), or after a while.
    Woken,
    /// Only if timely activates it: it has ended (or has nothing to do until woken).
    Never,
}

/// Rows counted for the run report: NaN/Inf drops and the overload policy's.
#[derive(Default)]
struct Counts {
    /// Rows dropped for NaN/Inf.
    invalid: u64,
    /// Rows read from the reader (accepted or dropped).
    read: u64,
    /// Rows the overload policy dropped.
    overloaded: u64,
    /// Of those, already added to the node's `/metrics` counter (shared by every worker).
    overloaded_published: u64,
}

/// One worker's source: its reader and capability and everything it keeps between activations.
struct SourceDriver {
    name: String,
    pos: WorkerPos,
    shared: Arc<Shared>,
    live: Option<Arc<NodeMetrics>>,
    policy: OnInvalid,
    overload: Overload,
    flow: FlowControl,
    reader: Option<Box<dyn SourceReader>>,
    cap: Option<Capability<u64>>,
    stats: NodeStats,
    counts: Counts,
    /// drop_oldest: batches read while the pipeline was behind, and their rows.
    buffer: VecDeque<(u64, Batch)>,
    buffered_rows: u64,
    /// Batches and rows the reader has returned (for checkpoints).
    position: SourcePosition,
    /// A batch read but held back because it falls at or after a checkpoint's target time.
    lookahead: Option<(u64, Batch)>,
    /// The reader calls a waker when data arrives (no polling while it has nothing).
    woken_by_reader: bool,
}

/// The source operator of `src` on this worker.
pub(super) fn build_source<'s>(
    scope: Scope<'s, u64>,
    name: &str,
    src: Arc<dyn Source>,
    (policy, overload): (OnInvalid, Overload),
    flow: FlowControl,
    pos: WorkerPos,
    shared: Arc<Shared>,
) -> StreamVec<'s, u64, Batch> {
    let name = name.to_string();
    source::<_, timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _>(scope, &name.clone(), move |cap, info| {
        let activator = scope.activator_for(info.address.clone());
        let mut driver = SourceDriver {
            live: shared.node_metrics(&name),
            name,
            pos,
            shared,
            policy,
            overload,
            flow,
            reader: None,
            cap: Some(cap),
            stats: NodeStats::default(),
            counts: Counts::default(),
            buffer: VecDeque::new(),
            buffered_rows: 0,
            position: SourcePosition::default(),
            lookahead: None,
            woken_by_reader: false,
        };
        driver.open(src.as_ref());
        if let Some(reader) = driver.reader.as_mut() {
            let sync = scope.worker().sync_activator_for(info.address.to_vec());
            driver.woken_by_reader = reader.set_waker(Arc::new(move || {
                let _ = sync.activate();
            }));
        }
        activator.activate();
        move |output| {
            let wake = driver.step(&mut |cap, time, batch| output.session(&cap.delayed(&time)).give(batch));
            match wake {
                Wake::Now => activator.activate(),
                Wake::Soon => activator.activate_after(Duration::from_millis(1)),
                // The waker brings it back at once; the timer only guards against a lost wake.
                Wake::Woken => activator.activate_after(Duration::from_millis(50)),
                Wake::Never => {}
            }
        }
    })
}

impl SourceDriver {
    /// Opens this worker's reader; when resuming, skips what it had emitted before the
    /// checkpoint and checks that the data still agree with the saved position.
    fn open(&mut self, src: &dyn Source) {
        let restored = self.shared.restored(|c| c.sources.get(&self.name), self.pos.index);
        let opened = src.open(self.pos).and_then(|r| {
            let mut r = match (&self.shared.checkpoint, src.replayable()) {
                // A live stream cannot be read again: its journal can.
                (Some(ck), false) => {
                    let (name, worker) = (self.name.clone(), self.pos.index);
                    let durable_of = ck.clone();
                    let mut j = JournaledReader::open(
                        r,
                        ck.journal_dir(&name, worker),
                        Arc::new(move || durable_of.durable_batches(&name, worker)),
                    )?;
                    match &restored {
                        Some(p) if p.next_time.is_none() => {
                            j.end();
                            self.position = p.clone();
                            return Ok(Box::new(j) as Box<dyn SourceReader>);
                        }
                        _ => Box::new(j),
                    }
                }
                _ => r,
            };
            if let Some(p) = restored {
                skip_to(r.as_mut(), &p)?;
                self.position = p;
            }
            Ok(r)
        });
        match opened {
            Ok(r) => self.reader = Some(r),
            Err(e) => {
                self.shared.fail(format!("`{}`: {e}", self.name));
                self.cap = None;
            }
        }
    }

    /// One activation.
    fn step(&mut self, emit: &mut dyn FnMut(&Capability<u64>, u64, Batch)) -> Wake {
        if self.reader.is_none() {
            self.cap = None;
            return Wake::Never;
        }
        if self.cap.is_none() {
            return Wake::Never;
        }
        if self.shared.failed() {
            return self.shutdown();
        }
        if self.shared.stop_requested() {
            if self.shared.checkpoint.is_some() {
                // Stopping between checkpoints: like a crash, resumable, nothing half-committed.
                return self.fail(EngineError::Runtime(
                    "stopped before the end; resume from the last checkpoint to continue".into(),
                ));
            }
            return self.shutdown();
        }
        let below = match self.checkpoint_gate() {
            Ok(Some(below)) => below,
            Ok(None) => return Wake::Soon,
            Err(e) => return self.fail(e),
        };
        if !self.hold_watermark() {
            return self.shutdown();
        }
        self.publish_queue_depth();
        if self.sinks_behind() {
            if self.overload != Overload::Block {
                if let Err(e) = self.drain_overloaded() {
                    return self.fail(e);
                }
            }
            return Wake::Soon;
        }
        if let Some((time, batch)) = self.buffer.pop_front() {
            self.buffered_rows -= batch.rows() as u64;
            return match self.emit_buffered(time, batch, emit) {
                Ok(()) => Wake::Now,
                Err(e) => self.fail(e),
            };
        }
        if !self.reader.as_mut().is_some_and(|r| r.ready()) {
            return if self.woken_by_reader { Wake::Woken } else { Wake::Soon };
        }
        let t0 = Instant::now();
        let outcome = self.read_and_emit(below, emit);
        self.stats.busy += t0.elapsed();
        match outcome {
            Ok(true) => Wake::Now,
            // With checkpoints the end goes through the gate: held until the final checkpoint.
            Ok(false) if self.shared.checkpoint.is_some() => Wake::Now,
            Ok(false) => self.shutdown(),
            Err(e) => {
                let loc = self.location();
                let at = if loc.is_empty() || e.to_string().contains(&loc) {
                    String::new()
                } else {
                    format!(" (at {loc})")
                };
                self.shared.fail(format!("`{}`: {e}{at}", self.name));
                self.shutdown()
            }
        }
    }

    /// Records `e` as the run's failure and ends this source.
    fn fail(&mut self, e: EngineError) -> Wake {
        self.shared.fail(format!("`{}`: {e}", self.name));
        self.shutdown()
    }

    /// Ends this source: reports its counters, closes the reader and drops the capability.
    fn shutdown(&mut self) -> Wake {
        let (name, shared, counts) = (&self.name, &self.shared, &self.counts);
        shared.add_stats(name, self.pos.index, &self.stats);
        if self.overload != Overload::Block {
            let mut o = shared.overload.lock().unwrap();
            let e = o.entry(name.clone()).or_default();
            e.0 += counts.read;
            e.1 += counts.overloaded;
            if counts.overloaded > 0 {
                tracing::warn!(
                    "`{name}`: the pipeline fell behind: dropped {} of {} rows ({:?})",
                    counts.overloaded,
                    counts.read,
                    self.overload
                );
            }
        }
        if counts.invalid > 0 {
            *shared.dropped.lock().unwrap().entry(name.clone()).or_default() += counts.invalid;
            tracing::warn!("`{name}`: dropped {} rows holding NaN/Inf", counts.invalid);
        }
        // Nothing more comes from this reader: its queue-depth reading would otherwise stay
        // at its last value after the run (and add up across processes in the live view).
        if let Some(m) = &self.live {
            m.in_flight.store(0, Ordering::Relaxed);
        }
        self.reader = None;
        self.cap = None;
        Wake::Never
    }

    fn location(&self) -> String {
        self.reader.as_ref().map(|r| r.location()).unwrap_or_default()
    }

    /// The next batch's time: the buffer's oldest, the held-back batch, or the reader's.
    fn next_time(&self) -> Option<u64> {
        self.buffer
            .front()
            .map(|b| b.0)
            .or_else(|| self.lookahead.as_ref().map(|l| l.0))
            .or_else(|| self.reader.as_ref().and_then(|r| r.next_time()))
    }

    /// With checkpoints: asks the coordinator whether to go on. `Ok(None)`: paused (hold the
    /// capability at the next time and wait); `Ok(Some(below))`: go on, emitting only batches
    /// before `below` when a checkpoint's target is set.
    fn checkpoint_gate(&mut self) -> Result<Option<Option<u64>>> {
        let Some(ck) = self.shared.checkpoint.clone() else {
            return Ok(Some(None));
        };
        self.position.next_time = self
            .lookahead
            .as_ref()
            .map(|l| l.0)
            .or_else(|| self.reader.as_ref().and_then(|r| r.next_time()));
        if ck.in_progress() {
            // The checkpoint must not cover batches a journal could lose.
            if let Some(r) = self.reader.as_mut() {
                r.sync()?;
            }
        }
        match ck.source_gate(&self.name, self.pos.index, self.position.next_time, &self.position)? {
            Gate::Free(below) => Ok(Some(below)),
            Gate::Release => Ok(Some(None)),
            Gate::Hold => {
                let at = self.position.next_time.unwrap_or(EXHAUSTED);
                let c = self.cap.as_mut().expect("a source that runs holds a capability");
                if at > *c.time() {
                    c.downgrade(&at);
                }
                Ok(None)
            }
        }
    }

    /// Holds the capability at the next batch's time (the watermark); false when there is none
    /// (the source has ended).
    fn hold_watermark(&mut self) -> bool {
        let next = self.next_time();
        let c = self.cap.as_mut().expect("a source that runs holds a capability");
        match next {
            Some(t) if t >= *c.time() => c.downgrade(&t),
            Some(_) => {}
            None => return false,
        }
        true
    }

    /// Queue depth for `/metrics`: how far (rows or samples) the sinks trail this source.
    fn publish_queue_depth(&self) {
        if let (Some(m), Some(c)) = (&self.live, &self.cap) {
            let behind = self
                .flow
                .probe
                .with_frontier(|f| f.first().map_or(0, |&t| c.time().saturating_sub(t)));
            m.in_flight.store(behind, Ordering::Relaxed);
        }
    }

    /// Whether the sinks trail the watermark by more than the flow-control window.
    fn sinks_behind(&self) -> bool {
        let c = self.cap.as_ref().expect("a source that runs holds a capability");
        self.flow.probe.less_than(&c.time().saturating_sub(self.flow.window))
    }

    /// Overload policies while the sinks are behind: keep draining what a live source has
    /// ready, so its sender never waits, dropping it (drop_newest) or buffering it and dropping
    /// the oldest (drop_oldest).
    fn drain_overloaded(&mut self) -> Result<()> {
        let r = self.reader.as_mut().expect("a source that runs has a reader");
        let mut n = 0;
        while n < 64 && r.ready() && r.next_time().is_some() {
            n += 1;
            let Some((time, mut batch)) = r.next_batch()? else { break };
            if let Batch::Dense(f) = &mut batch {
                f.arrival_ns.get_or_insert_with(crate::frame::now_ns);
            }
            if batch.is_end() {
                // Not data: the end of a stream is never dropped (its state would stay).
                self.buffer.push_back((time, batch));
                continue;
            }
            let rows = batch.rows() as u64;
            self.counts.read += rows;
            match self.overload {
                Overload::DropOldest(limit) => {
                    self.buffered_rows += rows;
                    self.buffer.push_back((time, batch));
                    let mut ends = Vec::new();
                    while self.buffered_rows > limit {
                        let (_, old) = self.buffer.pop_front().expect("over the limit");
                        match old {
                            Batch::End(_) => ends.push(old),
                            _ => {
                                self.buffered_rows -= old.rows() as u64;
                                self.counts.overloaded += old.rows() as u64;
                            }
                        }
                    }
                    // Ends of streams stay, after the newest batch (their streams have no later
                    // one), at its time so times still never decrease.
                    let newest = self.buffer.back().map_or(time, |b| b.0);
                    self.buffer.extend(ends.into_iter().map(|e| (newest, e)));
                }
                _ => self.counts.overloaded += rows,
            }
        }
        if let Some(m) = &self.live {
            // Every worker adds its own drops to the one counter of the node.
            let new = self.counts.overloaded - self.counts.overloaded_published;
            m.dropped_overload.fetch_add(new, Ordering::Relaxed);
            self.counts.overloaded_published = self.counts.overloaded;
        }
        if let Some(t) = self.buffer.front().map(|b| b.0) {
            let c = self.cap.as_mut().expect("a source that runs holds a capability");
            if t >= *c.time() {
                c.downgrade(&t);
            }
        }
        Ok(())
    }

    /// Emits a batch drop_oldest had buffered (it was counted as read when buffered).
    fn emit_buffered(&mut self, time: u64, mut batch: Batch, emit: &mut dyn FnMut(&Capability<u64>, u64, Batch)) -> Result<()> {
        let t0 = Instant::now();
        self.counts.invalid += check_invalid(&mut batch, self.policy, &self.location())?;
        self.account(&batch, t0);
        self.give(time, batch, emit);
        Ok(())
    }

    /// Reads the next batch (or takes the held-back one) and emits it unless it falls at or
    /// after `below` (a checkpoint's target). Returns whether more may follow.
    fn read_and_emit(&mut self, below: Option<u64>, emit: &mut dyn FnMut(&Capability<u64>, u64, Batch)) -> Result<bool> {
        let t0 = Instant::now();
        let next = match self.lookahead.take() {
            Some(l) => Some(l),
            None => self.reader.as_mut().expect("a source that runs has a reader").next_batch()?,
        };
        let Some((time, mut batch)) = next else {
            return Ok(false);
        };
        if below.is_some_and(|t| time >= t) {
            self.lookahead = Some((time, batch));
            return Ok(true);
        }
        self.position.batches += 1;
        self.position.rows += batch.rows() as u64;
        self.position.end_time = self.position.end_time.max(time + 1);
        let promised = *self.cap.as_ref().expect("a source that runs holds a capability").time();
        if time < promised {
            return Err(EngineError::Runtime(format!(
                "`{}` produced time {time} after promising times >= {promised}",
                self.name
            )));
        }
        if let Batch::Dense(f) = &mut batch {
            f.arrival_ns.get_or_insert_with(crate::frame::now_ns);
        }
        let dropped_now = check_invalid(&mut batch, self.policy, &self.location())?;
        self.counts.invalid += dropped_now;
        self.counts.read += batch.rows() as u64 + dropped_now;
        self.account(&batch, t0);
        if let Some(m) = &self.live {
            m.dropped_invalid.fetch_add(dropped_now, Ordering::Relaxed);
        }
        if let Some(p) = &self.shared.progress {
            p.rows_read.fetch_add(batch.rows() as u64, Ordering::Relaxed);
        }
        self.give(time, batch, emit);
        Ok(self.lookahead.is_some() || self.reader.as_ref().and_then(|r| r.next_time()).is_some())
    }

    /// Counts an emitted batch in the report and on `/metrics`.
    fn account(&mut self, batch: &Batch, t0: Instant) {
        let (rows, bytes) = (batch.rows() as u64, batch.payload_bytes() as u64);
        self.stats.rows_out += rows;
        self.stats.bytes_in += bytes;
        if let Some(m) = &self.live {
            m.batch(0, rows, bytes, t0.elapsed());
        }
    }

    fn give(&self, time: u64, batch: Batch, emit: &mut dyn FnMut(&Capability<u64>, u64, Batch)) {
        if batch.rows() > 0 || batch.is_end() {
            self.shared.observe(&self.name, &batch);
            emit(self.cap.as_ref().expect("a source that runs holds a capability"), time, batch);
        }
    }
}

/// Resuming: skips the batches the reader had emitted before the checkpoint and checks that the
/// data still agree with the saved position.
fn skip_to(r: &mut dyn SourceReader, p: &SourcePosition) -> Result<()> {
    let rows = r.skip_batches(p.batches)?;
    if rows != p.rows {
        return Err(EngineError::Checkpoint(format!(
            "the {} batches it had emitted hold {rows} rows now, {} when the checkpoint was taken: its data changed since",
            p.batches, p.rows
        )));
    }
    // Some readers only learn they are exhausted when asked for one more batch.
    if p.next_time.is_none() && r.next_time().is_some() && r.next_batch()?.is_some() {
        return Err(EngineError::Checkpoint(format!(
            "the checkpoint says it had ended after {} batches, but it has more: its data changed since",
            p.batches
        )));
    }
    // `next_time` is only a lower bound, then and now: a reader that had emitted the last batch of
    // a row group may have said the group's end where the next batch starts later (its next row
    // group), and one that had not yet learned it was exhausted may know it now. Two lower bounds
    // of the same next batch cannot be compared; the rows skipped and the input fingerprints are
    // what tell a change. Only more data after a recorded end is inconsistent.
    if p.next_time.is_none() && r.next_time().is_some() {
        return Err(EngineError::Checkpoint(format!(
            "after skipping the {} batches it had emitted, the next event time is {:?}, but the checkpoint says {:?}: its data changed since",
            p.batches,
            r.next_time(),
            p.next_time
        )));
    }
    Ok(())
}
