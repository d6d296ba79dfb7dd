//! Llama-architecture decoders (SmolLM2) from a GGUF file, written with candle's ops: token
//! embedding, then per block `x += attn(rms_norm(x))`, `x += mlp(rms_norm(x))` with grouped-query
//! attention, interleaved RoPE (llama.cpp's GGUF conversion permutes Q and K for it) and a
//! SwiGLU MLP; a final RMSNorm and the (tied) output projection give the logits.
//!
//! [`Llama::forward`] returns the residual stream after each requested block (`blocks.{i}.hook_resid_post`
//! in TransformerLens terms) and the logits of the last position. [`Llama::load_blocks`] loads only
//! the first blocks, for a reader of residuals that needs no logits.

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Tensor};

use crate::tokenizer::{gguf_tokenizer, TextTokenizer};

/// Shapes and constants read from the GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub n_layers: usize,
    /// Residual width (`d_model`).
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_heads: usize,
    /// MLP hidden width.
    pub ffn: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE base frequency.
    pub rope_base: f64,
    /// Vocabulary size.
    pub vocab: usize,
}

impl LlamaConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

struct Block {
    attn_norm: Tensor,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// A loaded Llama model with its tokenizer: all of it, or its first blocks only.
pub struct Llama {
    /// The configuration (of the whole model in the file, also when only some blocks are loaded).
    pub config: LlamaConfig,
    /// The tokenizer from the GGUF metadata.
    pub tokenizer: TextTokenizer,
    /// Where the weights came from.
    pub path: PathBuf,
    embed: Tensor,
    /// Blocks `0..blocks.len()`; fewer than `config.n_layers` when loaded by [`Llama::load_blocks`].
    blocks: Vec<Block>,
    /// The final RMSNorm and output projection; loaded only with every block.
    head: Option<Head>,
    device: Device,
}

/// The final RMSNorm and the output projection to the vocabulary.
struct Head {
    norm: Tensor,
    projection: QMatMul,
}

fn err(path: &Path, m: impl std::fmt::Display) -> String {
    format!("{}: {m}", path.display())
}

/// `(blocks, d_model)` from a GGUF file's metadata, without loading the weights.
pub fn read_shape(path: &Path) -> Result<(usize, usize), String> {
    let mut file = std::fs::File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| err(path, format!("not a GGUF file: {e}")))?;
    let u = |k: &str| {
        content
            .metadata
            .get(k)
            .and_then(|v| v.to_u32().ok())
            .map(|v| v as usize)
            .ok_or_else(|| err(path, format!("metadata `{k}` missing")))
    };
    Ok((u("llama.block_count")?, u("llama.embedding_length")?))
}

/// The residual streams and next-token logits of one forward pass.
pub struct LlamaOutput {
    /// `(block index, [tokens, d_model] f32 residual after that block)`, in the order asked.
    pub residuals: Vec<(usize, Vec<f32>)>,
    /// Logits of the last position, `vocab` long.
    pub last_logits: Vec<f32>,
}

impl Llama {
    /// Loads a GGUF file of the `llama` architecture (any llama.cpp quantization candle reads).
    pub fn load(path: &Path) -> Result<Llama, String> {
        Self::load_some(path, None)
    }

    /// Loads the embedding and blocks `0..blocks` only, without the output head: enough for
    /// [`Llama::residuals`] after any of those blocks, in the memory (f32) and load time those
    /// blocks need. `blocks` must be 1 to the file's block count; with every block the head is
    /// loaded too, as [`Llama::load`] does.
    pub fn load_blocks(path: &Path, blocks: usize) -> Result<Llama, String> {
        Self::load_some(path, Some(blocks))
    }

    fn load_some(path: &Path, blocks: Option<usize>) -> Result<Llama, String> {
        let mut file = std::fs::File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| err(path, format!("not a GGUF file: {e}")))?;
        let md = &content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(err(path, format!("architecture `{arch}`, expected `llama`")));
        }
        let u = |k: &str| -> Result<usize, String> {
            md.get(k)
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| err(path, format!("metadata `{k}` missing")))
        };
        let f = |k: &str, default: f64| md.get(k).and_then(|v| v.to_f32().ok()).map_or(default, |v| v as f64);
        let config = LlamaConfig {
            n_layers: u("llama.block_count")?,
            d_model: u("llama.embedding_length")?,
            n_heads: u("llama.attention.head_count")?,
            n_kv_heads: u("llama.attention.head_count_kv")?,
            ffn: u("llama.feed_forward_length")?,
            eps: f("llama.attention.layer_norm_rms_epsilon", 1e-5),
            rope_base: f("llama.rope.freq_base", 10000.0),
            vocab: 0,
        };
        let loaded = blocks.unwrap_or(config.n_layers);
        if loaded == 0 || loaded > config.n_layers {
            return Err(err(
                path,
                format!("cannot load {loaded} blocks: the model has 1..={}", config.n_layers),
            ));
        }
        let device = Device::Cpu;
        let tokenizer = gguf_tokenizer(&content).map_err(|e| err(path, e))?;
        let mut qt = |name: &str| {
            content
                .tensor(&mut file, name, &device)
                .map_err(|e| err(path, format!("tensor `{name}`: {e}")))
        };
        let embed_q = qt("token_embd.weight")?;
        let embed = embed_q.dequantize(&device).map_err(|e| err(path, e))?;
        // Matmul weights are dequantized to f32 once: candle's f32 matmul picks AVX2/FMA at run
        // time, while its quantized kernels use SIMD only when the build targets it
        // (`target-cpu=native`). A default build ran SmolLM2 4.8x faster this way (2 cores).
        let dense = |w: candle_core::quantized::QTensor| -> Result<QMatMul, String> {
            Ok(QMatMul::Tensor(w.dequantize(&device).map_err(|e| err(path, e))?))
        };
        let head = if loaded == config.n_layers {
            let projection = match qt("output.weight") {
                Ok(w) => dense(w)?,
                Err(_) => QMatMul::Tensor(embed.clone()), // tied embeddings
            };
            let norm = qt("output_norm.weight")?.dequantize(&device).map_err(|e| err(path, e))?;
            Some(Head { norm, projection })
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(loaded);
        for i in 0..loaded {
            let mut mm = |n: &str| -> Result<QMatMul, String> { dense(qt(&format!("blk.{i}.{n}.weight"))?) };
            let (q, k, v, o) = (mm("attn_q")?, mm("attn_k")?, mm("attn_v")?, mm("attn_output")?);
            let (gate, up, down) = (mm("ffn_gate")?, mm("ffn_up")?, mm("ffn_down")?);
            let mut norm = |n: &str| -> Result<Tensor, String> {
                qt(&format!("blk.{i}.{n}.weight"))?
                    .dequantize(&device)
                    .map_err(|e| err(path, e))
            };
            blocks.push(Block {
                attn_norm: norm("attn_norm")?,
                ffn_norm: norm("ffn_norm")?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
            });
        }
        let vocab = embed.dim(0).map_err(|e| err(path, e))?;
        Ok(Llama {
            config: LlamaConfig { vocab, ..config },
            tokenizer,
            path: path.to_path_buf(),
            embed,
            blocks,
            head,
            device,
        })
    }

    /// RoPE tables for positions `0..n`: `[n, head_dim / 2]` cosines and sines.
    fn rope(&self, n: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.config.head_dim() / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / self.config.rope_base.powf(2.0 * i as f64 / self.config.head_dim() as f64)) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), &self.device)?;
        let pos = Tensor::arange(0u32, n as u32, &self.device)?
            .to_dtype(DType::F32)?
            .reshape((n, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok((freqs.cos()?, freqs.sin()?))
    }

    fn attention(&self, b: &Block, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (t, hd) = (x.dim(0)?, c.head_dim());
        let heads = |w: &QMatMul, n: usize| -> candle_core::Result<Tensor> {
            w.forward(x)?.reshape((1, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = candle_nn::rotary_emb::rope_i(&heads(&b.q, c.n_heads)?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_i(&heads(&b.k, c.n_kv_heads)?, cos, sin)?;
        let v = heads(&b.v, c.n_kv_heads)?;
        // Grouped-query attention: query head h reads key/value head h / (n_heads / n_kv_heads).
        let rep = c.n_heads / c.n_kv_heads;
        let repeat = |x: Tensor| -> candle_core::Result<Tensor> {
            if rep == 1 {
                return Ok(x);
            }
            x.unsqueeze(2)?
                .expand((1, c.n_kv_heads, rep, t, hd))?
                .reshape((1, c.n_heads, t, hd))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v.contiguous()?)?.transpose(1, 2)?.reshape((t, c.d_model))?;
        b.o.forward(&out)
    }

    fn mlp(&self, b: &Block, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = (candle_nn::ops::silu(&b.gate.forward(x)?)? * b.up.forward(x)?)?;
        b.down.forward(&h)
    }

    /// Runs `tokens` (one sequence) through the model. Returns the residual stream after each
    /// block in `keep` (0-based; `n_layers − 1` is the last block) and the last position's logits.
    /// An error on a model loaded by [`Llama::load_blocks`] without every block.
    pub fn forward(&self, tokens: &[u32], keep: &[usize]) -> Result<LlamaOutput, String> {
        self.run(tokens, keep, true)
    }

    /// The residual stream after each block in `keep`, as [`Llama::forward`] returns it, running
    /// only the blocks up to the last one kept (no logits). Every block in `keep` must be loaded.
    pub fn residuals(&self, tokens: &[u32], keep: &[usize]) -> Result<Vec<(usize, Vec<f32>)>, String> {
        Ok(self.run(tokens, keep, false)?.residuals)
    }

    /// [`Llama::forward`], stopping after the last block in `keep` unless `logits` (then
    /// `last_logits` is empty).
    fn run(&self, tokens: &[u32], keep: &[usize], logits: bool) -> Result<LlamaOutput, String> {
        if tokens.is_empty() {
            return Err("no tokens".into());
        }
        if let Some(&bad) = keep.iter().find(|&&l| l >= self.blocks.len()) {
            return Err(if bad >= self.config.n_layers {
                format!("layer {bad} out of range: the model has blocks 0..{}", self.config.n_layers)
            } else {
                format!(
                    "layer {bad} not loaded: blocks 0..{} of {} were loaded",
                    self.blocks.len(),
                    self.config.n_layers
                )
            });
        }
        let head = match (&self.head, logits) {
            (None, true) => {
                return Err(format!(
                    "{}: no logits: only blocks 0..{} of {} were loaded",
                    self.path.display(),
                    self.blocks.len(),
                    self.config.n_layers
                ))
            }
            (head, _) => head.as_ref().filter(|_| logits),
        };
        let run = || -> candle_core::Result<LlamaOutput> {
            let t = tokens.len();
            let ids = Tensor::new(tokens, &self.device)?;
            let mut x = self.embed.index_select(&ids, 0)?;
            let (cos, sin) = self.rope(t)?;
            let mask: Vec<f32> = (0..t * t)
                .map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 })
                .collect();
            let mask = Tensor::from_vec(mask, (t, t), &self.device)?;
            let mut residuals = Vec::new();
            let eps = self.config.eps as f32;
            let through = if head.is_some() {
                self.blocks.len()
            } else {
                keep.iter().max().map_or(0, |&l| l + 1)
            };
            for (i, b) in self.blocks.iter().enumerate().take(through) {
                let a = self.attention(b, &candle_nn::ops::rms_norm(&x, &b.attn_norm, eps)?, &cos, &sin, &mask)?;
                x = (x + a)?;
                let m = self.mlp(b, &candle_nn::ops::rms_norm(&x, &b.ffn_norm, eps)?)?;
                x = (x + m)?;
                for &l in keep.iter().filter(|&&l| l == i) {
                    residuals.push((l, x.flatten_all()?.to_vec1::<f32>()?));
                }
            }
            let Some(head) = head else {
                return Ok(LlamaOutput {
                    residuals,
                    last_logits: Vec::new(),
                });
            };
            let last = x.narrow(0, t - 1, 1)?;
            let logits = head.projection.forward(&candle_nn::ops::rms_norm(&last, &head.norm, eps)?)?;
            Ok(LlamaOutput {
                residuals,
                last_logits: logits.flatten_all()?.to_vec1::<f32>()?,
            })
        };
        run().map_err(|e| format!("{}: forward pass: {e}", self.path.display()))
    }

    /// Greedy continuation of `prompt` by `n` tokens; returns the generated text.
    pub fn greedy(&self, prompt: &str, n: usize) -> Result<String, String> {
        let mut ids = self.tokenizer.encode(prompt)?;
        let start = ids.len();
        for _ in 0..n {
            let out = self.forward(&ids, &[])?;
            let next = out
                .last_logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
                .unwrap_or(0);
            ids.push(next);
        }
        self.tokenizer.decode(&ids[start..])
    }

    /// Number of transformer blocks in the model (loaded or not).
    pub fn n_layers(&self) -> usize {
        self.config.n_layers
    }

    /// Number of blocks loaded: [`Llama::n_layers`] unless loaded by [`Llama::load_blocks`].
    pub fn loaded_blocks(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_greedily_continues_a_prompt_sensibly() {
        let Some(p) = crate::test_weights("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
            return;
        };
        let m = Llama::load(&p).unwrap();
        assert_eq!((m.config.n_layers, m.config.d_model, m.config.vocab), (30, 576, 49152));
        let out = m.greedy("The capital of France is", 3).unwrap();
        assert!(out.starts_with(" Paris"), "{out:?}");
        // Digits are single tokens (the `smollm` pre-tokenizer), so " 5, 6" is five tokens.
        let out = m.greedy("1, 2, 3, 4,", 5).unwrap();
        assert_eq!(out, " 5, 6", "{out:?}");
    }

    #[test]
    fn the_first_blocks_alone_give_the_same_residuals() {
        let Some(p) = crate::test_weights("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
            return;
        };
        let full = Llama::load(&p).unwrap();
        let part = Llama::load_blocks(&p, 16).unwrap();
        assert_eq!((part.loaded_blocks(), part.n_layers()), (16, 30));
        let ids = full.tokenizer.encode("Residual streams of the first blocks.").unwrap();
        let keep = [3, 15];
        // The same weights and ops in the same order: equal to the bit.
        assert!(full.forward(&ids, &keep).unwrap().residuals == part.residuals(&ids, &keep).unwrap());
        let e = part.residuals(&ids, &[16]).unwrap_err();
        assert!(e.contains("layer 16 not loaded: blocks 0..16 of 30"), "{e}");
        let e = part.residuals(&ids, &[30]).unwrap_err();
        assert!(e.contains("layer 30 out of range: the model has blocks 0..30"), "{e}");
        let e = part.forward(&ids, &[3]).err().unwrap();
        assert!(e.contains("no logits: only blocks 0..16 of 30 were loaded"), "{e}");
        for n in [0, 31] {
            let e = Llama::load_blocks(&p, n).err().unwrap();
            assert!(e.contains(&format!("cannot load {n} blocks: the model has 1..=30")), "{e}");
        }
        assert_eq!(
            Llama::load_blocks(&p, 30)
                .unwrap()
                .greedy("The capital of France is", 1)
                .unwrap(),
            " Paris"
        );
    }

    #[test]
    fn the_gguf_tokenizer_round_trips_and_splits_digits() {
        let Some(p) = crate::test_weights("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
            return;
        };
        let m = Llama::load(&p).unwrap();
        let text = "Sparse autoencoders found 2048 features, e.g. «naïve» café.";
        let (ids, texts) = m.tokenizer.encode_with_text(text).unwrap();
        assert_eq!(m.tokenizer.decode(&ids).unwrap(), text);
        assert_eq!(texts.concat(), text);
        let digits = texts.iter().position(|t| t == "2").expect("digits are tokens of their own");
        assert_eq!(&texts[digits - 1..digits + 4], [" ", "2", "0", "4", "8"], "{texts:?}");
        assert_eq!(&texts[..3], ["S", "parse", " auto"]);
    }
}
