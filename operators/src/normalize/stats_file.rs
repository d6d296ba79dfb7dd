//! Loading fixed per-channel normalization statistics.

use std::path::Path;

use neurostream_engine::{EngineError, Result};

/// Per-channel statistics read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel standard deviation.
    pub std: Vec<f64>,
    /// Per-channel units the statistics were computed in (JSON `units`), empty when not given.
    pub units: Vec<String>,
}

/// Reads per-channel `(mean, std)` from a JSON file (`{"mean": [...], "std": [...]}`, optional
/// `channels` and `units`) or a safetensors file (1-D `F32` or `F64` tensors named `mean` and
/// `std`), chosen by extension.
pub fn load_stats(path: &Path) -> Result<Stats> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::input(path, format!("cannot read statistics file: {e}")))?;
    let (mean, std, units) = if path.extension().is_some_and(|e| e == "safetensors") {
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| EngineError::input(path, format!("not a valid safetensors file: {e}")))?;
        let get = |name: &str| -> Result<Vec<f64>> {
            let t = st
                .tensor(name)
                .map_err(|_| EngineError::input(path, format!("no tensor `{name}`")))?;
            if t.shape().len() != 1 {
                return Err(EngineError::input(
                    path,
                    format!("tensor `{name}` must be 1-D, has shape {:?}", t.shape()),
                ));
            }
            let data = t.data();
            match t.dtype() {
                safetensors::Dtype::F32 => Ok(data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect()),
                safetensors::Dtype::F64 => Ok(data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect()),
                other => Err(EngineError::input(
                    path,
                    format!("tensor `{name}` has dtype {other:?}; expected F32 or F64"),
                )),
            }
        };
        (get("mean")?, get("std")?, Vec::new())
    } else {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Stats {
            mean: Vec<f64>,
            std: Vec<f64>,
            #[allow(dead_code)]
            #[serde(default)]
            channels: Option<Vec<String>>,
            #[serde(default)]
            units: Vec<String>,
        }
        let s: Stats =
            serde_json::from_slice(&bytes).map_err(|e| EngineError::input(path, format!("not a statistics JSON file: {e}")))?;
        if !s.units.is_empty() && s.units.len() != s.mean.len() {
            return Err(EngineError::input(
                path,
                format!("`units` has {} entries but `mean` has {}", s.units.len(), s.mean.len()),
            ));
        }
        (s.mean, s.std, s.units)
    };
    if mean.len() != std.len() {
        return Err(EngineError::input(
            path,
            format!("`mean` has {} values but `std` has {}", mean.len(), std.len()),
        ));
    }
    if let Some(i) = mean.iter().position(|m| !m.is_finite()) {
        return Err(EngineError::input(path, format!("`mean` channel {i} is not finite")));
    }
    Ok(Stats { mean, std, units })
}
