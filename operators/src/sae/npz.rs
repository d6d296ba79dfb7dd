//! Reading `.npz` archives of `.npy` arrays (Gemma Scope's `params.npz`): stored or deflated
//! zip members, little-endian `f2`/`f4`/`f8` arrays in C order.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use neurostream_engine::tensor::{decode_le, parse_npy_header};
use neurostream_engine::{EngineError, Result};

/// A float array read from an `.npy` member, converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Values in C (row-major) order.
    pub data: Vec<f32>,
}

fn err(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Input {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads every member of an `.npz` file, keyed by name without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<HashMap<String, NpyArray>> {
    let file = std::fs::File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| err(path, format!("not a valid .npz (zip) archive: {e}")))?;
    let mut out = HashMap::new();
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(|e| err(path, format!("member {i}: {e}")))?;
        let name = member
            .name()
            .map_err(|e| err(path, format!("member {i}: {e}")))?
            .trim_end_matches(".npy")
            .to_string();
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| err(path, format!("member `{name}`: {e}")))?;
        let array = parse_npy(&bytes).map_err(|m| err(path, format!("member `{name}`: {m}")))?;
        out.insert(name, array);
    }
    Ok(out)
}

/// Parses one `.npy` file's bytes.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    let h = parse_npy_header(bytes)?;
    let n: usize = h.shape.iter().product();
    let body = &bytes[h.data_offset..];
    let mut data = Vec::with_capacity(n);
    decode_le(h.dtype, &body[..body.len().min(n * h.dtype.size())], &mut data);
    if data.len() != n {
        return Err(format!("truncated data: {} of {n} values", data.len()));
    }
    Ok(NpyArray { shape: h.shape, data })
}
