//! BERT encoders (all-MiniLM-L6-v2) from Hugging Face safetensors, written with candle's ops:
//! embeddings (word + position + token type, LayerNorm), then per layer bidirectional
//! self-attention and a GELU MLP, each followed by a residual add and LayerNorm (post-norm).
//! Sentence embeddings are sentence-transformers' mean pooling over the tokens, L2-normalized.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::tokenizer::{hf_tokenizer, TextTokenizer};

/// Shapes and constants from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Encoder layers.
    pub n_layers: usize,
    /// Hidden width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// Longest sequence (position embeddings).
    pub max_positions: usize,
}

/// `(layers, hidden size)` from a model folder's `config.json`.
pub fn read_shape(dir: &Path) -> Result<(usize, usize), String> {
    let (cfg, path) = read_config(dir)?;
    Ok((
        config_usize(&cfg, &path, "num_hidden_layers")?,
        config_usize(&cfg, &path, "hidden_size")?,
    ))
}

/// `config.json` of a model folder, with its path.
fn read_config(dir: &Path) -> Result<(serde_json::Value, PathBuf), String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
    let cfg = serde_json::from_str(&text).map_err(|e| err(&path, e))?;
    Ok((cfg, path))
}

fn config_usize(cfg: &serde_json::Value, path: &Path, key: &str) -> Result<usize, String> {
    cfg.get(key)
        .and_then(serde_json::Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| err(path, format!("`{key}` missing")))
}

/// A loaded BERT encoder with its tokenizer.
pub struct Bert {
    /// The configuration.
    pub config: BertConfig,
    /// The tokenizer (`tokenizer.json`), padding and truncation off.
    pub tokenizer: TextTokenizer,
    /// Where the weights came from.
    pub dir: PathBuf,
    w: HashMap<String, Tensor>,
}

/// Hidden states of one forward pass.
pub struct BertOutput {
    /// `[tokens, d_model]` after each encoder layer (index 0 = after layer 0), row-major f32.
    pub layers: Vec<Vec<f32>>,
    /// Mean-pooled, L2-normalized sentence embedding (the sentence-transformers output).
    pub embedding: Vec<f32>,
}

fn err(path: &Path, m: impl std::fmt::Display) -> String {
    format!("{}: {m}", path.display())
}

impl Bert {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Bert, String> {
        let (cfg, cfg_path) = read_config(dir)?;
        let u = |k: &str| config_usize(&cfg, &cfg_path, k);
        let config = BertConfig {
            n_layers: u("num_hidden_layers")?,
            d_model: u("hidden_size")?,
            n_heads: u("num_attention_heads")?,
            eps: cfg.get("layer_norm_eps").and_then(serde_json::Value::as_f64).unwrap_or(1e-12),
            max_positions: u("max_position_embeddings")?,
        };
        if cfg.get("hidden_act").and_then(serde_json::Value::as_str).unwrap_or("gelu") != "gelu" {
            return Err(err(&cfg_path, "only `hidden_act = gelu` is supported"));
        }
        let wpath = dir.join("model.safetensors");
        let w = candle_core::safetensors::load(&wpath, &Device::Cpu).map_err(|e| err(&wpath, e))?;
        let tokenizer = hf_tokenizer(&dir.join("tokenizer.json"))?;
        let bert = Bert {
            config,
            tokenizer,
            dir: dir.to_path_buf(),
            w,
        };
        bert.w("embeddings.word_embeddings.weight").map_err(|e| err(&wpath, e))?;
        Ok(bert)
    }

    /// Token ids of `text` with `[CLS]` and `[SEP]`, as sentence-transformers encodes it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer.encode_special(text)
    }

    /// Runs one sequence of token ids (with its special tokens).
    pub fn forward(&self, ids: &[u32]) -> Result<BertOutput, String> {
        if ids.is_empty() || ids.len() > self.config.max_positions {
            return Err(format!("{} tokens: BERT takes 1..={}", ids.len(), self.config.max_positions));
        }
        self.run(ids).map_err(|e| err(&self.dir, format!("forward pass: {e}")))
    }

    fn w(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.w
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no tensor `{name}`")))
    }

    fn layer_norm(&self, x: &Tensor, p: &str) -> candle_core::Result<Tensor> {
        let (w, b) = (self.w(&format!("{p}.weight"))?, self.w(&format!("{p}.bias"))?);
        candle_nn::ops::layer_norm(x, w, b, self.config.eps as f32)
    }

    /// `x · Wᵀ + b`.
    fn linear(&self, x: &Tensor, p: &str) -> candle_core::Result<Tensor> {
        let (w, b) = (self.w(&format!("{p}.weight"))?, self.w(&format!("{p}.bias"))?);
        x.matmul(&w.t()?)?.broadcast_add(b)
    }

    fn run(&self, ids: &[u32]) -> candle_core::Result<BertOutput> {
        let c = &self.config;
        let (t, hd) = (ids.len(), c.d_model / c.n_heads);
        let dev = Device::Cpu;
        let word = self
            .w("embeddings.word_embeddings.weight")?
            .index_select(&Tensor::new(ids, &dev)?, 0)?;
        let pos = Tensor::arange(0u32, t as u32, &dev)?;
        let position = self.w("embeddings.position_embeddings.weight")?.index_select(&pos, 0)?;
        let token_type = self.w("embeddings.token_type_embeddings.weight")?.narrow(0, 0, 1)?;
        let mut x = self.layer_norm(&(word + position)?.broadcast_add(&token_type)?, "embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = format!("encoder.layer.{l}");
            let heads = |y: Tensor| y.reshape((t, c.n_heads, hd))?.transpose(0, 1)?.contiguous();
            let q = heads(self.linear(&x, &format!("{p}.attention.self.query"))?)?;
            let k = heads(self.linear(&x, &format!("{p}.attention.self.key"))?)?;
            let v = heads(self.linear(&x, &format!("{p}.attention.self.value"))?)?;
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(0, 1)?.reshape((t, c.d_model))?;
            let attn = self.linear(&ctx, &format!("{p}.attention.output.dense"))?;
            x = self.layer_norm(&(x + attn)?, &format!("{p}.attention.output.LayerNorm"))?;
            let h = self.linear(&x, &format!("{p}.intermediate.dense"))?.gelu_erf()?;
            let out = self.linear(&h, &format!("{p}.output.dense"))?;
            x = self.layer_norm(&(x + out)?, &format!("{p}.output.LayerNorm"))?;
            layers.push(x.flatten_all()?.to_vec1::<f32>()?);
        }
        let mean = x.mean(0)?;
        let norm = mean.sqr()?.sum_all()?.sqrt()?;
        let embedding = mean.broadcast_div(&norm)?.to_vec1::<f32>()?;
        Ok(BertOutput { layers, embedding })
    }
}
