//! Sparse autoencoder weights and the encode formulas, loaded from the public formats.
//!
//! Formulas (x: one input row of `d_in`; `@` row-vector times matrix):
//!
//! | architecture | encode | source |
//! | --- | --- | --- |
//! | standard (ReLU) | `relu(x' @ W_enc + b_enc)` | SAELens `standard_sae.py` |
//! | topk | `h = x' @ W_enc + b_enc` (× `‖W_dec[j]‖` when `rescale_acts_by_decoder_norm`); keep the `k` largest `h`, then ReLU | SAELens `topk_sae.py` |
//! | jumprelu | `h = x' @ W_enc + b_enc`; `relu(h) · [h > threshold_j]` | SAELens `jumprelu_sae.py` |
//! | batchtopk (inference) | as jumprelu with the global threshold | SAELens `batchtopk_sae.py` |
//! | gated | `z = x' @ W_enc`; `[z + b_gate > 0] · relu(exp(r_mag) · z + b_mag)` | SAELens `gated_sae.py` |
//! | transcoder, skip_transcoder / jumprelu_transcoder | as standard / jumprelu with `x' = norm_in(x)`: `b_dec` is in the output hook's space (`W_dec` is `d_sae × d_out`), `W_skip` only adds to the output | SAELens `transcoder.py` |
//! | sparsify | `topk(relu((x − b_dec) @ encoder.weightᵀ + encoder.bias))` (no `− b_dec` for transcoders); `groupmax`: the largest of each of `k` groups of `d_sae / k` consecutive latents instead of the top `k` | EleutherAI sparsify `sparse_coder.py`, `fused_encoder.py` |
//! | Gemma Scope | `h = x @ W_enc + b_enc`; `relu(h) · [h > threshold_j]` (no normalization, no `b_dec` subtraction) | Gemma Scope tutorial (`JumpReLUSAE.encode`) |
//! | Gemma Scope 2 | as Gemma Scope, from `params.safetensors` (`w_enc`, `w_dec`, `b_enc`, `b_dec`, `threshold`) | SAELens `gemma_3_sae_huggingface_loader` |
//! | Llama Scope | `x' = x · sqrt(d_model) / avg_norm_in` (dataset-wise); `h = x' @ encoder.weightᵀ + encoder.bias`; `h · [h · s_j > θ]` with `s_j = ‖decoder.weight[:, j]‖` when `sparsity_include_decoder_norm` (else 1) | OpenMOSS lm-saes (`hyperparams.json`); SAELens `llama_scope_sae_huggingface_loader` |
//!
//! where `x' = norm_in(x) − b_dec · apply_b_dec_to_input`, and `norm_in` is SAELens's
//! `normalize_activations`: `none`; `constant_norm_rescale`: `x · sqrt(d_in) / ‖x‖`;
//! `layer_norm`: `(x − mean(x)) / (std(x, ddof=1) + 1e-5)`; `expected_average_only_in`:
//! `x · scaling_factor`.

use std::path::{Path, PathBuf};

use neurostream_engine::tensor::{decode_le, DType};
use neurostream_engine::{EngineError, Result};
use serde_json::Value;

/// The activation function of an SAE.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    /// `relu(h)`.
    Relu,
    /// The `k` largest pre-activations, then ReLU.
    TopK {
        /// Latents kept per row.
        k: usize,
    },
    /// `relu(h) · [h > threshold_j]` (JumpReLU; BatchTopK at inference with one threshold for all).
    JumpRelu {
        /// Per-latent threshold, `d_sae` long.
        threshold: Vec<f32>,
    },
    /// Group max (sparsify `groupmax`): the latents form `k` groups of `group` consecutive ids;
    /// each group keeps its largest pre-activation when that is positive (ties: the lower id).
    GroupMax {
        /// Groups per row (at most this many latents are kept).
        k: usize,
        /// Latents per group: `d_sae / k`.
        group: usize,
    },
    /// Gated SAE: `[z + b_gate > 0] · relu(exp(r_mag) · z + b_mag)`.
    Gated {
        /// Gate bias, `d_sae`.
        b_gate: Vec<f32>,
        /// Log magnitude scale, `d_sae`.
        r_mag: Vec<f32>,
        /// Magnitude bias, `d_sae`.
        b_mag: Vec<f32>,
    },
}

/// Input normalization before encoding (SAELens `normalize_activations`).
#[derive(Clone, Debug, PartialEq)]
pub enum InputNorm {
    /// No normalization.
    None,
    /// `x · sqrt(d_in) / ‖x‖`.
    ConstantNormRescale,
    /// `(x − mean) / (std + 1e-5)`, std with Bessel's correction (torch's default).
    LayerNorm,
    /// `x · factor` (`expected_average_only_in` with its dataset scaling factor).
    Scale(f32),
}

/// A loaded sparse autoencoder.
#[derive(Clone, Debug)]
pub struct Sae {
    /// Input width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Encoder, `d_in × d_sae`, row-major.
    pub w_enc: Vec<f32>,
    /// Encoder bias, `d_sae` (zeros for gated SAEs, which use `b_gate`/`b_mag`).
    pub b_enc: Vec<f32>,
    /// Decoder output width: `d_in` for an autoencoder, the output hook's width for a
    /// transcoder.
    pub d_out: usize,
    /// Decoder, `d_sae × d_out`, row-major.
    pub w_dec: Vec<f32>,
    /// Decoder bias, `d_out`.
    pub b_dec: Vec<f32>,
    /// A transcoder (SAELens `*transcoder`, sparsify `transcode`): it encodes one activation and
    /// reconstructs another, so its decoder is not in its input's space.
    pub transcoder: bool,
    /// The output adds a skip term `x @ W_skipᵀ` (sparsify `skip_connection`, SAELens skip
    /// transcoders) that encoding never reads; `sae_reconstruct` refuses such SAEs.
    pub skip_connection: bool,
    /// Activation.
    pub activation: Activation,
    /// Subtract `b_dec` from the (normalized) input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Input normalization.
    pub norm: InputNorm,
    /// Multiply pre-activations by each latent's decoder norm (SAELens topk option).
    pub rescale_by_decoder_norm: bool,
    /// Format and path, for metadata and messages.
    pub origin: String,
    /// Model the SAE was trained on, when the config says.
    pub model: Option<String>,
    /// Hook point, when the config says.
    pub hook: Option<String>,
}

fn err(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Input {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Tensors of a safetensors file as f32, checked against expected shapes.
struct Tensors<'a> {
    path: PathBuf,
    st: safetensors::SafeTensors<'a>,
}

impl<'a> Tensors<'a> {
    /// Parses the safetensors file `path` whose bytes are `bytes`.
    fn parse(path: &Path, bytes: &'a [u8]) -> Result<Tensors<'a>> {
        let st =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
        Ok(Tensors {
            path: path.to_path_buf(),
            st,
        })
    }

    /// The two dimensions of the matrix `name`; `expected` names them for the error.
    fn matrix_shape(&self, name: &str, expected: &str) -> Result<(usize, usize)> {
        let shape = self
            .shape(name)
            .ok_or_else(|| err(&self.path, format!("no tensor `{name}`")))?;
        match shape[..] {
            [a, b] => Ok((a, b)),
            _ => Err(err(&self.path, format!("`{name}` has shape {shape:?}, expected {expected}"))),
        }
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.st.names().into_iter().map(|s| s.to_string()).collect();
        n.sort();
        n
    }

    fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// Reads `name` as f32 (from F32, F16, BF16 or F64), checking its shape.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.st.tensor(name).map_err(|_| {
            err(
                &self.path,
                format!("no tensor `{name}` (tensors: {})", self.names().join(", ")),
            )
        })?;
        let numel: usize = shape.iter().product();
        let got: usize = t.shape().iter().product();
        if t.shape() != shape && !(got == numel && (shape.len() <= 1 || t.shape().len() <= 1)) {
            return Err(err(
                &self.path,
                format!("tensor `{name}` has shape {:?}, expected {shape:?}", t.shape()),
            ));
        }
        let Some(dtype) = DType::from_safetensors(t.dtype()) else {
            return Err(err(
                &self.path,
                format!("tensor `{name}` has dtype {:?}; expected F32, F16, BF16 or F64", t.dtype()),
            ));
        };
        let mut v = Vec::with_capacity(numel);
        decode_le(dtype, t.data(), &mut v);
        if v.len() != numel {
            return Err(err(
                &self.path,
                format!("tensor `{name}` has {} values, expected {numel}", v.len()),
            ));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(err(
                &self.path,
                format!("tensor `{name}` holds a non-finite value at flat index {i}"),
            ));
        }
        Ok(v)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.st.tensor(name).ok().map(|t| t.shape().to_vec())
    }
}

/// Checks the config's dimension keys (when present and nonzero) against `tensor`'s shape.
fn check_config_dims(
    cfg: &serde_json::Map<String, Value>,
    cfg_path: &Path,
    dims: &[(&str, usize)],
    tensor: &str,
    shape: &str,
) -> Result<()> {
    for &(key, v) in dims {
        if let Some(c) = cfg.get(key).and_then(Value::as_u64) {
            if c != 0 && c as usize != v {
                return Err(err(cfg_path, format!("`{key}` is {c} but {tensor} has shape {shape}")));
            }
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    match serde_json::from_str::<Value>(&text).map_err(|e| err(path, format!("not valid JSON: {e}")))? {
        Value::Object(m) => Ok(m),
        _ => Err(err(path, "expected a JSON object")),
    }
}

/// The error for a SAELens `architecture` this engine does not encode, saying why where the
/// architecture is known.
fn unsupported_saelens_architecture(architecture: &str) -> String {
    let why = match architecture {
        "abstopk" => ": its latents fire with either sign, and the feature statistics, drift and dashboards read activations as non-negative",
        "matching_pursuit" => ": its encoder is an iterative pursuit over the tied decoder, not a single product",
        "temporal" => ": its encoder attends over the preceding tokens of the sequence, not one row at a time",
        _ => "",
    };
    format!(
        "unsupported architecture `{architecture}`{why} (supported: standard, topk, jumprelu, batchtopk, \
         jumprelu_batchtopk, matryoshka_batchtopk, gated, transcoder, skip_transcoder, jumprelu_transcoder, \
         jumprelu_skip_transcoder)"
    )
}

impl Sae {
    /// Loads an SAE directory, detecting the format: SAELens (`cfg.json` + `sae_weights.safetensors`)
    /// or EleutherAI sparsify (`cfg.json` + `sae.safetensors`).
    pub fn load(dir: &Path, scaling_factor: Option<f32>) -> Result<Sae> {
        if dir.extension().is_some_and(|e| e == "npz") {
            Sae::load_gemma_scope(dir)
        } else if dir.join("params.npz").exists() {
            Sae::load_gemma_scope(&dir.join("params.npz"))
        } else if dir.join("params.safetensors").exists() {
            Sae::load_gemma_scope_2(dir)
        } else if dir.join("sae_weights.safetensors").exists() && dir.join("cfg.json").exists() {
            Sae::load_saelens(dir, scaling_factor)
        } else if dir.join("sae.safetensors").exists() {
            Sae::load_sparsify(dir)
        } else if dir.join("hyperparams.json").exists() || dir.join("config.json").exists() {
            // lm-saes writes `hyperparams.json`, newer releases (Llama Scope R1 Distill) `config.json`.
            Sae::load_llama_scope(dir)
        } else if dir.join("sae_weights.safetensors").exists() {
            Sae::load_saelens(dir, scaling_factor)
        } else {
            Err(err(
                dir,
                "not an SAE directory: expected sae_weights.safetensors + cfg.json (SAELens), sae.safetensors + cfg.json (sparsify), params.npz (Gemma Scope), params.safetensors (Gemma Scope 2) or hyperparams.json + checkpoints/final.safetensors (Llama Scope)",
            ))
        }
    }

    /// Loads the SAELens format; shapes come from the weights and must agree with `cfg.json`.
    pub fn load_saelens(dir: &Path, scaling_factor: Option<f32>) -> Result<Sae> {
        let cfg_path = dir.join("cfg.json");
        let cfg = read_json(&cfg_path)?;
        let wpath = dir.join("sae_weights.safetensors");
        let bytes = std::fs::read(&wpath).map_err(|e| err(&wpath, format!("cannot read: {e}")))?;
        let t = Tensors::parse(&wpath, &bytes)?;
        let (d_in, d_sae) = t.matrix_shape("W_enc", "[d_in, d_sae]")?;
        let dims = [("d_in", d_in), ("d_sae", d_sae)];
        check_config_dims(&cfg, &cfg_path, &dims, "W_enc", &format!("[{d_in}, {d_sae}]"))?;
        // SAELens 6 keeps the model and hook names under `metadata`.
        let s = |k: &str| {
            cfg.get(k)
                .or_else(|| cfg.get("metadata").and_then(|m| m.get(k)))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let act_fn = s("activation_fn_str").or_else(|| s("activation_fn"));
        let architecture = s("architecture").unwrap_or_else(|| {
            if act_fn.as_deref() == Some("topk") {
                "topk".into()
            } else {
                "standard".into()
            }
        });
        let k_of = || -> Result<usize> {
            cfg.get("k")
                .and_then(Value::as_f64)
                .or_else(|| {
                    cfg.get("activation_fn_kwargs")
                        .and_then(|k| k.get("k"))
                        .and_then(Value::as_f64)
                })
                .map(|k| k as usize)
                .filter(|&k| k >= 1 && k <= d_sae)
                .ok_or_else(|| {
                    err(
                        &cfg_path,
                        format!("architecture {architecture} needs `k` between 1 and d_sae = {d_sae}"),
                    )
                })
        };
        // SAELens transcoders (transcoder.py) encode like SAEs but never subtract `b_dec`, which
        // lives in the output hook's space (`W_dec` is [d_sae, d_out]); a skip transcoder's
        // `W_skip` only adds to the output.
        let transcoder = architecture.ends_with("transcoder");
        let d_out = if transcoder {
            let (rows, d_out) = t.matrix_shape("W_dec", "[d_sae, d_out]")?;
            if rows != d_sae {
                return Err(err(
                    &wpath,
                    format!("`W_dec` has {rows} rows, W_enc has d_sae = {d_sae} columns"),
                ));
            }
            check_config_dims(&cfg, &cfg_path, &[("d_out", d_out)], "W_dec", &format!("[{d_sae}, {d_out}]"))?;
            d_out
        } else {
            d_in
        };
        let w_dec = t.get("W_dec", &[d_sae, d_out])?;
        let b_dec = t.get("b_dec", &[d_out])?;
        let zeros = vec![0f32; d_sae];
        let (b_enc, activation) = match architecture.as_str() {
            "standard" | "relu" | "transcoder" | "skip_transcoder" => (t.get("b_enc", &[d_sae])?, Activation::Relu),
            "topk" => (t.get("b_enc", &[d_sae])?, Activation::TopK { k: k_of()? }),
            "jumprelu"
            | "batchtopk"
            | "matryoshka_batchtopk"
            | "jumprelu_batchtopk"
            | "jumprelu_transcoder"
            | "jumprelu_skip_transcoder" => {
                // A BatchTopK training checkpoint holds the running `topk_threshold`, which SAELens
                // turns into `threshold` when it saves the inference SAE; older JumpReLU
                // checkpoints hold `log_threshold`, which SAELens exponentiates when it loads them.
                let name = ["threshold", "topk_threshold", "log_threshold"]
                    .into_iter()
                    .find(|n| t.has(n))
                    .unwrap_or("threshold");
                let threshold = if t.has(name) {
                    let shape = t.shape(name).unwrap_or_default();
                    let values = if shape.iter().product::<usize>() == 1 {
                        vec![t.get(name, &[1])?[0]; d_sae]
                    } else {
                        t.get(name, &[d_sae])?
                    };
                    if name == "log_threshold" {
                        values.into_iter().map(f32::exp).collect()
                    } else {
                        values
                    }
                } else if let Some(v) = cfg.get("threshold").and_then(Value::as_f64) {
                    vec![v as f32; d_sae]
                } else {
                    return Err(err(
                        &wpath,
                        format!("architecture {architecture} needs a `threshold` tensor (or `threshold` in cfg.json)"),
                    ));
                };
                (t.get("b_enc", &[d_sae])?, Activation::JumpRelu { threshold })
            }
            "gated" => (
                zeros,
                Activation::Gated {
                    b_gate: t.get("b_gate", &[d_sae])?,
                    r_mag: t.get("r_mag", &[d_sae])?,
                    b_mag: t.get("b_mag", &[d_sae])?,
                },
            ),
            other => return Err(err(&cfg_path, unsupported_saelens_architecture(other))),
        };
        let norm = match s("normalize_activations").as_deref().unwrap_or("none") {
            "none" => InputNorm::None,
            "constant_norm_rescale" => InputNorm::ConstantNormRescale,
            "layer_norm" => InputNorm::LayerNorm,
            "expected_average_only_in" => {
                let f = scaling_factor
                    .or_else(|| cfg.get("norm_scaling_factor").and_then(Value::as_f64).map(|v| v as f32))
                    .or_else(|| cfg.get("scaling_factor").and_then(Value::as_f64).map(|v| v as f32))
                    .ok_or_else(|| {
                        err(&cfg_path, "normalize_activations = expected_average_only_in needs the dataset scaling factor: `norm_scaling_factor` in cfg.json or the operator's `scaling_factor`")
                    })?;
                InputNorm::Scale(f)
            }
            // SAELens's trainer folds the whitening into the weights and saves `none`; a config
            // that still says `covariance_whitening` is a checkpoint taken before that fold, and
            // its mean and whitening matrix are not in the SAE's files.
            "covariance_whitening" => {
                return Err(err(
                    &cfg_path,
                    "normalize_activations = covariance_whitening: the whitening has not been folded into the weights \
                     (SAELens folds it when training ends and saves `none`); load the final SAE, or fold it with \
                     SAELens's `fold_activation_whitening` and save again",
                ))
            }
            other => return Err(err(&cfg_path, format!("unsupported normalize_activations `{other}`"))),
        };
        Ok(Sae {
            d_in,
            d_sae,
            w_enc: t.get("W_enc", &[d_in, d_sae])?,
            b_enc,
            d_out,
            w_dec,
            b_dec,
            transcoder,
            skip_connection: t.has("W_skip"),
            activation,
            apply_b_dec_to_input: !transcoder && cfg.get("apply_b_dec_to_input").and_then(Value::as_bool).unwrap_or(true),
            norm,
            // Only SAELens's TopK family reads this key; its JumpReLU and standard SAEs drop it.
            rescale_by_decoder_norm: matches!(architecture.as_str(), "topk" | "batchtopk" | "matryoshka_batchtopk")
                && cfg
                    .get("rescale_acts_by_decoder_norm")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            origin: format!("saelens:{}", dir.display()),
            model: s("model_name"),
            hook: s("hook_name"),
        })
    }

    /// Loads Gemma Scope's `params.npz` (`W_enc [d_in, d_sae]`, `W_dec`, `b_enc`, `b_dec`,
    /// `threshold`): JumpReLU, no input normalization, no `b_dec` subtraction.
    pub fn load_gemma_scope(path: &Path) -> Result<Sae> {
        let mut arrays = super::npz::read_npz(path)?;
        let shape = arrays
            .get("W_enc")
            .map(|a| a.shape.clone())
            .ok_or_else(|| err(path, "no array `W_enc`"))?;
        let [d_in, d_sae] = shape[..] else {
            return Err(err(path, format!("`W_enc` has shape {shape:?}, expected [d_in, d_sae]")));
        };
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let a = arrays.remove(name).ok_or_else(|| err(path, format!("no array `{name}`")))?;
            if a.shape != shape {
                return Err(err(
                    path,
                    format!("array `{name}` has shape {:?}, expected {shape:?}", a.shape),
                ));
            }
            if let Some(i) = a.data.iter().position(|x| !x.is_finite()) {
                return Err(err(
                    path,
                    format!("array `{name}` holds a non-finite value at flat index {i}"),
                ));
            }
            Ok(a.data)
        };
        Ok(Sae {
            d_in,
            d_sae,
            w_enc: take("W_enc", &[d_in, d_sae])?,
            b_enc: take("b_enc", &[d_sae])?,
            d_out: d_in,
            transcoder: false,
            skip_connection: false,
            w_dec: take("W_dec", &[d_sae, d_in])?,
            b_dec: take("b_dec", &[d_in])?,
            activation: Activation::JumpRelu {
                threshold: take("threshold", &[d_sae])?,
            },
            apply_b_dec_to_input: false,
            norm: InputNorm::None,
            rescale_by_decoder_norm: false,
            origin: format!("gemmascope:{}", path.display()),
            model: None,
            hook: None,
        })
    }

    /// Loads a Gemma Scope 2 SAE or transcoder (Gemma 3): `params.safetensors` with `w_enc
    /// [d_in, d_sae]`, `w_dec [d_sae, d_out]`, `b_enc`, `b_dec [d_out]`, `threshold [d_sae]` and,
    /// for an affine transcoder, `affine_skip_connection [d_in, d_out]`; `config.json` beside it
    /// when present (`architecture` `jump_relu`, `model_name`, `hf_hook_point_in`,
    /// `hf_hook_point_out`). JumpReLU, no input normalization, no `b_dec` subtraction, as
    /// SAELens's `gemma_3_sae_huggingface_loader` loads it. A transcoder is one whose `d_out`
    /// differs from `d_in`, whose config names an output hook other than its input hook, or
    /// that has a skip connection.
    pub fn load_gemma_scope_2(dir: &Path) -> Result<Sae> {
        let cfg_path = dir.join("config.json");
        let cfg = if cfg_path.exists() {
            read_json(&cfg_path)?
        } else {
            serde_json::Map::new()
        };
        let s = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(a) = s("architecture").filter(|a| a != "jump_relu" && a != "jumprelu") {
            return Err(err(
                &cfg_path,
                format!("Gemma Scope 2 architecture `{a}` is not supported (jump_relu)"),
            ));
        }
        let wpath = dir.join("params.safetensors");
        let bytes = std::fs::read(&wpath).map_err(|e| err(&wpath, format!("cannot read: {e}")))?;
        let t = Tensors::parse(&wpath, &bytes)?;
        let (d_in, d_sae) = t.matrix_shape("w_enc", "[d_in, d_sae]")?;
        let (rows, d_out) = t.matrix_shape("w_dec", "[d_sae, d_out]")?;
        if rows != d_sae {
            return Err(err(
                &wpath,
                format!("`w_dec` has {rows} rows, w_enc has d_sae = {d_sae} columns"),
            ));
        }
        let skip_connection = t.has("affine_skip_connection");
        if skip_connection {
            t.get("affine_skip_connection", &[d_in, d_out])?;
        }
        let (hook_in, hook_out) = (s("hf_hook_point_in"), s("hf_hook_point_out"));
        let transcoder = d_out != d_in || skip_connection || matches!((&hook_in, &hook_out), (Some(i), Some(o)) if i != o);
        Ok(Sae {
            d_in,
            d_sae,
            w_enc: t.get("w_enc", &[d_in, d_sae])?,
            b_enc: t.get("b_enc", &[d_sae])?,
            d_out,
            w_dec: t.get("w_dec", &[d_sae, d_out])?,
            b_dec: t.get("b_dec", &[d_out])?,
            transcoder,
            skip_connection,
            activation: Activation::JumpRelu {
                threshold: t.get("threshold", &[d_sae])?,
            },
            apply_b_dec_to_input: false,
            norm: InputNorm::None,
            rescale_by_decoder_norm: false,
            origin: format!("gemmascope2:{}", dir.display()),
            model: s("model_name"),
            hook: hook_in,
        })
    }

    /// Loads a Llama Scope SAE (OpenMOSS lm-saes): `hyperparams.json` (or `config.json`, as
    /// Llama Scope R1 Distill has it) and
    /// `checkpoints/final.safetensors` (or `final.safetensors` / `sae_weights.safetensors` beside
    /// it) with `encoder.weight [d_sae, d_model]`, `encoder.bias`, `decoder.weight [d_model,
    /// d_sae]`, `decoder.bias`, and either the scalar `jump_relu_threshold` or a per-latent
    /// `log_jumprelu_threshold` tensor. `norm_activation = "dataset-wise"` scales inputs by
    /// `sqrt(d_model) / dataset_average_activation_norm.in`; `"token-wise"` to norm `sqrt(d_model)`.
    pub fn load_llama_scope(dir: &Path) -> Result<Sae> {
        let cfg_path = Some(dir.join("hyperparams.json"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| dir.join("config.json"));
        let cfg = read_json(&cfg_path)?;
        let wpath = [
            "checkpoints/final.safetensors",
            "final.safetensors",
            "sae_weights.safetensors",
        ]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .ok_or_else(|| err(dir, "Llama Scope SAE without weights: expected checkpoints/final.safetensors"))?;
        let bytes = std::fs::read(&wpath).map_err(|e| err(&wpath, format!("cannot read: {e}")))?;
        let t = Tensors::parse(&wpath, &bytes)?;
        let (d_sae, d_in) = t.matrix_shape("encoder.weight", "[d_sae, d_model]")?;
        check_config_dims(
            &cfg,
            &cfg_path,
            &[("d_model", d_in), ("d_sae", d_sae)],
            "encoder.weight",
            &format!("[{d_sae}, {d_in}]"),
        )?;
        let dec = t.get("decoder.weight", &[d_in, d_sae])?;
        let w_dec = neurostream_engine::dsp::transpose(&dec, d_in, d_sae);
        let enc = t.get("encoder.weight", &[d_sae, d_in])?;
        let include_dec_norm = cfg
            .get("sparsity_include_decoder_norm")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let dec_norm = |j: usize| -> f32 {
            if include_dec_norm {
                w_dec[j * d_in..(j + 1) * d_in].iter().map(|v| v * v).sum::<f32>().sqrt()
            } else {
                1.0
            }
        };
        let act_fn = cfg.get("act_fn").and_then(Value::as_str).unwrap_or("relu");
        let activation = match act_fn {
            "relu" => Activation::Relu,
            "jumprelu" => {
                let theta: Vec<f32> = if t.has("log_jumprelu_threshold") {
                    t.get("log_jumprelu_threshold", &[d_sae])?.iter().map(|v| v.exp()).collect()
                } else {
                    let th = cfg
                        .get("jump_relu_threshold")
                        .and_then(Value::as_f64)
                        .ok_or_else(|| err(&cfg_path, "jumprelu without `jump_relu_threshold`"))?;
                    vec![th as f32; d_sae]
                };
                // h·s_j > θ_j  <=>  h > θ_j / s_j: a per-latent threshold on h itself.
                let threshold = (0..d_sae)
                    .map(|j| {
                        let s = dec_norm(j);
                        if s > 0.0 {
                            theta[j] / s
                        } else {
                            f32::INFINITY
                        }
                    })
                    .collect();
                Activation::JumpRelu { threshold }
            }
            other => {
                return Err(err(
                    &cfg_path,
                    format!("Llama Scope `act_fn` = `{other}` is not supported (relu, jumprelu)"),
                ))
            }
        };
        let norm = match cfg.get("norm_activation").and_then(Value::as_str).unwrap_or("dataset-wise") {
            "dataset-wise" => {
                let avg = cfg
                    .get("dataset_average_activation_norm")
                    .and_then(|v| v.get("in"))
                    .and_then(Value::as_f64)
                    .filter(|v| *v > 0.0)
                    .ok_or_else(|| {
                        err(
                            &cfg_path,
                            "dataset-wise normalization needs a positive `dataset_average_activation_norm.in`",
                        )
                    })?;
                InputNorm::Scale(((d_in as f64).sqrt() / avg) as f32)
            }
            "token-wise" => InputNorm::ConstantNormRescale,
            "inference" | "none" => InputNorm::None,
            other => return Err(err(&cfg_path, format!("unknown `norm_activation` `{other}`"))),
        };
        let s = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Sae {
            d_in,
            d_sae,
            w_enc: neurostream_engine::dsp::transpose(&enc, d_sae, d_in),
            b_enc: t.get("encoder.bias", &[d_sae])?,
            b_dec: t.get("decoder.bias", &[d_in])?,
            d_out: d_in,
            // lm-saes trains transcoders as SAEs reading one hook and writing another.
            transcoder: matches!((s("hook_point_in"), s("hook_point_out")), (Some(i), Some(o)) if i != o),
            skip_connection: false,
            w_dec,
            activation,
            apply_b_dec_to_input: cfg
                .get("apply_decoder_bias_to_pre_encoder")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            norm,
            rescale_by_decoder_norm: false,
            origin: format!("llamascope:{}", dir.display()),
            model: s("model_name"),
            hook: s("hook_point_in"),
        })
    }

    /// Loads the EleutherAI sparsify format (one hookpoint directory).
    pub fn load_sparsify(dir: &Path) -> Result<Sae> {
        let cfg_path = dir.join("cfg.json");
        let cfg = read_json(&cfg_path)?;
        let wpath = dir.join("sae.safetensors");
        let bytes = std::fs::read(&wpath).map_err(|e| err(&wpath, format!("cannot read: {e}")))?;
        let t = Tensors::parse(&wpath, &bytes)?;
        let (d_sae, d_in) = t.matrix_shape("encoder.weight", "[num_latents, d_in]")?;
        check_config_dims(
            &cfg,
            &cfg_path,
            &[("d_in", d_in), ("num_latents", d_sae)],
            "encoder.weight",
            &format!("[{d_sae}, {d_in}]"),
        )?;
        let k = cfg
            .get("k")
            .and_then(Value::as_u64)
            .map(|k| k as usize)
            .filter(|&k| k >= 1 && k <= d_sae)
            .ok_or_else(|| err(&cfg_path, format!("`k` must be between 1 and num_latents = {d_sae}")))?;
        let activation = match cfg.get("activation").and_then(Value::as_str).unwrap_or("topk") {
            "topk" => Activation::TopK { k },
            // fused_encoder.py: `preacts.unflatten(-1, (k, -1)).max(dim=-1)`.
            "groupmax" if d_sae % k == 0 => Activation::GroupMax { k, group: d_sae / k },
            "groupmax" => {
                return Err(err(
                    &cfg_path,
                    format!("groupmax needs num_latents = {d_sae} to be a multiple of k = {k}"),
                ))
            }
            a => {
                return Err(err(
                    &cfg_path,
                    format!("unsupported sparsify activation `{a}` (topk, groupmax)"),
                ))
            }
        };
        // `W_skip` [d_in, d_in] (skip_connection) only adds `x @ W_skipᵀ` to the output.
        let skip_connection = t.has("W_skip");
        if skip_connection {
            t.get("W_skip", &[d_in, d_in])?;
        }
        let transcode = cfg.get("transcode").and_then(Value::as_bool).unwrap_or(false);
        let enc = t.get("encoder.weight", &[d_sae, d_in])?;
        Ok(Sae {
            d_in,
            d_sae,
            w_enc: neurostream_engine::dsp::transpose(&enc, d_sae, d_in),
            b_enc: t.get("encoder.bias", &[d_sae])?,
            d_out: d_in,
            w_dec: t.get("W_dec", &[d_sae, d_in])?,
            b_dec: t.get("b_dec", &[d_in])?,
            transcoder: transcode,
            skip_connection,
            activation,
            apply_b_dec_to_input: !transcode,
            norm: InputNorm::None,
            rescale_by_decoder_norm: false,
            origin: format!("sparsify:{}", dir.display()),
            model: None,
            hook: dir.file_name().map(|n| n.to_string_lossy().to_string()),
        })
    }

    /// The encoder input for `row`: normalized, minus `b_dec` when the SAE says so.
    pub fn prepare_input(&self, row: &[f32], out: &mut [f32]) {
        let d = self.d_in;
        match self.norm {
            InputNorm::None => out.copy_from_slice(row),
            InputNorm::Scale(f) => {
                for (o, x) in out.iter_mut().zip(row) {
                    *o = x * f;
                }
            }
            InputNorm::ConstantNormRescale => {
                let n = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                let c = if n > 0.0 { ((d as f64).sqrt() / n) as f32 } else { 0.0 };
                for (o, x) in out.iter_mut().zip(row) {
                    *o = x * c;
                }
            }
            InputNorm::LayerNorm => {
                let mean = row.iter().map(|&x| x as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (d.max(2) - 1) as f64;
                let inv = 1.0 / (var.sqrt() + 1e-5);
                for (o, x) in out.iter_mut().zip(row) {
                    *o = ((*x as f64 - mean) * inv) as f32;
                }
            }
        }
        if self.apply_b_dec_to_input {
            for (o, b) in out.iter_mut().zip(&self.b_dec) {
                *o -= b;
            }
        }
    }

    /// Per-latent decoder norms `‖W_dec[j]‖`.
    pub fn decoder_norms(&self) -> Vec<f32> {
        self.w_dec
            .chunks_exact(self.d_out)
            .map(|r| r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt() as f32)
            .collect()
    }

    /// The per-latent affine map applied to `z = x' @ W_enc` before the activation's nonlinearity,
    /// as `(scale, shift)`: `h_j = scale_j · z_j + shift_j`. Gated SAEs use the magnitude path here.
    pub fn epilogue(&self) -> (Vec<f32>, Vec<f32>) {
        match &self.activation {
            Activation::Gated { r_mag, b_mag, .. } => (r_mag.iter().map(|r| r.exp()).collect(), b_mag.clone()),
            _ if self.rescale_by_decoder_norm => {
                let n = self.decoder_norms();
                (n.clone(), self.b_enc.iter().zip(&n).map(|(b, n)| b * n).collect())
            }
            _ => (vec![1.0; self.d_sae], self.b_enc.clone()),
        }
    }
}
