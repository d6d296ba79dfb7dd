//! Riemannian geometry of symmetric positive-definite (covariance) matrices, as pyRiemann
//! computes it: the affine-invariant distance, the Riemannian (Karcher) mean, and the Potato
//! artifact detector (z-scores of log-distances to the mean of clean reference matrices).

use nalgebra::{DMatrix, SymmetricEigen};

/// Applies `f` to the eigenvalues of the symmetric matrix `m`.
fn spd_map(m: &DMatrix<f64>, f: impl Fn(f64) -> f64) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(m.clone());
    let d = DMatrix::from_diagonal(&eig.eigenvalues.map(f));
    &eig.eigenvectors * d * eig.eigenvectors.transpose()
}

/// The smallest and largest eigenvalues of a symmetric matrix.
pub fn eigen_range(m: &DMatrix<f64>) -> (f64, f64) {
    let e = SymmetricEigen::new(m.clone()).eigenvalues;
    (e.min(), e.max())
}

/// Affine-invariant Riemannian distance `‖log(B^{-1/2} A B^{-1/2})‖_F`
/// (pyRiemann's `distance_riemann`).
pub fn distance_riemann(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    let bm12 = spd_map(b, |v| 1.0 / v.sqrt());
    let c = &bm12 * a * &bm12;
    let c = (&c + c.transpose()) * 0.5;
    SymmetricEigen::new(c)
        .eigenvalues
        .iter()
        .map(|l| l.ln().powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Riemannian mean of SPD matrices with equal weights, by pyRiemann's `mean_riemann` iteration
/// (start at the arithmetic mean, step `nu` adapted, stop when `‖J‖_F ≤ tol` or `nu ≤ tol`).
pub fn mean_riemann(mats: &[DMatrix<f64>], tol: f64, maxiter: usize) -> DMatrix<f64> {
    let n = mats[0].nrows();
    let w = 1.0 / mats.len() as f64;
    let mut m = mats.iter().fold(DMatrix::zeros(n, n), |acc, c| acc + c) * w;
    let mut nu = 1.0;
    let mut tau = f64::MAX;
    for _ in 0..maxiter {
        let m12 = spd_map(&m, f64::sqrt);
        let mm12 = spd_map(&m, |v| 1.0 / v.sqrt());
        let mut j = DMatrix::zeros(n, n);
        for c in mats {
            let t = &mm12 * c * &mm12;
            j += spd_map(&((&t + t.transpose()) * 0.5), f64::ln) * w;
        }
        let e = spd_map(&(&j * nu), f64::exp);
        m = &m12 * e * &m12;
        m = (&m + m.transpose()) * 0.5;
        let crit = j.norm();
        let h = nu * crit;
        if h < tau {
            nu *= 0.95;
            tau = h;
        } else {
            nu *= 0.5;
        }
        if crit <= tol || nu <= tol {
            break;
        }
    }
    m
}

/// A fitted Riemannian Potato: reference mean and the mean / standard deviation of the
/// log-distances of the clean reference matrices.
#[derive(Clone, Debug)]
pub struct Potato {
    /// Riemannian mean of the clean reference matrices.
    pub mean: DMatrix<f64>,
    /// Mean of their log-distances to it.
    pub log_mean: f64,
    /// Standard deviation (ddof 0) of those log-distances.
    pub log_std: f64,
    /// Reference matrices kept as clean.
    pub clean: usize,
    /// z-score at or above which a matrix is an artifact.
    pub threshold: f64,
}

impl Potato {
    /// Fits on `mats` as pyRiemann's `Potato(threshold, n_iter_max).fit` does: repeatedly take
    /// the mean of the matrices still clean, drop those whose z-score reaches `threshold`, until
    /// the clean set no longer changes.
    pub fn fit(mats: &[DMatrix<f64>], threshold: f64, n_iter_max: usize) -> Result<Potato, String> {
        if mats.len() < 2 {
            return Err(format!(
                "the potato needs at least 2 reference windows, it has {}",
                mats.len()
            ));
        }
        let mut clean = vec![true; mats.len()];
        let mut fitted = None;
        for _ in 0..n_iter_max {
            let kept: Vec<DMatrix<f64>> = mats.iter().zip(&clean).filter(|(_, &c)| c).map(|(m, _)| m.clone()).collect();
            if kept.is_empty() {
                return Err("every reference window was rejected: raise `threshold`".into());
            }
            let mean = mean_riemann(&kept, 1e-8, 50);
            let d: Vec<f64> = kept.iter().map(|c| distance_riemann(c, &mean).ln()).collect();
            let mu = d.iter().sum::<f64>() / d.len() as f64;
            let sd = (d.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
            let mut next = vec![false; mats.len()];
            let mut k = 0;
            for (i, c) in clean.iter().enumerate() {
                if *c {
                    next[i] = (d[k] - mu) / sd < threshold;
                    k += 1;
                }
            }
            let done = next == clean;
            fitted = Some(Potato {
                mean,
                log_mean: mu,
                log_std: sd,
                clean: kept.len(),
                threshold,
            });
            if done {
                break;
            }
            clean = next;
        }
        let p = fitted.expect("n_iter_max ≥ 1");
        if !(p.log_std > 0.0 && p.log_std.is_finite()) {
            return Err(format!(
                "the reference windows' log-distances have standard deviation {} (identical windows?)",
                p.log_std
            ));
        }
        Ok(p)
    }

    /// Distance of `c` to the mean and its z-score (of the log-distance).
    pub fn score(&self, c: &DMatrix<f64>) -> (f64, f64) {
        let d = distance_riemann(c, &self.mean);
        (d, (d.ln() - self.log_mean) / self.log_std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_affine_invariant_and_zero_on_itself() {
        let a = DMatrix::from_row_slice(2, 2, &[2.0, 0.3, 0.3, 1.0]);
        let b = DMatrix::from_row_slice(2, 2, &[1.0, -0.2, -0.2, 3.0]);
        let g = DMatrix::from_row_slice(2, 2, &[1.5, 0.2, -0.7, 0.9]);
        let d1 = distance_riemann(&a, &b);
        let d2 = distance_riemann(&(&g * &a * g.transpose()), &(&g * &b * g.transpose()));
        assert!((d1 - d2).abs() < 1e-10);
        assert!(distance_riemann(&a, &a) < 1e-7);
    }

    #[test]
    fn mean_of_commuting_matrices_is_the_geometric_mean() {
        let a = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![1.0, 4.0]));
        let b = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![4.0, 1.0]));
        let m = mean_riemann(&[a, b], 1e-10, 100);
        assert!((m[(0, 0)] - 2.0).abs() < 1e-6 && (m[(1, 1)] - 2.0).abs() < 1e-6);
    }
}
