//! # neurostream-models
//!
//! Small language models run in process on the CPU with candle, returning the residual stream
//! after every layer, and the `language_model` source that streams those activations for texts.
//!
//! | model | weights | architecture |
//! | --- | --- | --- |
//! | SmolLM2-135M-Instruct | GGUF (Q4_1 and other llama.cpp quantizations), tokenizer from the GGUF metadata | Llama: RMSNorm, grouped-query attention with RoPE, SwiGLU MLP |
//! | all-MiniLM-L6-v2 | safetensors + `tokenizer.json` | BERT encoder, mean pooling for sentence embeddings |
//!
//! `scripts/fetch_models.sh` downloads both into `~/.cache/neurostream/models`.

#![warn(missing_docs)]

pub mod bert;
pub mod llama;
pub mod source;
pub mod tokenizer;

pub use source::{LanguageModelConfig, LanguageModelKind};

use neurostream_engine::{Registry, WorkerPos};

/// Registers the `language_model` source kind.
pub fn register(registry: &mut Registry) {
    registry.add_source(LanguageModelKind);
}

/// Indices `0..n` of the documents worker `w` reads: every `peers`-th, starting at its index.
pub(crate) fn worker_docs(n: usize, w: WorkerPos) -> impl Iterator<Item = usize> {
    (w.index..n).step_by(w.peers.max(1))
}

/// Where `scripts/fetch_models.sh` puts the models: `$NEUROSTREAM_MODELS`, else
/// `~/.cache/neurostream/models`; `rel` is joined to it.
pub fn model_path(rel: &str) -> std::path::PathBuf {
    let base = match std::env::var_os("NEUROSTREAM_MODELS") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/neurostream/models"),
    };
    base.join(rel)
}

/// For tests: the path of a fetched model file, or `None` (the test skips) when it is missing and
/// `NEUROSTREAM_SKIP_MODEL_TESTS=1`. A missing model otherwise fails with how to fetch it.
#[doc(hidden)]
pub fn test_weights(rel: &str) -> Option<std::path::PathBuf> {
    let p = model_path(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("NEUROSTREAM_SKIP_MODEL_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping: {} is missing (NEUROSTREAM_SKIP_MODEL_TESTS=1)", p.display());
        return None;
    }
    panic!(
        "{} is missing: run scripts/fetch_models.sh (or point NEUROSTREAM_MODELS at a folder holding it), \
         or set NEUROSTREAM_SKIP_MODEL_TESTS=1 to skip the model tests",
        p.display()
    );
}
