//! Common spatial patterns for two classes, as MNE's `CSP(n_components, reg=None,
//! log=True, cov_est="concat", component_order="mutual_info")` (MNE 1.13): per class, the
//! covariance of its epochs concatenated in time (`X·Xᵀ / samples`, not centred); the
//! generalized eigenproblem `C₀ v = λ (C₀ + C₁) v` restricted to the principal subspace of the
//! mean covariance (all of it when full rank; one dimension less after a common average
//! reference); filters ordered by `|λ − ½|`, largest first. Features: `log(mean_t (w·x)²)`.

use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

/// Fitted CSP filters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Csp {
    /// Spatial filters, `n_components × channels` (row `i` is filter `i`).
    pub filters: Vec<Vec<f64>>,
    /// The generalized eigenvalue of each filter (class 0's share of the power).
    pub eigenvalues: Vec<f64>,
}

/// Eigenvalues of the mean covariance below this fraction of the largest count as rank loss.
const RANK_TOL: f64 = 1e-8;

impl Csp {
    /// Fits on `epochs` (each `samples × channels`, row-major) with labels 0 or 1.
    pub fn fit(epochs: &[Vec<f32>], labels: &[usize], channels: usize, n_components: usize) -> Result<Csp, String> {
        let mut covs = [DMatrix::<f64>::zeros(channels, channels), DMatrix::zeros(channels, channels)];
        let mut counts = [0usize; 2];
        for (e, &l) in epochs.iter().zip(labels) {
            if l > 1 {
                return Err("CSP here separates two classes".into());
            }
            for row in e.chunks_exact(channels) {
                for i in 0..channels {
                    let xi = row[i] as f64;
                    for j in 0..=i {
                        covs[l][(i, j)] += xi * row[j] as f64;
                    }
                }
            }
            counts[l] += e.len() / channels;
        }
        if counts.contains(&0) {
            return Err("CSP needs epochs of both classes".into());
        }
        for (c, n) in covs.iter_mut().zip(counts) {
            for i in 0..channels {
                for j in 0..i {
                    c[(j, i)] = c[(i, j)];
                }
            }
            *c /= n as f64;
        }
        // Restrict to the principal subspace of the mean covariance.
        let mean = (&covs[0] + &covs[1]) / 2.0;
        let eig = SymmetricEigen::new(mean.clone());
        let top = eig.eigenvalues.iter().cloned().fold(0.0, f64::max);
        if top <= 0.0 || !top.is_finite() {
            return Err("the epochs have no power (all zero or not finite)".into());
        }
        let keep: Vec<usize> = (0..channels).filter(|&i| eig.eigenvalues[i] > RANK_TOL * top).collect();
        let restr = if keep.len() == channels {
            DMatrix::identity(channels, channels)
        } else {
            DMatrix::from_fn(keep.len(), channels, |r, c| eig.eigenvectors[(c, keep[r])])
        };
        let s = &restr * &covs[0] * restr.transpose();
        let r = &restr * (&covs[0] + &covs[1]) * restr.transpose();
        let (vals, vecs) = generalized_eigh(&s, &r)?;
        let vecs = restr.transpose() * vecs; // back to channel space
        let mut order: Vec<usize> = (0..vals.len()).collect();
        order.sort_by(|&a, &b| (vals[b] - 0.5).abs().total_cmp(&(vals[a] - 0.5).abs()));
        let n = n_components.min(order.len());
        if n == 0 {
            return Err("`n_components` must be at least 1".into());
        }
        Ok(Csp {
            filters: order[..n].iter().map(|&k| vecs.column(k).iter().copied().collect()).collect(),
            eigenvalues: order[..n].iter().map(|&k| vals[k]).collect(),
        })
    }

    /// `log(mean_t (w·x)²)` of one epoch (`samples × channels`) for each filter.
    pub fn features(&self, epoch: &[f32], channels: usize) -> Vec<f64> {
        let rows = epoch.len() / channels;
        self.filters
            .iter()
            .map(|w| {
                let power = epoch
                    .chunks_exact(channels)
                    .map(|x| {
                        let v: f64 = x.iter().zip(w).map(|(&a, b)| a as f64 * b).sum();
                        v * v
                    })
                    .sum::<f64>()
                    / rows as f64;
                power.ln()
            })
            .collect()
    }

    /// Log of the mean power of already filtered sources (`samples × n_components`).
    pub fn log_power(sources: &[f32], components: usize) -> Vec<f64> {
        let rows = sources.len() / components;
        (0..components)
            .map(|k| {
                (sources
                    .iter()
                    .skip(k)
                    .step_by(components)
                    .map(|&v| (v as f64).powi(2))
                    .sum::<f64>()
                    / rows as f64)
                    .ln()
            })
            .collect()
    }
}

/// `scipy.linalg.eigh(a, b)`: eigenvalues ascending, eigenvectors (columns) with `vᵀ b v = 1`.
pub fn generalized_eigh(a: &DMatrix<f64>, b: &DMatrix<f64>) -> Result<(Vec<f64>, DMatrix<f64>), String> {
    let chol = b
        .clone()
        .cholesky()
        .ok_or("the summed class covariance is not positive definite (a constant or duplicated channel?)")?;
    let l = chol.l();
    let l_inv = l.clone().try_inverse().ok_or("the summed class covariance is singular")?;
    let c = &l_inv * a * l_inv.transpose();
    let c = (&c + c.transpose()) / 2.0;
    let eig = SymmetricEigen::new(c);
    let mut order: Vec<usize> = (0..eig.eigenvalues.len()).collect();
    order.sort_by(|&x, &y| eig.eigenvalues[x].total_cmp(&eig.eigenvalues[y]));
    let vals = order.iter().map(|&k| eig.eigenvalues[k]).collect();
    let u = DMatrix::from_fn(eig.eigenvectors.nrows(), order.len(), |r, c| eig.eigenvectors[(r, order[c])]);
    Ok((vals, l_inv.transpose() * u))
}
