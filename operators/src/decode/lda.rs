//! Linear discriminant analysis with Ledoit-Wolf shrinkage, as scikit-learn's
//! `LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")`: class priors from the
//! training frequencies; the within-class covariance `Σ_k prior_k · Cov_k`, each `Cov_k` the
//! Ledoit-Wolf estimate of the class's standardized features, scaled back; coefficients solving
//! `Σ · coef_kᵀ = mean_kᵀ`, intercepts `−½ mean_k·coef_k + log prior_k`. Probabilities: the
//! softmax of the decision values (the logistic of their difference for two classes).

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

/// A fitted LDA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lda {
    /// Per class: coefficients (`features` values).
    pub coef: Vec<Vec<f64>>,
    /// Per class: intercept.
    pub intercept: Vec<f64>,
    /// The Ledoit-Wolf shrinkage of each class's covariance.
    pub shrinkage: Vec<f64>,
}

impl Lda {
    /// Fits on `x` (one feature vector per row) with labels `0..classes`.
    pub fn fit(x: &[Vec<f64>], labels: &[usize], classes: usize) -> Result<Lda, String> {
        let d = x.first().map_or(0, |r| r.len());
        if d == 0 {
            return Err("no features".into());
        }
        let n = x.len();
        let mut cov = DMatrix::<f64>::zeros(d, d);
        let mut means = Vec::with_capacity(classes);
        let mut priors = Vec::with_capacity(classes);
        let mut shrinkages = Vec::with_capacity(classes);
        for k in 0..classes {
            let rows: Vec<&Vec<f64>> = x.iter().zip(labels).filter(|(_, &l)| l == k).map(|(r, _)| r).collect();
            if rows.len() < 2 {
                return Err(format!(
                    "class {k} has {} training examples; LDA needs at least 2",
                    rows.len()
                ));
            }
            let m = rows.len() as f64;
            let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / m).collect();
            // StandardScaler: centre, divide by the (population) std, 1 where it is 0.
            let scale: Vec<f64> = (0..d)
                .map(|j| {
                    let s = (rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / m).sqrt();
                    if s > 0.0 {
                        s
                    } else {
                        1.0
                    }
                })
                .collect();
            let z = DMatrix::from_fn(rows.len(), d, |i, j| (rows[i][j] - mean[j]) / scale[j]);
            let (lw, shrink) = ledoit_wolf(&z);
            for i in 0..d {
                for j in 0..d {
                    cov[(i, j)] += m / n as f64 * scale[i] * lw[(i, j)] * scale[j];
                }
            }
            means.push(mean);
            priors.push(m / n as f64);
            shrinkages.push(shrink);
        }
        // lstsq(cov, meansᵀ): cov is symmetric positive definite after shrinkage.
        let svd = cov.clone().svd(true, true);
        let mut coef = Vec::with_capacity(classes);
        let mut intercept = Vec::with_capacity(classes);
        for k in 0..classes {
            let b = DVector::from_vec(means[k].clone());
            let c = svd.solve(&b, 1e-12).map_err(|e| format!("solving the LDA system: {e}"))?;
            let c: Vec<f64> = c.iter().copied().collect();
            intercept.push(-0.5 * means[k].iter().zip(&c).map(|(a, b)| a * b).sum::<f64>() + priors[k].ln());
            coef.push(c);
        }
        Ok(Lda {
            coef,
            intercept,
            shrinkage: shrinkages,
        })
    }

    /// Class probabilities of one feature vector.
    pub fn proba(&self, x: &[f64]) -> Vec<f64> {
        let scores: Vec<f64> = self
            .coef
            .iter()
            .zip(&self.intercept)
            .map(|(c, b)| c.iter().zip(x).map(|(a, v)| a * v).sum::<f64>() + b)
            .collect();
        let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
        let total: f64 = e.iter().sum();
        e.into_iter().map(|v| v / total).collect()
    }
}

/// scikit-learn's `ledoit_wolf(X)` of centred data `x` (`n × p`): the shrunk covariance and the
/// shrinkage.
pub fn ledoit_wolf(x: &DMatrix<f64>) -> (DMatrix<f64>, f64) {
    let (n, p) = (x.nrows() as f64, x.ncols());
    let emp = x.transpose() * x / n;
    let mu = emp.trace() / p as f64;
    let x2 = x.map(|v| v * v);
    let beta_sum = (x2.transpose() * &x2).sum();
    let delta_sum = emp.map(|v| v * v).sum(); // Σ ((XᵀX)/n)²
    let trace_sum = (0..p).map(|j| emp[(j, j)]).sum::<f64>();
    let beta = (beta_sum / n - delta_sum) / (p as f64 * n);
    let delta = (delta_sum - 2.0 * mu * trace_sum + p as f64 * mu * mu) / p as f64;
    let beta = beta.min(delta);
    let shrinkage = if beta == 0.0 { 0.0 } else { beta / delta };
    let mut out = emp * (1.0 - shrinkage);
    for j in 0..p {
        out[(j, j)] += shrinkage * mu;
    }
    (out, shrinkage)
}
