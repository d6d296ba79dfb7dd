//! A reader of MATLAB v7.3 MAT-files (what `save -v7.3` writes, and EEGLAB for datasets over
//! 2 GB): HDF5 files behind a 512-byte user block, read with the `hdf5-reader` crate and turned
//! into the same [`Value`]s as the level-5 reader ([`super::mat`]), so a dataset reads the same
//! whichever way it was saved.
//!
//! MATLAB's layout: every variable is a member of the root group carrying a `MATLAB_class`
//! attribute; dimensions are stored reversed (MATLAB is column-major, HDF5 row-major), so a
//! dataset's values in HDF5 order are the array's values in MATLAB order; text is uint16 code
//! units; an empty array is a dataset of its dimensions marked `MATLAB_empty`; a 1 × 1 struct is
//! a group of its fields; a struct array is a group whose fields are datasets of object
//! references, one per element, and a cell array is a dataset of object references; referenced
//! values live in the `#refs#` group.
//!
//! Numeric arrays over [`LOAD_LIMIT_BYTES`] stay in the file and are read a block at a time
//! ([`Location::Hdf5`]). Nesting depth and the values held in memory are bounded as in the
//! level-5 reader, and the HDF5 decoder bounds what a lying file can make it allocate.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use hdf5_reader::error::{Error as Hdf5Error, Result as Hdf5Result};
use hdf5_reader::group::Group;
use hdf5_reader::{Dataset, Datatype, Hdf5File, OpenOptions, SliceInfo, SliceInfoElem};

use super::mat::{
    dims_text, Location, MatFile, MiType, Numbers, Payload, Value, CHAR_LIMIT_BYTES, LOAD_LIMIT_BYTES, MAX_DEPTH, MAX_HELD_BYTES,
    VALUE_BYTES,
};

/// Bytes of values read per block when a large array is streamed.
const BLOCK_BYTES: usize = 1 << 20;

/// Opens the HDF5 file at `path`, no single read allocating more than [`MAX_HELD_BYTES`]
/// (whatever sizes a lying file declares).
fn open_file(path: &Path) -> Result<Hdf5File, Hdf5Error> {
    Hdf5File::open_with_options(path, OpenOptions::default().with_max_read_bytes(MAX_HELD_BYTES as usize))
}

/// Reads the variables of the v7.3 MAT-file at `path`, in name order. Errors say what is wrong
/// and in which variable, without the path (the caller names the file).
pub fn read(path: &Path) -> Result<MatFile, String> {
    let cannot = |e: Hdf5Error| format!("a MATLAB v7.3 MAT-file (HDF5) that cannot be read: {e}");
    let file = open_file(path).map_err(cannot)?;
    let root = file.root_group().map_err(cannot)?;
    let (groups, datasets) = root.members().map_err(cannot)?;
    let mut reader = Reader {
        refs: HashMap::new(),
        held: 0,
    };
    if let Some(refs) = groups.iter().find(|g| g.name() == "#refs#") {
        let (groups, datasets) = refs.members().map_err(|e| format!("`#refs#`: {e}"))?;
        for g in groups {
            reader.refs.insert(g.address(), Object::Group(g));
        }
        for d in datasets {
            reader.refs.insert(d.address(), Object::Dataset(Box::new(d)));
        }
    }
    let mut objects: Vec<Object> = groups
        .into_iter()
        .map(Object::Group)
        .chain(datasets.into_iter().map(|d| Object::Dataset(Box::new(d))))
        .filter(|o| !o.name().starts_with('#'))
        .collect();
    objects.sort_by(|a, b| a.name().cmp(b.name()));
    let mut variables = Vec::with_capacity(objects.len());
    for object in &objects {
        let name = object.name().to_string();
        let path = format!("/{name}");
        let value = reader.value(object, &path, &name, 0)?;
        variables.push((name, value));
    }
    Ok(MatFile { variables })
}

/// A group or dataset of the file.
enum Object {
    Group(Group),
    Dataset(Box<Dataset>),
}

impl Object {
    /// Its name in its group.
    fn name(&self) -> &str {
        match self {
            Object::Group(g) => g.name(),
            Object::Dataset(d) => d.name(),
        }
    }
}

/// Walks the file's values, resolving references into `#refs#`.
struct Reader {
    /// The objects of `#refs#`, by the address references hold.
    refs: HashMap<u64, Object>,
    /// Bytes of values held in memory so far, against [`MAX_HELD_BYTES`].
    held: u64,
}

impl Reader {
    /// The value of `object` at HDF5 path `path`; `what` names it in messages (`EEG.chanlocs(3).labels`).
    fn value(&mut self, object: &Object, path: &str, what: &str, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("`{what}`: values nested deeper than {MAX_DEPTH} levels"));
        }
        self.charge(VALUE_BYTES, what)?;
        match object {
            Object::Group(g) => self.group(g, path, what, depth),
            Object::Dataset(d) => self.dataset(d, path, what, depth),
        }
    }

    fn charge(&mut self, bytes: u64, what: &str) -> Result<(), String> {
        self.held = self.held.saturating_add(bytes);
        if self.held > MAX_HELD_BYTES {
            return Err(format!(
                "`{what}`: the file's values take more than {} MiB in memory",
                MAX_HELD_BYTES >> 20
            ));
        }
        Ok(())
    }

    fn group(&mut self, g: &Group, path: &str, what: &str, depth: usize) -> Result<Value, String> {
        let attrs = g.attributes().map_err(|e| format!("`{what}`: {e}"))?;
        if attrs.iter().any(|a| a.name == "MATLAB_sparse") {
            return Ok(Value::Unsupported("sparse array"));
        }
        let class = attrs
            .iter()
            .find(|a| a.name == "MATLAB_class")
            .and_then(|a| a.read_string().ok());
        if class.as_deref().is_some_and(|c| c != "struct") {
            return Ok(Value::Unsupported("object"));
        }
        let (groups, datasets) = g.members().map_err(|e| format!("`{what}`: {e}"))?;
        let mut fields: Vec<Object> = groups
            .into_iter()
            .map(Object::Group)
            .chain(datasets.into_iter().map(|d| Object::Dataset(Box::new(d))))
            .collect();
        // MATLAB's field order where the file gives it, then any other members by name.
        let order = field_order(g, &attrs);
        fields.sort_by_key(|f| {
            (
                order.iter().position(|n| n == f.name()).unwrap_or(usize::MAX),
                f.name().to_string(),
            )
        });
        let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
        // A struct array's fields are datasets of references, one per element, with no class.
        let element_refs = |f: &Object| match f {
            Object::Dataset(d) => matches!(d.dtype(), Datatype::Reference { .. }) && d.attribute("MATLAB_class").is_err(),
            Object::Group(_) => false,
        };
        if fields.is_empty() || !fields.iter().all(element_refs) {
            let mut element = Vec::with_capacity(fields.len());
            for (f, name) in fields.iter().zip(&names) {
                element.push(self.value(f, &format!("{path}/{name}"), &format!("{what}.{name}"), depth + 1)?);
            }
            return Ok(Value::Struct {
                dims: vec![1, 1],
                fields: names,
                elements: vec![element],
            });
        }
        let shape = match &fields[0] {
            Object::Dataset(d) => d.shape().to_vec(),
            Object::Group(_) => unreachable!("every field is a dataset"),
        };
        let mut columns = Vec::with_capacity(fields.len());
        for (f, name) in fields.iter().zip(&names) {
            let Object::Dataset(ref d) = *f else {
                unreachable!("every field is a dataset")
            };
            if d.shape() != shape.as_slice() {
                return Err(format!(
                    "`{what}.{name}`: {} elements, but the struct array's first field has {}",
                    dims_text(&dims_of(d.shape())),
                    dims_text(&dims_of(&shape))
                ));
            }
            columns.push(self.references(d, &format!("{what}.{name}"))?);
        }
        let count = columns[0].len();
        if let Some((_, name)) = columns.iter().zip(&names).find(|(c, _)| c.len() != count) {
            return Err(format!(
                "`{what}.{name}`: holds another number of references than the struct array's first field"
            ));
        }
        let mut elements = Vec::with_capacity(count);
        for i in 0..count {
            let mut element = Vec::with_capacity(fields.len());
            for (column, name) in columns.iter().zip(&names) {
                let at = format!("{what}({}).{name}", i + 1);
                element.push(self.referenced(column[i], &at, depth)?);
            }
            elements.push(element);
        }
        Ok(Value::Struct {
            dims: dims_of(&shape),
            fields: names,
            elements,
        })
    }

    /// The addresses a dataset of object references holds.
    fn references(&mut self, d: &Dataset, what: &str) -> Result<Vec<u64>, String> {
        let Datatype::Reference { size, .. } = d.dtype() else {
            return Err(format!("`{what}`: not a dataset of references"));
        };
        let size = (*size as usize).clamp(1, 8);
        let count = d.num_elements().map_err(|e| format!("`{what}`: {e}"))?;
        self.charge(count.saturating_mul(VALUE_BYTES), what)?;
        let bytes = d.read_raw_bytes().map_err(|e| format!("`{what}`: {e}"))?;
        Ok(bytes
            .chunks_exact(size)
            .map(|b| {
                let mut a = [0u8; 8];
                a[..size].copy_from_slice(b);
                u64::from_le_bytes(a)
            })
            .collect())
    }

    /// The value a reference at `address` points to.
    fn referenced(&mut self, address: u64, what: &str, depth: usize) -> Result<Value, String> {
        let Some(object) = self.refs.remove(&address) else {
            return Err(format!(
                "`{what}`: refers to an object (address {address}) outside `#refs#`, or to a value that holds it"
            ));
        };
        let path = format!("/#refs#/{}", object.name());
        let value = self.value(&object, &path, what, depth + 1);
        self.refs.insert(address, object);
        value
    }

    fn dataset(&mut self, d: &Dataset, path: &str, what: &str, depth: usize) -> Result<Value, String> {
        let attr = |name: &str| d.attribute(name).ok();
        let class = attr("MATLAB_class").and_then(|a| a.read_string().ok()).unwrap_or_default();
        if attr("MATLAB_empty").is_some_and(|a| a.read_as_f64().is_ok_and(|v| v != 0.0)) {
            return self.empty(d, &class, what);
        }
        let dims = dims_of(d.shape());
        if class == "cell" {
            let refs = self.references(d, what)?;
            let mut items = Vec::with_capacity(refs.len());
            for (i, address) in refs.into_iter().enumerate() {
                items.push(self.referenced(address, &format!("{what}{{{}}}", i + 1), depth)?);
            }
            return Ok(Value::Cell { dims, items });
        }
        if let Datatype::Compound { size, fields } = d.dtype() {
            return self.complex(d, *size as usize, fields, &class, dims, what);
        }
        let Some(mi) = mi_type(d.dtype()) else {
            return Ok(Value::Unsupported("object"));
        };
        let count = d.num_elements().map_err(|e| format!("`{what}`: {e}"))?;
        let bytes = count.saturating_mul(mi.bytes() as u64);
        if class == "char" {
            if bytes > CHAR_LIMIT_BYTES {
                return Ok(Value::Unsupported("char array over 16 MiB"));
            }
            self.charge(bytes, what)?;
            let codes = read_values(d, mi).map_err(|e| format!("`{what}`: {e}"))?;
            return Ok(Value::Char(text(&codes, &dims)));
        }
        let class = match class_number(&class) {
            Some(c) => c,
            None if class.is_empty() => class_of(mi),
            None => return Ok(Value::Unsupported("object")),
        };
        let numbers = if bytes <= LOAD_LIMIT_BYTES {
            self.charge(count.saturating_mul(8), what)?;
            Numbers::Loaded(read_values(d, mi).map_err(|e| format!("`{what}`: {e}"))?)
        } else {
            Numbers::InFile(Payload {
                at: Location::Hdf5 {
                    object: path.to_string(),
                },
                mi,
                count,
                big_endian: false,
            })
        };
        Ok(Value::Numeric {
            class,
            dims,
            complex: false,
            numbers,
        })
    }

    /// A complex array (a compound of `real` and `imag`, `size` bytes each element): its real
    /// parts, as the level-5 reader keeps them; loaded when small, skipped otherwise.
    fn complex(
        &mut self,
        d: &Dataset,
        size: usize,
        fields: &[hdf5_reader::CompoundField],
        class: &str,
        dims: Vec<u64>,
        what: &str,
    ) -> Result<Value, String> {
        let real = match fields {
            [re, im] if re.name == "real" && im.name == "imag" => re,
            _ => return Ok(Value::Unsupported("object")),
        };
        let (Some(mi), Datatype::FloatingPoint { byte_order, .. } | Datatype::FixedPoint { byte_order, .. }) =
            (mi_type(&real.datatype), &real.datatype)
        else {
            return Ok(Value::Unsupported("object"));
        };
        let at = real.byte_offset as usize;
        if size == 0 || at + mi.bytes() > size {
            return Err(format!(
                "`{what}`: a complex element of {size} bytes has its real part at byte {at}"
            ));
        }
        let count = d.num_elements().map_err(|e| format!("`{what}`: {e}"))?;
        if count.saturating_mul(size as u64) > LOAD_LIMIT_BYTES {
            return Ok(Value::Unsupported("complex array over 64 KiB"));
        }
        self.charge(count.saturating_mul(8), what)?;
        let bytes = d.read_raw_bytes().map_err(|e| format!("`{what}`: {e}"))?;
        let big_endian = matches!(byte_order, hdf5_reader::ByteOrder::BigEndian);
        let values = bytes
            .chunks_exact(size)
            .map(|e| mi.decode(&e[at..at + mi.bytes()], big_endian))
            .collect();
        Ok(Value::Numeric {
            class: class_number(class).unwrap_or_else(|| class_of(mi)),
            dims,
            complex: true,
            numbers: Numbers::Loaded(values),
        })
    }

    /// An empty array: its dataset holds its dimensions.
    fn empty(&mut self, d: &Dataset, class: &str, what: &str) -> Result<Value, String> {
        let mut dims: Vec<u64> = match mi_type(d.dtype()) {
            Some(mi) if d.num_elements().is_ok_and(|n| n <= 32) => read_values(d, mi)
                .map_err(|e| format!("`{what}`: {e}"))?
                .into_iter()
                .map(|v| v as u64)
                .collect(),
            _ => vec![0, 0],
        };
        if !dims.contains(&0) {
            dims = vec![0, 0];
        }
        Ok(match class {
            "char" => Value::Char(String::new()),
            "cell" => Value::Cell { dims, items: Vec::new() },
            "struct" => Value::Struct {
                dims,
                fields: Vec::new(),
                elements: Vec::new(),
            },
            c => Value::Numeric {
                class: class_number(c).unwrap_or(6),
                dims,
                complex: false,
                numbers: Numbers::Loaded(Vec::new()),
            },
        })
    }
}

/// The field names of a struct's `MATLAB_fields` attribute (a variable-length sequence of
/// bytes per name), in MATLAB's order; none where it is missing or unreadable.
fn field_order(g: &Group, attrs: &[hdf5_reader::Attribute]) -> Vec<String> {
    let Some(a) = attrs.iter().find(|a| a.name == "MATLAB_fields") else {
        return Vec::new();
    };
    let reference = 4 + g.offset_size() as usize + 4;
    a.raw_data
        .chunks_exact(reference)
        .map_while(|r| g.resolve_vlen_reference_bytes(r, 1).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect()
}

/// MATLAB's dimensions of a dataset of HDF5 shape `shape` (reversed; at least two).
fn dims_of(shape: &[u64]) -> Vec<u64> {
    let mut dims: Vec<u64> = shape.iter().rev().copied().collect();
    while dims.len() < 2 {
        dims.push(1);
    }
    dims
}

/// Text of char codes (column-major, `dims`): a row vector's text, or a matrix's rows joined by
/// newlines with trailing spaces removed, as the level-5 reader gives it.
fn text(codes: &[f64], dims: &[u64]) -> String {
    let units: Vec<u16> = codes.iter().map(|&c| c as u16).collect();
    let rows = dims[0] as usize;
    if rows <= 1 {
        return String::from_utf16_lossy(&units);
    }
    let columns = units.len() / rows;
    (0..rows)
        .map(|r| {
            let row: Vec<u16> = (0..columns).map(|c| units[r + rows * c]).collect();
            String::from_utf16_lossy(&row).trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// MATLAB's class number of a `MATLAB_class` name.
fn class_number(class: &str) -> Option<u8> {
    Some(match class {
        "double" => 6,
        "single" => 7,
        "int8" => 8,
        "uint8" | "logical" => 9,
        "int16" => 10,
        "uint16" => 11,
        "int32" => 12,
        "uint32" => 13,
        "int64" => 14,
        "uint64" => 15,
        _ => return None,
    })
}

/// The class a dataset without `MATLAB_class` is read as.
fn class_of(mi: MiType) -> u8 {
    match mi {
        MiType::Double => 6,
        MiType::Single => 7,
        MiType::Int8 => 8,
        MiType::UInt8 => 9,
        MiType::Int16 => 10,
        MiType::UInt16 => 11,
        MiType::Int32 => 12,
        MiType::UInt32 => 13,
        MiType::Int64 => 14,
        MiType::UInt64 => 15,
    }
}

/// How a dataset of type `dtype` stores its numbers (`None`: not numbers).
fn mi_type(dtype: &Datatype) -> Option<MiType> {
    Some(match dtype {
        Datatype::FloatingPoint { size: 4, .. } => MiType::Single,
        Datatype::FloatingPoint { size: 8, .. } => MiType::Double,
        Datatype::FixedPoint { size, signed, .. } => match (size, signed) {
            (1, true) => MiType::Int8,
            (1, false) => MiType::UInt8,
            (2, true) => MiType::Int16,
            (2, false) => MiType::UInt16,
            (4, true) => MiType::Int32,
            (4, false) => MiType::UInt32,
            (8, true) => MiType::Int64,
            (8, false) => MiType::UInt64,
            _ => return None,
        },
        _ => return None,
    })
}

/// Values `selection` picks of dataset `d` (numbers stored as `mi`), as little-endian bytes of `mi`.
fn read_le(d: &Dataset, mi: MiType, selection: Option<&SliceInfo>) -> Hdf5Result<Vec<u8>> {
    macro_rules! read {
        ($t:ty) => {{
            let values = match selection {
                Some(s) => d.read_slice::<$t>(s)?,
                None => d.read_array::<$t>()?,
            };
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        }};
    }
    Ok(match mi {
        MiType::Int8 => read!(i8),
        MiType::UInt8 => read!(u8),
        MiType::Int16 => read!(i16),
        MiType::UInt16 => read!(u16),
        MiType::Int32 => read!(i32),
        MiType::UInt32 => read!(u32),
        MiType::Int64 => read!(i64),
        MiType::UInt64 => read!(u64),
        MiType::Single => read!(f32),
        MiType::Double => read!(f64),
    })
}

/// Every value of dataset `d`, in MATLAB's (column-major) order.
fn read_values(d: &Dataset, mi: MiType) -> Hdf5Result<Vec<f64>> {
    let bytes = read_le(d, mi, None)?;
    Ok(bytes.chunks_exact(mi.bytes()).map(|b| mi.decode(b, false)).collect())
}

/// A reader of the values of the dataset at HDF5 path `object` in the file at `path`, as
/// little-endian bytes of `mi`, in MATLAB's order: a block of the dataset's first (slowest)
/// dimension at a time.
pub fn open_values(path: &Path, object: &str, mi: MiType) -> io::Result<Box<dyn Read + Send>> {
    let invalid = |e: Hdf5Error| io::Error::new(io::ErrorKind::InvalidData, format!("{object}: {e}"));
    let file = open_file(path).map_err(invalid)?;
    let dataset = file.dataset(object).map_err(invalid)?;
    if mi_type(dataset.dtype()) != Some(mi) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{object}: its type changed since the file was read"),
        ));
    }
    let shape = dataset.shape().to_vec();
    let per_row = shape.iter().skip(1).product::<u64>().max(1) * mi.bytes() as u64;
    Ok(Box::new(Hdf5Values {
        dataset,
        mi,
        rows: shape.first().copied().unwrap_or(1),
        rows_per_block: (BLOCK_BYTES as u64 / per_row).max(1),
        next_row: 0,
        block: Vec::new(),
        at: 0,
    }))
}

/// [`open_values`]' reader.
struct Hdf5Values {
    dataset: Dataset,
    mi: MiType,
    /// Extent of the first dimension.
    rows: u64,
    rows_per_block: u64,
    /// First row of the next block.
    next_row: u64,
    /// The current block's bytes, and how many of them were read.
    block: Vec<u8>,
    at: usize,
}

impl Read for Hdf5Values {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.block.len() {
            if self.next_row >= self.rows {
                return Ok(0);
            }
            let end = (self.next_row + self.rows_per_block).min(self.rows);
            let ndim = self.dataset.ndim();
            let mut selections = vec![
                SliceInfoElem::Slice {
                    start: self.next_row,
                    end,
                    step: 1,
                };
                1
            ];
            selections.extend((1..ndim).map(|_| SliceInfoElem::Slice {
                start: 0,
                end: u64::MAX,
                step: 1,
            }));
            let selection = (ndim > 0).then_some(SliceInfo { selections });
            self.block = read_le(&self.dataset, self.mi, selection.as_ref())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("rows {}..{end}: {e}", self.next_row)))?;
            self.at = 0;
            self.next_row = if ndim > 0 { end } else { self.rows };
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
