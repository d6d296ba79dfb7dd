//! Writing a trained SAE in the formats the field uses.
//!
//! The trainer works on inputs multiplied by `scale` (mean squared norm `d_in`). Like SAELens at
//! the end of training (`fold_activation_norm_scaling_factor`), the scale is folded into the
//! weights so the files take raw activations: `W_enc ← s·W_enc`, `b_dec ← b_dec/s`,
//! `W_dec ← W_dec/s` (activations are unchanged, reconstructions come out in raw units), and
//! `normalize_activations = "none"`. The factor is recorded in `cfg.json`'s `metadata` and in
//! `train_report.json`.

use std::path::Path;

use serde_json::json;

use super::model::TrainArch;
use super::trainer::{write_f32_safetensors, write_safetensors, Trainer};

/// Names recorded with the SAE.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// Model the activations came from.
    pub model: Option<String>,
    /// Layer or hook name.
    pub layer: Option<String>,
    /// Store the SAELens weights as float16 (half the size; the training state stays f32).
    pub f16: bool,
}

/// Weights with the input scale folded in: `(W_enc as d × m, b_enc, W_dec m × d, b_dec)`.
fn folded(t: &Trainer) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = &t.params;
    let (d, m, s) = (p.d, p.m, t.scale);
    let mut w_enc_t = vec![0f32; d * m];
    for j in 0..m {
        for i in 0..d {
            w_enc_t[i * m + j] = p.w_enc[j * d + i] * s;
        }
    }
    let w_dec = p.w_dec.iter().map(|v| v / s).collect();
    let b_dec = p.b_dec.iter().map(|v| v / s).collect();
    (w_enc_t, p.b_enc.clone(), w_dec, b_dec)
}

/// Log10 firing density per latent over the run (`-10` for latents that never fired), as
/// SAELens stores it in `sparsity.safetensors`.
pub fn log10_density(t: &Trainer) -> Vec<f32> {
    t.fired
        .iter()
        .map(|&c| {
            if c == 0 || t.tokens == 0 {
                -10.0
            } else {
                (c as f64 / t.tokens as f64).log10() as f32
            }
        })
        .collect()
}

/// Writes `cfg.json`, `sae_weights.safetensors` and `sparsity.safetensors` (SAELens format) to
/// `dir`. TopK → `topk`; ReLU → `standard`; JumpReLU → `jumprelu` with `threshold = exp(log θ)`;
/// BatchTopK → `jumprelu` with every threshold at the learned global one (its inference form).
pub fn write_saelens(t: &Trainer, dir: &Path, prov: &Provenance) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (d, m) = (t.params.d, t.params.m);
    let (w_enc, b_enc, w_dec, b_dec) = folded(t);
    let mut tensors = vec![
        ("W_enc".to_string(), w_enc, vec![d, m]),
        ("b_enc".to_string(), b_enc, vec![m]),
        ("W_dec".to_string(), w_dec, vec![m, d]),
        ("b_dec".to_string(), b_dec, vec![d]),
    ];
    let mut cfg = json!({
        "d_in": d,
        "d_sae": m,
        "dtype": if prov.f16 { "float16" } else { "float32" },
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "model_name": prov.model,
        "hook_name": prov.layer,
        "metadata": {
            "model_name": prov.model,
            "hook_name": prov.layer,
            "trainer": "neurostream sae_train",
            "norm_scaling_factor_folded": t.scale,
            "train_tokens": t.tokens,
        },
    });
    // Unknown names are left out rather than written as null (sae-lens expects strings).
    for key in ["model_name", "hook_name"] {
        if cfg[key].is_null() {
            cfg.as_object_mut().unwrap().remove(key);
            cfg["metadata"].as_object_mut().unwrap().remove(key);
        }
    }
    match t.settings.arch {
        TrainArch::TopK { k } => {
            cfg["architecture"] = json!("topk");
            cfg["k"] = json!(k);
            cfg["rescale_acts_by_decoder_norm"] = json!(false);
        }
        TrainArch::Relu { .. } => cfg["architecture"] = json!("standard"),
        TrainArch::JumpRelu { .. } => {
            cfg["architecture"] = json!("jumprelu");
            tensors.push((
                "threshold".into(),
                t.params.log_threshold.iter().map(|v| v.exp()).collect(),
                vec![m],
            ));
        }
        TrainArch::BatchTopK { k } => {
            cfg["architecture"] = json!("jumprelu");
            cfg["metadata"]["trained_as"] = json!(format!("batchtopk k={k}"));
            tensors.push(("threshold".into(), vec![t.threshold; m], vec![m]));
        }
    }
    write_safetensors(&dir.join("sae_weights.safetensors"), &tensors, prov.f16)?;
    write_f32_safetensors(
        &dir.join("sparsity.safetensors"),
        &[("sparsity".to_string(), log10_density(t), vec![m])],
    )?;
    write_json(&dir.join("cfg.json"), &cfg)
}

/// Writes the EleutherAI sparsify format to `dir`: `cfg.json` and `sae.safetensors`
/// (`encoder.weight [m, d]`, `encoder.bias`, `W_dec [m, d]`, `b_dec`). Only TopK SAEs have this
/// form (sparsify's encoder is `topk(relu(·))`).
pub fn write_sparsify(t: &Trainer, dir: &Path) -> Result<(), String> {
    let TrainArch::TopK { k } = t.settings.arch else {
        return Err("the sparsify format holds TopK SAEs only".into());
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (d, m) = (t.params.d, t.params.m);
    let (w_enc_t, b_enc, w_dec, b_dec) = folded(t);
    let mut enc = vec![0f32; m * d];
    for i in 0..d {
        for j in 0..m {
            enc[j * d + i] = w_enc_t[i * m + j];
        }
    }
    write_f32_safetensors(
        &dir.join("sae.safetensors"),
        &[
            ("encoder.weight".to_string(), enc, vec![m, d]),
            ("encoder.bias".to_string(), b_enc, vec![m]),
            ("W_dec".to_string(), w_dec, vec![m, d]),
            ("b_dec".to_string(), b_dec, vec![d]),
        ],
    )?;
    let cfg = json!({
        "activation": "topk",
        "k": k,
        "num_latents": m,
        "d_in": d,
        "expansion_factor": m / d.max(1),
        "normalize_decoder": false,
        "transcode": false,
        "multi_topk": false,
        "skip_connection": false,
    });
    write_json(&dir.join("cfg.json"), &cfg)
}

/// Writes pretty JSON atomically (see `neurostream_engine::files`).
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    neurostream_engine::files::write_atomic(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}
