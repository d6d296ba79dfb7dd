//! Incremental co-occurrence counts.
//!
//! Each closed window contributes its set of firing features: `+1` for every feature and every
//! unordered pair of them. When a window leaves the sliding span the same updates come back as
//! `−1`.
//!
//! Pair counts live in sorted runs of `(pair key, count)` (a log-structured merge): an epoch's
//! updates are radix-sorted by packed pair key, consolidated, and added as one run; a run is
//! merged into the one before it unless that one is more than four times its size, summing
//! counts and dropping pairs that reach zero (`runs.rs`; 8-byte entries while keys and counts
//! fit). Every update costs a few sequential passes instead of a random access into a table of
//! millions of pairs (a hash map was slower than differential dataflow here, and both far
//! slower than this). Feature counts are a plain array.
//!
//! With a component threshold set, components are found when asked for (each report): one
//! pass over the merged run joins, by union-find, every pair whose Jaccard or Dice affinity
//! (with the current feature counts) reaches it; each component is labelled by its smallest
//! feature id. Reports already read every pair, so this adds one more pass. Keeping the
//! components incrementally in a differential dataflow (label propagation in `iterate`) was
//! measured first and was far slower: the edge set must be re-read at every report anyway (a
//! feature's new count can move every pair it is in across the threshold), and retracting
//! labels along long chains of rare pairs cost seconds per report (0.03–0.36× scipy.sparse
//! with `csgraph.connected_components` at 50k tokens).

use super::runs::{merge_into, units_to_counts, Entry, Key, RunSet, Runs};
use super::units::{Unit, Units};

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

/// Pair and feature counts over the windows currently in the span.
pub struct PairCounter {
    /// Bits of `b` in a key (enough for every feature id).
    shift: u32,
    /// This epoch's window updates, not yet sorted (`units.rs`).
    pending: Units,
    /// Counts added as they are ([`PairCounter::load`]).
    loaded: Vec<(Key, i64)>,
    /// Sorted, consolidated runs of pair counts.
    runs: Runs,
    /// Windows each feature fires in, by feature id.
    singles: Vec<i64>,
    /// The affinity and threshold of the component graph, when asked for.
    components: Option<(EdgeMeasure, f64)>,
}

impl PairCounter {
    /// A counter of pairs among feature ids below `n_features`; with
    /// `components = Some((measure, threshold))` it also maintains connected components of the
    /// pairs whose affinity is at least `threshold`.
    pub fn new(components: Option<(EdgeMeasure, f64)>, n_features: usize) -> PairCounter {
        // A unit is `(a << shift | b) << 1`: two ids and a sign bit in 64 bits.
        assert!(n_features <= 1 << 31, "{n_features} features do not fit a pair key");
        let shift = (usize::BITS - n_features.saturating_sub(1).leading_zeros()).max(1);
        PairCounter {
            shift,
            pending: Units::new(2 * shift + 1),
            loaded: Vec::new(),
            runs: Runs::new(2 * shift),
            singles: vec![0; n_features],
            components,
        }
    }

    fn key(&self, a: u32, b: u32) -> Key {
        debug_assert!(a < b && (b as usize) < self.singles.len());
        ((a as u64) << self.shift) | b as u64
    }

    /// Adds (`diff = 1`) or retracts (`diff = −1`) one window's firing features, sorted and
    /// unique, all below the counter's `n_features`.
    pub fn update(&mut self, features: &[u32], diff: isize) {
        assert!(
            features.last().is_none_or(|&f| (f as usize) < self.singles.len()),
            "feature id {:?} out of range for {} features",
            features.last(),
            self.singles.len()
        );
        let d = diff as i64;
        let retract = u64::from(diff < 0);
        for (i, &a) in features.iter().enumerate() {
            self.singles[a as usize] += d;
            for &b in &features[i + 1..] {
                let unit = self.key(a, b) << 1 | retract;
                self.pending.push(unit, diff.unsigned_abs());
            }
        }
    }

    /// Adds counts as they are, e.g. those of a checkpoint: each pair and feature with its
    /// number of windows. Call [`PairCounter::settle`] afterwards.
    pub fn load(&mut self, pairs: &[((u32, u32), u64)], features: &[(u32, u64)]) {
        for &((a, b), n) in pairs {
            let key = self.key(a, b);
            self.loaded.push((key, n as i64));
        }
        for &(f, n) in features {
            self.singles[f as usize] += n as i64;
        }
    }

    /// Closes the current epoch: its updates become one consolidated run.
    pub fn settle(&mut self) {
        let loaded_magnitude: u64 = self.loaded.iter().map(|e| e.1.unsigned_abs()).sum();
        self.runs.reserve_counts(self.pending.len() as u64 + loaded_magnitude);
        let mut loaded = std::mem::take(&mut self.loaded);
        loaded.sort_unstable_by_key(|e| e.0);
        consolidate(&mut loaded);
        let bits = 2 * self.shift + 1;
        match &mut self.pending {
            Units::Narrow(buf) => {
                buf.sort(bits);
                add_epoch(&mut self.runs, &buf.units, &loaded);
            }
            Units::Wide(buf) => {
                buf.sort(bits);
                add_epoch(&mut self.runs, &buf.units, &loaded);
            }
        }
        self.pending.clear();
    }

    /// Current count of every pair `(a, b)`, `a < b`, that co-occurs in some window of the span,
    /// sorted by pair. Call after [`PairCounter::settle`]; the runs are merged into one.
    pub fn pair_counts(&mut self) -> Vec<((u32, u32), u64)> {
        let shift = self.shift;
        match &mut self.runs {
            Runs::Narrow { set, .. } => positive_counts(set.merged(), shift),
            Runs::Wide(set) => positive_counts(set.merged(), shift),
        }
    }

    /// Current count of windows in which each feature fires (features with count > 0), sorted.
    pub fn feature_counts(&mut self) -> Vec<(u32, u64)> {
        self.singles
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(f, &n)| (f as u32, n as u64))
            .collect()
    }

    /// The component label (smallest feature id reachable) of every firing feature, sorted by
    /// feature; `None` when components were not asked for. Call after [`PairCounter::settle`].
    pub fn components(&mut self) -> Option<Vec<(u32, u32)>> {
        let (measure, threshold) = self.components?;
        let (shift, singles) = (self.shift, &self.singles);
        // Union-find whose roots are their sets' smallest ids: a union hangs the larger root
        // under the smaller.
        let mut parent: Vec<u32> = (0..singles.len() as u32).collect();
        let mut join = |a: u32, b: u32| {
            let (ra, rb) = (find_root(&mut parent, a), find_root(&mut parent, b));
            parent[ra.max(rb) as usize] = ra.min(rb);
        };
        match &mut self.runs {
            Runs::Narrow { set, .. } => join_affine_pairs(set.merged(), shift, singles, measure, threshold, &mut join),
            Runs::Wide(set) => join_affine_pairs(set.merged(), shift, singles, measure, threshold, &mut join),
        }
        let firing = (0..singles.len() as u32).filter(|&f| singles[f as usize] > 0);
        Some(firing.map(|f| (f, find_root(&mut parent, f))).collect())
    }
}

/// Sums the counts of equal keys in a sorted run and drops those that reach zero.
fn consolidate(run: &mut Vec<(Key, i64)>) {
    let mut out = 0;
    for i in 0..run.len() {
        if out > 0 && run[out - 1].0 == run[i].0 {
            run[out - 1].1 += run[i].1;
        } else {
            if out > 0 && run[out - 1].1 == 0 {
                out -= 1;
            }
            run[out] = run[i];
            out += 1;
        }
    }
    if out > 0 && run[out - 1].1 == 0 {
        out -= 1;
    }
    run.truncate(out);
}

/// The pair `(a, b)` of a key (`a << shift | b`).
fn pair_of(key: Key, shift: u32) -> (u32, u32) {
    ((key >> shift) as u32, (key & ((1u64 << shift) - 1)) as u32)
}

/// Adds an epoch to `runs`: the sorted update `units` and the sorted, consolidated `loaded`
/// counts, as one run.
fn add_epoch<T: Unit>(runs: &mut Runs, units: &[T], loaded: &[(Key, i64)]) {
    match runs {
        Runs::Narrow { set, .. } => add_run(set, units, loaded),
        Runs::Wide(set) => add_run(set, units, loaded),
    }
}

/// [`add_epoch`] for runs of one entry width.
fn add_run<T: Unit, E: Entry>(set: &mut RunSet<E>, units: &[T], loaded: &[(Key, i64)]) {
    let mut delta = set.take_buffer(units.len());
    units_to_counts(units, &mut delta);
    if !loaded.is_empty() {
        let loaded: Vec<E> = loaded.iter().map(|&(k, n)| E::new(k, n)).collect();
        let mut merged = set.take_buffer(delta.len() + loaded.len());
        merge_into(&delta, &loaded, &mut merged);
        set.give_back(std::mem::replace(&mut delta, merged));
    }
    set.push(delta);
}

/// Calls `join(a, b)` for every pair of a merged run whose count is positive and whose affinity,
/// with the features' counts `singles`, reaches `threshold`.
fn join_affine_pairs<E: Entry>(
    run: &[E],
    shift: u32,
    singles: &[i64],
    measure: EdgeMeasure,
    threshold: f64,
    join: &mut impl FnMut(u32, u32),
) {
    for e in run.iter().filter(|e| e.count() > 0) {
        let (a, b) = pair_of(e.key(), shift);
        let (na, nb) = (singles[a as usize] as isize, singles[b as usize] as isize);
        if measure.value(e.count() as isize, na, nb) >= threshold {
            join(a, b);
        }
    }
}

/// The root of `f`'s set, halving the path on the way.
fn find_root(parent: &mut [u32], mut f: u32) -> u32 {
    while parent[f as usize] != f {
        parent[f as usize] = parent[parent[f as usize] as usize];
        f = parent[f as usize];
    }
    f
}

/// The pairs of a merged run whose count is positive, with their counts.
fn positive_counts<E: Entry>(run: &[E], shift: u32) -> Vec<((u32, u32), u64)> {
    run.iter()
        .filter(|e| e.count() > 0)
        .map(|e| (pair_of(e.key(), shift), e.count() as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sliding span of windows fed to a `PairCounter` and to counts kept by brute force.
    struct Span {
        limit: usize,
        windows: std::collections::VecDeque<Vec<u32>>,
        /// Nonzero pair counts.
        pairs: std::collections::BTreeMap<(u32, u32), i64>,
        singles: Vec<i64>,
    }

    impl Span {
        fn new(limit: usize, n_features: usize) -> Span {
            Span {
                limit,
                windows: Default::default(),
                pairs: Default::default(),
                singles: vec![0; n_features],
            }
        }

        /// Adds window `w` (sorted, unique) to both, retracting the oldest window from both once
        /// more than `limit` are held.
        fn push(&mut self, pc: &mut PairCounter, w: Vec<u32>) {
            pc.update(&w, 1);
            self.count(&w, 1);
            self.windows.push_back(w);
            if self.windows.len() > self.limit {
                let old = self.windows.pop_front().unwrap();
                pc.update(&old, -1);
                self.count(&old, -1);
            }
        }

        fn count(&mut self, w: &[u32], d: i64) {
            for (i, &a) in w.iter().enumerate() {
                self.singles[a as usize] += d;
                for &b in &w[i + 1..] {
                    *self.pairs.entry((a, b)).or_default() += d;
                }
            }
            self.pairs.retain(|_, n| *n != 0);
        }
    }

    #[test]
    fn counts_follow_additions_and_retractions() {
        let mut pc = PairCounter::new(Some((EdgeMeasure::Jaccard, 0.5)), 16);
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

    /// Many epochs of random windows entering and leaving a sliding span (so runs of every size
    /// are merged, and counts return to zero and vanish) against counts kept in a `BTreeMap`:
    /// with 8-byte entries, 16-byte ones (keys past 32 bits), and entries that turn wide midway;
    /// 4-byte units up to 32768 features, 8-byte ones above (65536: wide units, narrow runs).
    #[test]
    fn sliding_counts_equal_a_map_of_every_window() {
        let cases = [(5usize, None), (300, None), (300, Some(2000)), (65536, None), (100_003, None)];
        for (n_features, narrow_limit) in cases {
            let mut pc = PairCounter::new(None, n_features);
            assert_eq!(pc.runs.is_narrow(), n_features <= 65536);
            assert_eq!(matches!(pc.pending, Units::Narrow(_)), n_features <= 32768);
            if let Some(limit) = narrow_limit {
                pc.runs.set_narrow_limit(limit);
            }
            let mut span = Span::new(37, n_features);
            let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ n_features as u64;
            let mut next = |m: usize| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % m as u64) as u32
            };
            for epoch in 0..40 {
                for _ in 0..(1 + epoch % 7) * 5 {
                    // Skewed ids, so pairs repeat across windows.
                    let mut w: Vec<u32> = (0..6)
                        .map(|_| {
                            let range = 1 + next(n_features) as usize;
                            next(range)
                        })
                        .collect();
                    w.sort_unstable();
                    w.dedup();
                    span.push(&mut pc, w);
                }
                pc.settle();
                if epoch % 9 == 0 || epoch == 39 {
                    let want: Vec<((u32, u32), u64)> =
                        span.pairs.iter().filter(|e| *e.1 > 0).map(|(&p, &n)| (p, n as u64)).collect();
                    assert_eq!(pc.pair_counts(), want, "{n_features} features, epoch {epoch}");
                    let want: Vec<(u32, u64)> = (0..n_features as u32)
                        .filter(|&f| span.singles[f as usize] > 0)
                        .map(|f| (f, span.singles[f as usize] as u64))
                        .collect();
                    assert_eq!(pc.feature_counts(), want);
                }
            }
            assert_eq!(pc.runs.is_narrow(), n_features <= 65536 && narrow_limit.is_none());
        }
    }

    /// Components after many epochs of windows entering and leaving a span (edges appear and
    /// vanish, components merge and split), read at irregular reports, against a union-find over
    /// counts kept in a `BTreeMap`, for both measures.
    #[test]
    fn components_follow_a_sliding_span_like_a_union_find_of_the_counts() {
        for (measure, threshold) in [(EdgeMeasure::Jaccard, 0.3), (EdgeMeasure::Dice, 0.5)] {
            let n_features = 60;
            let mut pc = PairCounter::new(Some((measure, threshold)), n_features);
            let mut span = Span::new(12, n_features);
            let mut s = 0x2545_f491_4f6c_dd1du64;
            let mut next = |m: u64| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % m) as u32
            };
            let mut reports = 0;
            for epoch in 0..120 {
                for _ in 0..1 + next(4) {
                    // Windows drawn from a few drifting groups of features, so the graph's
                    // components change as the span slides.
                    let base = (epoch / 15 * 7 + next(3) * 17) % n_features as u32;
                    let mut w: Vec<u32> = (0..2 + next(4)).map(|_| (base + next(6)) % n_features as u32).collect();
                    w.sort_unstable();
                    w.dedup();
                    span.push(&mut pc, w);
                }
                pc.settle();
                if next(3) != 0 {
                    continue;
                }
                reports += 1;
                // Union-find with the smallest id as each set's label.
                let mut parent: Vec<u32> = (0..n_features as u32).collect();
                fn root(parent: &mut [u32], f: u32) -> u32 {
                    let mut r = f;
                    while parent[r as usize] != r {
                        r = parent[r as usize];
                    }
                    parent[f as usize] = r;
                    r
                }
                for (&(a, b), &n) in &span.pairs {
                    let (na, nb) = (span.singles[a as usize] as isize, span.singles[b as usize] as isize);
                    if measure.value(n as isize, na, nb) >= threshold {
                        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                        parent[ra.max(rb) as usize] = ra.min(rb);
                    }
                }
                let want: Vec<(u32, u32)> = (0..n_features as u32)
                    .filter(|&f| span.singles[f as usize] > 0)
                    .map(|f| (f, root(&mut parent, f)))
                    .collect();
                assert_eq!(pc.components().unwrap(), want, "{measure:?}, epoch {epoch}");
            }
            assert!(reports > 20);
        }
    }

    #[test]
    fn loaded_counts_equal_the_updates_they_came_from() {
        let mut a = PairCounter::new(Some((EdgeMeasure::Dice, 0.6)), 16);
        for w in [&[1u32, 2, 3][..], &[1, 2], &[2, 3, 9], &[7, 8]] {
            a.update(w, 1);
        }
        a.settle();
        let mut b = PairCounter::new(Some((EdgeMeasure::Dice, 0.6)), 16);
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
