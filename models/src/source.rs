//! `language_model`: runs an in-process model over texts (one document per line, from a file or
//! stdin) and streams the residual activations of one layer, one frame per document, with the
//! token texts.
//!
//! Documents are dealt round-robin to the workers (which share one loaded model); the
//! `seq_id` of a document is its line number (0-based; blank lines are skipped) and the event
//! time of its first token is `seq_id × max_tokens`.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use neurostream_engine::{
    Batch, EngineError, Frame, NodeConfig, NodeContext, Result, RowIndex, Schema, Source, SourceKind, SourceReader, WorkerPos,
};
use serde::{Deserialize, Serialize};

use crate::bert::Bert;
use crate::llama::Llama;

/// Which model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelName {
    /// SmolLM2-135M-Instruct (GGUF), 30 blocks of width 576.
    Smollm2,
    /// all-MiniLM-L6-v2 (BERT, safetensors), 6 layers of width 384; `[CLS]` and `[SEP]` included.
    Minilm,
}

impl ModelName {
    fn default_weights(self) -> PathBuf {
        match self {
            ModelName::Smollm2 => crate::model_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ModelName::Minilm => crate::model_path("minilm"),
        }
    }
    fn display(self) -> &'static str {
        match self {
            ModelName::Smollm2 => "SmolLM2-135M-Instruct",
            ModelName::Minilm => "all-MiniLM-L6-v2",
        }
    }
}

/// Configuration of a `language_model` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageModelConfig {
    /// `smollm2`: SmolLM2-135M-Instruct, GGUF Q4_1 (30 blocks, d_model 576; tokenizer from the GGUF
    /// metadata; only the blocks up to `layer` are loaded and run, dequantized to f32 and shared
    /// by a process's workers: the 113 MB embedding plus 14 MB per block, 0.34 GB at layer 15);
    /// `minilm`: all-MiniLM-L6-v2, BERT (6 layers, d_model 384; `tokenizer.json`, `[CLS]`/`[SEP]`
    /// included, no padding).
    pub model: ModelName,
    /// Weights: the GGUF file (smollm2) or the model folder (minilm); default: where
    /// `scripts/fetch_models.sh` puts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Text file with one document per line, or `-` for stdin.
    pub texts: String,
    /// Residual stream after this block or layer (0-based; `blocks.{layer}.hook_resid_post` for
    /// smollm2, `encoder.layer.{layer}.output` for minilm).
    pub layer: usize,
    /// Tokens per document (longer documents are cut; default 256).
    #[serde(default = "default_max_tokens")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub max_tokens: usize,
    /// Documents to read (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<usize>,
    /// Leave out the first this many tokens of each document from the output (they still run
    /// through the model). A decoder's first token is an attention sink whose residual norm is
    /// ~100x the others (SmolLM2 layer 15: ~23000 vs ~174); SAEs are trained without it.
    #[serde(default)]
    #[schemars(extend("x-unit" = "tokens"))]
    pub skip_first: usize,
}

fn default_max_tokens() -> usize {
    256
}

impl NodeConfig for LanguageModelConfig {
    const KIND: &'static str = "language_model";
}

/// The `language_model` source kind.
pub struct LanguageModelKind;

impl SourceKind for LanguageModelKind {
    type Config = LanguageModelConfig;

    fn describe(&self) -> &'static str {
        "residual activations of an in-process language model (SmolLM2 or MiniLM, candle) over texts, one document per line"
    }
    fn build(&self, cfg: LanguageModelConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        if cfg.max_tokens == 0 {
            return Err(fail("`max_tokens` must be at least 1".into()));
        }
        let weights = cfg
            .weights
            .as_deref()
            .map(|w| ctx.input_file(w))
            .unwrap_or_else(|| cfg.model.default_weights());
        ctx.record_input(&weights);
        if !weights.exists() {
            return Err(fail(format!(
                "{} weights not found at {}: run scripts/fetch_models.sh (or set `weights`, or NEUROSTREAM_MODELS)",
                cfg.model.display(),
                weights.display()
            )));
        }
        let (n_layers, d_model) = match cfg.model {
            ModelName::Smollm2 => crate::llama::read_shape(&weights).map_err(fail)?,
            ModelName::Minilm => crate::bert::read_shape(&weights).map_err(fail)?,
        };
        if cfg.layer >= n_layers {
            return Err(fail(format!(
                "`layer` {} out of range: the model has blocks 0..{n_layers}",
                cfg.layer
            )));
        }
        let documents = read_documents(&cfg.texts, ctx).map_err(fail)?;
        let documents: Vec<(u64, String)> = match cfg.documents {
            Some(n) => documents.into_iter().take(n).collect(),
            None => documents,
        };
        let layer = match cfg.model {
            ModelName::Smollm2 => format!("blocks.{}.hook_resid_post", cfg.layer),
            ModelName::Minilm => format!("encoder.layer.{}.output", cfg.layer),
        };
        Ok(Arc::new(LanguageModelSource {
            schema: Arc::new(Schema::activation(d_model, Some(cfg.model.display().into()), Some(layer))),
            name: ctx.name.into(),
            weights,
            documents: Arc::new(documents),
            cfg,
            llama: std::sync::Mutex::new(None),
        }))
    }
}

/// Non-blank lines of `texts` (`-`: stdin) with their line numbers.
fn read_documents(texts: &str, ctx: &NodeContext) -> std::result::Result<Vec<(u64, String)>, String> {
    let lines: Vec<String> = if texts == "-" {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|e| format!("stdin: {e}"))?
    } else {
        let path = ctx.input_file(texts);
        std::fs::read_to_string(&path)
            .map_err(|e| format!("`texts` {}: {e}", path.display()))?
            .lines()
            .map(str::to_string)
            .collect()
    };
    Ok(lines
        .into_iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i as u64, l))
        .collect())
}

struct LanguageModelSource {
    name: Arc<str>,
    schema: Arc<Schema>,
    weights: PathBuf,
    documents: Arc<Vec<(u64, String)>>,
    cfg: LanguageModelConfig,
    /// The SmolLM2 weights once a worker has loaded them, shared by this process's workers
    /// (f32, blocks `0..=layer` only).
    llama: std::sync::Mutex<Option<Arc<Llama>>>,
}

impl LanguageModelSource {
    /// The Llama model, loaded by the first worker that asks.
    fn shared_llama(&self) -> Result<Arc<Llama>> {
        let mut slot = self.llama.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(model) = &*slot {
            return Ok(model.clone());
        }
        // Only the blocks up to the streamed layer: the rest (and the output head) would never run.
        let model = Arc::new(Llama::load_blocks(&self.weights, self.cfg.layer + 1).map_err(EngineError::Runtime)?);
        *slot = Some(model.clone());
        Ok(model)
    }
}

impl Source for LanguageModelSource {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        None
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let mine: Vec<usize> = crate::worker_docs(self.documents.len(), worker).collect();
        if worker.index == 0 && worker.peers > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // candle splits each product over every core; a second worker's forward passes then
            // compete for the same cores (bench/LANGUAGE_MODEL_RESULTS.md for SmolLM2; MiniLM,
            // 150 abstracts at layer 3 on 2 cores and 2 workers: 14.1-15.5 s, 9.6-10.1 s with it).
            tracing::info!(
                "sources.{}: each forward pass uses every core; with {} workers, RAYON_NUM_THREADS=1 runs one document per core, faster where there are no more workers than cores",
                self.name,
                worker.peers
            );
        }
        let model = match (mine.is_empty(), self.cfg.model) {
            (true, _) => None,
            (false, ModelName::Smollm2) => Some(Model::Llama(self.shared_llama()?)),
            (false, ModelName::Minilm) => Some(Model::Bert(Box::new(
                Bert::load(&self.weights).map_err(EngineError::Runtime)?,
            ))),
        };
        Ok(Box::new(LanguageModelReader {
            name: self.name.clone(),
            schema: self.schema.clone(),
            documents: self.documents.clone(),
            mine: mine.into_iter().peekable(),
            model,
            layer: self.cfg.layer,
            max_tokens: self.cfg.max_tokens,
            skip_first: self.cfg.skip_first,
            current: None,
        }))
    }
}

enum Model {
    Llama(Arc<Llama>),
    Bert(Box<Bert>),
}

impl Model {
    /// The residual stream after `layer` for the first `max_tokens` tokens of `text`, and the
    /// token texts.
    fn residuals(&self, text: &str, layer: usize, max_tokens: usize) -> std::result::Result<(Vec<f32>, Vec<String>), String> {
        match self {
            Model::Llama(m) => {
                let (mut ids, mut texts) = m.tokenizer.encode_with_text(text)?;
                ids.truncate(max_tokens);
                texts.truncate(max_tokens);
                let out = m.residuals(&ids, &[layer])?;
                Ok((out.into_iter().next().expect("one layer asked").1, texts))
            }
            Model::Bert(m) => {
                let mut ids = m.encode(text)?;
                ids.truncate(max_tokens.min(m.config.max_positions));
                let texts = ids.iter().map(|&i| m.tokenizer.decode(&[i])).collect::<Result<Vec<_>, _>>()?;
                let mut out = m.forward(&ids)?;
                Ok((out.layers.swap_remove(layer), texts))
            }
        }
    }
}

struct LanguageModelReader {
    name: Arc<str>,
    schema: Arc<Schema>,
    documents: Arc<Vec<(u64, String)>>,
    mine: std::iter::Peekable<std::vec::IntoIter<usize>>,
    model: Option<Model>,
    layer: usize,
    max_tokens: usize,
    skip_first: usize,
    current: Option<u64>,
}

impl SourceReader for LanguageModelReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        let Some(i) = self.mine.next() else { return Ok(None) };
        let (line, text) = &self.documents[i];
        self.current = Some(*line);
        let model = self.model.as_ref().expect("a worker with documents loads the model");
        let fail = |m: String| EngineError::Runtime(format!("document on line {}: {m}", line + 1));
        let (mut data, mut texts) = model.residuals(text, self.layer, self.max_tokens).map_err(fail)?;
        let skip = self.skip_first.min(texts.len());
        let width = self.schema.width();
        data.drain(..skip * width);
        texts.drain(..skip);
        let n = texts.len();
        let index = RowIndex::Tokens {
            seq_id: vec![*line; n],
            pos: (skip as u32..(skip + n) as u32).collect(),
            token: Some(texts),
            // Stamped when the forward pass finished: the time a deployed model produced them.
            time: Some(vec![neurostream_engine::now_ns(); n]),
        };
        let frame = Frame::new(self.name.clone(), self.schema.clone(), index, data)?;
        Ok(Some((line * self.max_tokens as u64, Batch::Dense(frame))))
    }

    fn next_time(&self) -> Option<u64> {
        self.mine.clone().next().map(|i| self.documents[i].0 * self.max_tokens as u64)
    }

    fn location(&self) -> String {
        self.current
            .map(|l| format!("document on line {}", l + 1))
            .unwrap_or_default()
    }
}
