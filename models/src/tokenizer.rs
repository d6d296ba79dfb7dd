//! Tokenizers: GPT-2-style byte-level BPE rebuilt from GGUF metadata, and Hugging Face
//! `tokenizer.json` files, behind one type that also returns each token's text.

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::Tokenizer;

/// A tokenizer for plain text (no special tokens added).
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Wraps a Hugging Face tokenizer.
    pub fn new(inner: Tokenizer) -> TextTokenizer {
        TextTokenizer { inner }
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self.inner.encode(text, false).map_err(|e| e.to_string())?.get_ids().to_vec())
    }

    /// Token ids of `text` with the tokenizer's special tokens (e.g. BERT's `[CLS]` … `[SEP]`).
    pub fn encode_special(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self.inner.encode(text, true).map_err(|e| e.to_string())?.get_ids().to_vec())
    }

    /// Token ids of `text` and the text each token stands for (decoded on its own, so a word's
    /// leading space belongs to its token).
    pub fn encode_with_text(&self, text: &str) -> Result<(Vec<u32>, Vec<String>), String> {
        let ids = self.encode(text)?;
        let texts = ids.iter().map(|&i| self.decode(&[i])).collect::<Result<_, _>>()?;
        Ok((ids, texts))
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.inner.decode(ids, false).map_err(|e| e.to_string())
    }
}

/// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata (model `gpt2`:
/// byte-level BPE; the `smollm` pre-tokenizer splits digits one by one first).
pub fn gguf_tokenizer(content: &gguf_file::Content) -> Result<TextTokenizer, String> {
    let md = &content.metadata;
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if model != "gpt2" {
        return Err(format!("tokenizer model `{model}` is not supported (gpt2 byte-level BPE)"));
    }
    let strings = |k: &str| -> Result<Vec<String>, String> {
        let v = md.get(k).ok_or(format!("metadata `{k}` missing"))?;
        let arr = v.to_vec().map_err(|e| format!("`{k}`: {e}"))?;
        arr.iter()
            .map(|s| s.to_string().cloned().map_err(|e| format!("`{k}`: {e}")))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').ok_or_else(|| format!("bad merge `{m}`"))?;
            Ok((a.to_string(), b.to_string()))
        })
        .collect::<Result<_, String>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("cannot build the BPE tokenizer: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let pre = md
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    let pre_tok = if pre == "smollm" {
        PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level,
        ]))
    } else {
        byte_level
    };
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(TextTokenizer::new(tok))
}

/// Loads a Hugging Face `tokenizer.json`, with padding and truncation turned off.
pub fn hf_tokenizer(path: &std::path::Path) -> Result<TextTokenizer, String> {
    let mut tok = Tokenizer::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    tok.with_padding(None);
    tok.with_truncation(None).map_err(|e| e.to_string())?;
    Ok(TextTokenizer::new(tok))
}
