//! The activation and sparsification of `sae_encode` on the CPU: each row's kept latents,
//! chosen from the pre-activations `z` one column tile at a time while the tile is in cache
//! (the packed kernel hands over 256 columns of every row of a block), so the dense
//! `rows × d_sae` matrix is never written for the packed kernel. Each thread selects from its
//! own columns and sorts its rows; the rows are then merged.

use std::collections::HashSet;

use super::model::Activation;
use super::Csr;

/// Values screened at once against a TopK row's lowest kept value.
const SCREEN: usize = 16;

/// One thread's kept `(latent id, value)` pairs per row of a block, from the columns it was
/// offered (ids ascending within a thread; TopK rows hold candidates for the `k` best).
pub(crate) struct RowSelection {
    rows: Vec<Vec<(u32, f32)>>,
    /// Per TopK row, the value a latent must beat to be a candidate (the `k`-th best at the
    /// row's last selection).
    floors: Vec<f32>,
    /// The instructions rows are tested with (the TopK screen and the threshold tests).
    screen: Screen,
}

impl RowSelection {
    /// An empty selection for `rows` rows.
    pub(crate) fn new(rows: usize) -> RowSelection {
        RowSelection {
            rows: (0..rows).map(|_| Vec::new()).collect(),
            floors: vec![f32::NEG_INFINITY; rows],
            screen: Screen::widest(),
        }
    }

    /// Offers columns `col0..col0 + cols` of every row: row `r`'s pre-activations are
    /// `z[r * stride..][..cols]`; `scale` and `shift` (per latent, whole width) give
    /// `h = scale · z + shift`, which the activation tests and keeps.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn offer(
        &mut self,
        activation: &Activation,
        scale: &[f32],
        shift: &[f32],
        z: &[f32],
        stride: usize,
        col0: usize,
        cols: usize,
    ) {
        let (scale, shift) = (&scale[col0..col0 + cols], &shift[col0..col0 + cols]);
        for (r, kept) in self.rows.iter_mut().enumerate() {
            let zr = &z[r * stride..r * stride + cols];
            let (threshold, gate) = match activation {
                Activation::Relu => (None, None),
                Activation::JumpRelu { threshold } => (Some(&threshold[col0..col0 + cols]), None),
                Activation::Gated { b_gate, .. } => (None, Some(&b_gate[col0..col0 + cols])),
                Activation::TopK { k } => {
                    let mut row = TopKRow {
                        kept,
                        floor: &mut self.floors[r],
                        k: *k,
                    };
                    offer_top_k(&mut row, zr, scale, shift, col0, self.screen);
                    continue;
                }
                Activation::GroupMax { group, .. } => {
                    keep_group_max(kept, col0, zr, scale, shift, *group);
                    continue;
                }
            };
            let mut j0 = 0;
            // SAFETY: AVX2 is present where the screen is not scalar (`Screen::widest`); the
            // slices all have length `cols`.
            #[cfg(target_arch = "x86_64")]
            if self.screen != Screen::Scalar {
                j0 = unsafe { keep_above_avx2(kept, col0, zr, scale, shift, threshold, gate) };
            }
            let (zr, scale, shift) = (&zr[j0..], &scale[j0..], &shift[j0..]);
            match (threshold, gate) {
                (Some(t), _) => keep_where(kept, col0 + j0, zr, scale, shift, |j, _, v| v > t[j0 + j] && v > 0.0),
                (None, Some(g)) => keep_where(kept, col0 + j0, zr, scale, shift, |j, zv, v| zv + g[j0 + j] > 0.0 && v > 0.0),
                (None, None) => keep_where(kept, col0 + j0, zr, scale, shift, |_, _, v| v > 0.0),
            }
        }
    }

    /// Ends the selection on the thread that made it: a TopK row keeps its `k` best
    /// candidates; every row keeps positive values only, sorted largest first (ties by id).
    pub(crate) fn finish(&mut self, activation: &Activation) {
        for kept in &mut self.rows {
            match activation {
                Activation::TopK { k } => {
                    if kept.len() > *k {
                        kept.select_nth_unstable_by(*k - 1, rank);
                        kept.truncate(*k);
                    }
                    kept.retain(|e| e.1 > 0.0);
                }
                Activation::GroupMax { group, .. } => {
                    kept.sort_unstable_by(rank);
                    one_per_group(kept, *group);
                }
                _ => {}
            }
            kept.sort_unstable_by(rank);
        }
    }

    /// Appends the block's rows to `csr`, merging the finished selections of the threads that
    /// shared its columns (`parts`, any order; see [`RowSelection::finish`]): a TopK row keeps
    /// the `k` best of them. Rows are merged on up to `threads` threads.
    pub(crate) fn append(parts: &[RowSelection], activation: &Activation, csr: &mut Csr, threads: usize) {
        let rows = parts.first().map_or(0, |p| p.rows.len());
        let limit = match activation {
            Activation::TopK { k } | Activation::GroupMax { k, .. } => *k,
            _ => usize::MAX,
        };
        // Threads whose columns split a group each offer that group's best.
        let group = match activation {
            Activation::GroupMax { group, .. } => *group,
            _ => 0,
        };
        let threads = threads.clamp(1, rows.max(1));
        if threads == 1 {
            merge_rows(parts, 0..rows, limit, group, csr);
            return;
        }
        let per = rows.div_ceil(threads);
        let merged = crate::parallel::map_shares(rows.div_ceil(per), |i| {
            let r0 = i * per;
            let mut part = Csr::with_rows(per);
            merge_rows(parts, r0..(r0 + per).min(rows), limit, group, &mut part);
            part
        });
        for part in merged {
            csr.append(part);
        }
    }
}

/// Appends rows `rows` of the sorted `parts` to `csr`, each the merge of its lists (at most
/// `limit` entries; with `group` > 0, only the first, i.e. best, entry of each group of
/// `group` consecutive ids).
fn merge_rows(parts: &[RowSelection], rows: std::ops::Range<usize>, limit: usize, group: usize, csr: &mut Csr) {
    let mut heads: Vec<&[(u32, f32)]> = Vec::with_capacity(parts.len());
    // Each part holds one entry per group already; only groups cut by a share boundary repeat.
    let dedupe = group > 0 && parts.len() > 1;
    let mut seen: HashSet<u32> = HashSet::new();
    for r in rows {
        seen.clear();
        heads.clear();
        heads.extend(parts.iter().map(|p| p.rows[r].as_slice()));
        let mut taken = 0;
        while taken < limit {
            // The head that ranks first; a few lists (one per thread).
            let mut best: Option<usize> = None;
            for (i, h) in heads.iter().enumerate() {
                if let Some(e) = h.first() {
                    if best.is_none_or(|b| rank(e, &heads[b][0]).is_lt()) {
                        best = Some(i);
                    }
                }
            }
            let Some(i) = best else { break };
            let (id, v) = heads[i][0];
            heads[i] = &heads[i][1..];
            if dedupe && !seen.insert(id / group as u32) {
                continue;
            }
            csr.ids.push(id);
            csr.values.push(v);
            taken += 1;
        }
        csr.offsets.push(csr.ids.len() as u32);
    }
}

/// Keeps, of the latents `col0..` (pre-activations `z`, their `scale` and `shift`), each
/// group's best positive `h` in `kept`: columns come in ascending order, so only the last kept
/// entry can share a group with the next column (ties keep the lower id).
fn keep_group_max(kept: &mut Vec<(u32, f32)>, col0: usize, z: &[f32], scale: &[f32], shift: &[f32], group: usize) {
    for (j, ((zv, s), b)) in z.iter().zip(scale).zip(shift).enumerate() {
        let v = s * zv + b;
        if v <= 0.0 {
            continue;
        }
        let id = col0 + j;
        match kept.last_mut() {
            Some(last) if last.0 as usize / group == id / group => {
                if v > last.1 {
                    *last = (id as u32, v);
                }
            }
            _ => kept.push((id as u32, v)),
        }
    }
}

/// Drops from `kept` (sorted by [`rank`]) every entry whose group of `group` consecutive ids
/// already has a better one, whatever order the columns were offered in.
fn one_per_group(kept: &mut Vec<(u32, f32)>, group: usize) {
    let mut seen: HashSet<u32> = HashSet::with_capacity(kept.len());
    kept.retain(|&(id, _)| seen.insert(id / group as u32));
}

/// Appends a row's `(id, value)` pairs sorted by value, largest first (ties by id).
pub(crate) fn push_sorted(csr: &mut Csr, entries: &mut [(u32, f32)]) {
    entries.sort_unstable_by(rank);
    for &(i, v) in entries.iter() {
        csr.ids.push(i);
        csr.values.push(v);
    }
    csr.offsets.push(csr.ids.len() as u32);
}

/// The TopK order: value descending, then id ascending.
fn rank(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Offers the latents `col0..` (pre-activations `z`, their `scale` and `shift`) to `row`'s
/// candidates for its `k` best, all of which beat its floor.
///
/// A value that beats the floor is appended; when the candidates reach [`capacity`] the best
/// `k` are selected (`select_nth_unstable`, linear) and the floor rises to the `k`-th. Keeping
/// a binary heap up to date per value instead cost a sift per new record, with a mispredicted
/// branch per level: most of the selection's time. `h` is computed and tested [`SCREEN`]
/// values at a time; after the first few hundred latents few pass.
fn offer_top_k(row: &mut TopKRow, z: &[f32], scale: &[f32], shift: &[f32], col0: usize, screen: Screen) {
    if row.k == 0 {
        return;
    }
    let n = z.len();
    let mut j0 = 0;
    // SAFETY: the screens run only where the CPU has their instructions (`Screen::widest`);
    // they read whole 64-value blocks of the three slices, which have length `n`.
    #[cfg(target_arch = "x86_64")]
    match screen {
        Screen::Avx2 => j0 = unsafe { screen_avx2(row, z, scale, shift, col0) },
        Screen::Scalar => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = screen;
    let mut block = [0f32; SCREEN];
    while j0 + SCREEN <= n {
        let (zs, ss, bs) = (&z[j0..j0 + SCREEN], &scale[j0..j0 + SCREEN], &shift[j0..j0 + SCREEN]);
        let mut hit = false;
        for (((v, zv), s), b) in block.iter_mut().zip(zs).zip(ss).zip(bs) {
            *v = s * zv + b;
            hit |= *v > *row.floor;
        }
        if hit {
            for (l, &v) in block.iter().enumerate() {
                if v > *row.floor {
                    row.keep(col0 + j0 + l, v);
                }
            }
        }
        j0 += SCREEN;
    }
    for j in j0..n {
        let v = scale[j] * z[j] + shift[j];
        if v > *row.floor {
            row.keep(col0 + j, v);
        }
    }
}

/// Appends to `kept` the latents `col0 + j` whose `h = scale · z + shift` passes `test(j, z, h)`.
///
/// Without a branch per latent: each pair is written to a buffer and counted only if it passes
/// (a dense JumpReLU row keeps a random 40 % of its latents, and a branch then mispredicts
/// every few values).
fn keep_where(
    kept: &mut Vec<(u32, f32)>,
    col0: usize,
    z: &[f32],
    scale: &[f32],
    shift: &[f32],
    test: impl Fn(usize, f32, f32) -> bool,
) {
    const CHUNK: usize = 256;
    let mut buf = [(0u32, 0f32); CHUNK];
    for c0 in (0..z.len()).step_by(CHUNK) {
        let c1 = (c0 + CHUNK).min(z.len());
        let mut m = 0;
        for j in c0..c1 {
            let v = scale[j] * z[j] + shift[j];
            buf[m] = ((col0 + j) as u32, v);
            m += test(j, z[j], v) as usize;
        }
        kept.extend_from_slice(&buf[..m]);
    }
}

/// [`keep_where`] for ReLU (`threshold` and `gate` absent), JumpReLU (`h > threshold`) and gated
/// SAEs (`z + gate > 0`), always with `h > 0`, 16 values at a time with 8-lane vectors: only
/// the lanes that pass are appended, so a sparse row costs a compare per value and a dense
/// one no mispredicted branch. Returns where it stopped (the rest is left to `keep_where`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn keep_above_avx2(
    kept: &mut Vec<(u32, f32)>,
    col0: usize,
    z: &[f32],
    scale: &[f32],
    shift: &[f32],
    threshold: Option<&[f32]>,
    gate: Option<&[f32]>,
) -> usize {
    use std::arch::x86_64::*;
    const LANES: usize = 8;
    let n = z.len();
    let zero = _mm256_setzero_ps();
    let mut values = [0f32; 2 * LANES];
    let mut j0 = 0;
    while j0 + 2 * LANES <= n {
        let mut mask = 0u32;
        for half in 0..2 {
            let o = j0 + half * LANES;
            let zv = _mm256_loadu_ps(z.as_ptr().add(o));
            let h = _mm256_add_ps(
                _mm256_mul_ps(_mm256_loadu_ps(scale.as_ptr().add(o)), zv),
                _mm256_loadu_ps(shift.as_ptr().add(o)),
            );
            let mut pass = _mm256_cmp_ps::<_CMP_GT_OQ>(h, zero);
            if let Some(t) = threshold {
                pass = _mm256_and_ps(pass, _mm256_cmp_ps::<_CMP_GT_OQ>(h, _mm256_loadu_ps(t.as_ptr().add(o))));
            }
            if let Some(g) = gate {
                let opened = _mm256_add_ps(zv, _mm256_loadu_ps(g.as_ptr().add(o)));
                pass = _mm256_and_ps(pass, _mm256_cmp_ps::<_CMP_GT_OQ>(opened, zero));
            }
            _mm256_storeu_ps(values.as_mut_ptr().add(half * LANES), h);
            mask |= (_mm256_movemask_ps(pass) as u32) << (half * LANES);
        }
        while mask != 0 {
            let l = mask.trailing_zeros() as usize;
            kept.push(((col0 + j0 + l) as u32, values[l]));
            mask &= mask - 1;
        }
        j0 += 2 * LANES;
    }
    j0
}

/// Candidates a TopK row holds before it selects its best `k` again.
fn capacity(k: usize) -> usize {
    (4 * k).max(64)
}

/// One TopK row of a [`RowSelection`]: its candidates, all above `floor`, for its `k` best.
struct TopKRow<'a> {
    kept: &'a mut Vec<(u32, f32)>,
    floor: &'a mut f32,
    k: usize,
}

impl TopKRow<'_> {
    /// Appends candidate `id` with value `v` (above the floor); selects when full.
    #[inline]
    fn keep(&mut self, id: usize, v: f32) {
        let k = self.k;
        self.kept.push((id as u32, v));
        if self.kept.len() >= capacity(k) {
            self.kept.select_nth_unstable_by(k - 1, rank);
            self.kept.truncate(k);
            // Later ids lose ties, so a later value must beat the k-th strictly.
            *self.floor = self.kept[k - 1].1;
        }
    }
}

/// How a row's values are tested: against a TopK row's floor, or by the threshold activations.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Screen {
    /// 16 values at a time, portable.
    Scalar,
    /// 64 values at a time by their maximum, 8-lane vectors ([`screen_avx2`]; a 16-lane AVX-512
    /// version measured no faster: the screen waits on loads).
    Avx2,
}

impl Screen {
    /// The widest screen this CPU runs (detected once; the default build runs everywhere).
    fn widest() -> Screen {
        static WIDEST: std::sync::OnceLock<Screen> = std::sync::OnceLock::new();
        *WIDEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                return Screen::Avx2;
            }
            Screen::Scalar
        })
    }
}

/// The screen of [`offer_top_k`] with 8-lane vectors over whole blocks of 64 values from the
/// start of `z`; returns where it stopped. A block is tested by its maximum (a few instructions
/// for 64 values), and only a block whose maximum beats the floor is tested lane by lane. `h`
/// is `scale · z` then `+ shift`, rounded as the scalar path rounds it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn screen_avx2(row: &mut TopKRow, z: &[f32], scale: &[f32], shift: &[f32], col0: usize) -> usize {
    use std::arch::x86_64::*;
    const LANES: usize = 8;
    const BLOCK: usize = 8 * LANES;
    let n = z.len();
    let mut h = [_mm256_setzero_ps(); 8];
    let mut j0 = 0;
    while j0 + BLOCK <= n {
        for (v, hv) in h.iter_mut().enumerate() {
            let o = j0 + v * LANES;
            let zv = _mm256_loadu_ps(z.as_ptr().add(o));
            *hv = _mm256_add_ps(
                _mm256_mul_ps(_mm256_loadu_ps(scale.as_ptr().add(o)), zv),
                _mm256_loadu_ps(shift.as_ptr().add(o)),
            );
        }
        // A NaN lane may drop out of the maximum: it could not pass the floor anyway.
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_max_ps(h[0], h[1]), _mm256_max_ps(h[2], h[3])),
            _mm256_max_ps(_mm256_max_ps(h[4], h[5]), _mm256_max_ps(h[6], h[7])),
        );
        let t = _mm256_set1_ps(*row.floor);
        if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(m, t)) != 0 {
            let mut values = [0f32; BLOCK];
            let mut mask = 0u64;
            for (v, hv) in h.iter().enumerate() {
                _mm256_storeu_ps(values.as_mut_ptr().add(v * LANES), *hv);
                mask |= (_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(*hv, t)) as u64) << (v * LANES);
            }
            // Lanes above the floor at the block's start are all kept, even where the floor
            // rose meanwhile: a surplus candidate is dropped at the next selection.
            while mask != 0 {
                let l = mask.trailing_zeros() as usize;
                row.keep(col0 + j0 + l, values[l]);
                mask &= mask - 1;
            }
        }
        j0 += BLOCK;
    }
    j0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Selects `rows` rows of pre-activations `z` (`scale.len()` columns each, row-major) as the encoder
    /// does: the columns split into `parts` consecutive shares ("threads"), each offered in
    /// tiles of `tile` columns with `screen`, finished, then merged.
    #[allow(clippy::too_many_arguments)]
    fn select_in_parts(
        activation: &Activation,
        z: &[f32],
        rows: usize,
        scale: &[f32],
        shift: &[f32],
        tile: usize,
        parts: usize,
        screen: Screen,
    ) -> Csr {
        let n = scale.len();
        let per = n.div_ceil(parts).max(1);
        let selections: Vec<RowSelection> = (0..parts)
            .map(|p| {
                let mut s = RowSelection::new(rows);
                s.screen = screen;
                let (c0, c1) = ((p * per).min(n), ((p + 1) * per).min(n));
                for t0 in (c0..c1).step_by(tile) {
                    let cols = tile.min(c1 - t0);
                    s.offer(activation, scale, shift, &z[t0..], n, t0, cols);
                }
                s.finish(activation);
                s
            })
            .collect();
        let mut csr = Csr::with_rows(rows);
        RowSelection::append(&selections, activation, &mut csr, parts);
        csr
    }

    /// A TopK row offered in tiles of any width, split over any number of "threads" (column
    /// ranges joined by `append`), equals a full sort by (value desc, id asc) cut at k and
    /// kept where positive: ties (many equal values), lengths around the 16- and 64-value screens
    /// and the tiles, k above the length, values that rise along the row (every block
    /// beats the kept ones) or fall (none does); with every screen this CPU runs.
    #[test]
    fn top_k_in_tiles_and_parts_equals_a_sort_with_ties_to_the_lower_id() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in [0usize, 1, 5, 15, 16, 17, 31, 33, 100, 1000] {
            for k in [1usize, 3, 16, 32, 40] {
                for pattern in 0..4 {
                    let z: Vec<f32> = (0..n)
                        .map(|j| match pattern {
                            0 => (next() % 1000) as f32 / 100.0 - 5.0,
                            1 => (next() % 4) as f32, // many ties
                            2 => j as f32,            // rising
                            _ => -(j as f32),         // falling
                        })
                        .collect();
                    let scale: Vec<f32> = (0..n).map(|j| 1.0 + (j % 3) as f32 * 0.5).collect();
                    let shift: Vec<f32> = (0..n).map(|j| (j % 5) as f32 * 0.25 - 0.5).collect();
                    let mut want: Vec<(u32, f32)> = (0..n).map(|j| (j as u32, scale[j] * z[j] + shift[j])).collect();
                    want.sort_by(rank);
                    want.truncate(k);
                    want.retain(|e| e.1 > 0.0);
                    let activation = Activation::TopK { k };
                    let available = |s: &Screen| *s == Screen::Scalar || Screen::widest() == Screen::Avx2;
                    for (tile, parts, screen) in [
                        (n.max(1), 1, Screen::Scalar),
                        (n.max(1), 1, Screen::Avx2),
                        (256, 1, Screen::Avx2),
                        (96, 2, Screen::Avx2),
                        (32, 2, Screen::Avx2),
                        (7, 3, Screen::Scalar),
                    ] {
                        if !available(&screen) {
                            continue;
                        }
                        let csr = select_in_parts(&activation, &z, 1, &scale, &shift, tile, parts, screen);
                        let got: Vec<(u32, f32)> = csr.ids.iter().copied().zip(csr.values.iter().copied()).collect();
                        assert_eq!(
                            got, want,
                            "n {n}, k {k}, pattern {pattern}, tile {tile}, parts {parts}, {screen:?}"
                        );
                    }
                }
            }
        }
    }

    /// ReLU, JumpReLU and gated rows offered over several rows, tiles and "threads", with the
    /// vector test and the scalar one, equal the float64 rule applied to every latent, sorted
    /// by (value desc, id asc).
    #[test]
    fn threshold_activations_in_tiles_and_parts_equal_the_rule() {
        let (rows, n) = (3usize, 300usize);
        // Some values sit exactly on a boundary: z = 0.5 where the gate bias is −0.5 (z + gate = 0
        // is shut), and z = 0 (h = shift).
        let z: Vec<f32> = (0..rows * n)
            .map(|i| match i % 11 {
                0 => 0.5,
                1 => 0.0,
                _ => ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 4.0,
            })
            .collect();
        let scale: Vec<f32> = (0..n).map(|j| 0.5 + (j % 4) as f32 * 0.25).collect();
        let shift: Vec<f32> = (0..n).map(|j| (j % 7) as f32 * 0.1 - 0.3).collect();
        let threshold: Vec<f32> = (0..n).map(|j| (j % 5) as f32 * 0.2).collect();
        let b_gate: Vec<f32> = (0..n).map(|j| (j % 3) as f32 * 0.5 - 0.5).collect();
        let activations = [
            Activation::Relu,
            Activation::JumpRelu {
                threshold: threshold.clone(),
            },
            Activation::Gated {
                b_gate: b_gate.clone(),
                r_mag: vec![0.0; n],
                b_mag: vec![0.0; n],
            },
        ];
        for activation in &activations {
            let mut want = Csr::with_rows(rows);
            for r in 0..rows {
                let mut row: Vec<(u32, f32)> = (0..n)
                    .filter_map(|j| {
                        let zv = z[r * n + j] as f64;
                        let v = scale[j] as f64 * zv + shift[j] as f64;
                        let keep = match activation {
                            Activation::Relu => v > 0.0,
                            Activation::JumpRelu { .. } => v > threshold[j] as f64 && v > 0.0,
                            Activation::Gated { .. } => zv + b_gate[j] as f64 > 0.0 && v > 0.0,
                            Activation::TopK { .. } | Activation::GroupMax { .. } => unreachable!(),
                        };
                        keep.then_some((j as u32, v as f32))
                    })
                    .collect();
                push_sorted(&mut want, &mut row);
            }
            let widest = Screen::widest();
            for (tile, parts, screen) in [(n, 1, widest), (n, 1, Screen::Scalar), (32, 2, widest), (7, 3, widest)] {
                let got = select_in_parts(activation, &z, rows, &scale, &shift, tile, parts, screen);
                assert_eq!(
                    got.offsets, want.offsets,
                    "{activation:?} tile {tile} parts {parts} {screen:?}"
                );
                assert_eq!(got.ids, want.ids, "{activation:?} tile {tile} parts {parts} {screen:?}");
                for (a, b) in got.values.iter().zip(&want.values) {
                    assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{activation:?}: {a} vs {b}");
                }
            }
        }
    }

    /// Group max offered in tiles and "threads" that split groups (tile and share boundaries
    /// off the group grid, ties within a group) equals each group's best positive value found
    /// by a plain scan, ties to the lower id, sorted by (value desc, id asc).
    #[test]
    fn group_max_in_tiles_and_parts_equals_a_scan_of_each_group() {
        let n = 240usize;
        for (k, pattern) in [(1usize, 0u32), (8, 0), (8, 1), (30, 0), (30, 1), (240, 0), (12, 2)] {
            let group = n / k;
            let z: Vec<f32> = (0..n)
                .map(|j| match pattern {
                    0 => ((j * 7919 % 1009) as f32 / 1009.0 - 0.4) * 3.0,
                    1 => (j % 3) as f32 - 1.0, // ties within groups, and all-negative stretches
                    _ => -1.0 - j as f32,      // nothing positive
                })
                .collect();
            let (scale, shift) = (vec![1.0f32; n], vec![0.0f32; n]);
            let mut row: Vec<(u32, f32)> = (0..k)
                .filter_map(|g| {
                    let best = (g * group..(g + 1) * group).fold(g * group, |b, j| if z[j] > z[b] { j } else { b });
                    (z[best] > 0.0).then_some((best as u32, z[best]))
                })
                .collect();
            let mut want = Csr::with_rows(1);
            push_sorted(&mut want, &mut row);
            let activation = Activation::GroupMax { k, group };
            for (tile, parts) in [(n, 1), (256, 1), (7, 1), (32, 2), (7, 3), (13, 5)] {
                let got = select_in_parts(&activation, &z, 1, &scale, &shift, tile, parts, Screen::widest());
                assert_eq!(got.ids, want.ids, "k {k} pattern {pattern} tile {tile} parts {parts}");
                assert_eq!(got.values, want.values, "k {k} pattern {pattern} tile {tile} parts {parts}");
            }
        }
    }
}
