//! Latency percentiles in bounded memory: a log-linear histogram (64 sub-buckets per power of
//! two, so a percentile is within 0.8 % of the observation it stands for) plus the exact
//! maximum. A run that lasts a week records every frame without growing.

/// Sub-buckets per power of two (6 bits of mantissa).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every u64: values below `SUB` exactly, then `SUB` per power of two.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// Arrival-to-written latencies of a node's frames, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latencies {
    /// Count per bucket (allocated at the first observation).
    counts: Vec<u64>,
    count: u64,
    max_ns: i64,
}

fn bucket(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // >= SUB_BITS
    let mantissa = (ns >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(exp - SUB_BITS) * SUB + mantissa) as usize
}

/// The middle of bucket `b`'s range, in ns.
fn midpoint(b: usize) -> f64 {
    let b = b as u64;
    if b < SUB {
        return b as f64;
    }
    let exp = (b - SUB) / SUB + u64::from(SUB_BITS);
    let mantissa = (b - SUB) % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    let low = (1u64 << exp) + mantissa * width;
    low as f64 + (width as f64 - 1.0) / 2.0
}

impl Latencies {
    /// Records one latency (negative values count as 0).
    pub fn record(&mut self, ns: i64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[bucket(ns.max(0) as u64)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds another node's (or worker's) latencies.
    pub fn merge(&mut self, other: &Latencies) {
        if other.count == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Frames recorded.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The 50th, 95th and 99th percentiles (nearest rank, within 0.8 %) and the exact maximum, in
    /// milliseconds; `None` when empty.
    pub fn percentiles_ms(&self) -> Option<[f64; 4]> {
        if self.count == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
            let mut seen = 0;
            for (b, &c) in self.counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return midpoint(b).min(self.max_ns as f64) / 1e6;
                }
            }
            self.max_ns as f64 / 1e6
        };
        Some([at(0.50), at(0.95), at(0.99), self.max_ns as f64 / 1e6])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_exact_nearest_rank_within_the_resolution() {
        // A float64 reference: the exact nearest-rank percentiles of the same observations.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut values = Vec::new();
        let mut lat = Latencies::default();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ns = (x % 50_000_000) as i64 + 1_000; // 1 µs to 50 ms
            values.push(ns);
            lat.record(ns);
        }
        values.sort_unstable();
        let exact = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1] as f64 / 1e6;
        let got = lat.percentiles_ms().unwrap();
        for (g, q) in got.iter().zip([0.5, 0.95, 0.99]) {
            let e = exact(q);
            assert!((g - e).abs() <= e * 0.008, "p{q}: {g} vs {e}");
        }
        assert_eq!(got[3], *values.last().unwrap() as f64 / 1e6);
        assert_eq!(lat.len(), 20_000);
        let mut merged = Latencies::default();
        merged.merge(&lat);
        merged.merge(&lat);
        assert_eq!(merged.len(), 40_000);
        assert_eq!(merged.percentiles_ms(), lat.percentiles_ms());
        for ns in [0u64, 1, 63, 64, 65, 1 << 20, u64::MAX >> 1] {
            let m = midpoint(bucket(ns));
            assert!((m - ns as f64).abs() <= ns as f64 / 128.0 + 0.5, "{ns}: {m}");
        }
    }
}
