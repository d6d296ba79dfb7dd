//! Reading `.npz` archives of `.npy` arrays (Gemma Scope's `params.npz`): stored or deflated
//! zip members, little-endian `f2`/`f4`/`f8` arrays in C order.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

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
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header =
        std::str::from_utf8(bytes.get(start..start + header_len).ok_or("truncated header")?).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = header[i + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or("no descr")?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_text = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or("no shape")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape `{shape_text}`")))
        .collect::<std::result::Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + header_len..];
    let data: Vec<f32> = match descr {
        "<f4" => body
            .chunks_exact(4)
            .take(n)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        "<f8" => body
            .chunks_exact(8)
            .take(n)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        "<f2" => body
            .chunks_exact(2)
            .take(n)
            .map(|b| super::model::f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        other => return Err(format!("dtype `{other}` is not supported (little-endian f2, f4, f8)")),
    };
    if data.len() != n {
        return Err(format!("truncated data: {} of {n} values", data.len()));
    }
    Ok(NpyArray { shape, data })
}
