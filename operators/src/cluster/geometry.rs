//! Concept geometry of an SAE's decoder directions ("The Geometry of Concepts: Sparse
//! Autoencoder Feature Structure", Li et al. 2025): the eigenvalue spectrum of the feature point
//! cloud and its power-law slope, principal-component coordinates, the clustering entropy, and
//! the spatial-modularity test comparing co-occurrence clusters with geometric clusters.

use nalgebra::{DMatrix, SymmetricEigen};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::metrics::adjusted_mutual_info;

/// Principal axes of a point cloud (`n × d` rows): covariance eigenvalues, largest first, with
/// their unit eigenvectors (columns of a `d × d` matrix in the same order), and the mean.
pub struct Principal {
    /// Covariance eigenvalues (population, ddof = 0), descending.
    pub eigenvalues: Vec<f64>,
    /// Eigenvectors as columns, same order.
    pub vectors: DMatrix<f64>,
    /// Column means.
    pub mean: Vec<f64>,
}

/// Eigen-decomposition of the covariance of `points` (`n × d`).
pub fn principal(points: &[f32], d: usize) -> Principal {
    let n = points.len() / d;
    let mut mean = vec![0f64; d];
    for r in points.chunks_exact(d) {
        mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let x = DMatrix::<f64>::from_fn(n, d, |i, j| points[i * d + j] as f64 - mean[j]);
    let cov = (x.transpose() * &x) / n as f64;
    let eig = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    Principal {
        eigenvalues: order.iter().map(|&i| eig.eigenvalues[i].max(0.0)).collect(),
        vectors: DMatrix::from_fn(d, d, |r, c| eig.eigenvectors[(r, order[c])]),
        mean,
    }
}

impl Principal {
    /// Coordinates of `points` on the first `p` principal axes (`n × p`, row-major).
    pub fn project(&self, points: &[f32], p: usize) -> Vec<f64> {
        let d = self.mean.len();
        let mut out = Vec::with_capacity(points.len() / d * p);
        for r in points.chunks_exact(d) {
            for c in 0..p {
                out.push((0..d).map(|j| (r[j] as f64 - self.mean[j]) * self.vectors[(j, c)]).sum());
            }
        }
        out
    }
}

/// A least-squares line through log eigenvalue against log rank: a power law `λ_r ∝ r^slope`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerLaw {
    /// First and last rank fitted (1-based, inclusive).
    pub ranks: (usize, usize),
    /// The exponent (slope in log-log space).
    pub slope: f64,
    /// Intercept: log λ at log rank 0 (natural logarithms).
    pub intercept: f64,
    /// Coefficient of determination of the fit in log-log space.
    pub r2: f64,
}

/// R² a power law must reach over a range for [`power_law_range`] to accept it.
pub const MIN_POWER_LAW_R2: f64 = 0.98;

/// The least-squares power law over ranks `lo..=hi` (1-based; positive eigenvalues only);
/// `None` with fewer than two points.
pub fn power_law_fit(eigenvalues: &[f64], lo: usize, hi: usize) -> Option<PowerLaw> {
    let pts: Vec<(f64, f64)> = eigenvalues
        .iter()
        .enumerate()
        .map(|(i, &l)| (i + 1, l))
        .filter(|&(r, l)| r >= lo && r <= hi && l > 0.0)
        .map(|(r, l)| ((r as f64).ln(), l.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let syy: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 { (sxy * sxy) / (sxx * syy) } else { 1.0 };
    Some(PowerLaw {
        ranks: (lo, hi),
        slope,
        intercept: my - slope * mx,
        r2,
    })
}

/// The widest range of ranks, at least a decade long, over which the eigenvalues follow a power
/// law (R² ≥ `min_r2`), searched on a grid of eight ranks per decade up to the last positive
/// eigenvalue; among equally wide ranges the best fit. `None` when no decade fits.
pub fn power_law_range(eigenvalues: &[f64], min_r2: f64) -> Option<PowerLaw> {
    let positive = eigenvalues.iter().take_while(|&&l| l > 0.0).count();
    let mut grid: Vec<usize> = (0..)
        .map(|j| 10f64.powf(j as f64 / 8.0).round() as usize)
        .take_while(|&r| r <= positive)
        .collect();
    grid.push(positive);
    grid.dedup();
    let mut best: Option<(f64, PowerLaw)> = None;
    for (i, &lo) in grid.iter().enumerate() {
        for &hi in &grid[i + 1..] {
            if hi < 10 * lo {
                continue;
            }
            let Some(fit) = power_law_fit(eigenvalues, lo, hi) else {
                continue;
            };
            if fit.r2 < min_r2 {
                continue;
            }
            let width = (hi as f64 / lo as f64).ln();
            let better = best
                .as_ref()
                .is_none_or(|(w, b)| width > w + 1e-9 || ((width - w).abs() <= 1e-9 && fit.r2 > b.r2));
            if better {
                best = Some((width, fit));
            }
        }
    }
    best.map(|b| b.1)
}

fn digamma_int(n: usize) -> f64 {
    // ψ(n) = −γ + Σ_{j<n} 1/j for integers n ≥ 1.
    -0.577_215_664_901_532_9 + (1..n).map(|j| 1.0 / j as f64).sum::<f64>()
}

fn ln_gamma(x: f64) -> f64 {
    // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0.
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Kozachenko-Leonenko k-nearest-neighbour estimate of the differential entropy (nats) of
/// `n × p` points: `ψ(n) − ψ(k) + ln V_p + (p/n) Σ ln ε_i`, `ε_i` the distance to the k-th
/// neighbour, `V_p` the unit-ball volume. Duplicate points are skipped in the sum.
pub fn knn_entropy(points: &[f64], p: usize, k: usize) -> Option<f64> {
    let n = points.len() / p;
    if n <= k || k == 0 {
        return None;
    }
    let mut sum = 0.0;
    let mut used = 0usize;
    let mut dists = vec![0f64; n];
    for i in 0..n {
        let a = &points[i * p..(i + 1) * p];
        for (j, dj) in dists.iter_mut().enumerate() {
            let b = &points[j * p..(j + 1) * p];
            *dj = if i == j {
                f64::INFINITY
            } else {
                a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
            };
        }
        let (_, kth, _) = dists.select_nth_unstable_by(k - 1, f64::total_cmp);
        let eps = kth.sqrt();
        if eps > 0.0 {
            sum += eps.ln();
            used += 1;
        }
    }
    if used == 0 {
        return None;
    }
    let pf = p as f64;
    let ln_vp = pf / 2.0 * std::f64::consts::PI.ln() - ln_gamma(pf / 2.0 + 1.0);
    Some(digamma_int(n) - digamma_int(k) + ln_vp + pf * sum / used as f64)
}

/// Differential entropy (nats) of a Gaussian with covariance eigenvalues `eigenvalues`.
pub fn gaussian_entropy(eigenvalues: &[f64]) -> f64 {
    let p = eigenvalues.len() as f64;
    0.5 * p * (1.0 + (2.0 * std::f64::consts::PI).ln()) + 0.5 * eigenvalues.iter().map(|l| l.ln()).sum::<f64>()
}

/// The spatial-modularity test: adjusted mutual information between two labellings of the same
/// features, and the AMI's mean and standard deviation over `shuffles` random permutations of
/// the second labelling (the null model of geometry unrelated to co-occurrence).
pub fn modularity(cooccurrence: &[u32], geometric: &[u32], shuffles: usize, seed: u64) -> (f64, f64, f64) {
    let ami = adjusted_mutual_info(cooccurrence, geometric);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut shuffled = geometric.to_vec();
    let null: Vec<f64> = (0..shuffles)
        .map(|_| {
            shuffled.shuffle(&mut rng);
            adjusted_mutual_info(cooccurrence, &shuffled)
        })
        .collect();
    let m = null.iter().sum::<f64>() / null.len().max(1) as f64;
    let sd = (null.iter().map(|v| (v - m).powi(2)).sum::<f64>() / null.len().max(1) as f64).sqrt();
    (ami, m, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_entropy_of_a_uniform_square_is_near_zero() {
        // Uniform on [0,1]²: differential entropy 0.
        let mut pts = Vec::new();
        for i in 0..60 {
            for j in 0..60 {
                pts.push((i as f64 + 0.5) / 60.0 + ((i * 7 + j * 13) % 11) as f64 * 1e-4);
                pts.push((j as f64 + 0.5) / 60.0);
            }
        }
        let h = knn_entropy(&pts, 2, 4).unwrap();
        assert!(h.abs() < 0.1, "{h}");
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn power_law_fit_recovers_the_exponent() {
        let eig: Vec<f64> = (1..=100).map(|r| 3.0 * (r as f64).powf(-1.5)).collect();
        let fit = power_law_fit(&eig, 1, 100).unwrap();
        assert!((fit.slope + 1.5).abs() < 1e-12 && (fit.r2 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn principal_axes_of_a_stretched_cloud() {
        let pts: Vec<f32> = (0..200)
            .flat_map(|i| {
                let t = (i as f32 / 200.0) - 0.5;
                [10.0 * t, 0.1 * ((i % 7) as f32 - 3.0)]
            })
            .collect();
        let p = principal(&pts, 2);
        assert!(p.eigenvalues[0] > 50.0 * p.eigenvalues[1]);
        assert!(p.vectors[(0, 0)].abs() > 0.99);
    }
}
