//! Float tensors stored in files: element types, little-endian decoding to `f32`, and `.npy`
//! headers. Shared by the SAE loaders (safetensors, `.npz`) and the array sources.

/// An element type of a stored float tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// IEEE 754 half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Single precision.
    F32,
    /// Double precision.
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }

    /// The type of a safetensors tensor, if it is a float type we read.
    pub fn from_safetensors(d: safetensors::Dtype) -> Option<DType> {
        match d {
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::F64 => Some(DType::F64),
            _ => None,
        }
    }
}

/// Appends the little-endian elements of `bytes` (whole elements only) to `out` as `f32`.
pub fn decode_le(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) {
    out.reserve(bytes.len() / dtype.size());
    match dtype {
        DType::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        DType::F64 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32),
        ),
        DType::F16 => out.extend(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        DType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
    }
}

/// The header of an `.npy` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first (C order).
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: usize,
    /// Bytes of data the shape and element type declare (checked against overflow, not
    /// against the file: callers compare it with the bytes they have before allocating).
    pub data_len: usize,
}

/// Parses the header of an `.npy` file from its first bytes (versions 1 to 3; little-endian
/// `f2`, `f4` or `f8`; C order only).
pub fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
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
        .collect::<Result<_, _>>()?;
    let dtype = match descr {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<f2" => DType::F16,
        other => return Err(format!("dtype `{other}` is not supported (little-endian f2, f4, f8)")),
    };
    let data_len = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape `({shape_text})` is too large to address"))?;
    Ok(NpyHeader {
        dtype,
        shape,
        data_offset: start + header_len,
        data_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_float_type() {
        let mut out = Vec::new();
        decode_le(DType::F32, &1.5f32.to_le_bytes(), &mut out);
        decode_le(DType::F64, &(-2.25f64).to_le_bytes(), &mut out);
        decode_le(DType::F16, &half::f16::from_f32(0.333).to_le_bytes(), &mut out);
        decode_le(DType::BF16, &half::bf16::from_f32(3.0).to_le_bytes(), &mut out);
        decode_le(DType::F16, &[0x01, 0x00], &mut out); // the smallest subnormal half
        assert_eq!(&out[..2], &[1.5, -2.25]);
        assert!((out[2] - 0.333).abs() < 1e-3);
        assert_eq!(out[3], 3.0);
        assert_eq!(out[4], 2f32.powi(-24));
    }

    #[test]
    fn parses_npy_headers() {
        let dict = "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 4), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((dict.len() as u16).to_le_bytes());
        bytes.extend(dict.as_bytes());
        let h = parse_npy_header(&bytes).unwrap();
        assert_eq!(h.dtype, DType::F16);
        assert_eq!(h.shape, vec![3, 4]);
        assert_eq!(h.data_offset, 10 + dict.len());
        assert_eq!(h.data_len, 3 * 4 * 2);
        assert!(parse_npy_header(b"PK\x03\x04 not npy").unwrap_err().contains("bad magic"));
        // A shape whose byte count does not fit in memory's address space is refused.
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 2), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((dict.len() as u16).to_le_bytes());
        bytes.extend(dict.as_bytes());
        assert!(parse_npy_header(&bytes).unwrap_err().contains("too large"));
    }
}
