//! The training loop's state: parameters, Adam moments, dead-latent tracking, the input scale,
//! the BatchTopK inference threshold; initialization from the first buffer of activations;
//! checkpoints (atomic, resumable) and the exported SAE formats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::gpu::GpuTrainKernels;
use super::model::{loss_and_grads, BatchStats, LossSettings, Params, TrainArch};
use super::optim::{Adam, Moments};

/// Everything that defines a training run (echoed into checkpoints and `train_report.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Architecture and its sparsity setting.
    #[serde(flatten)]
    pub arch: TrainArch,
    /// Input width (from the stream).
    pub d_in: usize,
    /// Latents.
    pub d_sae: usize,
    /// Tokens per optimizer step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Warm-up as a fraction of the planned steps (or 1000 steps when the budget is unknown).
    pub warmup_fraction: f32,
    /// Decay as a fraction of the planned steps (needs a token budget).
    pub decay_fraction: f32,
    /// Planned tokens (sets the schedule; training stops there).
    pub tokens: Option<u64>,
    /// AuxK coefficient.
    pub aux_coef: f32,
    /// Latents AuxK may use per token (default `d_in / 2`).
    pub k_aux: usize,
    /// A latent is dead after this many tokens without firing.
    pub dead_after_tokens: u64,
    /// Seed of initialization and shuffling.
    pub seed: u64,
    /// Threads of the encoder GEMM.
    pub threads: usize,
}

/// The trainer.
pub struct Trainer {
    /// The run's settings.
    pub settings: TrainSettings,
    /// Current parameters (inputs scaled by `scale`).
    pub params: Params,
    moments: Vec<Moments>,
    adam: Adam,
    /// Optimizer steps taken.
    pub step: u64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Input scale: inputs are multiplied by it so their mean squared norm is `d_in`.
    pub scale: f32,
    /// Token count at each latent's last firing.
    pub last_fired: Vec<u64>,
    /// Firings per latent over the whole run (for `sparsity.safetensors`).
    pub fired: Vec<u64>,
    /// BatchTopK: running mean of the smallest kept activation (the inference threshold).
    pub threshold: f32,
    /// Stats of the latest step.
    pub last: BatchStats,
    /// The wgpu kernels, when training on a GPU.
    gpu: Option<GpuTrainKernels>,
}

impl Trainer {
    /// A trainer initialized from `first` (`rows × d_in`, unscaled): the input scale and
    /// `b_dec` (the scaled mean) come from it; decoder rows are random unit vectors and the
    /// encoder their transpose.
    pub fn new(settings: TrainSettings, first: &[f32]) -> Result<Trainer, String> {
        let (d, m) = (settings.d_in, settings.d_sae);
        let rows = first.len() / d;
        if rows == 0 {
            return Err("no activations to initialize from".into());
        }
        let mean_sq = first
            .chunks_exact(d)
            .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>())
            .sum::<f64>()
            / rows as f64;
        if !(mean_sq > 0.0 && mean_sq.is_finite()) {
            return Err(format!(
                "the first {rows} activations have mean squared norm {mean_sq}: cannot scale"
            ));
        }
        let scale = (d as f64 / mean_sq).sqrt() as f32;
        let mut rng = StdRng::seed_from_u64(settings.seed);
        let mut w_dec: Vec<f32> = (0..m * d).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
        for row in w_dec.chunks_exact_mut(d) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= n);
        }
        let b_dec: Vec<f32> = (0..d)
            .map(|i| (first.chunks_exact(d).map(|r| r[i] as f64).sum::<f64>() / rows as f64 * scale as f64) as f32)
            .collect();
        let log_threshold = match settings.arch {
            TrainArch::JumpRelu { init_threshold, .. } => vec![init_threshold.ln(); m],
            _ => Vec::new(),
        };
        let params = Params {
            d,
            m,
            w_enc: w_dec.clone(),
            b_enc: vec![0.0; m],
            w_dec,
            b_dec,
            log_threshold,
        };
        Ok(Trainer::from_parts(settings, params, scale))
    }

    fn from_parts(settings: TrainSettings, params: Params, scale: f32) -> Trainer {
        let planned = settings.tokens.map(|t| (t / settings.batch as u64).max(1));
        let warmup = match planned {
            Some(p) => ((p as f32 * settings.warmup_fraction) as u64).max(1),
            None => 1000,
        };
        let adam = Adam {
            lr: settings.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: warmup,
            total_steps: planned,
            decay_fraction: settings.decay_fraction,
        };
        let sizes = [
            params.w_enc.len(),
            params.b_enc.len(),
            params.w_dec.len(),
            params.b_dec.len(),
            params.log_threshold.len(),
        ];
        Trainer {
            moments: sizes.iter().map(|&n| Moments::new(n)).collect(),
            adam,
            step: 0,
            tokens: 0,
            scale,
            last_fired: vec![0; params.m],
            fired: vec![0; params.m],
            threshold: 0.0,
            last: BatchStats::default(),
            gpu: None,
            params,
            settings,
        }
    }

    /// Steps planned by the token budget, when there is one.
    pub fn planned_steps(&self) -> Option<u64> {
        self.adam.total_steps
    }

    /// Whether the token budget is used up.
    pub fn done(&self) -> bool {
        self.planned_steps().is_some_and(|p| self.step >= p)
    }

    /// Latents that have not fired in the last `dead_after_tokens` tokens (none before that
    /// many tokens were seen).
    pub fn dead(&self) -> Vec<bool> {
        let after = self.settings.dead_after_tokens;
        self.last_fired
            .iter()
            .map(|&l| self.tokens >= after && self.tokens - l >= after)
            .collect()
    }

    /// Computes the forward and backward passes with wgpu kernels from now on.
    pub fn use_gpu(&mut self, kernels: GpuTrainKernels) {
        self.gpu = Some(kernels);
    }

    /// Where the forward and backward passes run, in words.
    pub fn backend(&self) -> String {
        match &self.gpu {
            Some(g) => format!("gpu ({})", g.describe()),
            None => format!("cpu ({} threads)", self.settings.threads),
        }
    }

    /// One optimizer step on `batch` (`rows × d_in`, unscaled). Fails only when the GPU does.
    pub fn train_step(&mut self, batch: &[f32]) -> Result<BatchStats, String> {
        let d = self.params.d;
        let rows = batch.len() / d;
        let x: Vec<f32> = batch.iter().map(|v| v * self.scale).collect();
        let dead = self.dead();
        let loss = LossSettings {
            arch: self.settings.arch,
            aux_coef: self.settings.aux_coef,
            k_aux: self.settings.k_aux,
        };
        let (mut g, stats, fires) = match &self.gpu {
            Some(gpu) => gpu
                .loss_and_grads(&self.params, &loss, &x, rows, &dead)
                .map_err(|e| format!("wgpu training step {}: {e}", self.step + 1))?,
            None => loss_and_grads(&self.params, &loss, &x, rows, &dead, self.settings.threads),
        };
        self.step += 1;
        let end = self.tokens + rows as u64;
        for (j, &c) in fires.iter().enumerate() {
            if c > 0 {
                self.last_fired[j] = end;
                self.fired[j] += c as u64;
            }
        }
        self.tokens = end;
        if let TrainArch::BatchTopK { .. } = self.settings.arch {
            // The inference threshold: a running mean of the smallest kept activation.
            self.threshold = if self.step == 1 {
                stats.min_kept
            } else {
                0.99 * self.threshold + 0.01 * stats.min_kept
            };
        }
        let unit = self.settings.arch.unit_norm_decoder();
        if unit {
            // Remove the gradient component along each (unit) decoder row: the update then
            // moves along the sphere, and renormalizing below only corrects curvature.
            for (gr, wr) in g.w_dec.chunks_exact_mut(d).zip(self.params.w_dec.chunks_exact(d)) {
                let along: f32 = gr.iter().zip(wr).map(|(a, b)| a * b).sum();
                gr.iter_mut().zip(wr).for_each(|(gv, wv)| *gv -= along * wv);
            }
        }
        let p = &mut self.params;
        let t = self.step;
        let m = &mut self.moments;
        self.adam.update(t, &mut p.w_enc, &g.w_enc, &mut m[0]);
        self.adam.update(t, &mut p.b_enc, &g.b_enc, &mut m[1]);
        self.adam.update(t, &mut p.w_dec, &g.w_dec, &mut m[2]);
        self.adam.update(t, &mut p.b_dec, &g.b_dec, &mut m[3]);
        if !p.log_threshold.is_empty() {
            self.adam.update(t, &mut p.log_threshold, &g.log_threshold, &mut m[4]);
        }
        if unit {
            for row in p.w_dec.chunks_exact_mut(d) {
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= n);
            }
        }
        self.last = stats;
        Ok(stats)
    }

    /// A random permutation of `0..n` for shuffling a buffer, drawn from the seed and the
    /// current step, so a resumed run shuffles as the uninterrupted one would.
    pub fn permutation(&self, n: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(self.settings.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            p.swap(i, j);
        }
        p
    }

    /// Writes a checkpoint to `dir/step_<N>` atomically (a temporary directory renamed into
    /// place), so an interrupted or failed write leaves the previous checkpoints intact.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<PathBuf, String> {
        let target = dir.join(format!("step_{:08}", self.step));
        let tmp = dir.join(format!(".step_{:08}.tmp", self.step));
        let write = || -> Result<(), String> {
            std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
            let mut tensors: Vec<(String, Vec<f32>, Vec<usize>)> = vec![];
            let p = &self.params;
            let (d, m) = (p.d, p.m);
            for (name, v, shape) in [
                ("w_enc", &p.w_enc, vec![m, d]),
                ("b_enc", &p.b_enc, vec![m]),
                ("w_dec", &p.w_dec, vec![m, d]),
                ("b_dec", &p.b_dec, vec![d]),
                ("log_threshold", &p.log_threshold, vec![p.log_threshold.len()]),
            ] {
                tensors.push((name.into(), v.clone(), shape));
            }
            for (i, mo) in self.moments.iter().enumerate() {
                tensors.push((format!("adam_m_{i}"), mo.m.clone(), vec![mo.m.len()]));
                tensors.push((format!("adam_v_{i}"), mo.v.clone(), vec![mo.v.len()]));
            }
            write_f32_safetensors(&tmp.join("state.safetensors"), &tensors)?;
            let state = CheckpointState {
                settings: self.settings.clone(),
                step: self.step,
                tokens: self.tokens,
                scale: self.scale,
                threshold: self.threshold,
                last_fired: self.last_fired.clone(),
                fired: self.fired.clone(),
            };
            let json = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
            std::fs::write(tmp.join("state.json"), json).map_err(|e| e.to_string())?;
            if target.exists() {
                std::fs::remove_dir_all(&target).map_err(|e| e.to_string())?;
            }
            std::fs::rename(&tmp, &target).map_err(|e| e.to_string())?;
            neurostream_engine::files::sync_dir(dir);
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            format!("checkpoint {}: {e}; earlier checkpoints are intact", target.display())
        })?;
        Ok(target)
    }

    /// Resumes from a checkpoint directory written by [`Trainer::save_checkpoint`]; `settings`
    /// must match the checkpoint's except `tokens`, `threads` and the schedule.
    pub fn load_checkpoint(path: &Path, settings: TrainSettings) -> Result<Trainer, String> {
        let at = |m: String| format!("checkpoint {}: {m}", path.display());
        let json = std::fs::read(path.join("state.json")).map_err(|e| at(e.to_string()))?;
        let state: CheckpointState = serde_json::from_slice(&json).map_err(|e| at(e.to_string()))?;
        let (old, new) = (&state.settings, &settings);
        if old.arch != new.arch || old.d_in != new.d_in || old.d_sae != new.d_sae {
            return Err(at(format!(
                "was trained as {:?} with d_in {} and d_sae {}, this run asks for {:?} with d_in {} and d_sae {}",
                old.arch, old.d_in, old.d_sae, new.arch, new.d_in, new.d_sae
            )));
        }
        let tensors = read_f32_safetensors(&path.join("state.safetensors")).map_err(at)?;
        let take = |name: &str| -> Result<Vec<f32>, String> {
            tensors.get(name).cloned().ok_or_else(|| at(format!("no tensor `{name}`")))
        };
        let params = Params {
            d: new.d_in,
            m: new.d_sae,
            w_enc: take("w_enc")?,
            b_enc: take("b_enc")?,
            w_dec: take("w_dec")?,
            b_dec: take("b_dec")?,
            log_threshold: take("log_threshold")?,
        };
        let mut t = Trainer::from_parts(settings, params, state.scale);
        for (i, mo) in t.moments.iter_mut().enumerate() {
            mo.m = take(&format!("adam_m_{i}"))?;
            mo.v = take(&format!("adam_v_{i}"))?;
        }
        t.step = state.step;
        t.tokens = state.tokens;
        t.threshold = state.threshold;
        t.last_fired = state.last_fired;
        t.fired = state.fired;
        Ok(t)
    }

    /// The newest checkpoint under `dir`, if any.
    pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
        let mut steps: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step_") && p.join("state.json").exists())
            })
            .collect();
        steps.sort();
        steps.pop()
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    settings: TrainSettings,
    step: u64,
    tokens: u64,
    scale: f32,
    threshold: f32,
    last_fired: Vec<u64>,
    fired: Vec<u64>,
}

/// Writes named f32 tensors to a safetensors file (through a temporary name).
pub fn write_f32_safetensors(path: &Path, tensors: &[(String, Vec<f32>, Vec<usize>)]) -> Result<(), String> {
    write_safetensors(path, tensors, false)
}

/// Writes named tensors to a safetensors file (through a temporary name), as f32 or, with
/// `f16`, rounded to IEEE half precision.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<f32>, Vec<usize>)], f16: bool) -> Result<(), String> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, v, s)| {
            let b = if f16 {
                v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            (n.clone(), b, s.clone())
        })
        .collect();
    let dtype = if f16 { Dtype::F16 } else { Dtype::F32 };
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| {
            TensorView::new(dtype, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("tensor {n}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    neurostream_engine::files::replace_atomic(path, |temp| {
        safetensors::serialize_to_file(views, None, temp).map_err(std::io::Error::other)
    })
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads every f32 tensor of a safetensors file.
pub fn read_f32_safetensors(path: &Path) -> Result<HashMap<String, Vec<f32>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!(
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            ));
        }
        out.insert(
            name.to_string(),
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        );
    }
    Ok(out)
}
