//! Sorted, consolidated runs of `(pair key, count)` entries: a log-structured merge of pair
//! counts (see `pair_counts.rs`), in one of two entry widths.
//!
//! A merge streams every entry of both runs through memory, so the entry's size is the merge's
//! cost: [`Narrow`] entries hold a key below 2^32 and a count that fits an `i32` in 8 bytes,
//! [`Wide`] ones any key and count in 16. [`Runs`] starts narrow where the keys allow and turns
//! wide, once, before any count could pass `i32` (see [`Runs::reserve_counts`]).

use super::units::Unit;

/// A pair key (`a << shift | b`, see `PairCounter`).
pub type Key = u64;

/// A run entry: a pair key and its count.
pub trait Entry: Copy {
    /// The pair key.
    fn key(self) -> Key;
    /// The count (windows added minus windows retracted).
    fn count(self) -> i64;
    /// An entry; `count` must fit the entry (see [`Runs::reserve_counts`]).
    fn new(key: Key, count: i64) -> Self;
}

/// 16 bytes: any key, any count.
pub type Wide = (Key, i64);

impl Entry for Wide {
    fn key(self) -> Key {
        self.0
    }
    fn count(self) -> i64 {
        self.1
    }
    fn new(key: Key, count: i64) -> Self {
        (key, count)
    }
}

/// 8 bytes: `key << 32 | count as u32`, for keys below 2^32 and counts that fit an `i32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Narrow(u64);

impl Entry for Narrow {
    fn key(self) -> Key {
        self.0 >> 32
    }
    fn count(self) -> i64 {
        self.0 as u32 as i32 as i64
    }
    fn new(key: Key, count: i64) -> Self {
        debug_assert!(key < 1 << 32 && i32::try_from(count).is_ok());
        Narrow(key << 32 | count as i32 as u32 as u64)
    }
}

/// Runs of one entry width, each more than four times the size of the next, and the buffers
/// merges left for reuse.
pub struct RunSet<E> {
    runs: Vec<Vec<E>>,
    /// Run buffers that merges left, reused for the next runs and merges: a fresh buffer of
    /// millions of pairs costs more in page faults (the kernel zeroing its pages) than the
    /// merge that fills it.
    spares: Vec<Vec<E>>,
}

/// Run buffers a set keeps for reuse (each about the size of a run it held).
const SPARE_BUFFERS: usize = 3;

impl<E: Entry> RunSet<E> {
    fn new() -> RunSet<E> {
        RunSet {
            runs: Vec::new(),
            spares: Vec::new(),
        }
    }

    /// Adds a consolidated run (from [`RunSet::take_buffer`]) and merges while the run before
    /// the newest is at most four times its size (merging this eagerly lets a sliding span's
    /// retractions cancel their additions early, which a factor of two did not).
    pub fn push(&mut self, run: Vec<E>) {
        if run.is_empty() {
            self.give_back(run);
            return;
        }
        self.runs.push(run);
        while let [.., older, newer] = &self.runs[..] {
            if older.len() > 4 * newer.len() {
                break;
            }
            self.merge_last_two();
        }
    }

    /// Every run merged into one; its entries, sorted by key, without zero counts.
    pub fn merged(&mut self) -> &[E] {
        while self.runs.len() > 1 {
            self.merge_last_two();
        }
        self.runs.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// Merges the two newest runs into one, in a spare buffer.
    fn merge_last_two(&mut self) {
        let newer = self.runs.pop().expect("two runs");
        let older = self.runs.pop().expect("two runs");
        let mut out = self.take_buffer(older.len() + newer.len());
        merge_into(&older, &newer, &mut out);
        self.runs.push(out);
        self.give_back(older);
        self.give_back(newer);
    }

    /// An empty run buffer for up to `len` entries: the smallest spare that holds them, else
    /// the largest spare grown, else a new one. Grown with a quarter to spare, so the next
    /// merge of about the same size fits without moving.
    pub fn take_buffer(&mut self, len: usize) -> Vec<E> {
        let cap = |i: usize| self.spares[i].capacity();
        let fits = (0..self.spares.len()).filter(|&i| cap(i) >= len).min_by_key(|&i| cap(i));
        let pick = fits.or_else(|| (0..self.spares.len()).max_by_key(|&i| cap(i)));
        let mut buffer = pick.map(|i| self.spares.swap_remove(i)).unwrap_or_default();
        if buffer.capacity() < len {
            buffer.reserve_exact(len + len / 4);
        }
        buffer
    }

    /// Keeps `buffer` for reuse: the [`SPARE_BUFFERS`] largest are kept.
    pub fn give_back(&mut self, mut buffer: Vec<E>) {
        buffer.clear();
        self.spares.push(buffer);
        if self.spares.len() > SPARE_BUFFERS {
            let smallest = (0..self.spares.len())
                .min_by_key(|&i| self.spares[i].capacity())
                .expect("spares");
            self.spares.swap_remove(smallest);
        }
    }
}

/// The runs of a counter, narrow while keys and counts fit 8 bytes.
pub enum Runs {
    /// 8-byte entries.
    Narrow {
        /// The runs.
        set: RunSet<Narrow>,
        /// Sum of the magnitudes of every count change so far: no partial sum in any run can
        /// exceed it, so while it stays within `limit` every count fits an `i32`.
        changes: u64,
        /// `i32::MAX` (lower in tests, to turn wide early).
        limit: u64,
    },
    /// 16-byte entries.
    Wide(RunSet<Wide>),
}

impl Runs {
    /// Runs for keys of `key_bits` bits: narrow when they fit 32.
    pub fn new(key_bits: u32) -> Runs {
        if key_bits <= 32 {
            Runs::Narrow {
                set: RunSet::new(),
                changes: 0,
                limit: i32::MAX as u64,
            }
        } else {
            Runs::Wide(RunSet::new())
        }
    }

    /// Makes room for count changes of total magnitude `more` (the next epoch's): turns the
    /// runs wide first when narrow counts could overflow.
    pub fn reserve_counts(&mut self, more: u64) {
        if let Runs::Narrow { set, changes, limit } = self {
            *changes = changes.saturating_add(more);
            if *changes > *limit {
                let mut wide = RunSet::new();
                for run in std::mem::take(&mut set.runs) {
                    wide.runs.push(run.iter().map(|e| (e.key(), e.count())).collect());
                }
                *self = Runs::Wide(wide);
            }
        }
    }

    /// Turns wide once count changes pass `limit` (tests: the switch without 2^31 updates).
    #[cfg(test)]
    pub fn set_narrow_limit(&mut self, new: u64) {
        if let Runs::Narrow { limit, .. } = self {
            *limit = new;
        }
    }

    /// Whether the entries are 8 bytes.
    #[cfg(test)]
    pub fn is_narrow(&self) -> bool {
        matches!(self, Runs::Narrow { .. })
    }
}

/// Sorted update units (`key << 1`, `| 1` for a retraction) as a consolidated run of counts, in
/// `run` (emptied first). Branch-free per unit, like [`merge_into`]: each step writes the
/// current pair's count to its slot, and the slot moves on only when a new pair starts after
/// a non-zero count.
pub fn units_to_counts<T: Unit, E: Entry>(units: &[T], run: &mut Vec<E>) {
    run.clear();
    let Some(&first) = units.first() else { return };
    run.reserve(units.len());
    let slots = &mut run.spare_capacity_mut()[..units.len()];
    let (mut o, mut key, mut count) = (0, first.into() >> 1, 0i64);
    for &u in units {
        let u: u64 = u.into();
        let (k, d) = (u >> 1, 1 - 2 * (u & 1) as i64);
        let new = k != key;
        slots[o].write(E::new(key, count));
        o += usize::from(new && count != 0);
        count = if new { d } else { count + d };
        key = k;
    }
    slots[o].write(E::new(key, count));
    o += usize::from(count != 0);
    // SAFETY: slots 0..o were written (slot `o` is written before `o` moves past it), and
    // o <= the number of distinct keys <= units.len() <= capacity.
    unsafe { run.set_len(o) };
}

/// Merges two sorted, consolidated runs into `out`, summing equal keys and dropping zero counts.
/// Branch-free per step (which side advances is data, not a jump), since the two runs
/// interleave unpredictably.
/// Writes into `out`'s spare capacity (not zero-filled first: a reused buffer's pages need no
/// writing twice).
pub fn merge_into<E: Entry>(a: &[E], b: &[E], out: &mut Vec<E>) {
    out.clear();
    out.reserve(a.len() + b.len());
    let slots = &mut out.spare_capacity_mut()[..a.len() + b.len()];
    let (mut i, mut j, mut o) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        let (take_a, take_b) = (x.key() <= y.key(), y.key() <= x.key());
        let key = if take_a { x.key() } else { y.key() };
        let count = if take_a { x.count() } else { 0 } + if take_b { y.count() } else { 0 };
        slots[o].write(E::new(key, count));
        o += usize::from(count != 0);
        i += usize::from(take_a);
        j += usize::from(take_b);
    }
    for &e in a[i..].iter().chain(&b[j..]) {
        slots[o].write(e);
        o += 1;
    }
    // SAFETY: slots 0..o were written above (each step writes slot `o` before `o` may move
    // past it), and o <= a.len() + b.len() <= capacity.
    unsafe { out.set_len(o) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_entries_keep_keys_and_signed_counts() {
        for (key, count) in [
            (0u64, 1i64),
            (u32::MAX as u64, -1),
            (12345, i32::MAX as i64),
            (7, i32::MIN as i64),
        ] {
            let e = Narrow::new(key, count);
            assert_eq!((e.key(), e.count()), (key, count));
        }
        // Keys order the entries whatever the counts.
        assert!(Narrow::new(3, -5).key() < Narrow::new(4, 1).key());
    }

    #[test]
    fn narrow_and_wide_merges_agree() {
        let a: Vec<Wide> = vec![(1, 2), (3, -1), (5, 4), (9, 1)];
        let b: Vec<Wide> = vec![(0, 1), (3, 1), (5, -1), (10, -2)];
        let mut wide = Vec::new();
        merge_into(&a, &b, &mut wide);
        assert_eq!(wide, vec![(0, 1), (1, 2), (5, 3), (9, 1), (10, -2)]);
        let narrow = |r: &[Wide]| r.iter().map(|&(k, c)| Narrow::new(k, c)).collect::<Vec<_>>();
        let mut out = Vec::new();
        merge_into(&narrow(&a), &narrow(&b), &mut out);
        assert_eq!(out, narrow(&wide));
    }

    #[test]
    fn units_consolidate_and_drop_zero_counts() {
        // (key 2: +1 +1), (key 3: +1 −1), (key 4: −1), (key 7: +1)
        let units: [u64; 6] = [2 << 1, 2 << 1, 3 << 1, 3 << 1 | 1, 4 << 1 | 1, 7 << 1];
        let mut wide: Vec<Wide> = Vec::new();
        units_to_counts(&units, &mut wide);
        assert_eq!(wide, vec![(2, 2), (4, -1), (7, 1)]);
        let mut narrow: Vec<Narrow> = Vec::new();
        units_to_counts(&units, &mut narrow);
        assert_eq!(narrow, vec![Narrow::new(2, 2), Narrow::new(4, -1), Narrow::new(7, 1)]);
        let narrow_units: Vec<u32> = units.iter().map(|&u| u as u32).collect();
        units_to_counts(&narrow_units, &mut narrow);
        assert_eq!(narrow, vec![Narrow::new(2, 2), Narrow::new(4, -1), Narrow::new(7, 1)]);
        units_to_counts(&[5u64 << 1, 5 << 1 | 1], &mut wide);
        assert!(wide.is_empty());
        units_to_counts::<u32, Wide>(&[], &mut wide);
        assert!(wide.is_empty());
    }

    #[test]
    fn runs_turn_wide_before_a_count_could_overflow_and_keep_their_entries() {
        let mut runs = Runs::new(32);
        assert!(runs.is_narrow());
        runs.set_narrow_limit(10);
        runs.reserve_counts(6);
        let Runs::Narrow { set, .. } = &mut runs else {
            panic!("narrow")
        };
        let mut run = set.take_buffer(2);
        run.extend([Narrow::new(1, 4), Narrow::new(8, 2)]);
        set.push(run);
        runs.reserve_counts(5);
        let Runs::Wide(set) = &mut runs else {
            panic!("wide past the limit")
        };
        assert_eq!(set.merged(), &[(1, 4), (8, 2)]);
        assert!(!Runs::new(33).is_narrow());
    }
}
