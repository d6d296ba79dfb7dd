//! Loading fixed per-channel normalization statistics.

use std::path::Path;

use neurostream_engine::{EngineError, Result};

/// Reads per-channel `(mean, std)` from a JSON file (`{"mean": [...], "std": [...]}`) or a
/// safetensors file (1-D `F32` or `F64` tensors named `mean` and `std`), chosen by extension.
pub fn load_stats(path: &Path) -> Result<(Vec<f64>, Vec<f64>)> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::input(path, format!("cannot read statistics file: {e}")))?;
    let (mean, std) = if path.extension().is_some_and(|e| e == "safetensors") {
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
        (get("mean")?, get("std")?)
    } else {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Stats {
            mean: Vec<f64>,
            std: Vec<f64>,
            #[allow(dead_code)]
            #[serde(default)]
            channels: Option<Vec<String>>,
        }
        let s: Stats =
            serde_json::from_slice(&bytes).map_err(|e| EngineError::input(path, format!("not a statistics JSON file: {e}")))?;
        (s.mean, s.std)
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
    Ok((mean, std))
}
