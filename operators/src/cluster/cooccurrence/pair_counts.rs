//! Incremental co-occurrence counts on differential dataflow.
//!
//! Each closed window contributes its set of firing features: `+1` for every feature and every
//! unordered pair of them. When a window leaves the sliding span the same updates come back as
//! `−1`. Differential dataflow keeps the counts in arrangements (`pairs`, `singles`), consolidating
//! additions and retractions, and compacts history as the epoch advances.
//!
//! With a component threshold set, the same dataflow maintains the graph of pairs whose Jaccard
//! or Dice affinity reaches it, and its connected components by label propagation in a
//! differential `iterate` (each feature takes the smallest feature id it can reach), updated
//! incrementally as windows enter and leave.
//!
//! The dataflow runs on a private single-threaded timely worker inside the operator instance
//! (the runtime already routes each stream to one worker).

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::operators::iterate::Iterate;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::{KeySpine, ValSpine};
use differential_dataflow::trace::TraceReader;
use timely::communication::allocator::thread::Thread;
use timely::communication::Allocator;
use timely::dataflow::operators::probe::Handle;
use timely::dataflow::operators::Probe;
use timely::progress::frontier::{Antichain, AntichainRef};
use timely::worker::Worker;
use timely::WorkerConfig;

/// The affinity that decides which pairs join a component (both need no count of windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeMeasure {
    /// `n11 / (n_a + n_b − n11)`.
    Jaccard,
    /// `2 n11 / (n_a + n_b)`.
    Dice,
}

impl EdgeMeasure {
    fn value(self, n11: isize, na: isize, nb: isize) -> f64 {
        let (n11, na, nb) = (n11 as f64, na as f64, nb as f64);
        match self {
            EdgeMeasure::Jaccard => n11 / (na + nb - n11).max(1.0),
            EdgeMeasure::Dice => 2.0 * n11 / (na + nb).max(1.0),
        }
    }
}

type PairTrace = TraceAgent<KeySpine<(u32, u32), u64, isize>>;
type SingleTrace = TraceAgent<KeySpine<u32, u64, isize>>;
type LabelTrace = TraceAgent<ValSpine<u32, u32, u64, isize>>;

/// Pair and feature counts over the windows currently in the span, kept by differential dataflow.
pub struct PairCounter {
    worker: Worker,
    pairs: InputSession<u64, (u32, u32), isize>,
    singles: InputSession<u64, u32, isize>,
    pair_trace: PairTrace,
    single_trace: SingleTrace,
    label_trace: Option<LabelTrace>,
    probe: Handle<u64>,
    epoch: u64,
}

impl PairCounter {
    /// A counter; with `components = Some((measure, threshold))` it also maintains connected
    /// components of the pairs whose affinity is at least `threshold`.
    pub fn new(components: Option<(EdgeMeasure, f64)>) -> PairCounter {
        let alloc = Allocator::Thread(Thread::default());
        let mut worker = Worker::new(WorkerConfig::default(), alloc, Some(std::time::Instant::now()));
        let probe = Handle::new();
        let (pairs, singles, pair_trace, single_trace, label_trace) = worker.dataflow::<u64, _, _>(|scope| {
            let (pairs_in, pairs) = scope.new_collection::<(u32, u32), isize>();
            let (singles_in, singles) = scope.new_collection::<u32, isize>();
            let pair_arr = pairs.arrange_by_self();
            let single_arr = singles.arrange_by_self();
            pair_arr.stream.clone().probe_with(&probe);
            single_arr.stream.clone().probe_with(&probe);
            let label_trace = components.map(|(measure, threshold)| {
                let pc = pair_arr.clone().count_total();
                let sc = single_arr.clone().count_total();
                let edges = pc
                    .map(|((a, b), n)| (a, (b, n)))
                    .join_map(sc.clone(), |&a, &(b, n), &na| (b, (a, n, na)))
                    .join_map(sc.clone(), |&b, &(a, n, na), &nb| (a, b, n, na, nb))
                    .filter(move |&(_, _, n, na, nb)| measure.value(n, na, nb) >= threshold)
                    .flat_map(|(a, b, ..)| [(a, b), (b, a)]);
                let nodes = sc.map(|(f, _)| (f, f));
                let labels = nodes.clone().iterate(|inner_scope, inner| {
                    let edges = edges.enter(inner_scope);
                    let nodes = nodes.enter(inner_scope);
                    inner
                        .join_map(edges, |_f, &label, &to| (to, label))
                        .concat(nodes)
                        .reduce(|_f, labels, out| out.push((*labels[0].0, 1)))
                });
                let arr = labels.arrange_by_key();
                arr.stream.clone().probe_with(&probe);
                arr.trace
            });
            (pairs_in, singles_in, pair_arr.trace, single_arr.trace, label_trace)
        });
        PairCounter {
            worker,
            pairs,
            singles,
            pair_trace,
            single_trace,
            label_trace,
            probe,
            epoch: 0,
        }
    }

    /// Adds (`diff = 1`) or retracts (`diff = −1`) one window's firing features, sorted and unique.
    pub fn update(&mut self, features: &[u32], diff: isize) {
        for (i, &a) in features.iter().enumerate() {
            self.singles.update(a, diff);
            for &b in &features[i + 1..] {
                self.pairs.update((a, b), diff);
            }
        }
    }

    /// Adds counts as they are, e.g. those of a checkpoint: each pair and feature with its
    /// number of windows. Call [`PairCounter::settle`] afterwards.
    pub fn load(&mut self, pairs: &[((u32, u32), u64)], features: &[(u32, u64)]) {
        for &(p, n) in pairs {
            self.pairs.update(p, n as isize);
        }
        for &(f, n) in features {
            self.singles.update(f, n as isize);
        }
    }

    /// Closes the current epoch and runs the dataflow until every count reflects it; history
    /// before it is compacted away.
    pub fn settle(&mut self) {
        self.epoch += 1;
        self.pairs.advance_to(self.epoch);
        self.singles.advance_to(self.epoch);
        self.pairs.flush();
        self.singles.flush();
        let epoch = self.epoch;
        while self.probe.less_than(&epoch) {
            self.worker.step();
        }
        let frontier = [epoch];
        self.pair_trace.set_logical_compaction(AntichainRef::new(&frontier));
        self.pair_trace.set_physical_compaction(AntichainRef::new(&frontier));
        self.single_trace.set_logical_compaction(AntichainRef::new(&frontier));
        self.single_trace.set_physical_compaction(AntichainRef::new(&frontier));
        if let Some(t) = &mut self.label_trace {
            t.set_logical_compaction(AntichainRef::new(&frontier));
            t.set_physical_compaction(AntichainRef::new(&frontier));
        }
    }

    /// Current count of every pair `(a, b)`, `a < b`, that co-occurs in some window of the span,
    /// sorted by pair. Call after [`PairCounter::settle`].
    pub fn pair_counts(&mut self) -> Vec<((u32, u32), u64)> {
        read_keys(&mut self.pair_trace)
    }

    /// Current count of windows in which each feature fires (features with count > 0), sorted.
    pub fn feature_counts(&mut self) -> Vec<(u32, u64)> {
        read_keys(&mut self.single_trace)
    }

    /// The component label (smallest feature id reachable) of every firing feature, sorted by
    /// feature; `None` when components were not asked for.
    pub fn components(&mut self) -> Option<Vec<(u32, u32)>> {
        let trace = self.label_trace.as_mut()?;
        let batches = trace.batches_through(Antichain::new().borrow()).unwrap_or_default();
        let (mut cursor, storage) = cursor_list(batches);
        let mut out = Vec::new();
        while cursor.key_valid(&storage) {
            let f = *cursor.key(&storage);
            while cursor.val_valid(&storage) {
                let label = *cursor.val(&storage);
                let mut total = 0isize;
                cursor.map_times(&storage, |_, r| total += *r);
                if total > 0 {
                    out.push((f, label));
                }
                cursor.step_val(&storage);
            }
            cursor.step_key(&storage);
        }
        Some(out)
    }
}

fn read_keys<K: Ord + Clone + 'static>(trace: &mut TraceAgent<KeySpine<K, u64, isize>>) -> Vec<(K, u64)> {
    let batches = trace.batches_through(Antichain::new().borrow()).unwrap_or_default();
    let (mut cursor, storage) = cursor_list(batches);
    let mut out = Vec::new();
    while cursor.key_valid(&storage) {
        let key = cursor.key(&storage).clone();
        let mut total = 0isize;
        while cursor.val_valid(&storage) {
            cursor.map_times(&storage, |_, r| total += *r);
            cursor.step_val(&storage);
        }
        if total > 0 {
            out.push((key, total as u64));
        }
        cursor.step_key(&storage);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_additions_and_retractions() {
        let mut pc = PairCounter::new(Some((EdgeMeasure::Jaccard, 0.5)));
        pc.update(&[1, 2, 3], 1);
        pc.update(&[1, 2], 1);
        pc.update(&[7, 8], 1);
        pc.settle();
        assert_eq!(pc.pair_counts(), vec![((1, 2), 2), ((1, 3), 1), ((2, 3), 1), ((7, 8), 1)]);
        assert_eq!(pc.feature_counts(), vec![(1, 2), (2, 2), (3, 1), (7, 1), (8, 1)]);
        // Jaccard(1,2) = 1, (1,3) = 0.5, (2,3) = 0.5, (7,8) = 1: components {1,2,3}, {7,8}.
        assert_eq!(pc.components().unwrap(), vec![(1, 1), (2, 1), (3, 1), (7, 7), (8, 7)]);
        pc.update(&[1, 2, 3], -1);
        pc.settle();
        assert_eq!(pc.pair_counts(), vec![((1, 2), 1), ((7, 8), 1)]);
        assert_eq!(pc.components().unwrap(), vec![(1, 1), (2, 1), (7, 7), (8, 7)]);
    }

    #[test]
    fn loaded_counts_equal_the_updates_they_came_from() {
        let mut a = PairCounter::new(Some((EdgeMeasure::Dice, 0.6)));
        for w in [&[1u32, 2, 3][..], &[1, 2], &[2, 3, 9], &[7, 8]] {
            a.update(w, 1);
        }
        a.settle();
        let mut b = PairCounter::new(Some((EdgeMeasure::Dice, 0.6)));
        b.load(&a.pair_counts(), &a.feature_counts());
        b.settle();
        assert_eq!(b.pair_counts(), a.pair_counts());
        assert_eq!(b.feature_counts(), a.feature_counts());
        assert_eq!(b.components(), a.components());
        // Both keep counting alike: retracting a window from the loaded counts.
        a.update(&[1, 2], -1);
        b.update(&[1, 2], -1);
        a.settle();
        b.settle();
        assert_eq!(b.pair_counts(), a.pair_counts());
        assert_eq!(b.components(), a.components());
    }
}
