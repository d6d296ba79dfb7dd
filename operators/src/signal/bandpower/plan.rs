//! The bands of a `bandpower` operator resolved to the Welch bins they sum: each band is the
//! contiguous bins `lo ≤ f < hi`, and relative power divides by the bins of the bands' whole
//! range (`min lo ≤ f < max hi`). The CPU sums a PSD over them; the GPU gets the same ranges.

use super::welch::Welch;

/// Bin ranges (`first..end`) of every band, and of the bands' whole range.
#[derive(Clone, Debug, PartialEq)]
pub struct BandPlan {
    /// Each band's bins, in the configured order.
    pub ranges: Vec<(usize, usize)>,
    /// The bins of `min lo ≤ f < max hi` (relative power's denominator).
    pub total: (usize, usize),
    /// Whether relative power follows the absolute powers of each channel.
    pub relative: bool,
}

/// The bins `k` with `lo ≤ freq(k) < hi` (frequencies rise with `k`, so they are contiguous);
/// an empty range at the end when none.
fn bins(welch: &Welch, lo: f64, hi: f64) -> (usize, usize) {
    let inside: Vec<usize> = (0..welch.nfreq())
        .filter(|&k| welch.freq(k) >= lo && welch.freq(k) < hi)
        .collect();
    match (inside.first(), inside.last()) {
        (Some(&a), Some(&b)) => (a, b + 1),
        _ => (welch.nfreq(), welch.nfreq()),
    }
}

impl BandPlan {
    /// The plan of `bands` (`[name, lo Hz, hi Hz]`) at `welch`'s resolution.
    pub fn new(welch: &Welch, bands: &[(String, f64, f64)], relative: bool) -> BandPlan {
        let lo = bands.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
        let hi = bands.iter().map(|b| b.2).fold(f64::NEG_INFINITY, f64::max);
        BandPlan {
            ranges: bands.iter().map(|(_, lo, hi)| bins(welch, *lo, *hi)).collect(),
            total: bins(welch, lo, hi),
            relative,
        }
    }

    /// Values per channel: each band's power, then (with `relative`) each band's share.
    pub fn width(&self) -> usize {
        self.ranges.len() * (1 + self.relative as usize)
    }

    /// Appends one channel's values from its PSD (unit²/Hz per bin, `df` Hz apart): each band's
    /// `Σ PSD · df`, then its share of the total range's (0 when that is 0).
    pub fn push_channel(&self, psd: &[f64], df: f64, out: &mut Vec<f32>) {
        let power = |(a, b): (usize, usize)| psd[a..b].iter().sum::<f64>() * df;
        let first = out.len();
        let absolute: Vec<f64> = self.ranges.iter().map(|&r| power(r)).collect();
        out.extend(absolute.iter().map(|&v| v as f32));
        if self.relative {
            let total = power(self.total);
            out.extend(absolute.iter().map(|&v| if total > 0.0 { (v / total) as f32 } else { 0.0 }));
        }
        debug_assert_eq!(out.len() - first, self.width());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_their_bins_and_nothing_else() {
        // 1 Hz bins at fs 256, nperseg 256.
        let w = Welch::new(256, 128, 256.0).unwrap();
        let bands = vec![("alpha".to_string(), 8.0, 12.0), ("beta".to_string(), 13.0, 30.0)];
        let plan = BandPlan::new(&w, &bands, true);
        assert_eq!(plan.ranges, vec![(8, 12), (13, 30)]);
        assert_eq!(plan.total, (8, 30));
        assert_eq!(plan.width(), 4);
        let psd: Vec<f64> = (0..w.nfreq()).map(|k| k as f64).collect();
        let mut out = Vec::new();
        plan.push_channel(&psd, 0.5, &mut out);
        let alpha = (8..12).sum::<usize>() as f64 * 0.5;
        let beta = (13..30).sum::<usize>() as f64 * 0.5;
        let total = (8..30).sum::<usize>() as f64 * 0.5;
        let expected = [alpha, beta, alpha / total, beta / total].map(|v| v as f32);
        assert_eq!(out, expected);
    }
}
