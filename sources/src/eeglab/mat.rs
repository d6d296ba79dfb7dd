//! A reader of MATLAB MAT-files of level 5 (what MATLAB writes with `-v6` and `-v7`, and
//! `scipy.io.savemat`): numeric, char, struct and cell arrays, uncompressed or zlib-compressed
//! (`miCOMPRESSED`), either byte order.
//!
//! Written here rather than taken from a crate because a recording's samples must stream: a
//! numeric array larger than [`LOAD_LIMIT_BYTES`] is not loaded but located
//! ([`Numbers::InFile`]), in the file or inside a compressed variable's zlib stream, and read
//! later a block at a time ([`Payload::open`]). The crates found (`matrw` 0.1) load whole
//! files into memory and panic on corrupt zlib data. Every size the file declares is checked
//! against the bytes that hold it before anything is allocated; nesting depth and the values
//! held in memory are bounded.
//!
//! Sparse arrays, objects and function handles are skipped ([`Value::Unsupported`]).
//! MAT-files of version 7.3 are HDF5 files, read by [`super::mat73`] into the same values.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::read::ZlibDecoder;

/// Numeric arrays whose data take more bytes than this stay in the file and are read on demand.
pub const LOAD_LIMIT_BYTES: u64 = 64 * 1024;

/// Char arrays longer than this (bytes of data) are skipped: no field a reader needs is that long.
pub(super) const CHAR_LIMIT_BYTES: u64 = 16 << 20;

/// Deepest nesting of structs and cells read.
pub(super) const MAX_DEPTH: usize = 32;

/// Most bytes of values held in memory (struct and cell elements at [`VALUE_BYTES`] each,
/// loaded numbers at 8, text and names at their length): a file cannot make the reader hold
/// more than this, however far its compressed variables inflate.
pub(super) const MAX_HELD_BYTES: u64 = 256 << 20;

/// What a struct or cell element is charged against [`MAX_HELD_BYTES`].
pub(super) const VALUE_BYTES: u64 = 64;

/// Longest array name read (MATLAB's are at most 63 characters).
const MAX_NAME_BYTES: u64 = 4096;

/// Most bytes of a struct's field names (MATLAB's names are at most 64 bytes each).
const MAX_FIELD_NAME_BYTES: u64 = 1 << 20;

/// How a MAT-file stores numbers (the `mi` data types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MiType {
    /// `miINT8`.
    Int8,
    /// `miUINT8`.
    UInt8,
    /// `miINT16`.
    Int16,
    /// `miUINT16`.
    UInt16,
    /// `miINT32`.
    Int32,
    /// `miUINT32`.
    UInt32,
    /// `miSINGLE` (IEEE float32).
    Single,
    /// `miDOUBLE` (IEEE float64).
    Double,
    /// `miINT64`.
    Int64,
    /// `miUINT64`.
    UInt64,
}

impl MiType {
    fn from_code(code: u32) -> Option<MiType> {
        Some(match code {
            1 => MiType::Int8,
            2 => MiType::UInt8,
            3 => MiType::Int16,
            4 => MiType::UInt16,
            5 => MiType::Int32,
            6 => MiType::UInt32,
            7 => MiType::Single,
            9 => MiType::Double,
            12 => MiType::Int64,
            13 => MiType::UInt64,
            _ => return None,
        })
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            MiType::Int8 | MiType::UInt8 => 1,
            MiType::Int16 | MiType::UInt16 => 2,
            MiType::Int32 | MiType::UInt32 | MiType::Single => 4,
            MiType::Double | MiType::Int64 | MiType::UInt64 => 8,
        }
    }

    /// The value in `b` (exactly [`MiType::bytes`] long) in the file's byte order.
    pub fn decode(self, b: &[u8], big_endian: bool) -> f64 {
        macro_rules! num {
            ($t:ty) => {{
                let a = b.try_into().expect("one value's bytes");
                (if big_endian {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }) as f64
            }};
        }
        match self {
            MiType::Int8 => b[0] as i8 as f64,
            MiType::UInt8 => b[0] as f64,
            MiType::Int16 => num!(i16),
            MiType::UInt16 => num!(u16),
            MiType::Int32 => num!(i32),
            MiType::UInt32 => num!(u32),
            MiType::Single => num!(f32),
            MiType::Double => num!(f64),
            MiType::Int64 => num!(i64),
            MiType::UInt64 => num!(u64),
        }
    }
}

/// Where a numeric array's data lie.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    /// At this byte offset of the file.
    File {
        /// Byte offset in the file.
        offset: u64,
    },
    /// Inside a compressed variable: its zlib stream starts at `stream` and takes `stream_len`
    /// bytes of the file; the data start `offset` bytes into the inflated stream.
    Inflated {
        /// Byte offset of the zlib stream in the file.
        stream: u64,
        /// Bytes of the zlib stream in the file.
        stream_len: u64,
        /// Byte offset of the data in the inflated stream.
        offset: u64,
    },
    /// A dataset of a v7.3 (HDF5) MAT-file.
    Hdf5 {
        /// The dataset's HDF5 path (`/EEG/data`).
        object: String,
    },
}

/// A numeric array's data left in the file: `count` values of type `mi`.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    /// Where the first value is.
    pub at: Location,
    /// How each value is stored.
    pub mi: MiType,
    /// Number of values.
    pub count: u64,
    /// The file's byte order.
    pub big_endian: bool,
}

impl Payload {
    /// A reader of the payload's bytes (`count × mi.bytes()` of them) from the file at `path`.
    pub fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        let bytes = self.count * self.mi.bytes() as u64;
        let mut file = File::open(path)?;
        match self.at {
            Location::File { offset } => {
                file.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(BufReader::with_capacity(1 << 20, file).take(bytes)))
            }
            Location::Inflated {
                stream,
                stream_len,
                offset,
            } => {
                file.seek(SeekFrom::Start(stream))?;
                let mut inflated = ZlibDecoder::new(BufReader::with_capacity(1 << 20, file).take(stream_len));
                let skipped = io::copy(&mut (&mut inflated).take(offset), &mut io::sink())?;
                if skipped < offset {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the compressed variable ends early",
                    ));
                }
                Ok(Box::new(inflated.take(bytes)))
            }
            Location::Hdf5 { ref object } => Ok(Box::new(super::mat73::open_values(path, object, self.mi)?.take(bytes))),
        }
    }
}

/// A numeric array's values: in memory, or left in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum Numbers {
    /// The values (at most [`LOAD_LIMIT_BYTES`] of data), column-major.
    Loaded(Vec<f64>),
    /// The values, column-major, left in the file.
    InFile(Payload),
}

/// A MATLAB value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A numeric or logical array (of any class), column-major; `complex` arrays keep their
    /// real part only.
    Numeric {
        /// MATLAB's class number: 6 double, 7 single, 8–15 int8, uint8, … uint64.
        class: u8,
        /// Dimensions (at least two).
        dims: Vec<u64>,
        /// Whether the array had an imaginary part (skipped).
        complex: bool,
        /// The real part.
        numbers: Numbers,
    },
    /// A char array: a row vector's text, or a matrix's rows joined by newlines.
    Char(String),
    /// A struct array: `elements[i][f]` is field `fields[f]` of element `i` (column-major).
    Struct {
        /// Dimensions (at least two).
        dims: Vec<u64>,
        /// Field names.
        fields: Vec<String>,
        /// One entry per element, each with one value per field.
        elements: Vec<Vec<Value>>,
    },
    /// A cell array, column-major.
    Cell {
        /// Dimensions (at least two).
        dims: Vec<u64>,
        /// The cells.
        items: Vec<Value>,
    },
    /// A value of a class this reader skips (`sparse`, `object`, `function handle`, …; a char
    /// array over 16 MiB).
    Unsupported(&'static str),
}

impl Value {
    /// Field `name` of a 1 × 1 struct (the first element of a larger one).
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct { fields, elements, .. } => {
                let f = fields.iter().position(|n| n == name)?;
                elements.first().map(|e| &e[f])
            }
            _ => None,
        }
    }

    /// The one number of a numeric array with exactly one value held in memory.
    pub fn scalar(&self) -> Option<f64> {
        match self {
            Value::Numeric {
                numbers: Numbers::Loaded(v),
                ..
            } if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }

    /// Whether this is an array with no elements (`[]`, `''`, `{}`, an empty struct array).
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Numeric { dims, .. } | Value::Struct { dims, .. } | Value::Cell { dims, .. } => dims.contains(&0),
            Value::Char(s) => s.is_empty(),
            Value::Unsupported(_) => false,
        }
    }

    /// The class name, for messages (`double array`, `struct`, `char`).
    pub fn describe(&self) -> String {
        match self {
            Value::Numeric { dims, .. } => format!("numeric array ({})", dims_text(dims)),
            Value::Char(_) => "char array".into(),
            Value::Struct { dims, .. } => format!("struct array ({})", dims_text(dims)),
            Value::Cell { dims, .. } => format!("cell array ({})", dims_text(dims)),
            Value::Unsupported(what) => (*what).into(),
        }
    }
}

/// `64 × 1000`.
pub fn dims_text(dims: &[u64]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" × ")
}

/// A MAT-file's variables, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct MatFile {
    /// `(name, value)` per variable.
    pub variables: Vec<(String, Value)>,
}

impl MatFile {
    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.variables.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

const MI_INT8: u32 = 1;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

/// Reads the variables of the MAT-file at `path`. Errors say what is wrong and where (byte
/// offsets; the variable), without the path (the caller names the file).
pub fn read(path: &Path) -> Result<MatFile, String> {
    let file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let file_len = file.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    let mut file = BufReader::with_capacity(1 << 16, file);
    let mut header = [0u8; 128];
    if file_len < 128 || file.read_exact(&mut header).is_err() {
        return Err(format!(
            "not a MAT-file: {file_len} bytes, shorter than a MAT-file header (128)"
        ));
    }
    let text = String::from_utf8_lossy(&header[..116]);
    if text.starts_with("MATLAB 7.3") || hdf5_signature(&mut file) {
        return super::mat73::read(path);
    }
    let big_endian = match &header[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(format!(
                "not a MAT-file of level 5 (its header's byte-order mark is {:?}, not \"IM\" or \"MI\")",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let mut budget = Budget { held: 0 };
    let mut variables = Vec::new();
    let mut pos = 128u64;
    file.seek(SeekFrom::Start(pos)).map_err(|e| format!("cannot read: {e}"))?;
    while pos < file_len {
        if file_len - pos < 8 {
            return Err(format!("{} stray bytes at the end (byte {pos})", file_len - pos));
        }
        let mut tag = [0u8; 8];
        file.read_exact(&mut tag).map_err(|e| format!("byte {pos}: {e}"))?;
        let word = |b: &[u8]| {
            let a = b.try_into().expect("4 bytes");
            if big_endian {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        let (code, len) = (word(&tag[..4]), word(&tag[4..]) as u64);
        let start = pos + 8;
        if len > file_len - start {
            return Err(format!(
                "variable {} (byte {pos}) declares {len} bytes, but the file has {} after its tag (truncated?)",
                variables.len() + 1,
                file_len - start
            ));
        }
        let ordinal = variables.len() + 1;
        let (name, value) = match code {
            MI_MATRIX => {
                let mut input = Input::new(Source::File(&mut file), start, big_endian, None, &mut budget);
                input.matrix(start + len, 0)
            }
            MI_COMPRESSED => {
                let inflated = ZlibDecoder::new((&mut file).take(len));
                let origin = Some((start, len));
                let mut input = Input::new(Source::Zlib(Box::new(inflated)), 0, big_endian, origin, &mut budget);
                input.compressed()
            }
            other => Err(format!("data type {other}, not a variable (miMATRIX or miCOMPRESSED)")),
        }
        .map_err(|e| format!("variable {ordinal} (byte {pos}): {e}"))?;
        variables.push((name, value));
        // Uncompressed variables are padded to 8 bytes; compressed ones are not.
        pos = start + len;
        if code == MI_MATRIX {
            pos = pos.div_ceil(8) * 8;
        }
        pos = pos.min(file_len);
        file.seek(SeekFrom::Start(pos)).map_err(|e| format!("byte {pos}: {e}"))?;
    }
    Ok(MatFile { variables })
}

/// Whether the file holds an HDF5 signature at 512 bytes (a v7.3 MAT-file's user block size).
fn hdf5_signature(file: &mut BufReader<File>) -> bool {
    let mut sig = [0u8; 8];
    file.seek(SeekFrom::Start(512)).is_ok() && file.read_exact(&mut sig).is_ok() && &sig == b"\x89HDF\r\n\x1a\n"
}

/// Bytes held in memory so far, against [`MAX_HELD_BYTES`].
struct Budget {
    held: u64,
}

enum Source<'a> {
    File(&'a mut BufReader<File>),
    Zlib(Box<ZlibDecoder<io::Take<&'a mut BufReader<File>>>>),
}

/// A tag: data type, bytes of data, and whether the data were packed into the tag's second
/// word (the small data element format).
struct Tag {
    code: u32,
    len: u64,
    small: bool,
}

/// The bytes of one variable (uncompressed in the file, or an inflated zlib stream) with its
/// position: a file offset, or an offset into the inflated stream.
struct Input<'a, 'b> {
    source: Source<'a>,
    pos: u64,
    big_endian: bool,
    /// The compressed variable's zlib stream (file offset, bytes), when inflating.
    stream: Option<(u64, u64)>,
    budget: &'b mut Budget,
}

impl<'a, 'b> Input<'a, 'b> {
    fn new(source: Source<'a>, pos: u64, big_endian: bool, stream: Option<(u64, u64)>, budget: &'b mut Budget) -> Self {
        Input {
            source,
            pos,
            big_endian,
            stream,
            budget,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        let r = match &mut self.source {
            Source::File(f) => f.read_exact(buf),
            Source::Zlib(z) => z.read_exact(buf),
        };
        r.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => format!("ends early (byte {} of the variable's data)", self.pos),
            _ => format!("byte {}: {e}", self.pos),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let skipped = match &mut self.source {
            Source::File(f) => f.seek_relative(n as i64).map(|_| n),
            Source::Zlib(z) => io::copy(&mut z.take(n), &mut io::sink()),
        }
        .map_err(|e| format!("byte {}: {e}", self.pos))?;
        if skipped < n {
            return Err(format!("ends early (byte {} of the variable's data)", self.pos + skipped));
        }
        self.pos += n;
        Ok(())
    }

    fn word(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// The tag of a subelement that must end by `end`.
    fn tag(&mut self, end: u64, what: &str) -> Result<Tag, String> {
        if end.saturating_sub(self.pos) < 8 {
            return Err(format!("the {what} is missing (byte {})", self.pos));
        }
        let first = self.word()?;
        if first >> 16 != 0 {
            let len = (first >> 16) as u64;
            if len > 4 {
                return Err(format!("the {what}'s packed tag declares {len} bytes (at most 4 fit)"));
            }
            return Ok(Tag {
                code: first & 0xffff,
                len,
                small: true,
            });
        }
        let len = self.word()? as u64;
        if len > end - self.pos {
            return Err(format!(
                "the {what} (byte {}) declares {len} bytes, but its array has {} left",
                self.pos - 8,
                end - self.pos
            ));
        }
        Ok(Tag {
            code: first,
            len,
            small: false,
        })
    }

    /// The data of `tag` (read after it; at most `limit` bytes, or an error naming `what`), with
    /// the padding after them skipped.
    fn body(&mut self, tag: &Tag, end: u64, limit: u64, what: &str) -> Result<Vec<u8>, String> {
        if tag.len > limit {
            return Err(format!("the {what} takes {} bytes (at most {limit} are read)", tag.len));
        }
        self.charge(tag.len)?;
        let mut data = vec![0u8; if tag.small { 4 } else { tag.len as usize }];
        self.read_exact(&mut data)?;
        data.truncate(tag.len as usize);
        self.pad(tag, end)?;
        Ok(data)
    }

    /// Skips the data of `tag` and the padding after them.
    fn skip_body(&mut self, tag: &Tag, end: u64) -> Result<(), String> {
        self.skip(if tag.small { 4 } else { tag.len })?;
        self.pad(tag, end)
    }

    fn pad(&mut self, tag: &Tag, end: u64) -> Result<(), String> {
        if tag.small {
            return Ok(());
        }
        let pad = (8 - tag.len % 8) % 8;
        self.skip(pad.min(end.saturating_sub(self.pos)))
    }

    fn int32s(&self, data: &[u8]) -> Vec<i64> {
        data.chunks_exact(4)
            .map(|b| MiType::Int32.decode(b, self.big_endian) as i64)
            .collect()
    }

    /// The one variable inside a compressed element.
    fn compressed(&mut self) -> Result<(String, Value), String> {
        let tag = self.tag(u64::MAX, "compressed variable")?;
        if tag.code != MI_MATRIX || tag.small {
            return Err(format!("the compressed data hold data type {}, not a variable", tag.code));
        }
        let end = self.pos + tag.len;
        self.matrix(end, 0)
    }

    /// Counts `bytes` more held in memory against [`MAX_HELD_BYTES`].
    fn charge(&mut self, bytes: u64) -> Result<(), String> {
        self.budget.held = self.budget.held.saturating_add(bytes);
        if self.budget.held > MAX_HELD_BYTES {
            return Err(format!(
                "holds more than {} MiB of structs, cells, text and small arrays",
                MAX_HELD_BYTES >> 20
            ));
        }
        Ok(())
    }

    /// An array (`miMATRIX`) whose data end at `end`: its name and value. Ends positioned at
    /// `end`.
    fn matrix(&mut self, end: u64, depth: usize) -> Result<(String, Value), String> {
        if depth > MAX_DEPTH {
            return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
        }
        if self.pos == end {
            // An empty array written as a tag with no data (MATLAB does this for `[]` in cells).
            return Ok((
                String::new(),
                Value::Numeric {
                    class: 6,
                    dims: vec![0, 0],
                    complex: false,
                    numbers: Numbers::Loaded(Vec::new()),
                },
            ));
        }
        let flags = self.tag(end, "array flags")?;
        if flags.code != MI_UINT32 || flags.len != 8 {
            return Err(format!(
                "array flags of type {} and {} bytes (expected miUINT32, 8)",
                flags.code, flags.len
            ));
        }
        let flags_word = self.word()?;
        self.word()?;
        let class = flags_word & 0xff;
        let complex = flags_word & 0x0800 != 0;
        if class == 17 {
            // An opaque (MCOS) object: string, datetime, table, ... Its name comes without
            // dimensions, then its class and data, which this reader skips.
            let name_tag = self.tag(end, "array name")?;
            let name = String::from_utf8_lossy(&self.body(&name_tag, end, MAX_NAME_BYTES, "array name")?).into_owned();
            self.skip(end - self.pos)?;
            return Ok((
                name,
                Value::Unsupported("opaque object (MATLAB string, datetime, table, ...)"),
            ));
        }
        let dims_tag = self.tag(end, "dimensions")?;
        if dims_tag.code != MI_INT32 || dims_tag.len % 4 != 0 || dims_tag.len < 8 || dims_tag.len > 4 * 64 {
            return Err(format!(
                "dimensions of type {} and {} bytes (expected 2 to 64 int32)",
                dims_tag.code, dims_tag.len
            ));
        }
        let dims_data = self.body(&dims_tag, end, 4 * 64, "dimensions")?;
        let dims = self.int32s(&dims_data);
        if let Some(d) = dims.iter().find(|d| **d < 0) {
            return Err(format!("a negative dimension ({d})"));
        }
        let dims: Vec<u64> = dims.into_iter().map(|d| d as u64).collect();
        self.charge(8 * dims.len() as u64)?;
        let elements = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("dimensions {} overflow", dims_text(&dims)))?;
        let name_tag = self.tag(end, "array name")?;
        if name_tag.code != MI_INT8 && name_tag.code != 2 {
            return Err(format!("array name of data type {}", name_tag.code));
        }
        let name = String::from_utf8_lossy(&self.body(&name_tag, end, MAX_NAME_BYTES, "array name")?).into_owned();
        let value = match class {
            6..=15 => self.numeric(end, class as u8, dims, elements, complex)?,
            4 => self.chars(end, &dims, elements)?,
            2 => self.structure(end, dims, elements, depth)?,
            1 => {
                self.fits(elements, end, "cells")?;
                self.charge(elements.saturating_mul(VALUE_BYTES))?;
                let mut items = Vec::new();
                for i in 0..elements {
                    items.push(self.child(end, depth).map_err(|e| format!("cell {}: {e}", i + 1))?);
                }
                Value::Cell { dims, items }
            }
            3 => Value::Unsupported("object"),
            5 => Value::Unsupported("sparse array"),
            16 => Value::Unsupported("function handle"),
            other => return Err(format!("array class {other}, which MATLAB does not write")),
        };
        if self.pos > end {
            return Err(format!("the array's data run past its end (byte {end})"));
        }
        self.skip(end - self.pos)?;
        Ok((name, value))
    }

    /// A subelement that is an array (a struct field, a cell).
    fn child(&mut self, end: u64, depth: usize) -> Result<Value, String> {
        let tag = self.tag(end, "element")?;
        if tag.code != MI_MATRIX || tag.small {
            return Err(format!("data type {}, not an array", tag.code));
        }
        let child_end = self.pos + tag.len;
        let (_, value) = self.matrix(child_end, depth + 1)?;
        self.pad(&tag, end)?;
        Ok(value)
    }

    /// Refuses `count` elements that cannot fit in the bytes left (each takes a tag of 8).
    fn fits(&self, count: u64, end: u64, what: &str) -> Result<(), String> {
        if count > end.saturating_sub(self.pos) / 8 {
            return Err(format!(
                "declares {count} {what}, but only {} bytes hold them (8 at least each)",
                end.saturating_sub(self.pos)
            ));
        }
        Ok(())
    }

    fn numeric(&mut self, end: u64, class: u8, dims: Vec<u64>, elements: u64, complex: bool) -> Result<Value, String> {
        let tag = self.tag(end, "real part")?;
        let mi = MiType::from_code(tag.code).ok_or_else(|| format!("numeric data of type {}", tag.code))?;
        let count = tag.len / mi.bytes() as u64;
        if tag.len % mi.bytes() as u64 != 0 || count != elements {
            return Err(format!(
                "dimensions {} say {elements} values, but its data hold {} bytes of {}-byte values",
                dims_text(&dims),
                tag.len,
                mi.bytes()
            ));
        }
        let numbers = if tag.len <= LOAD_LIMIT_BYTES {
            // Held as f64: charged for the difference from the stored width too.
            self.charge(count * (8 - mi.bytes() as u64))?;
            let data = self.body(&tag, end, LOAD_LIMIT_BYTES, "real part")?;
            Numbers::Loaded(data.chunks_exact(mi.bytes()).map(|b| mi.decode(b, self.big_endian)).collect())
        } else {
            let at = match self.stream {
                None => Location::File { offset: self.pos },
                Some((stream, stream_len)) => Location::Inflated {
                    stream,
                    stream_len,
                    offset: self.pos,
                },
            };
            self.skip_body(&tag, end)?;
            Numbers::InFile(Payload {
                at,
                mi,
                count,
                big_endian: self.big_endian,
            })
        };
        Ok(Value::Numeric {
            class,
            dims,
            complex,
            numbers,
        })
    }

    fn chars(&mut self, end: u64, dims: &[u64], elements: u64) -> Result<Value, String> {
        let tag = self.tag(end, "characters")?;
        if tag.len > CHAR_LIMIT_BYTES {
            self.skip_body(&tag, end)?;
            return Ok(Value::Unsupported("char array over 16 MiB"));
        }
        let data = self.body(&tag, end, CHAR_LIMIT_BYTES, "characters")?;
        let units: Vec<u32> = match tag.code {
            // UTF-8 or bytes: decoded as UTF-8 (as MATLAB writes `miUTF8`).
            MI_UTF8 | MI_INT8 | 2 => {
                return Ok(Value::Char(rows_text(
                    &String::from_utf8_lossy(&data).chars().collect::<Vec<_>>(),
                    dims,
                )))
            }
            4 | MI_UTF16 => data
                .chunks_exact(2)
                .map(|b| MiType::UInt16.decode(b, self.big_endian) as u32)
                .collect(),
            MI_UTF32 | MI_UINT32 => data
                .chunks_exact(4)
                .map(|b| MiType::UInt32.decode(b, self.big_endian) as u32)
                .collect(),
            other => return Err(format!("characters of data type {other}")),
        };
        if units.len() as u64 != elements && tag.code != MI_UTF16 {
            return Err(format!(
                "dimensions {} say {elements} characters, its data hold {}",
                dims_text(dims),
                units.len()
            ));
        }
        let chars: Vec<char> = if tag.code == MI_UTF32 || tag.code == MI_UINT32 {
            units
                .iter()
                .map(|&u| char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        } else {
            let units16: Vec<u16> = units.iter().map(|&u| u as u16).collect();
            char::decode_utf16(units16)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        };
        Ok(Value::Char(rows_text(&chars, dims)))
    }

    fn structure(&mut self, end: u64, dims: Vec<u64>, elements: u64, depth: usize) -> Result<Value, String> {
        let len_tag = self.tag(end, "field name length")?;
        let len_data = self.body(&len_tag, end, 4, "field name length")?;
        let name_len = match (len_tag.code, len_data.len()) {
            (MI_INT32, 4) => self.int32s(&len_data)[0],
            _ => {
                return Err(format!(
                    "field name length of type {} and {} bytes",
                    len_tag.code,
                    len_data.len()
                ))
            }
        };
        if !(1..=4096).contains(&name_len) {
            return Err(format!("field name length {name_len} (1 to 4096 expected)"));
        }
        let names_tag = self.tag(end, "field names")?;
        let names = self.body(&names_tag, end, MAX_FIELD_NAME_BYTES, "field names")?;
        if names.len() % name_len as usize != 0 {
            return Err(format!(
                "{} bytes of field names, not a multiple of their length {name_len}",
                names.len()
            ));
        }
        let fields: Vec<String> = names
            .chunks(name_len as usize)
            .map(|n| {
                let n = n.split(|b| *b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(n).into_owned()
            })
            .collect();
        let values = elements
            .checked_mul(fields.len() as u64)
            .ok_or_else(|| "too many struct fields".to_string())?;
        self.fits(values, end, "struct field values")?;
        // Each element is charged too: a struct array with no fields has elements and no bytes.
        self.charge(values.saturating_add(elements).saturating_mul(VALUE_BYTES))?;
        let mut all = Vec::new();
        for i in 0..elements {
            let mut element = Vec::with_capacity(fields.len());
            for f in &fields {
                element.push(
                    self.child(end, depth)
                        .map_err(|e| format!("struct element {}, field `{f}`: {e}", i + 1))?,
                );
            }
            all.push(element);
        }
        Ok(Value::Struct {
            dims,
            fields,
            elements: all,
        })
    }
}

/// A char array's text: a row vector as it is, a matrix (stored column-major) as its rows
/// joined by newlines with trailing blanks removed.
fn rows_text(chars: &[char], dims: &[u64]) -> String {
    let (rows, cols) = match dims {
        [rows, cols] => (*rows as usize, *cols as usize),
        _ => (1, chars.len()),
    };
    // A text of no characters has no rows, whatever its dimensions say.
    if rows <= 1 || chars.is_empty() || rows.checked_mul(cols) != Some(chars.len()) {
        return chars.iter().collect();
    }
    (0..rows)
        .map(|r| {
            let row: String = (0..cols).map(|c| chars[r + c * rows]).collect();
            row.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds level-5 MAT-files by hand, in either byte order.
    struct Writer {
        big: bool,
    }

    impl Writer {
        fn u32(&self, v: u32) -> [u8; 4] {
            if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }

        /// A data element: tag, data, padding to 8 bytes.
        fn element(&self, code: u32, data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend(self.u32(code));
            out.extend(self.u32(data.len() as u32));
            out.extend(data);
            out.resize(out.len().div_ceil(8) * 8, 0);
            out
        }

        /// A small data element (at most 4 bytes packed into the tag).
        fn small(&self, code: u32, data: &[u8]) -> Vec<u8> {
            let mut out = self.u32(((data.len() as u32) << 16) | code).to_vec();
            let mut packed = data.to_vec();
            packed.resize(4, 0);
            out.extend(packed);
            out
        }

        fn matrix(&self, class: u32, dims: &[i32], name: &str, body: &[u8]) -> Vec<u8> {
            let mut data = self.element(MI_UINT32, &[self.u32(class), self.u32(0)].concat());
            let dims: Vec<u8> = dims.iter().flat_map(|d| self.u32(*d as u32)).collect();
            data.extend(self.element(MI_INT32, &dims));
            data.extend(self.element(MI_INT8, name.as_bytes()));
            data.extend(body);
            self.element(MI_MATRIX, &data)
        }

        fn doubles(&self, name: &str, dims: &[i32], values: &[f64]) -> Vec<u8> {
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|v| if self.big { v.to_be_bytes() } else { v.to_le_bytes() })
                .collect();
            self.matrix(6, dims, name, &self.element(9, &bytes))
        }

        fn text(&self, name: &str, text: &str) -> Vec<u8> {
            let units: Vec<u8> = text
                .encode_utf16()
                .flat_map(|u| if self.big { u.to_be_bytes() } else { u.to_le_bytes() })
                .collect();
            self.matrix(4, &[1, text.len() as i32], name, &self.element(4, &units))
        }

        fn file(&self, variables: &[Vec<u8>]) -> Vec<u8> {
            let mut out = b"MATLAB 5.0 MAT-file, written by the test".to_vec();
            out.resize(124, b' ');
            out.extend(if self.big {
                [1u8, 0, b'M', b'I']
            } else {
                [0u8, 1, b'I', b'M']
            });
            for v in variables {
                out.extend(v);
            }
            out
        }
    }

    fn read_bytes(bytes: &[u8]) -> Result<MatFile, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.mat");
        std::fs::write(&path, bytes).unwrap();
        read(&path)
    }

    #[test]
    fn both_byte_orders_read_numbers_text_and_structs() {
        for big in [false, true] {
            let w = Writer { big };
            // A 1 x 2 struct with fields `labels` (text) and `x` (a double), names 8 bytes long.
            let mut body = w.small(MI_INT32, &w.u32(8));
            body.extend(w.element(MI_INT8, b"labels\0\0x\0\0\0\0\0\0\0"));
            for (label, x) in [("Fz", 1.5), ("Cz", -2.0)] {
                body.extend(w.text("", label));
                body.extend(w.doubles("", &[1, 1], &[x]));
            }
            let file = w.file(&[
                w.doubles("srate", &[1, 1], &[250.0]),
                w.matrix(2, &[1, 2], "chanlocs", &body),
                w.text("ref", "common"),
            ]);
            let mat = read_bytes(&file).unwrap();
            assert_eq!(mat.get("srate").and_then(Value::scalar), Some(250.0), "big endian {big}");
            assert_eq!(mat.get("ref"), Some(&Value::Char("common".into())));
            let Some(Value::Struct { fields, elements, .. }) = mat.get("chanlocs") else {
                panic!("chanlocs: {:?}", mat.get("chanlocs"))
            };
            assert_eq!(fields, &["labels", "x"]);
            assert_eq!(elements[1][0], Value::Char("Cz".into()));
            assert_eq!(elements[1][1].scalar(), Some(-2.0));
        }
    }

    #[test]
    fn large_arrays_stay_in_the_file_and_read_back_in_order() {
        for big in [false, true] {
            let w = Writer { big };
            let values: Vec<f64> = (0..20_000).map(|i| i as f64 * 0.25 - 7.0).collect();
            let file = w.file(&[w.doubles("data", &[4, 5000], &values)]);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.mat");
            std::fs::write(&path, &file).unwrap();
            let mat = read(&path).unwrap();
            let Some(Value::Numeric {
                numbers: Numbers::InFile(payload),
                ..
            }) = mat.get("data")
            else {
                panic!("{:?}", mat.get("data"))
            };
            let mut bytes = Vec::new();
            payload.open(&path).unwrap().read_to_end(&mut bytes).unwrap();
            let back: Vec<f64> = bytes.chunks_exact(8).map(|b| payload.mi.decode(b, big)).collect();
            assert_eq!(back, values);
        }
    }

    #[test]
    fn declared_sizes_that_the_bytes_cannot_hold_are_errors() {
        let w = Writer { big: false };
        // A cell array claiming 10^9 cells in a few bytes.
        let cells = w.matrix(1, &[1, 1_000_000_000], "c", &[]);
        let err = read_bytes(&w.file(&[cells])).unwrap_err();
        assert!(err.contains("declares 1000000000 cells"), "{err}");
        // Dimensions that disagree with the data.
        let err = read_bytes(&w.file(&[w.doubles("x", &[3, 3], &[1.0; 4])])).unwrap_err();
        assert!(
            err.contains("dimensions 3 × 3 say 9 values, but its data hold 32 bytes"),
            "{err}"
        );
        // A variable longer than the file.
        let mut file = w.file(&[w.doubles("x", &[1, 4], &[1.0; 4])]);
        file.truncate(file.len() - 8);
        let err = read_bytes(&file).unwrap_err();
        assert!(err.contains("(truncated?)"), "{err}");
        // Cells nested deeper than MAX_DEPTH.
        let mut nested = w.doubles("", &[1, 1], &[1.0]);
        for _ in 0..40 {
            nested = w.matrix(1, &[1, 1], "", &nested);
        }
        let err = read_bytes(&w.file(&[nested])).unwrap_err();
        assert!(err.contains("nested deeper than 32"), "{err}");
        // Corrupt zlib data.
        let mut compressed = w.u32(MI_COMPRESSED).to_vec();
        compressed.extend(w.u32(16));
        compressed.extend([0x78, 0x9c, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let err = read_bytes(&w.file(&[compressed])).unwrap_err();
        assert!(err.starts_with("variable 1 (byte 128): "), "{err}");
    }
}
