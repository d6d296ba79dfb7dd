//! `synthetic_activations`: seeded activations whose structure is known.
//!
//! `features` unit directions in `d_model` dimensions are drawn at random (Gaussian, then
//! normalized). Each token activates about `active` of them, drawn with probability
//! proportional to `1 / (i + 1)^zipf` (a power law of firing densities like real SAE features),
//! each with a coefficient `0.5 + Exp(1)`; the row is the sum of coefficient × direction plus
//! Gaussian noise of standard deviation `noise` per dimension. Tokens are grouped into
//! sequences of `seq_len`. Every chunk is generated from its own seed, so the data do not
//! depend on how many workers run.

use std::sync::Arc;

use neurostream_engine::layout::check_values;
use neurostream_engine::{
    Batch, EngineError, Frame, NodeConfig, NodeContext, Result, RowIndex, Schema, Source, SourceKind, SourceReader, WorkerPos,
};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Exp1, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::hash::hash;

/// Configuration of a `synthetic_activations` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticActivationsConfig {
    /// Activation width.
    pub d_model: usize,
    /// Number of planted directions.
    pub features: usize,
    /// Expected active features per token.
    pub active: usize,
    /// Power-law exponent of feature frequencies (0: uniform).
    pub zipf: f64,
    /// Standard deviation of the per-dimension Gaussian noise.
    #[schemars(extend("x-unit" = "activation units"))]
    pub noise: f64,
    /// Total tokens.
    #[schemars(extend("x-unit" = "tokens"))]
    pub tokens: u64,
    /// Tokens per sequence (`pos` runs `0..seq_len`).
    #[schemars(extend("x-unit" = "tokens"))]
    pub seq_len: u32,
    /// Tokens per frame.
    #[schemars(extend("x-unit" = "tokens"))]
    pub chunk: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Model name written to metadata.
    pub model: Option<String>,
    /// Layer name written to metadata.
    pub layer: Option<String>,
    /// When set, rows carry event times: token `t` is stamped `start_time_s + t / tokens_per_s`
    /// seconds after the Unix epoch (a steady traffic rate, for time windows).
    #[schemars(extend("x-unit" = "tokens/s"))]
    pub tokens_per_s: Option<f64>,
    /// Event time of token 0 in seconds since the Unix epoch (with `tokens_per_s`; default 0).
    #[schemars(extend("x-unit" = "s"))]
    pub start_time_s: f64,
}

impl Default for SyntheticActivationsConfig {
    fn default() -> Self {
        SyntheticActivationsConfig {
            d_model: 64,
            features: 256,
            active: 8,
            zipf: 0.8,
            noise: 0.05,
            tokens: 16384,
            seq_len: 128,
            chunk: 1024,
            seed: 0,
            model: Some("synthetic".into()),
            layer: None,
            tokens_per_s: None,
            start_time_s: 0.0,
        }
    }
}

impl NodeConfig for SyntheticActivationsConfig {
    const KIND: &'static str = "synthetic_activations";
}

/// The `synthetic_activations` source kind.
pub struct SyntheticActivationsKind;

impl SourceKind for SyntheticActivationsKind {
    type Config = SyntheticActivationsConfig;

    fn describe(&self) -> &'static str {
        "seeded activations: sparse combinations of planted unit directions plus noise"
    }
    fn build(&self, cfg: SyntheticActivationsConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(
            SyntheticActivations::new(ctx.name, cfg).map_err(|m| EngineError::config(ctx.label, m))?,
        ))
    }
}

/// A configured generator; cheap to clone (directions are shared).
#[derive(Clone, Debug)]
pub struct SyntheticActivations {
    name: Arc<str>,
    cfg: SyntheticActivationsConfig,
    schema: Arc<Schema>,
    directions: Arc<Vec<f32>>,
    weights: Arc<WeightedIndex<f64>>,
}

impl SyntheticActivations {
    /// Checks `cfg` and draws the planted directions.
    pub fn new(name: &str, cfg: SyntheticActivationsConfig) -> std::result::Result<SyntheticActivations, String> {
        if cfg.d_model == 0 || cfg.features == 0 || cfg.chunk == 0 || cfg.seq_len == 0 {
            return Err("`d_model`, `features`, `chunk` and `seq_len` must be at least 1".into());
        }
        if cfg.active > cfg.features {
            return Err(format!("`active` ({}) exceeds `features` ({})", cfg.active, cfg.features));
        }
        if !(cfg.noise >= 0.0 && cfg.noise.is_finite() && cfg.zipf >= 0.0 && cfg.zipf.is_finite()) {
            return Err("`noise` and `zipf` must be finite and >= 0".into());
        }
        if cfg.tokens_per_s.is_some_and(|r| !(r > 0.0 && r.is_finite())) || !cfg.start_time_s.is_finite() {
            return Err("`tokens_per_s` must be a positive rate and `start_time_s` finite".into());
        }
        check_values("`features` × `d_model`", cfg.features, cfg.d_model)?;
        check_values("`chunk` × `d_model`", cfg.chunk, cfg.d_model)?;
        check_values("`chunk` × `active`", cfg.chunk, cfg.active)?;
        let mut rng = StdRng::seed_from_u64(hash(&[cfg.seed, 0xD1EC]));
        let mut directions = Vec::with_capacity(cfg.features * cfg.d_model);
        for _ in 0..cfg.features {
            let v: Vec<f64> = (0..cfg.d_model).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            directions.extend(v.iter().map(|x| (x / norm) as f32));
        }
        let weights =
            WeightedIndex::new((0..cfg.features).map(|i| 1.0 / ((i + 1) as f64).powf(cfg.zipf))).map_err(|e| e.to_string())?;
        Ok(SyntheticActivations {
            name: name.into(),
            schema: Arc::new(Schema::activation(cfg.d_model, cfg.model.clone(), cfg.layer.clone())),
            cfg,
            directions: Arc::new(directions),
            weights: Arc::new(weights),
        })
    }

    /// The planted unit directions, `features × d_model`, row-major.
    pub fn directions(&self) -> &[f32] {
        &self.directions
    }

    /// Tokens `start..start+len` with, per token, the active features and their coefficients.
    pub fn generate(&self, chunk: u64) -> (Frame, Vec<Vec<(u32, f32)>>) {
        let start = chunk * self.cfg.chunk as u64;
        let len = (self.cfg.chunk as u64).min(self.cfg.tokens - start) as usize;
        let d = self.cfg.d_model;
        let mut rng = StdRng::seed_from_u64(hash(&[self.cfg.seed, chunk, 0xAC75]));
        let mut data = vec![0f32; len * d];
        let mut truth = Vec::with_capacity(len);
        for r in 0..len {
            let row = &mut data[r * d..(r + 1) * d];
            let mut active: Vec<(u32, f32)> = Vec::with_capacity(self.cfg.active);
            while active.len() < self.cfg.active {
                let f = self.weights.sample(&mut rng) as u32;
                if active.iter().all(|(g, _)| *g != f) {
                    let coef = 0.5 + rng.sample::<f64, _>(Exp1);
                    active.push((f, coef as f32));
                }
            }
            for &(f, coef) in &active {
                let dir = &self.directions[f as usize * d..(f as usize + 1) * d];
                for (x, u) in row.iter_mut().zip(dir) {
                    *x += coef * u;
                }
            }
            if self.cfg.noise > 0.0 {
                for x in row.iter_mut() {
                    *x += (self.cfg.noise * rng.sample::<f64, _>(StandardNormal)) as f32;
                }
            }
            truth.push(active);
        }
        let seq_len = self.cfg.seq_len as u64;
        let index = RowIndex::Tokens {
            seq_id: (start..start + len as u64).map(|t| t / seq_len).collect(),
            pos: (start..start + len as u64).map(|t| (t % seq_len) as u32).collect(),
            token: None,
            time: self.cfg.tokens_per_s.map(|rate| {
                (start..start + len as u64)
                    .map(|t| ((self.cfg.start_time_s + t as f64 / rate) * 1e9).round() as i64)
                    .collect()
            }),
        };
        (
            Frame::new(self.name.clone(), self.schema.clone(), index, data).expect("shape"),
            truth,
        )
    }
}

impl Source for SyntheticActivations {
    fn replayable(&self) -> bool {
        true // a pure function of its files / seed: reopening yields the same batches
    }
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        Some(self.cfg.tokens)
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let chunks = self.cfg.tokens.div_ceil(self.cfg.chunk as u64);
        Ok(Box::new(Reader {
            gen: self.clone(),
            chunks: crate::worker_chunks(chunks, worker.index, worker.peers).collect(),
        }))
    }
}

struct Reader {
    gen: SyntheticActivations,
    chunks: std::collections::VecDeque<u64>,
}

impl SourceReader for Reader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        let Some(k) = self.chunks.pop_front() else {
            return Ok(None);
        };
        let (frame, _) = self.gen.generate(k);
        Ok(Some((k * self.gen.cfg.chunk as u64, Batch::Dense(frame))))
    }
    fn next_time(&self) -> Option<u64> {
        self.chunks.front().map(|&k| k * self.gen.cfg.chunk as u64)
    }
    fn location(&self) -> String {
        format!("synthetic_activations `{}`", self.gen.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_the_planted_combinations_when_noise_is_zero() {
        let g = SyntheticActivations::new(
            "a",
            SyntheticActivationsConfig {
                noise: 0.0,
                tokens: 300,
                chunk: 128,
                ..Default::default()
            },
        )
        .unwrap();
        let d = 64;
        for f in 0..256 {
            let n: f64 = g.directions()[f * d..(f + 1) * d].iter().map(|&x| (x as f64).powi(2)).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        let (frame, truth) = g.generate(1);
        assert_eq!(frame.rows(), 128);
        for (r, active) in truth.iter().enumerate() {
            assert_eq!(active.len(), 8);
            let mut want = vec![0f64; d];
            for &(f, c) in active {
                let dir = &g.directions()[f as usize * d..(f as usize + 1) * d];
                for (w, u) in want.iter_mut().zip(dir) {
                    *w += c as f64 * *u as f64;
                }
            }
            for (got, w) in frame.row(r).iter().zip(&want) {
                assert!((*got as f64 - w).abs() < 1e-4);
            }
        }
        let (last, _) = g.generate(2);
        assert_eq!(last.rows(), 300 - 256);
        let RowIndex::Tokens { seq_id, pos, .. } = &last.index else {
            panic!()
        };
        assert_eq!((seq_id[0], pos[0]), (2, 0));
    }
}
