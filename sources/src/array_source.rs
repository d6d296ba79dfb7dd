//! `array`: activations stored as one dense float tensor in a `.npy` or `.safetensors` file,
//! memory-mapped and decoded batch by batch (f32, f16, bf16 or f64, little-endian).
//!
//! Shapes: `[tokens, d_model]` (rows are cut into sequences of `seq_len` tokens, or form one
//! sequence 0 when `seq_len` is unset) or `[sequences, seq_len, d_model]` (`seq_id` = the first
//! index, `pos` = the second). Batches of `batch_rows` rows are dealt round-robin to the workers;
//! the event time of a row is its ordinal in the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use neurostream_engine::tensor::{decode_le, parse_npy_header, DType};
use neurostream_engine::{
    Batch, EngineError, Frame, NodeConfig, NodeContext, Result, RowIndex, Schema, Source, SourceKind, SourceReader, WorkerPos,
};
use serde::{Deserialize, Serialize};

/// Configuration of an `array` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArraySourceConfig {
    /// The `.npy` or `.safetensors` file.
    pub path: String,
    /// safetensors: the tensor to read (default: the file's only tensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<String>,
    /// `[tokens, d_model]` arrays: tokens per sequence (`seq_id = row / seq_len`, `pos = row %
    /// seq_len`; default: the whole array is sequence 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub seq_len: Option<usize>,
    /// Rows per frame (default 4096).
    #[serde(default = "default_batch_rows")]
    #[schemars(extend("x-unit" = "rows"))]
    pub batch_rows: usize,
    /// Model name recorded in the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Layer or hook name recorded in the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

fn default_batch_rows() -> usize {
    4096
}

impl ArraySourceConfig {
    /// Reads `path` with default options.
    pub fn new(path: &str) -> ArraySourceConfig {
        ArraySourceConfig {
            path: path.into(),
            tensor: None,
            seq_len: None,
            batch_rows: default_batch_rows(),
            model: None,
            layer: None,
        }
    }
}

impl NodeConfig for ArraySourceConfig {
    const KIND: &'static str = "array";
}

/// The `array` source kind.
pub struct ArraySourceKind;

impl SourceKind for ArraySourceKind {
    type Config = ArraySourceConfig;

    fn describe(&self) -> &'static str {
        "activations in a .npy or .safetensors tensor [tokens, d] or [seqs, seq_len, d] (f32/f16/bf16/f64), memory-mapped"
    }
    fn build(&self, cfg: ArraySourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if cfg.batch_rows == 0 {
            return Err(EngineError::config(ctx.label, "`batch_rows` must be at least 1"));
        }
        if cfg.seq_len == Some(0) {
            return Err(EngineError::config(ctx.label, "`seq_len` must be at least 1"));
        }
        Ok(Arc::new(ArraySource::open(ctx.name, &ctx.input_file(&cfg.path), &cfg)?))
    }
}

/// A memory-mapped tensor file, shared by the readers of all workers.
#[derive(Debug)]
pub struct ArraySource {
    file: Arc<ArrayFile>,
}

/// The map and the layout of its tensor.
#[derive(Debug)]
struct ArrayFile {
    name: Arc<str>,
    path: PathBuf,
    map: Arc<Mmap>,
    dtype: DType,
    /// Byte offset of element 0.
    offset: usize,
    rows: usize,
    width: usize,
    /// Tokens per sequence (`usize::MAX`: one sequence).
    seq_len: usize,
    batch_rows: usize,
    schema: Arc<Schema>,
}

impl ArraySource {
    /// Maps `path` and reads its header.
    pub fn open(name: &str, path: &Path, cfg: &ArraySourceConfig) -> Result<ArraySource> {
        let file = std::fs::File::open(path).map_err(|e| EngineError::input(path, format!("cannot open: {e}")))?;
        // SAFETY: the map is read-only; a file truncated underneath a running pipeline is the
        // same hazard every memory-mapped reader (numpy.load(mmap_mode), safetensors) accepts.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| EngineError::input(path, format!("cannot map: {e}")))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        let (dtype, shape, offset) = match ext {
            "npy" => {
                if cfg.tensor.is_some() {
                    return Err(EngineError::input(path, "`tensor` applies only to .safetensors files"));
                }
                let h = parse_npy_header(&map).map_err(|m| EngineError::input(path, m))?;
                (h.dtype, h.shape, h.data_offset)
            }
            "safetensors" => {
                let (n, meta) = safetensors::SafeTensors::read_metadata(&map)
                    .map_err(|e| EngineError::input(path, format!("not a valid safetensors file: {e}")))?;
                let names: Vec<String> = {
                    let mut v: Vec<String> = meta.tensors().keys().cloned().collect();
                    v.sort();
                    v
                };
                let wanted = match &cfg.tensor {
                    Some(t) => t.clone(),
                    None if names.len() == 1 => names[0].clone(),
                    None => {
                        return Err(EngineError::input(
                            path,
                            format!("holds several tensors ({}): choose one with `tensor`", names.join(", ")),
                        ))
                    }
                };
                let info = meta
                    .info(&wanted)
                    .ok_or_else(|| EngineError::input(path, format!("no tensor `{wanted}` (tensors: {})", names.join(", "))))?;
                let dtype = DType::from_safetensors(info.dtype).ok_or_else(|| {
                    EngineError::input(
                        path,
                        format!("tensor `{wanted}` has dtype {:?}; expected F32, F16, BF16 or F64", info.dtype),
                    )
                })?;
                (dtype, info.shape.clone(), 8 + n + info.data_offsets.0)
            }
            _ => return Err(EngineError::input(path, "expected a .npy or .safetensors file")),
        };
        let (rows, width, seq_len) = match (shape.as_slice(), cfg.seq_len) {
            ([rows, width], s) => (*rows, *width, s.unwrap_or(usize::MAX)),
            ([seqs, len, width], None) => (seqs * len, *width, *len),
            ([_, len, _], Some(s)) if s != *len => {
                return Err(EngineError::input(
                    path,
                    format!("shape {shape:?} already has sequences of {len} tokens; `seq_len` = {s} disagrees"),
                ))
            }
            ([seqs, len, width], Some(_)) => (seqs * len, *width, *len),
            _ => {
                return Err(EngineError::input(
                    path,
                    format!("shape {shape:?}: expected [tokens, d_model] or [sequences, seq_len, d_model]"),
                ))
            }
        };
        if width == 0 {
            return Err(EngineError::input(path, "d_model is 0"));
        }
        let needed = offset + rows * width * dtype.size();
        if map.len() < needed {
            return Err(EngineError::input(
                path,
                format!(
                    "truncated: shape {shape:?} of {dtype:?} needs {needed} bytes, the file has {}",
                    map.len()
                ),
            ));
        }
        Ok(ArraySource {
            file: Arc::new(ArrayFile {
                name: name.into(),
                path: path.to_path_buf(),
                map: Arc::new(map),
                dtype,
                offset,
                rows,
                width,
                seq_len,
                batch_rows: cfg.batch_rows,
                schema: Arc::new(Schema::activation(width, cfg.model.clone(), cfg.layer.clone())),
            }),
        })
    }
}

impl Source for ArraySource {
    fn replayable(&self) -> bool {
        true // a pure function of its files / seed: reopening yields the same batches
    }
    fn input_files(&self) -> Vec<std::path::PathBuf> {
        vec![self.file.path.clone()]
    }
    fn schema(&self) -> Arc<Schema> {
        self.file.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        Some(self.file.rows as u64)
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let batches = self.file.rows.div_ceil(self.file.batch_rows) as u64;
        Ok(Box::new(ArrayReader {
            chunks: crate::worker_chunks(batches, worker.index, worker.peers)
                .collect::<Vec<_>>()
                .into_iter()
                .peekable(),
            source: self.file.clone(),
            current: None,
        }))
    }
}

struct ArrayReader {
    chunks: std::iter::Peekable<std::vec::IntoIter<u64>>,
    source: Arc<ArrayFile>,
    current: Option<u64>,
}

impl SourceReader for ArrayReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        let Some(chunk) = self.chunks.next() else { return Ok(None) };
        self.current = Some(chunk);
        let s = &self.source;
        let first = chunk as usize * s.batch_rows;
        let last = (first + s.batch_rows).min(s.rows);
        let elem = s.dtype.size();
        let bytes = &s.map[s.offset + first * s.width * elem..s.offset + last * s.width * elem];
        let mut data = Vec::with_capacity((last - first) * s.width);
        decode_le(s.dtype, bytes, &mut data);
        let (seq_id, pos) = (first..last)
            .map(|r| {
                if s.seq_len == usize::MAX {
                    (0u64, r as u32)
                } else {
                    ((r / s.seq_len) as u64, (r % s.seq_len) as u32)
                }
            })
            .unzip();
        let index = RowIndex::Tokens {
            seq_id,
            pos,
            token: None,
            time: None,
        };
        let frame = Frame::new(s.name.clone(), s.schema.clone(), index, data)?;
        Ok(Some((first as u64, Batch::Dense(frame))))
    }

    fn next_time(&self) -> Option<u64> {
        self.chunks.clone().next().map(|c| c * self.source.batch_rows as u64)
    }

    fn location(&self) -> String {
        match self.current {
            Some(c) => format!(
                "{}, rows from {}",
                self.source.path.display(),
                c as usize * self.source.batch_rows
            ),
            None => self.source.path.display().to_string(),
        }
    }
}
