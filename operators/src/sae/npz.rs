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
        // The archive's declared size is only a hint (a lying one must not allocate).
        let mut bytes = Vec::with_capacity(member.size().min(1 << 30) as usize);
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
    let body = &bytes[h.data_offset..];
    if body.len() < h.data_len {
        return Err(format!(
            "truncated data: shape {:?} of {:?} needs {} bytes, the member has {}",
            h.shape,
            h.dtype,
            h.data_len,
            body.len()
        ));
    }
    let mut data = Vec::new();
    decode_le(h.dtype, &body[..h.data_len], &mut data);
    Ok(NpyArray { shape: h.shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(shape: &str, values: &[f32]) -> Vec<u8> {
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((dict.len() as u16).to_le_bytes());
        bytes.extend(dict.as_bytes());
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        bytes
    }

    #[test]
    fn reads_members_and_refuses_shapes_their_data_does_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, members: &[(&str, Vec<u8>)]| {
            let path = dir.path().join(name);
            let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
            for (member, bytes) in members {
                zip.start_file(*member, zip::write::SimpleFileOptions::default()).unwrap();
                std::io::Write::write_all(&mut zip, bytes).unwrap();
            }
            zip.finish().unwrap();
            path
        };
        let good = write("good.npz", &[("b.npy", npy("(2, 3)", &[1., 2., 3., 4., 5., 6.]))]);
        let arrays = read_npz(&good).unwrap();
        assert_eq!(arrays["b"].shape, vec![2, 3]);
        assert_eq!(arrays["b"].data, vec![1., 2., 3., 4., 5., 6.]);
        // A header that claims 2^40 x 16 floats over 16 bytes of data (allocating it first
        // aborted the process).
        let lie = write("lie.npz", &[("W_enc.npy", npy("(1099511627776, 16)", &[0.; 4]))]);
        let e = read_npz(&lie).unwrap_err().to_string();
        assert!(
            e.contains("lie.npz") && e.contains("W_enc") && e.contains("needs 70368744177664 bytes, the member has 16"),
            "{e}"
        );
        let short = write("short.npz", &[("b.npy", npy("(2, 3)", &[1., 2.]))]);
        assert!(read_npz(&short)
            .unwrap_err()
            .to_string()
            .contains("needs 24 bytes, the member has 8"));
    }
}
