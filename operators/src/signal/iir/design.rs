//! IIR filter design as second-order sections, transcribing SciPy's algorithms so the sections
//! equal `scipy.signal.butter(..., output="sos")` and `scipy.signal.iirnotch` (float64):
//! Butterworth analog prototype → frequency transform (lowpass, highpass, bandpass, bandstop)
//! after pre-warping → bilinear transform → `zpk2sos` with SciPy's "nearest" pole-zero pairing.
//!
//! A section is `[b0, b1, b2, a0, a1, a2]` with `a0 = 1`.

use num_complex::Complex64 as C;
use serde::{Deserialize, Serialize};

/// One second-order section `[b0, b1, b2, 1, a1, a2]`.
pub type Section = [f64; 6];

/// The band a Butterworth filter passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BandType {
    /// Passes below the cutoff.
    Lowpass,
    /// Passes above the cutoff.
    Highpass,
    /// Passes between the two cutoffs.
    Bandpass,
    /// Stops between the two cutoffs.
    Bandstop,
}

/// Butterworth sections of `order` (per edge; band filters have `2·order` poles) with cutoffs
/// in Hz (one for low/highpass, two for band filters) at sampling rate `fs` Hz.
pub fn butter(order: usize, cutoff_hz: &[f64], band: BandType, fs: f64) -> Result<Vec<Section>, String> {
    if order == 0 || order > 32 {
        return Err(format!("order {order}: must be 1..=32"));
    }
    let nyq = fs / 2.0;
    let want = if matches!(band, BandType::Lowpass | BandType::Highpass) {
        1
    } else {
        2
    };
    if cutoff_hz.len() != want {
        return Err(format!(
            "{band:?} takes {want} cutoff frequenc{}, found {}",
            if want == 1 { "y" } else { "ies" },
            cutoff_hz.len()
        ));
    }
    for &f in cutoff_hz {
        if !(f > 0.0 && f < nyq) {
            return Err(format!("cutoff {f} Hz must be between 0 and the Nyquist frequency {nyq} Hz"));
        }
    }
    if want == 2 && cutoff_hz[0] >= cutoff_hz[1] {
        return Err(format!("cutoffs {cutoff_hz:?}: the low edge must be below the high edge"));
    }
    // Pre-warp for the bilinear transform at "fs = 2" (normalized frequencies), as SciPy does.
    let warped: Vec<f64> = cutoff_hz
        .iter()
        .map(|&f| 4.0 * (std::f64::consts::PI * (f / nyq) / 2.0).tan())
        .collect();
    // Analog prototype: poles on the left unit semicircle, no zeros, gain 1.
    let n = order as i64;
    let p: Vec<C> = (0..order as i64)
        .map(|i| {
            let m = (-n + 1 + 2 * i) as f64;
            -C::from_polar(1.0, std::f64::consts::PI * m / (2.0 * n as f64))
        })
        .collect();
    let z: Vec<C> = Vec::new();
    let (z, p, k) = match band {
        BandType::Lowpass => lp2lp(&z, &p, 1.0, warped[0]),
        BandType::Highpass => lp2hp(&z, &p, 1.0, warped[0]),
        BandType::Bandpass => {
            let bw = warped[1] - warped[0];
            let wo = (warped[0] * warped[1]).sqrt();
            lp2bp(&z, &p, 1.0, wo, bw)
        }
        BandType::Bandstop => {
            let bw = warped[1] - warped[0];
            let wo = (warped[0] * warped[1]).sqrt();
            lp2bs(&z, &p, 1.0, wo, bw)
        }
    };
    let (z, p, k) = bilinear(&z, &p, k, 2.0);
    Ok(zpk2sos(z, p, k))
}

/// The notch of `scipy.signal.iirnotch(f0, q, fs)` as one section: a zero pair on the unit
/// circle at `f0` Hz, −3 dB bandwidth `f0 / q`.
pub fn notch(f0: f64, q: f64, fs: f64) -> Result<Section, String> {
    if !(f0 > 0.0 && f0 < fs / 2.0) {
        return Err(format!(
            "notch frequency {f0} Hz must be between 0 and the Nyquist frequency {} Hz",
            fs / 2.0
        ));
    }
    if !(q > 0.0 && q.is_finite()) {
        return Err(format!("quality factor {q} must be positive"));
    }
    let w0 = 2.0 * f0 / fs;
    let bw = w0 / q * std::f64::consts::PI;
    let w0 = w0 * std::f64::consts::PI;
    let gb = 1.0 / 2f64.sqrt();
    let beta = ((1.0 - gb * gb).sqrt() / gb) * (bw / 2.0).tan();
    let gain = 1.0 / (1.0 + beta);
    Ok([
        gain,
        -2.0 * w0.cos() * gain,
        gain,
        1.0,
        -2.0 * gain * w0.cos(),
        2.0 * gain - 1.0,
    ])
}

/// `scipy.signal.sosfilt_zi`: the initial state of each section (per unit input) that makes
/// the step response start in steady state; `(n_sections, 2)`.
pub fn sosfilt_zi(sos: &[Section]) -> Vec<[f64; 2]> {
    let mut scale = 1.0;
    sos.iter()
        .map(|s| {
            let (b0, b1, b2, a1, a2) = (s[0], s[1], s[2], s[4], s[5]);
            // lfilter_zi for order 2: solve [[1 + a1, −1], [a2, 1]]·zi = [b1 − a1·b0, b2 − a2·b0].
            let (r0, r1) = (b1 - a1 * b0, b2 - a2 * b0);
            let det = (1.0 + a1) + a2;
            let zi0 = (r0 + r1) / det;
            let zi1 = r1 - a2 * zi0;
            let out = [scale * zi0, scale * zi1];
            scale *= (b0 + b1 + b2) / (1.0 + a1 + a2);
            out
        })
        .collect()
}

pub use neurostream_engine::dsp::sinc;

fn degree(z: &[C], p: &[C]) -> usize {
    p.len() - z.len()
}

fn prod(v: impl Iterator<Item = C>) -> C {
    v.fold(C::new(1.0, 0.0), |a, b| a * b)
}

fn lp2lp(z: &[C], p: &[C], k: f64, wo: f64) -> (Vec<C>, Vec<C>, f64) {
    let d = degree(z, p) as i32;
    (
        z.iter().map(|v| v * wo).collect(),
        p.iter().map(|v| v * wo).collect(),
        k * wo.powi(d),
    )
}

fn lp2hp(z: &[C], p: &[C], k: f64, wo: f64) -> (Vec<C>, Vec<C>, f64) {
    let d = degree(z, p);
    let mut zh: Vec<C> = z.iter().map(|v| wo / v).collect();
    let ph: Vec<C> = p.iter().map(|v| wo / v).collect();
    zh.extend(std::iter::repeat_n(C::new(0.0, 0.0), d));
    let kh = k * (prod(z.iter().map(|v| -v)) / prod(p.iter().map(|v| -v))).re;
    (zh, ph, kh)
}

fn lp2bp(z: &[C], p: &[C], k: f64, wo: f64, bw: f64) -> (Vec<C>, Vec<C>, f64) {
    let d = degree(z, p);
    let split = |v: &[C]| -> Vec<C> {
        let lp: Vec<C> = v.iter().map(|x| x * (bw / 2.0)).collect();
        let plus = lp.iter().map(|x| x + (x * x - wo * wo).sqrt());
        let minus = lp.iter().map(|x| x - (x * x - wo * wo).sqrt());
        plus.chain(minus).collect()
    };
    let mut zb = split(z);
    zb.extend(std::iter::repeat_n(C::new(0.0, 0.0), d));
    (zb, split(p), k * bw.powi(d as i32))
}

fn lp2bs(z: &[C], p: &[C], k: f64, wo: f64, bw: f64) -> (Vec<C>, Vec<C>, f64) {
    let d = degree(z, p);
    let split = |v: &[C]| -> Vec<C> {
        let hp: Vec<C> = v.iter().map(|x| (bw / 2.0) / x).collect();
        let plus = hp.iter().map(|x| x + (x * x - wo * wo).sqrt());
        let minus = hp.iter().map(|x| x - (x * x - wo * wo).sqrt());
        plus.chain(minus).collect()
    };
    let mut zb = split(z);
    zb.extend(std::iter::repeat_n(C::new(0.0, wo), d));
    zb.extend(std::iter::repeat_n(C::new(0.0, -wo), d));
    let kb = k * (prod(z.iter().map(|v| -v)) / prod(p.iter().map(|v| -v))).re;
    (zb, split(p), kb)
}

fn bilinear(z: &[C], p: &[C], k: f64, fs: f64) -> (Vec<C>, Vec<C>, f64) {
    let d = degree(z, p);
    let fs2 = 2.0 * fs;
    let mut zz: Vec<C> = z.iter().map(|v| (fs2 + v) / (fs2 - v)).collect();
    let pz: Vec<C> = p.iter().map(|v| (fs2 + v) / (fs2 - v)).collect();
    zz.extend(std::iter::repeat_n(C::new(-1.0, 0.0), d));
    let kz = k * (prod(z.iter().map(|v| fs2 - v)) / prod(p.iter().map(|v| fs2 - v))).re;
    (zz, pz, kz)
}

/// SciPy's `_cplxreal`: the conjugate pairs (one of each, positive imaginary part, sorted by
/// real part then |imag|) followed by the real values (sorted), as one list.
fn cplxreal(mut v: Vec<C>) -> Vec<C> {
    if v.is_empty() {
        return v;
    }
    let tol = 100.0 * f64::EPSILON;
    v.sort_by(|a, b| a.re.total_cmp(&b.re).then(a.im.abs().total_cmp(&b.im.abs())));
    let (real, cplx): (Vec<C>, Vec<C>) = v.into_iter().partition(|x| x.im.abs() <= tol * x.norm());
    let mut pos: Vec<C> = cplx.iter().copied().filter(|x| x.im > 0.0).collect();
    let mut neg: Vec<C> = cplx.iter().copied().filter(|x| x.im < 0.0).collect();
    // Runs of (nearly) equal real part are ordered by |imag|.
    let mut start = 0;
    while start < pos.len() {
        let mut stop = start + 1;
        while stop < pos.len() && pos[stop].re - pos[stop - 1].re <= tol * pos[stop - 1].norm() {
            stop += 1;
        }
        pos[start..stop].sort_by(|a, b| a.im.abs().total_cmp(&b.im.abs()));
        if stop <= neg.len() {
            neg[start..stop].sort_by(|a, b| a.im.abs().total_cmp(&b.im.abs()));
        }
        start = stop;
    }
    let mut out: Vec<C> = pos.iter().zip(&neg).map(|(a, b)| (a + b.conj()) / 2.0).collect();
    out.extend(real.into_iter().map(|x| C::new(x.re, 0.0)));
    out
}

fn is_real(x: &C) -> bool {
    x.im == 0.0
}

/// Index of the element of `from` nearest `to` that is real / complex / either.
fn nearest(from: &[C], to: C, which: Which) -> usize {
    let mut order: Vec<usize> = (0..from.len()).collect();
    order.sort_by(|&a, &b| (from[a] - to).norm().total_cmp(&(from[b] - to).norm()));
    *order
        .iter()
        .find(|&&i| match which {
            Which::Any => true,
            Which::Real => is_real(&from[i]),
            Which::Complex => !is_real(&from[i]),
        })
        .expect("a matching zero exists")
}

#[derive(Clone, Copy)]
enum Which {
    Any,
    Real,
    Complex,
}

/// Polynomial coefficients (highest power first) with roots `r`, real parts.
fn poly(r: &[C]) -> Vec<f64> {
    let mut c = vec![C::new(1.0, 0.0)];
    for root in r {
        let mut next = vec![C::new(0.0, 0.0); c.len() + 1];
        for (i, v) in c.iter().enumerate() {
            next[i] += v;
            next[i + 1] -= v * root;
        }
        c = next;
    }
    c.into_iter().map(|v| v.re).collect()
}

fn single_section(z: &[C], p: &[C]) -> Section {
    let b = poly(z);
    let a = poly(p);
    let mut s = [0.0; 6];
    s[3 - b.len()..3].copy_from_slice(&b);
    s[6 - a.len()..6].copy_from_slice(&a);
    s
}

/// SciPy's `zpk2sos` with `pairing = "nearest"` for digital filters.
fn zpk2sos(z: Vec<C>, p: Vec<C>, k: f64) -> Vec<Section> {
    let (mut z, mut p) = (z, p);
    if z.is_empty() && p.is_empty() {
        return vec![[k, 0.0, 0.0, 1.0, 0.0, 0.0]];
    }
    while p.len() < z.len() {
        p.push(C::new(0.0, 0.0));
    }
    while z.len() < p.len() {
        z.push(C::new(0.0, 0.0));
    }
    let n_sections = p.len().div_ceil(2);
    if p.len() % 2 == 1 {
        p.push(C::new(0.0, 0.0));
        z.push(C::new(0.0, 0.0));
    }
    let mut z = cplxreal(z);
    let mut p = cplxreal(p);
    let worst = |v: &[C], idx: &[usize]| -> usize {
        // The pole closest to the unit circle (first on ties).
        let mut best = idx[0];
        for &i in idx {
            if (1.0 - v[i].norm()).abs() < (1.0 - v[best].norm()).abs() {
                best = i;
            }
        }
        best
    };
    let mut sos = vec![[0.0; 6]; n_sections];
    for si in (0..n_sections).rev() {
        let all: Vec<usize> = (0..p.len()).collect();
        let p1 = p.remove(worst(&p, &all));
        let reals_left = p.iter().filter(|x| is_real(x)).count();
        if is_real(&p1) && reals_left == 0 {
            // The last remaining real pole.
            let zi = nearest(&z, p1, Which::Real);
            let z1 = z.remove(zi);
            sos[si] = single_section(&[z1, C::new(0.0, 0.0)], &[p1, C::new(0.0, 0.0)]);
        } else if p.len() + 1 == z.len() && !is_real(&p1) && reals_left == 1 && z.iter().filter(|x| is_real(x)).count() == 1 {
            // One real pole and one real zero left: pair this complex pole with a complex zero.
            let zi = nearest(&z, p1, Which::Complex);
            let z1 = z.remove(zi);
            sos[si] = single_section(&[z1, z1.conj()], &[p1, p1.conj()]);
        } else {
            let p2 = if is_real(&p1) {
                let real_idx: Vec<usize> = (0..p.len()).filter(|&i| is_real(&p[i])).collect();
                p.remove(worst(&p, &real_idx))
            } else {
                p1.conj()
            };
            if z.is_empty() {
                sos[si] = single_section(&[], &[p1, p2]);
            } else {
                let zi = nearest(&z, p1, Which::Any);
                let z1 = z.remove(zi);
                if !is_real(&z1) {
                    sos[si] = single_section(&[z1, z1.conj()], &[p1, p2]);
                } else if !z.is_empty() {
                    let zi2 = nearest(&z, p1, Which::Real);
                    let z2 = z.remove(zi2);
                    sos[si] = single_section(&[z1, z2], &[p1, p2]);
                } else {
                    sos[si] = single_section(&[z1], &[p1, p2]);
                }
            }
        }
    }
    for v in &mut sos[0][..3] {
        *v *= k;
    }
    sos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_order_lowpass_matches_the_closed_form() {
        // butter(2, 0.25 of Nyquist): b = K²/(1+√2K+K²)·[1, 2, 1], K = tan(π·0.25/2).
        let s = butter(2, &[12.5], BandType::Lowpass, 100.0).unwrap();
        assert_eq!(s.len(), 1);
        let kk = (std::f64::consts::PI * 0.125).tan();
        let norm = 1.0 + 2f64.sqrt() * kk + kk * kk;
        let b0 = kk * kk / norm;
        for (got, want) in s[0][..3].iter().zip([b0, 2.0 * b0, b0]) {
            assert!((got - want).abs() < 1e-14, "{s:?}");
        }
    }

    #[test]
    fn bad_designs_are_errors() {
        assert!(butter(4, &[60.0], BandType::Lowpass, 100.0).is_err());
        assert!(butter(4, &[30.0, 8.0], BandType::Bandpass, 250.0).is_err());
        assert!(butter(4, &[8.0], BandType::Bandpass, 250.0).is_err());
        assert!(notch(50.0, 30.0, 80.0).is_err());
    }
}
