//! Spectral clustering of a weighted graph given as an affinity matrix, the way scikit-learn's
//! `SpectralClustering(affinity="precomputed", assign_labels="kmeans")` does it: the `k`
//! eigenvectors of the normalized Laplacian `L = I − D^{-1/2} A D^{-1/2}` with the smallest
//! eigenvalues, divided by `√degree`, signs made deterministic, then k-means on the rows.
//!
//! Up to [`DENSE_LIMIT`] nodes the eigenvectors come from a dense symmetric eigensolver; above,
//! from block subspace iteration on `2I − L` with the sparse affinity (Rayleigh-Ritz each step).

use nalgebra::{DMatrix, SymmetricEigen};
use neurostream_engine::{EngineError, Result};
use rand::{Rng, SeedableRng};

use super::kmeans::model::{kmeans_best_of, CpuAssign};

/// Graphs with at most this many nodes use the dense eigensolver.
pub const DENSE_LIMIT: usize = 2000;

/// A symmetric affinity matrix over `n` nodes as undirected weighted edges `(i, j, w)`, `i ≠ j`,
/// `w ≥ 0`, each pair listed once.
#[derive(Clone, Debug, Default)]
pub struct Affinity {
    /// Number of nodes.
    pub n: usize,
    /// Edges `(i, j, weight)`.
    pub edges: Vec<(u32, u32, f64)>,
}

impl Affinity {
    fn degrees(&self) -> Vec<f64> {
        let mut deg = vec![0f64; self.n];
        for &(i, j, w) in &self.edges {
            deg[i as usize] += w;
            deg[j as usize] += w;
        }
        deg
    }
}

/// The normalized-Laplacian spectral embedding (`n × k`, row-major) of scikit-learn's
/// `spectral_embedding(norm_laplacian=True, drop_first=False)`.
pub fn spectral_embedding(aff: &Affinity, k: usize, seed: u64) -> Result<Vec<f64>> {
    let n = aff.n;
    if k == 0 || k > n {
        return Err(EngineError::Shape(format!(
            "spectral clustering into {k} clusters needs at least {k} nodes, the graph has {n}"
        )));
    }
    if let Some(&(i, j, w)) = aff.edges.iter().find(|e| !(e.2 >= 0.0 && e.2.is_finite()) || e.0 == e.1) {
        return Err(EngineError::Shape(format!(
            "affinity ({i}, {j}) = {w}: weights must be finite and ≥ 0, between distinct nodes"
        )));
    }
    let deg = aff.degrees();
    let dd: Vec<f64> = deg.iter().map(|&v| if v > 0.0 { v.sqrt() } else { 1.0 }).collect();
    let diag: Vec<f64> = deg.iter().map(|&v| if v > 0.0 { 1.0 } else { 0.0 }).collect();
    // Eigenvectors of L with the smallest eigenvalues, as columns of an n × k matrix.
    let vectors = if n <= DENSE_LIMIT {
        let mut l = DMatrix::<f64>::zeros(n, n);
        for i in 0..n {
            l[(i, i)] = diag[i];
        }
        for &(i, j, w) in &aff.edges {
            let (i, j) = (i as usize, j as usize);
            let v = w / (dd[i] * dd[j]);
            l[(i, j)] -= v;
            l[(j, i)] -= v;
        }
        let eig = SymmetricEigen::new(l);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[a].total_cmp(&eig.eigenvalues[b]));
        DMatrix::from_fn(n, k, |r, c| eig.eigenvectors[(r, order[c])])
    } else {
        subspace_smallest(aff, &dd, &diag, k, seed)?
    };
    let mut emb = vec![0f64; n * k];
    for c in 0..k {
        let col: Vec<f64> = (0..n).map(|r| vectors[(r, c)] / dd[r]).collect();
        // Deterministic sign: the entry of largest magnitude is positive (sklearn's sign flip).
        let (_, &maxv) = col
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .expect("n ≥ 1");
        let s = if maxv < 0.0 { -1.0 } else { 1.0 };
        for r in 0..n {
            emb[r * k + c] = s * col[r];
        }
    }
    Ok(emb)
}

/// The `k` eigenvectors of `L` with the smallest eigenvalues by subspace iteration on
/// `B = 2I − L`, whose eigenvalues lie in `[0, 2]` in reverse order.
fn subspace_smallest(aff: &Affinity, dd: &[f64], diag: &[f64], k: usize, seed: u64) -> Result<DMatrix<f64>> {
    let n = aff.n;
    let b = (k + 10).min(n);
    let apply = |x: &DMatrix<f64>| -> DMatrix<f64> {
        // B x = 2x − diag∘x + M x with M = D^{-1/2} A D^{-1/2}.
        let mut y = DMatrix::<f64>::zeros(n, x.ncols());
        for c in 0..x.ncols() {
            for r in 0..n {
                y[(r, c)] = (2.0 - diag[r]) * x[(r, c)];
            }
        }
        for &(i, j, w) in &aff.edges {
            let (i, j) = (i as usize, j as usize);
            let v = w / (dd[i] * dd[j]);
            for c in 0..x.ncols() {
                y[(i, c)] += v * x[(j, c)];
                y[(j, c)] += v * x[(i, c)];
            }
        }
        y
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut q = DMatrix::<f64>::from_fn(n, b, |_, _| rng.random_range(-1.0..1.0)).qr().q();
    let mut last: Vec<f64> = vec![f64::NAN; k];
    for _ in 0..5000 {
        let y = apply(&q);
        let t = q.transpose() * &y;
        let t = (&t + t.transpose()) * 0.5;
        let eig = SymmetricEigen::new(t);
        let mut order: Vec<usize> = (0..b).collect();
        order.sort_by(|&a, &c| eig.eigenvalues[c].total_cmp(&eig.eigenvalues[a]));
        let v = DMatrix::from_fn(b, b, |r, c| eig.eigenvectors[(r, order[c])]);
        let ritz: Vec<f64> = order.iter().take(k).map(|&i| eig.eigenvalues[i]).collect();
        let x = &y * &v;
        q = x.qr().q();
        let done = ritz.iter().zip(&last).all(|(a, b)| (a - b).abs() < 1e-12);
        last = ritz;
        if done {
            // Rotate the basis onto the Ritz vectors (B's top eigenvectors).
            let y = apply(&q);
            let t = q.transpose() * &y;
            let t = (&t + t.transpose()) * 0.5;
            let eig = SymmetricEigen::new(t);
            let mut order: Vec<usize> = (0..b).collect();
            order.sort_by(|&a, &c| eig.eigenvalues[c].total_cmp(&eig.eigenvalues[a]));
            let v = DMatrix::from_fn(b, k, |r, c| eig.eigenvectors[(r, order[c])]);
            return Ok(&q * v);
        }
    }
    Err(EngineError::Runtime(format!(
        "spectral embedding of {n} nodes did not converge in 5000 subspace iterations (eigengap too small for {k} clusters)"
    )))
}

/// Spectral clustering of `aff` into `k` clusters: embedding, then the best of `n_init`
/// k-means runs (scikit-learn's default is 10). Returns a label per node.
pub fn spectral_clustering(aff: &Affinity, k: usize, n_init: usize, seed: u64) -> Result<Vec<u32>> {
    let emb = spectral_embedding(aff, k, seed)?;
    let x: Vec<f32> = emb.iter().map(|&v| v as f32).collect();
    Ok(kmeans_best_of(&x, k, k, n_init, seed, &mut CpuAssign::new(1))?.labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metrics::adjusted_rand_index;

    fn planted(groups: usize, size: usize, seed: u64) -> (Affinity, Vec<u32>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = groups * size;
        let mut edges = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let same = i / size == j / size;
                let w = if same {
                    rng.random_range(0.5..1.0)
                } else {
                    rng.random_range(0.0..0.05)
                };
                edges.push((i as u32, j as u32, w));
            }
        }
        (Affinity { n, edges }, (0..n).map(|i| (i / size) as u32).collect())
    }

    #[test]
    fn recovers_planted_groups_dense_and_by_subspace_iteration() {
        let (aff, truth) = planted(4, 30, 3);
        let labels = spectral_clustering(&aff, 4, 10, 0).unwrap();
        assert!((adjusted_rand_index(&labels, &truth) - 1.0).abs() < 1e-12);
        let deg = aff.degrees();
        let dd: Vec<f64> = deg.iter().map(|v| v.sqrt()).collect();
        let diag = vec![1.0; aff.n];
        let sub = subspace_smallest(&aff, &dd, &diag, 4, 1).unwrap();
        let emb: Vec<f32> = (0..aff.n)
            .flat_map(|r| (0..4).map(move |c| (r, c)))
            .map(|(r, c)| (sub[(r, c)] / dd[r]) as f32)
            .collect();
        let l2 = kmeans_best_of(&emb, 4, 4, 10, 0, &mut CpuAssign::new(1)).unwrap().labels;
        assert!((adjusted_rand_index(&l2, &truth) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn negative_affinity_is_an_error() {
        let aff = Affinity {
            n: 3,
            edges: vec![(0, 1, -1.0)],
        };
        assert!(spectral_clustering(&aff, 2, 1, 0).is_err());
    }
}
