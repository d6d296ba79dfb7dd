//! The reference distribution of drift scores: mean and Ledoit-Wolf-shrunk covariance
//! (scikit-learn's `LedoitWolf(assume_centered=False)`), its whitening map for Mahalanobis
//! distances, and reading reference rows from Parquet.

use std::path::Path;
use std::sync::Arc;

use nalgebra::DMatrix;
use neurostream_engine::layout::Decoder;

/// How the reference covariance is regularized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shrinkage {
    /// The Ledoit-Wolf optimal shrinkage towards `mu · I` (the default).
    LedoitWolf,
    /// A fixed shrinkage coefficient in `[0, 1]` (0: the empirical covariance).
    Fixed(f64),
}

/// Mean and shrunk covariance of reference rows, with the map that whitens them.
#[derive(Clone, Debug)]
pub struct Reference {
    /// Row width.
    pub d: usize,
    /// Rows it was fitted on.
    pub rows: usize,
    /// Per-column mean.
    pub mean: Vec<f64>,
    /// Shrunk covariance, `d × d` row-major (population, ddof = 0).
    pub covariance: Vec<f64>,
    /// The shrinkage coefficient used.
    pub shrinkage: f64,
    /// `W` (`d × d`, row-major) with `W Wᵀ = Σ⁻¹`: `‖(x − μ) W‖²` is the squared Mahalanobis distance.
    pub whitening: Vec<f64>,
}

impl Reference {
    /// Fits the reference to `rows` rows of width `d` (row-major). Errors name the problem:
    /// too few rows, or a covariance that stays singular (a constant column with no shrinkage).
    pub fn fit(data: &[f32], d: usize, shrinkage: Shrinkage) -> Result<Reference, String> {
        let n = data.len() / d.max(1);
        if n < 2 {
            return Err(format!("a reference needs at least 2 rows, it has {n}"));
        }
        let mut mean = vec![0f64; d];
        for r in data.chunks_exact(d) {
            mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let x = DMatrix::<f64>::from_fn(n, d, |i, j| data[i * d + j] as f64 - mean[j]);
        let s = x.transpose() * &x; // XᵀX
        let emp = &s / n as f64;
        let trace: f64 = (0..d).map(|j| emp[(j, j)]).sum();
        let mu = trace / d as f64;
        let shrink = match shrinkage {
            Shrinkage::Fixed(v) => v,
            Shrinkage::LedoitWolf if d == 1 => 0.0,
            Shrinkage::LedoitWolf => {
                // scikit-learn's ledoit_wolf_shrinkage: β̂ from Σₖ‖xₖ‖⁴, δ̂ from ‖XᵀX‖²_F.
                let beta_sum: f64 = x.row_iter().map(|r| r.norm_squared().powi(2)).sum();
                let delta_sum = s.norm_squared() / (n as f64 * n as f64);
                let beta = (beta_sum / n as f64 - delta_sum) / (d as f64 * n as f64);
                let delta = (delta_sum - 2.0 * mu * trace + d as f64 * mu * mu) / d as f64;
                let beta = beta.min(delta);
                if beta == 0.0 {
                    0.0
                } else {
                    beta / delta
                }
            }
        };
        let mut cov = emp * (1.0 - shrink);
        for j in 0..d {
            cov[(j, j)] += shrink * mu;
        }
        let chol = cov.clone().cholesky().ok_or_else(|| {
            format!(
                "the reference covariance of {n} rows × {d} columns is singular (a constant column, or fewer rows than columns, with shrinkage {shrink:.3}); use shrinkage = \"ledoit_wolf\" or a positive fixed shrinkage"
            )
        })?;
        // Σ = L Lᵀ ⇒ Σ⁻¹ = L⁻ᵀ L⁻¹, so W = L⁻ᵀ.
        let l_inv = chol
            .l()
            .try_inverse()
            .ok_or("the Cholesky factor of the reference covariance is not invertible")?;
        let w = l_inv.transpose();
        Ok(Reference {
            d,
            rows: n,
            mean,
            covariance: (0..d * d).map(|i| cov[(i / d, i % d)]).collect(),
            shrinkage: shrink,
            whitening: (0..d * d).map(|i| w[(i / d, i % d)]).collect(),
        })
    }

    /// `μ W`, subtracted from `x W` to whiten a row.
    pub fn whitened_mean(&self) -> Vec<f64> {
        let d = self.d;
        (0..d)
            .map(|j| (0..d).map(|i| self.mean[i] * self.whitening[i * d + j]).sum())
            .collect()
    }
}

/// Reads every row of a Parquet file in the activation layout (`act`) or the signal layout (the
/// float channel columns), as the engine's sinks write them, row-major, through the engine's
/// layout decoder (so list types, nulls and row numbers are checked as for the `parquet` source).
pub fn read_parquet_rows(path: &Path, width: usize) -> Result<Vec<f32>, String> {
    let name = path.display().to_string();
    let builder = neurostream_engine::parquet_read::open(path, Default::default()).map_err(|m| format!("{name}: {m}"))?;
    // The sample rate does not matter to a reference (rows only): any value lets signal files
    // without rate metadata through.
    let mut decoder = Decoder::new(builder.schema(), "act", Some(1.0)).map_err(|e| format!("{name}: {e}"))?;
    if decoder.schema.is_sparse() {
        return Err(format!(
            "{name} holds sparse features; reference rows must be dense (the activation or signal layout)"
        ));
    }
    let reader = builder.build().map_err(|e| format!("{name}: {e}"))?;
    let stream: Arc<str> = Arc::from("reference");
    let mut out = Vec::new();
    let mut row = 0u64;
    for batch in neurostream_engine::parquet_read::Batches(reader) {
        let batch = batch.map_err(|e| format!("{name}: {e}"))?;
        let frame = decoder.decode(&batch, &stream, row, row, &name)?;
        if frame.width() != width {
            return Err(format!(
                "{name}: rows of width {} but the stream has {width} columns",
                frame.width()
            ));
        }
        row += frame.rows() as u64;
        out.extend_from_slice(&frame.data);
    }
    if let Some(p) = out.iter().position(|v| !v.is_finite()) {
        return Err(format!("{name}: non-finite value at row {}, column {}", p / width, p % width));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitening_gives_the_inverse_covariance_quadratic_form() {
        let data: Vec<f32> = (0..60).map(|i| ((i * 37 % 11) as f32) * 0.3 + (i % 3) as f32).collect();
        let r = Reference::fit(&data, 3, Shrinkage::LedoitWolf).unwrap();
        let cov = DMatrix::from_row_slice(3, 3, &r.covariance);
        let inv = cov.try_inverse().unwrap();
        let w = DMatrix::from_row_slice(3, 3, &r.whitening);
        assert!((w.clone() * w.transpose() - inv).abs().max() < 1e-9);
        assert!((0.0..=1.0).contains(&r.shrinkage));
    }

    #[test]
    fn constant_column_without_shrinkage_is_singular() {
        let data: Vec<f32> = (0..40).flat_map(|i| [i as f32, 1.0]).collect();
        let e = Reference::fit(&data, 2, Shrinkage::Fixed(0.0)).unwrap_err();
        assert!(e.contains("singular"), "{e}");
        assert!(Reference::fit(&data, 2, Shrinkage::LedoitWolf).is_ok());
    }
}
