//! Per-feature accumulators over a span of tokens (a pane of a window, or all time), and the
//! logarithmic bins the histograms use.

use std::collections::BTreeMap;

use super::panes::Span;

/// Logarithmically spaced bins over `10^lo .. 10^hi`; values outside clamp to the end bins.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogBins {
    /// log10 of the lower edge of the first bin.
    pub lo: f64,
    /// log10 of the upper edge of the last bin.
    pub hi: f64,
    /// Number of bins.
    pub bins: usize,
}

impl LogBins {
    /// The bin of a positive value `v`.
    pub fn bin(&self, v: f64) -> usize {
        let x = (v.log10() - self.lo) / (self.hi - self.lo) * self.bins as f64;
        if x.is_nan() || x < 0.0 {
            0
        } else {
            (x as usize).min(self.bins - 1)
        }
    }

    /// For bins 1 .. `bins`: the smallest positive `f32` that [`LogBins::bin`] puts in that bin
    /// or a later one (`+inf` when no finite `f32` reaches it). A value's bin is the number of
    /// thresholds at or below it, so a float32 kernel bins exactly as the host does.
    pub fn f32_thresholds(&self) -> Vec<f32> {
        (1..self.bins)
            .map(|b| {
                // `bin` never decreases as the value grows, and positive floats order as their bits.
                let reaches = |bits: u32| self.bin(f32::from_bits(bits) as f64) >= b;
                let (mut lo, mut hi) = (1u32, f32::MAX.to_bits());
                if !reaches(hi) {
                    return f32::INFINITY;
                }
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if reaches(mid) {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                f32::from_bits(lo)
            })
            .collect()
    }

    /// log10 edges `(lo, hi)` of bin `b`.
    pub fn edges(&self, b: usize) -> (f64, f64) {
        let w = (self.hi - self.lo) / self.bins as f64;
        (self.lo + b as f64 * w, self.lo + (b + 1) as f64 * w)
    }
}

/// The entries of a row that fire (activation > 0), into `ids` and `acts` (cleared first).
pub fn firing(row: (&[u32], &[f32]), ids: &mut Vec<u32>, acts: &mut Vec<f32>) {
    ids.clear();
    acts.clear();
    for (&f, &a) in row.0.iter().zip(row.1) {
        if a > 0.0 {
            ids.push(f);
            acts.push(a);
        }
    }
}

/// Sums over a span of tokens of one stream. A feature *fires* on a token when its activation
/// there is greater than zero; entries with activation <= 0 are ignored everywhere.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Accum {
    /// Tokens in the span.
    pub tokens: u64,
    /// Firing count per feature.
    pub count: Vec<u64>,
    /// Sum of activations per feature (over firing tokens), float64.
    pub sum: Vec<f64>,
    /// Maximum activation per feature (0 when it never fired).
    pub max: Vec<f32>,
    /// Activation histogram, `n_features × bins`, row-major; empty when disabled.
    pub hist: Vec<u32>,
    /// Tokens per L0 (number of firing features on the token).
    pub l0: BTreeMap<u32, u64>,
}

impl Accum {
    /// Empty accumulators for `n_features` features, with `hist_bins` activation bins (0 disables).
    pub fn new(n_features: usize, hist_bins: usize) -> Accum {
        Accum {
            tokens: 0,
            count: vec![0; n_features],
            sum: vec![0.0; n_features],
            max: vec![0.0; n_features],
            hist: vec![0; n_features * hist_bins],
            l0: BTreeMap::new(),
        }
    }

    /// Resets to empty, keeping the allocations.
    pub fn clear(&mut self) {
        self.tokens = 0;
        self.count.fill(0);
        self.sum.fill(0.0);
        self.max.fill(0.0);
        self.hist.fill(0);
        self.l0.clear();
    }

    /// Adds one token's firing features (`ids`, `acts` already filtered to act > 0).
    pub fn add_token(&mut self, ids: &[u32], acts: &[f32], bins: Option<&LogBins>) {
        self.tokens += 1;
        *self.l0.entry(ids.len() as u32).or_default() += 1;
        for (&f, &a) in ids.iter().zip(acts) {
            let f = f as usize;
            self.count[f] += 1;
            self.sum[f] += a as f64;
            if a > self.max[f] {
                self.max[f] = a;
            }
            if let Some(b) = bins {
                self.hist[f * b.bins + b.bin(a as f64)] += 1;
            }
        }
    }

    /// Firing density of feature `f` (count / tokens; 0 for an empty span).
    pub fn density(&self, f: usize) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.count[f] as f64 / self.tokens as f64
        }
    }

    /// Mean activation of feature `f` over the tokens it fired on (0 when it never fired).
    pub fn mean_act(&self, f: usize) -> f64 {
        if self.count[f] == 0 {
            0.0
        } else {
            self.sum[f] / self.count[f] as f64
        }
    }
}

impl Span for Accum {
    fn merge(&mut self, other: &Accum) {
        self.tokens += other.tokens;
        for (a, b) in self.count.iter_mut().zip(&other.count) {
            *a += b;
        }
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (a, b) in self.max.iter_mut().zip(&other.max) {
            *a = a.max(*b);
        }
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
        for (k, v) in &other.l0 {
            *self.l0.entry(*k).or_default() += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_clamp_and_split_evenly_in_log_space() {
        let b = LogBins {
            lo: -2.0,
            hi: 2.0,
            bins: 4,
        };
        assert_eq!(b.bin(0.001), 0);
        assert_eq!(b.bin(0.05), 0);
        assert_eq!(b.bin(0.5), 1);
        assert_eq!(b.bin(1.0), 2);
        assert_eq!(b.bin(50.0), 3);
        assert_eq!(b.bin(1e9), 3);
        assert_eq!(b.edges(1), (-1.0, 0.0));
    }

    #[test]
    fn counting_f32_thresholds_bins_every_value_as_the_host_does() {
        for bins in [
            LogBins {
                lo: -3.0,
                hi: 3.0,
                bins: 24,
            },
            LogBins {
                lo: -2.0,
                hi: 1.0,
                bins: 12,
            },
            LogBins {
                lo: 30.0,
                hi: 50.0,
                bins: 5,
            }, // the upper bins lie beyond f32
            LogBins {
                lo: -0.5,
                hi: 0.25,
                bins: 1,
            },
        ] {
            let t = bins.f32_thresholds();
            assert_eq!(t.len(), bins.bins - 1);
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut values: Vec<f32> = t
                .iter()
                .flat_map(|&v| [v, f32::from_bits(v.to_bits().saturating_sub(1))])
                .collect();
            values.extend([f32::MIN_POSITIVE, 1e-45, 1.0, f32::MAX]);
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                values.push(f32::from_bits((x as u32) & 0x7f7f_ffff).max(1e-45));
            }
            for v in values.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
                let counted = t.iter().filter(|&&e| e <= v).count();
                assert_eq!(counted, bins.bin(v as f64), "value {v:e} in {bins:?}");
            }
        }
    }

    #[test]
    fn merge_equals_adding_all_tokens_to_one() {
        let bins = LogBins {
            lo: -1.0,
            hi: 1.0,
            bins: 2,
        };
        let mut a = Accum::new(3, 2);
        let mut b = Accum::new(3, 2);
        let mut all = Accum::new(3, 2);
        a.add_token(&[0, 2], &[0.5, 3.0], Some(&bins));
        b.add_token(&[2], &[1.5], Some(&bins));
        b.add_token(&[], &[], Some(&bins));
        for (ids, acts) in [(&[0u32, 2][..], &[0.5f32, 3.0][..]), (&[2], &[1.5]), (&[], &[])] {
            all.add_token(ids, acts, Some(&bins));
        }
        a.merge(&b);
        assert_eq!(a.count, all.count);
        assert_eq!(a.sum, all.sum);
        assert_eq!(a.max, all.max);
        assert_eq!(a.hist, all.hist);
        assert_eq!(a.l0, all.l0);
        assert_eq!(a.tokens, 3);
        assert_eq!(a.mean_act(2), 2.25);
        assert!((a.density(2) - 2.0 / 3.0).abs() < 1e-15);
    }
}
