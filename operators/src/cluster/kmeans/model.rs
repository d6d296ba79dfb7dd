//! k-means: k-means++ seeding, Lloyd's batch iterations (the algorithm of scikit-learn's
//! `KMeans(algorithm="lloyd")`), Sculley's mini-batch updates with per-centroid counts, and the
//! assignment kernels every one of them runs on (CPU GEMM, or wgpu GEMM + arg-min).
//!
//! Rows are `f32`, row-major `n × d`; centroids are kept in `f64` and handed to the kernels as
//! `f32`. Distances are squared Euclidean; the cosine metric runs on unit-normalized rows and
//! centroids, where `‖x − c‖² = 2 − 2·cos`, and reports `1 − cos`.

use std::sync::Arc;

use neurostream_engine::device::workgroups_1d;
use neurostream_engine::PooledBuffer;
use neurostream_engine::{wgpu, EngineError, GpuContext, GpuPass, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::gpu_gemm::{self, GemmCall};
use crate::sae::half_weights::WeightDtype;
use crate::sae::packed::{kernel_supported, PackedWeights};
use crate::sae_train::model::encoder_gemm;

/// How distances between rows and centroids are measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Squared Euclidean distance.
    #[default]
    Euclidean,
    /// Cosine distance `1 − cos(x, c)` (spherical k-means: rows and centroids unit-normalized).
    Cosine,
}

/// The assignment step: the nearest centroid of every row.
pub trait AssignKernels: Send {
    /// For each row of `data` (`rows × d`), the index of the nearest of the `k` centroids
    /// (`k × d`) and the squared Euclidean distance to it. Ties go to the lower index.
    fn assign(&mut self, data: &[f32], d: usize, centroids: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>)>;
    /// `cpu (N threads)` or `gpu`.
    fn describe(&self) -> String;
}

/// Squared L2 norm of every row, in float32 with eight partial sums (vectorizes; the GEMM the
/// norms combine with is float32 too).
fn row_norms(data: &[f32], d: usize) -> Vec<f32> {
    data.chunks_exact(d.max(1))
        .map(|r| {
            let mut acc = [0f32; 8];
            let chunks = r.chunks_exact(8);
            let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for c in chunks {
                for (a, v) in acc.iter_mut().zip(c) {
                    *a += v * v;
                }
            }
            acc.iter().sum::<f32>() + tail
        })
        .collect()
}

/// Rows per GEMM block, bounding the `rows × k` scratch of the CPU kernel.
const CPU_BLOCK_ROWS: usize = 2048;

/// CPU assignment: `‖x‖² − 2 x·c + ‖c‖²` minimized over the centroids. Where the CPU has AVX2
/// and FMA, `X · Cᵀ` runs on the register-blocked kernel of `sae_encode` (`Cᵀ` packed into
/// column panels once per call; with AVX-512F the arg-min is fused into it, see
/// [`PackedWeights::nearest`]), else on the `gemm` crate followed by a scan. With `threads > 1`
/// the rows are split over that many threads.
pub struct CpuAssign {
    threads: usize,
    scratch: Vec<f32>,
}

impl CpuAssign {
    /// A kernel using `threads` threads for the product.
    pub fn new(threads: usize) -> CpuAssign {
        CpuAssign {
            threads: threads.max(1),
            scratch: Vec::new(),
        }
    }
}

/// The centroids of one assignment call, as its GEMM reads them.
struct Centroids<'a> {
    /// `k × d`, row-major.
    rows: &'a [f32],
    /// `Cᵀ` packed for the register-blocked kernel, when the CPU runs it.
    packed: Option<PackedWeights>,
    /// `‖c‖²` per centroid.
    norms: Vec<f32>,
}

impl<'a> Centroids<'a> {
    fn new(rows: &'a [f32], d: usize, k: usize) -> Centroids<'a> {
        let packed = kernel_supported().then(|| {
            let mut t = vec![0f32; d * k];
            for (j, c) in rows.chunks_exact(d).enumerate() {
                for (i, &v) in c.iter().enumerate() {
                    t[i * k + j] = v;
                }
            }
            PackedWeights::new(&t, d, k, WeightDtype::F32)
        });
        Centroids {
            rows,
            packed: packed.flatten(),
            norms: row_norms(rows, d),
        }
    }
}

impl CpuAssign {
    /// Assigns `data` on this thread: the packed kernel's fused product and arg-min where the
    /// CPU runs it, else blocks of rows, a single-threaded product, then the arg-min.
    fn assign_serial(data: &[f32], d: usize, c: &Centroids, k: usize, scratch: &mut Vec<f32>) -> (Vec<u32>, Vec<f32>) {
        let rows = data.len() / d.max(1);
        let xn = row_norms(data, d);
        if let Some(p) = &c.packed {
            // min over j of ‖c_j‖² − 2 x·c_j, then ‖x‖² added back.
            let mut best = vec![(0u32, 0f32); rows];
            p.nearest(data, rows, &c.norms, &mut best);
            return best.iter().zip(&xn).map(|(&(j, v), &x)| (j, (x + v).max(0.0))).unzip();
        }
        let mut labels = Vec::with_capacity(rows);
        let mut dist = Vec::with_capacity(rows);
        for start in (0..rows).step_by(CPU_BLOCK_ROWS) {
            let n = CPU_BLOCK_ROWS.min(rows - start);
            scratch.resize(n * k, 0.0);
            let block = &data[start * d..(start + n) * d];
            encoder_gemm(block, c.rows, n, d, k, scratch, 1);
            for (r, dots) in scratch.chunks_exact(k).enumerate() {
                let x = xn[start + r];
                let (mut best, mut best_d) = (0u32, f32::INFINITY);
                for (j, (&dot, &cc)) in dots.iter().zip(&c.norms).enumerate() {
                    let dd = x - 2.0 * dot + cc;
                    if dd < best_d {
                        best_d = dd;
                        best = j as u32;
                    }
                }
                labels.push(best);
                dist.push(best_d.max(0.0));
            }
        }
        (labels, dist)
    }
}

impl AssignKernels for CpuAssign {
    fn assign(&mut self, data: &[f32], d: usize, centroids: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let rows = data.len() / d.max(1);
        let c = Centroids::new(centroids, d, k);
        let threads = self.threads.min(rows.div_ceil(256)).max(1);
        if threads == 1 {
            return Ok(Self::assign_serial(data, d, &c, k, &mut self.scratch));
        }
        // Each thread takes a contiguous share of the rows: product and arg-min run in parallel
        // without synchronizing per block.
        let per = rows.div_ceil(threads);
        let parts = crate::parallel::map_shares(rows.div_ceil(per), |i| {
            let part = &data[i * per * d..((i + 1) * per).min(rows) * d];
            Self::assign_serial(part, d, &c, k, &mut Vec::new())
        });
        let mut labels = Vec::with_capacity(rows);
        let mut dist = Vec::with_capacity(rows);
        for (l, dd) in parts {
            labels.extend(l);
            dist.extend(dd);
        }
        Ok((labels, dist))
    }

    fn describe(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AssignParams {
    rows: u32,
    k: u32,
    pad: [u32; 2],
}

/// wgpu assignment: the shared GEMM computes `X · Cᵀ` on the device (centroids stay there while
/// they do not change), `assign.wgsl` takes the arg-min per row; labels and distances come back.
pub struct GpuAssign {
    ctx: Arc<GpuContext>,
    gemm: gpu_gemm::Gemm,
    argmin: Arc<wgpu::ComputePipeline>,
    centroids: Option<(Vec<f32>, PooledBuffer, PooledBuffer)>,
}

impl GpuAssign {
    /// Compiles the kernels on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuAssign> {
        Ok(GpuAssign {
            gemm: gpu_gemm::pipeline(&ctx)?,
            argmin: ctx.pipeline("kmeans.assign", include_str!("assign.wgsl"), "assign")?,
            ctx,
            centroids: None,
        })
    }
}

impl AssignKernels for GpuAssign {
    fn assign(&mut self, data: &[f32], d: usize, centroids: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let rows = data.len() / d.max(1);
        if rows == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let ctx = self.ctx.clone();
        if self.centroids.as_ref().is_none_or(|(c, _, _)| c.as_slice() != centroids) {
            let buf = ctx.storage_init("kmeans.centroids", bytemuck::cast_slice(centroids));
            let norms = ctx.storage_init("kmeans.centroid_norms", bytemuck::cast_slice(&row_norms(centroids, d)));
            self.centroids = Some((centroids.to_vec(), buf, norms));
        }
        let (_, c_buf, cn_buf) = self.centroids.as_ref().unwrap();
        let x = ctx.storage_init("kmeans.x", bytemuck::cast_slice(data));
        let xn = ctx.storage_init("kmeans.row_norms", bytemuck::cast_slice(&row_norms(data, d)));
        let dots = ctx.storage_zeroed("kmeans.dots", (rows * k * 4) as u64);
        let labels = ctx.storage_zeroed("kmeans.labels", (rows * 4) as u64);
        let dist = ctx.storage_zeroed("kmeans.distances", (rows * 4) as u64);
        let dummy = ctx.storage_zeroed("kmeans.dummy", 4);
        let call = GemmCall::new(rows, k, d, &x, c_buf, &dots).transpose_b();
        let gemm_uniform = call.uniform(&ctx);
        let gemm_bufs = call.buffers(&gemm_uniform, &dummy);
        let params = AssignParams {
            rows: rows as u32,
            k: k as u32,
            pad: [0; 2],
        };
        let uniform = ctx.uniform("kmeans.params", bytemuck::bytes_of(&params));
        let bufs = [&*uniform, &*dots, &*xn, cn_buf, &*labels, &*dist];
        let passes = [
            gpu_gemm::pass(&self.gemm, &call, &gemm_bufs),
            GpuPass {
                pipeline: &self.argmin,
                buffers: &bufs,
                workgroups: workgroups_1d(rows, 64),
            },
        ];
        let out = ctx.run_reads(&passes, &[(&labels, (rows * 4) as u64), (&dist, (rows * 4) as u64)])?;
        Ok((bytemuck::cast_slice(&out[0]).to_vec(), bytemuck::cast_slice(&out[1]).to_vec()))
    }

    fn describe(&self) -> String {
        format!("gpu ({})", self.ctx.describe())
    }
}

/// Scales every row of `data` (`rows × d`) to unit L2 norm; all-zero rows stay zero.
pub fn normalize_rows(data: &mut [f32], d: usize) {
    for r in data.chunks_exact_mut(d.max(1)) {
        let n = r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
        }
    }
}

fn normalize_rows_f64(data: &mut [f64], d: usize) {
    for r in data.chunks_exact_mut(d.max(1)) {
        let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|v| *v /= n);
        }
    }
}

fn sq_dist(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&x, &c)| (x as f64 - c) * (x as f64 - c)).sum()
}

/// k-means++ seeding (Arthur & Vassilvitskii) with scikit-learn's greedy variant: each new
/// centroid is the best of `2 + ⌊ln k⌋` candidates drawn with probability ∝ squared distance.
/// Returns `k × d` centroids (`f64`). Errors when there are fewer rows than clusters.
pub fn kmeans_plusplus(data: &[f32], d: usize, k: usize, seed: u64) -> Result<Vec<f64>, String> {
    let n = data.len() / d.max(1);
    if k == 0 {
        return Err("k must be at least 1".into());
    }
    if n < k {
        return Err(format!("{n} rows are fewer than the {k} clusters asked for"));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let to_f64 = |r: &[f32]| r.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let trials = 2 + (k as f64).ln() as usize;
    let mut centers = Vec::with_capacity(k * d);
    let first = rng.random_range(0..n);
    centers.extend(to_f64(row(first)));
    let mut closest: Vec<f64> = (0..n).map(|i| sq_dist(row(i), &centers[..d])).collect();
    let mut pot: f64 = closest.iter().sum();
    for _ in 1..k {
        // Cumulative distances for sampling ∝ D².
        let mut cum = Vec::with_capacity(n);
        let mut acc = 0.0;
        for &c in &closest {
            acc += c;
            cum.push(acc);
        }
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let cand = if pot > 0.0 {
                let u = rng.random::<f64>() * pot;
                cum.partition_point(|&c| c <= u).min(n - 1)
            } else {
                rng.random_range(0..n)
            };
            let c = to_f64(row(cand));
            let new_closest: Vec<f64> = (0..n).map(|i| sq_dist(row(i), &c).min(closest[i])).collect();
            let new_pot: f64 = new_closest.iter().sum();
            if best.as_ref().is_none_or(|(p, _, _)| new_pot < *p) {
                best = Some((new_pot, cand, new_closest));
            }
        }
        let (p, cand, new_closest) = best.expect("at least two trials");
        centers.extend(to_f64(row(cand)));
        closest = new_closest;
        pot = p;
    }
    Ok(centers)
}

/// The result of [`lloyd`].
#[derive(Clone, Debug)]
pub struct LloydResult {
    /// Final centroids, `k × d`, in the input's coordinates.
    pub centroids: Vec<f64>,
    /// Cluster of every row.
    pub labels: Vec<u32>,
    /// Sum of squared distances of rows to their centroids (float64).
    pub inertia: f64,
    /// Iterations run.
    pub iterations: usize,
}

/// Lloyd's algorithm from `init` (`k × d`) as scikit-learn's `KMeans(init=init, n_init=1,
/// algorithm="lloyd", max_iter, tol)` runs it: data centred on its column means, stop when the
/// labels repeat or the total squared centre shift is at most `tol × mean column variance`,
/// a final assignment when stopped by the shift, empty clusters moved to the rows farthest from
/// their centroids. The assignment runs on `kernels`; centre sums and inertia in float64.
pub fn lloyd(
    data: &[f32],
    d: usize,
    init: &[f64],
    max_iter: usize,
    tol: f64,
    kernels: &mut dyn AssignKernels,
) -> Result<LloydResult> {
    let n = data.len() / d.max(1);
    let k = init.len() / d.max(1);
    if n < k {
        return Err(EngineError::Shape(format!(
            "{n} rows are fewer than the {k} clusters asked for"
        )));
    }
    let mut mean = vec![0f64; d];
    for r in data.chunks_exact(d) {
        mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0f64; d];
    for r in data.chunks_exact(d) {
        var.iter_mut()
            .zip(r)
            .zip(&mean)
            .for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2));
    }
    let tol = tol * var.iter().sum::<f64>() / (n as f64 * d as f64);
    let x: Vec<f32> = data
        .chunks_exact(d)
        .flat_map(|r| r.iter().zip(&mean).map(|(&v, m)| (v as f64 - m) as f32))
        .collect();
    let mut centers: Vec<f64> = init
        .chunks_exact(d)
        .flat_map(|c| c.iter().zip(&mean).map(|(v, m)| v - m))
        .collect();
    let mut old_labels = vec![u32::MAX; n];
    let mut labels = Vec::new();
    let mut strict = false;
    let mut iterations = 0;
    for _ in 0..max_iter {
        iterations += 1;
        let c32: Vec<f32> = centers.iter().map(|&v| v as f32).collect();
        let (l, _) = kernels.assign(&x, d, &c32, k)?;
        labels = l;
        let new_centers = update_centers(&x, d, &centers, &labels);
        let shift: f64 = new_centers.iter().zip(&centers).map(|(a, b)| (a - b) * (a - b)).sum();
        centers = new_centers;
        if labels == old_labels {
            strict = true;
            break;
        }
        if shift <= tol {
            break;
        }
        old_labels.clone_from(&labels);
    }
    if !strict {
        let c32: Vec<f32> = centers.iter().map(|&v| v as f32).collect();
        labels = kernels.assign(&x, d, &c32, k)?.0;
    }
    let centroids: Vec<f64> = centers
        .chunks_exact(d)
        .flat_map(|c| c.iter().zip(&mean).map(|(v, m)| v + m))
        .collect();
    let inertia = data
        .chunks_exact(d)
        .zip(&labels)
        .map(|(r, &l)| sq_dist(r, &centroids[l as usize * d..(l as usize + 1) * d]))
        .sum();
    Ok(LloydResult {
        centroids,
        labels,
        inertia,
        iterations,
    })
}

/// New centres as the means of their rows; empty clusters take the rows farthest from their
/// (old) centres, as scikit-learn relocates them.
fn update_centers(x: &[f32], d: usize, old: &[f64], labels: &[u32]) -> Vec<f64> {
    let k = old.len() / d;
    let mut sums = vec![0f64; k * d];
    let mut counts = vec![0f64; k];
    for (r, &l) in x.chunks_exact(d).zip(labels) {
        let l = l as usize;
        counts[l] += 1.0;
        sums[l * d..(l + 1) * d].iter_mut().zip(r).for_each(|(s, &v)| *s += v as f64);
    }
    let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0.0).collect();
    if !empty.is_empty() {
        let mut far: Vec<(f64, usize)> = x
            .chunks_exact(d)
            .zip(labels)
            .enumerate()
            .map(|(i, (r, &l))| (sq_dist(r, &old[l as usize * d..(l as usize + 1) * d]), i))
            .collect();
        far.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (&c, &(_, i)) in empty.iter().zip(&far) {
            let from = labels[i] as usize;
            let r = &x[i * d..(i + 1) * d];
            sums[from * d..(from + 1) * d]
                .iter_mut()
                .zip(r)
                .for_each(|(s, &v)| *s -= v as f64);
            counts[from] -= 1.0;
            sums[c * d..(c + 1) * d].iter_mut().zip(r).for_each(|(s, &v)| *s = v as f64);
            counts[c] = 1.0;
        }
    }
    for c in 0..k {
        if counts[c] > 0.0 {
            sums[c * d..(c + 1) * d].iter_mut().for_each(|s| *s /= counts[c]);
        } else {
            sums[c * d..(c + 1) * d].copy_from_slice(&old[c * d..(c + 1) * d]);
        }
    }
    sums
}

/// The best of `n_init` runs of k-means++ seeding then [`lloyd`] (lowest inertia), with seeds
/// `seed, seed + 1, ...`, as scikit-learn's `KMeans(n_init=...)`.
pub fn kmeans_best_of(
    data: &[f32],
    d: usize,
    k: usize,
    n_init: usize,
    seed: u64,
    kernels: &mut dyn AssignKernels,
) -> Result<LloydResult> {
    let mut best: Option<LloydResult> = None;
    for i in 0..n_init.max(1) {
        let init = kmeans_plusplus(data, d, k, seed.wrapping_add(i as u64)).map_err(EngineError::Shape)?;
        let r = lloyd(data, d, &init, 300, 1e-4, kernels)?;
        if best.as_ref().is_none_or(|b| r.inertia < b.inertia) {
            best = Some(r);
        }
    }
    Ok(best.expect("at least one run"))
}

/// Spherical (cosine) k-means: rows unit-normalized, Lloyd iterations with centroids
/// renormalized after each update, best of `n_init` k-means++ seedings. Labels and `1 − cos`
/// summed over rows as `inertia`.
pub fn cosine_kmeans(
    data: &[f32],
    d: usize,
    k: usize,
    n_init: usize,
    seed: u64,
    kernels: &mut dyn AssignKernels,
) -> Result<LloydResult> {
    let mut x = data.to_vec();
    normalize_rows(&mut x, d);
    let n = x.len() / d.max(1);
    let mut best: Option<LloydResult> = None;
    for i in 0..n_init.max(1) {
        let mut centers = kmeans_plusplus(&x, d, k, seed.wrapping_add(i as u64)).map_err(EngineError::Shape)?;
        let mut labels = vec![u32::MAX; n];
        let mut iterations = 0;
        for _ in 0..300 {
            iterations += 1;
            let c32: Vec<f32> = centers.iter().map(|&v| v as f32).collect();
            let (l, _) = kernels.assign(&x, d, &c32, k)?;
            let converged = l == labels;
            labels = l;
            if converged {
                break;
            }
            centers = update_centers(&x, d, &centers, &labels);
            normalize_rows_f64(&mut centers, d);
        }
        let inertia = x
            .chunks_exact(d)
            .zip(&labels)
            .map(|(r, &l)| {
                let c = &centers[l as usize * d..(l as usize + 1) * d];
                1.0 - r.iter().zip(c).map(|(&a, b)| a as f64 * b).sum::<f64>()
            })
            .sum();
        if best.as_ref().is_none_or(|b| inertia < b.inertia) {
            best = Some(LloydResult {
                centroids: centers,
                labels,
                inertia,
                iterations,
            });
        }
    }
    Ok(best.expect("at least one run"))
}

/// Mini-batch k-means state (Sculley 2010): centroids and how many rows each has absorbed.
/// Each row moves its centroid by `1/count` of the way towards it, so a centroid is the mean of
/// every row it was ever assigned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MiniBatch {
    /// Centroids, `k × d`.
    pub centroids: Vec<f64>,
    /// Rows absorbed per centroid.
    pub counts: Vec<u64>,
    /// Row width.
    pub d: usize,
    /// Distance used.
    pub metric: Metric,
}

impl MiniBatch {
    /// Starts from `init` (`k × d`) with zero counts.
    pub fn new(mut init: Vec<f64>, d: usize, metric: Metric) -> MiniBatch {
        if metric == Metric::Cosine {
            normalize_rows_f64(&mut init, d);
        }
        let k = init.len() / d.max(1);
        MiniBatch {
            centroids: init,
            counts: vec![0; k],
            d,
            metric,
        }
    }

    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.counts.len()
    }

    /// Assigns the rows of `batch` (already unit-normalized for the cosine metric) to the
    /// current centroids, then moves the centroids. Returns labels and distances (squared
    /// Euclidean, or `1 − cos`) as of before the update.
    pub fn step(&mut self, batch: &[f32], kernels: &mut dyn AssignKernels) -> Result<(Vec<u32>, Vec<f32>)> {
        let d = self.d;
        let c32: Vec<f32> = self.centroids.iter().map(|&v| v as f32).collect();
        let (labels, mut dist) = kernels.assign(batch, d, &c32, self.k())?;
        for (r, &l) in batch.chunks_exact(d).zip(&labels) {
            let l = l as usize;
            self.counts[l] += 1;
            let eta = 1.0 / self.counts[l] as f64;
            self.centroids[l * d..(l + 1) * d]
                .iter_mut()
                .zip(r)
                .for_each(|(c, &v)| *c += eta * (v as f64 - *c));
        }
        if self.metric == Metric::Cosine {
            normalize_rows_f64(&mut self.centroids, d);
            dist.iter_mut().for_each(|v| *v /= 2.0);
        }
        Ok((labels, dist))
    }
}

/// Sum over rows of the squared distance to the nearest of `centroids` (scikit-learn's inertia).
pub fn inertia(data: &[f32], d: usize, centroids: &[f64]) -> f64 {
    data.chunks_exact(d)
        .map(|r| centroids.chunks_exact(d).map(|c| sq_dist(r, c)).fold(f64::INFINITY, f64::min))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n_per: usize, centers: &[[f32; 2]], seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut out = Vec::new();
        for c in centers {
            for _ in 0..n_per {
                out.push(c[0] + rng.random_range(-0.5..0.5));
                out.push(c[1] + rng.random_range(-0.5..0.5));
            }
        }
        out
    }

    #[test]
    fn lloyd_finds_separated_blobs_and_matches_direct_assignment() {
        let data = blobs(50, &[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], 1);
        let init = kmeans_plusplus(&data, 2, 3, 7).unwrap();
        let r = lloyd(&data, 2, &init, 100, 1e-4, &mut CpuAssign::new(1)).unwrap();
        for b in 0..3 {
            let l = r.labels[b * 50];
            assert!(r.labels[b * 50..(b + 1) * 50].iter().all(|&x| x == l));
        }
        assert!((r.inertia - inertia(&data, 2, &r.centroids)).abs() < 1e-9 * r.inertia.max(1.0));
    }

    /// The CPU kernel (packed panels where the CPU has AVX2, 1 and 2 threads) against a float64
    /// brute force, on shapes that fill no panel or row block exactly: labels equal wherever the
    /// nearest centroid is not a near tie, distances within 1e-4 relative.
    #[test]
    fn cpu_assignment_matches_a_float64_brute_force() {
        let (rows, d, k) = (2500, 37, 23);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let data: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let cents: Vec<f32> = (0..k * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        for threads in [1, 2] {
            let (labels, dist) = CpuAssign::new(threads).assign(&data, d, &cents, k).unwrap();
            for r in 0..rows {
                let x = &data[r * d..(r + 1) * d];
                let mut ds: Vec<(f64, usize)> = (0..k)
                    .map(|j| {
                        let c = &cents[j * d..(j + 1) * d];
                        (x.iter().zip(c).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum(), j)
                    })
                    .collect();
                ds.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let (best, j) = ds[0];
                if ds[1].0 - best > 1e-3 * best {
                    assert_eq!(labels[r] as usize, j, "row {r}");
                }
                assert!(
                    (dist[r] as f64 - best).abs() <= 1e-4 * best.max(1.0),
                    "row {r}: {} vs {best}",
                    dist[r]
                );
            }
        }
    }

    #[test]
    fn minibatch_centroid_is_the_mean_of_its_rows() {
        let data = blobs(40, &[[0.0, 0.0], [20.0, 20.0]], 2);
        let mut mb = MiniBatch::new(vec![0.0, 0.0, 20.0, 20.0], 2, Metric::Euclidean);
        let (labels, _) = mb.step(&data, &mut CpuAssign::new(1)).unwrap();
        let mean0: f64 = data
            .chunks_exact(2)
            .zip(&labels)
            .filter(|(_, &l)| l == 0)
            .map(|(r, _)| r[0] as f64)
            .sum::<f64>()
            / mb.counts[0] as f64;
        assert!((mb.centroids[0] - mean0).abs() < 1e-9);
        assert_eq!(mb.counts, vec![40, 40]);
    }

    #[test]
    fn too_few_rows_is_an_error() {
        let e = kmeans_plusplus(&[1.0, 2.0], 2, 3, 0).unwrap_err();
        assert!(e.contains("fewer than the 3 clusters"), "{e}");
    }
}
