//! Reading XDF files (the Extensible Data Format of LabRecorder, <https://github.com/sccn/xdf/wiki/Specifications>):
//! chunks, stream headers (XML, read with roxmltree), samples, clock offsets.
//!
//! A gzip-compressed file (`.xdfz`, as pyxdf reads them) is read from its inflated copy
//! ([`crate::gzip_file`]). A file is scanned twice: once for the stream headers, then for the
//! samples, time stamps and clock offsets of the streams asked for. The values of the signal stream are not kept:
//! [`XdfFile::read_chunk_values`] decodes a samples chunk again when the replay reaches it, so
//! a recording of any length is read in constant memory besides its time stamps.

use crate::MAX_CHANNELS;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Chunk tags of XDF 1.0.
const TAG_FILE_HEADER: u16 = 1;
const TAG_STREAM_HEADER: u16 = 2;
const TAG_SAMPLES: u16 = 3;
const TAG_CLOCK_OFFSET: u16 = 4;
const TAG_BOUNDARY: u16 = 5;
const TAG_STREAM_FOOTER: u16 = 6;

/// Largest stream header or footer accepted, bytes.
const MAX_XML_BYTES: u64 = 16 << 20;
/// Largest string value accepted (a marker), bytes.
const MAX_STRING_BYTES: u64 = 1 << 20;

/// How a stream's values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelFormat {
    /// `float32`
    Float32,
    /// `double64`
    Double64,
    /// `int8`
    Int8,
    /// `int16`
    Int16,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `string`: each value length-prefixed.
    String,
}

impl ChannelFormat {
    fn parse(s: &str) -> Option<ChannelFormat> {
        Some(match s {
            "float32" => ChannelFormat::Float32,
            "double64" => ChannelFormat::Double64,
            "int8" => ChannelFormat::Int8,
            "int16" => ChannelFormat::Int16,
            "int32" => ChannelFormat::Int32,
            "int64" => ChannelFormat::Int64,
            "string" => ChannelFormat::String,
            _ => return None,
        })
    }

    /// Bytes per value (0 for strings, which are length-prefixed).
    pub fn bytes(self) -> usize {
        match self {
            ChannelFormat::Int8 => 1,
            ChannelFormat::Int16 => 2,
            ChannelFormat::Float32 | ChannelFormat::Int32 => 4,
            ChannelFormat::Double64 | ChannelFormat::Int64 => 8,
            ChannelFormat::String => 0,
        }
    }

    fn decode(self, b: &[u8]) -> f64 {
        match self {
            ChannelFormat::Float32 => f32::from_le_bytes(b[..4].try_into().unwrap()) as f64,
            ChannelFormat::Double64 => f64::from_le_bytes(b[..8].try_into().unwrap()),
            ChannelFormat::Int8 => b[0] as i8 as f64,
            ChannelFormat::Int16 => i16::from_le_bytes(b[..2].try_into().unwrap()) as f64,
            ChannelFormat::Int32 => i32::from_le_bytes(b[..4].try_into().unwrap()) as f64,
            ChannelFormat::Int64 => i64::from_le_bytes(b[..8].try_into().unwrap()) as f64,
            ChannelFormat::String => f64::NAN,
        }
    }
}

/// One channel as a stream header describes it (`desc/channels/channel`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelDesc {
    /// `label` (empty when not given).
    pub label: String,
    /// `unit` (empty when not given).
    pub unit: String,
    /// `type` (empty when not given).
    pub kind: String,
}

/// A stream's header.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamHeader {
    /// The stream id chunks refer to it by.
    pub id: u32,
    /// `name`
    pub name: String,
    /// `type`
    pub stream_type: String,
    /// `channel_count`
    pub channel_count: usize,
    /// `nominal_srate`, Hz (0: irregular).
    pub nominal_srate: f64,
    /// `channel_format`
    pub format: ChannelFormat,
    /// `desc/channels/channel`, when given (else empty).
    pub channels: Vec<ChannelDesc>,
}

/// What the second scan collected for one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamData {
    /// Time stamps of every sample, on the recording machine's clock (seconds), as written
    /// or, where a sample has none, the previous one's plus 1 / nominal rate.
    pub timestamps: Vec<f64>,
    /// For string streams: the first channel of every sample.
    pub strings: Vec<String>,
    /// `(collection time, offset)` of every ClockOffset chunk, seconds.
    pub clock_offsets: Vec<(f64, f64)>,
    /// For numeric streams: each samples chunk's body (after the stream id): offset in the
    /// file, length in bytes, and number of samples.
    pub chunks: Vec<(u64, u64, u64)>,
}

/// An XDF file: its stream headers, and the data of the streams asked for.
pub struct XdfFile {
    /// The file, for messages.
    pub path: PathBuf,
    /// Every stream's header, in file order.
    pub streams: Vec<StreamHeader>,
    file: BufReader<Box<dyn crate::gzip_file::ReadSeek>>,
    size: u64,
    allow_truncated: bool,
}

/// A chunk's tag and where its content (after the tag) lies.
struct ChunkHead {
    tag: u16,
    at: u64,
    content: u64,
    len: u64,
}

impl XdfFile {
    /// Opens `path` and reads every stream header. `allow_truncated` accepts a file that ends
    /// inside a chunk (a recorder that died), up to its last whole chunk.
    pub fn open(path: &Path, allow_truncated: bool) -> Result<XdfFile, String> {
        let input = crate::gzip_file::SharedFile::open(path)?;
        let file = input.reader().map_err(|e| format!("{}: {e}", path.display()))?;
        let mut x = XdfFile {
            path: path.to_path_buf(),
            streams: Vec::new(),
            file: BufReader::new(file),
            size: input.size(),
            allow_truncated,
        };
        let mut magic = [0u8; 4];
        x.file
            .read_exact(&mut magic)
            .map_err(|_| format!("{}: not an XDF file (shorter than its 4-byte magic)", path.display()))?;
        if &magic != b"XDF:" {
            return Err(format!("{}: not an XDF file (it does not start with `XDF:`)", path.display()));
        }
        let mut seen_header = false;
        x.each_chunk(|x, head| {
            match head.tag {
                TAG_FILE_HEADER => seen_header = true,
                TAG_STREAM_HEADER => {
                    let (id, xml) = x.read_id_and_xml(&head, "StreamHeader")?;
                    if x.streams.iter().any(|s| s.id == id) {
                        return Err(x.at(&head, &format!("StreamHeader: a second header for stream id {id}")));
                    }
                    let header =
                        parse_stream_header(id, &xml).map_err(|m| x.at(&head, &format!("StreamHeader of stream {id}: {m}")))?;
                    x.streams.push(header);
                }
                _ => {}
            }
            Ok(())
        })?;
        if !seen_header {
            return Err(format!("{}: no FileHeader chunk", path.display()));
        }
        Ok(x)
    }

    /// Collects the samples' time stamps (and, for string streams, values) and the clock
    /// offsets of the streams `wanted` (ids).
    pub fn scan(&mut self, wanted: &[u32]) -> Result<Vec<StreamData>, String> {
        let mut out: Vec<StreamData> = vec![StreamData::default(); wanted.len()];
        let headers: Vec<StreamHeader> = wanted
            .iter()
            .map(|id| self.streams.iter().find(|s| s.id == *id).cloned().expect("a known stream"))
            .collect();
        self.each_chunk(|x, head| {
            if head.tag != TAG_SAMPLES && head.tag != TAG_CLOCK_OFFSET {
                return Ok(());
            }
            if head.len < 4 {
                return Err(x.at(&head, "chunk too short for its stream id"));
            }
            let id = x.read_u32(head.content)?;
            let Some(k) = wanted.iter().position(|w| *w == id) else {
                return Ok(());
            };
            let data = &mut out[k];
            if head.tag == TAG_CLOCK_OFFSET {
                if head.len != 20 {
                    return Err(x.at(&head, &format!("ClockOffset of stream {id}: {} bytes, expected 20", head.len)));
                }
                let mut b = [0u8; 16];
                x.read_at(head.content + 4, &mut b)?;
                let t = f64::from_le_bytes(b[..8].try_into().unwrap());
                let v = f64::from_le_bytes(b[8..].try_into().unwrap());
                if !t.is_finite() || !v.is_finite() {
                    return Err(x.at(&head, &format!("ClockOffset of stream {id}: not finite ({t}, {v})")));
                }
                data.clock_offsets.push((t, v));
                return Ok(());
            }
            let h = &headers[k];
            let mut body = vec![0u8; (head.len - 4) as usize];
            x.read_at(head.content + 4, &mut body)?;
            let mut r = Cursor { b: &body, at: 0 };
            let n = r.varlen().map_err(|m| x.at(&head, &format!("Samples of stream {id}: {m}")))?;
            let step = if h.nominal_srate > 0.0 { 1.0 / h.nominal_srate } else { 0.0 };
            for s in 0..n {
                let sample = (|| -> Result<(), String> {
                    let ts_bytes = r.u8()?;
                    let t = match ts_bytes {
                        0 => data.timestamps.last().map_or(0.0, |t| t + step),
                        8 => f64::from_le_bytes(r.take(8)?.try_into().unwrap()),
                        other => return Err(format!("time stamp of {other} bytes (0 or 8)")),
                    };
                    data.timestamps.push(t);
                    if h.format == ChannelFormat::String {
                        for c in 0..h.channel_count {
                            let len = r.varlen()?;
                            if len > MAX_STRING_BYTES {
                                return Err(format!("a string of {len} bytes (at most {MAX_STRING_BYTES})"));
                            }
                            let bytes = r.take(len as usize)?;
                            if c == 0 {
                                data.strings.push(String::from_utf8_lossy(bytes).into_owned());
                            }
                        }
                    } else {
                        r.take(h.channel_count * h.format.bytes())?;
                    }
                    Ok(())
                })();
                sample.map_err(|m| x.at(&head, &format!("Samples of stream {id}, sample {s} of {n}: {m}")))?;
            }
            if r.at != body.len() {
                return Err(x.at(
                    &head,
                    &format!("Samples of stream {id}: {} bytes after its {n} samples", body.len() - r.at),
                ));
            }
            if h.format != ChannelFormat::String && n > 0 {
                data.chunks.push((head.content + 4, head.len - 4, n));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Decodes the values of a samples chunk of stream `header` (`(offset, length, count)`
    /// from [`StreamData::chunks`], checked by the scan), appending `channel_count` values
    /// per sample to `values`.
    pub fn read_chunk_values(
        &mut self,
        header: &StreamHeader,
        chunk: (u64, u64, u64),
        values: &mut Vec<f64>,
    ) -> Result<(), String> {
        let (offset, len, _) = chunk;
        let mut body = vec![0u8; len as usize];
        self.read_at(offset, &mut body)?;
        let bytes = header.format.bytes();
        let per = header.channel_count * bytes;
        let mut r = Cursor { b: &body, at: 0 };
        let parse = |r: &mut Cursor, values: &mut Vec<f64>| -> Result<(), String> {
            let n = r.varlen()?;
            for _ in 0..n {
                if r.u8()? == 8 {
                    r.take(8)?;
                }
                values.extend(r.take(per)?.chunks_exact(bytes).map(|b| header.format.decode(b)));
            }
            Ok(())
        };
        parse(&mut r, values).map_err(|m| {
            format!(
                "{}: samples at byte {offset}: {m} (the file changed since it was opened)",
                self.path.display()
            )
        })
    }

    fn at(&self, head: &ChunkHead, message: &str) -> String {
        format!("{}: chunk at byte {}: {message}", self.path.display(), head.at)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|e| format!("{}: reading {} bytes at byte {offset}: {e}", self.path.display(), buf.len()))
    }

    fn read_u32(&mut self, offset: u64) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.read_at(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_id_and_xml(&mut self, head: &ChunkHead, what: &str) -> Result<(u32, String), String> {
        if head.len < 4 || head.len - 4 > MAX_XML_BYTES {
            return Err(self.at(head, &format!("{what}: {} bytes", head.len)));
        }
        let id = self.read_u32(head.content)?;
        let mut xml = vec![0u8; (head.len - 4) as usize];
        self.read_at(head.content + 4, &mut xml)?;
        let xml = String::from_utf8(xml).map_err(|_| self.at(head, &format!("{what}: the XML is not UTF-8")))?;
        Ok((id, xml))
    }

    /// Calls `f` with every chunk's head, in order.
    fn each_chunk(&mut self, mut f: impl FnMut(&mut XdfFile, ChunkHead) -> Result<(), String>) -> Result<(), String> {
        let mut at = 4u64;
        while at < self.size {
            let mut lb = [0u8; 1];
            self.read_at(at, &mut lb)?;
            let width = lb[0] as u64;
            if ![1, 4, 8].contains(&width) {
                return Err(format!(
                    "{}: chunk at byte {at}: its length takes {width} bytes (1, 4 or 8): not an XDF chunk",
                    self.path.display()
                ));
            }
            let truncated = |x: &XdfFile, what: String| -> Result<(), String> {
                if x.allow_truncated {
                    tracing::warn!(
                        "{}: {what}; reading up to the last whole chunk (allow_truncated)",
                        x.path.display()
                    );
                    Ok(())
                } else {
                    Err(format!(
                        "{}: {what} (allow_truncated = true reads up to the last whole chunk)",
                        x.path.display()
                    ))
                }
            };
            if at + 1 + width + 2 > self.size {
                return truncated(self, format!("the file ends inside the chunk at byte {at}"));
            }
            let mut nb = [0u8; 8];
            self.read_at(at + 1, &mut nb[..width as usize])?;
            let len = u64::from_le_bytes(nb);
            if len < 2 || len > self.size - (at + 1 + width) {
                if len >= 2 {
                    return truncated(
                        self,
                        format!(
                            "the chunk at byte {at} claims {len} bytes, the file has {} left",
                            self.size - (at + 1 + width)
                        ),
                    );
                }
                return Err(format!(
                    "{}: chunk at byte {at}: length {len} (at least 2)",
                    self.path.display()
                ));
            }
            let mut tb = [0u8; 2];
            self.read_at(at + 1 + width, &mut tb)?;
            let tag = u16::from_le_bytes(tb);
            let head = ChunkHead {
                tag,
                at,
                content: at + 1 + width + 2,
                len: len - 2,
            };
            let known = [
                TAG_FILE_HEADER,
                TAG_STREAM_HEADER,
                TAG_SAMPLES,
                TAG_CLOCK_OFFSET,
                TAG_BOUNDARY,
                TAG_STREAM_FOOTER,
            ];
            if !known.contains(&tag) {
                return Err(self.at(&head, &format!("unknown tag {tag}")));
            }
            at = head.content + head.len;
            f(self, head)?;
        }
        Ok(())
    }
}

/// Reads a little-endian buffer with bounds checks.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.b.len() - self.at {
            return Err(format!("needs {n} more bytes, the chunk has {} left", self.b.len() - self.at));
        }
        self.at += n;
        Ok(&self.b[self.at - n..self.at])
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// XDF's variable-length integer: one byte saying 1, 4 or 8, then that many bytes.
    fn varlen(&mut self) -> Result<u64, String> {
        let width = self.u8()? as usize;
        if ![1, 4, 8].contains(&width) {
            return Err(format!("a count of {width} bytes (1, 4 or 8)"));
        }
        let mut nb = [0u8; 8];
        nb[..width].copy_from_slice(self.take(width)?);
        Ok(u64::from_le_bytes(nb))
    }
}

/// Parses a stream header's XML (`<info>`).
fn parse_stream_header(id: u32, xml: &str) -> Result<StreamHeader, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("invalid XML: {e}"))?;
    let info = doc.root_element();
    let text = |node: roxmltree::Node, name: &str| -> String {
        node.children()
            .find(|c| c.has_tag_name(name))
            .and_then(|c| c.text())
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let channel_count: usize = text(info, "channel_count")
        .parse()
        .map_err(|_| format!("channel_count `{}` is not a count", text(info, "channel_count")))?;
    if channel_count == 0 || channel_count > MAX_CHANNELS {
        return Err(format!("channel_count {channel_count} (1 to {MAX_CHANNELS})"));
    }
    let nominal_srate: f64 = text(info, "nominal_srate")
        .parse()
        .map_err(|_| format!("nominal_srate `{}` is not a number", text(info, "nominal_srate")))?;
    if !(nominal_srate.is_finite() && (0.0..=1e7).contains(&nominal_srate)) {
        return Err(format!("nominal_srate {nominal_srate} (0 to 10⁷ Hz)"));
    }
    let format_text = text(info, "channel_format");
    let format = ChannelFormat::parse(&format_text)
        .ok_or_else(|| format!("channel_format `{format_text}` (float32, double64, int8, int16, int32, int64 or string)"))?;
    let channels: Vec<ChannelDesc> = info
        .children()
        .find(|c| c.has_tag_name("desc"))
        .and_then(|d| d.children().find(|c| c.has_tag_name("channels")))
        .map(|chs| {
            chs.children()
                .filter(|c| c.has_tag_name("channel"))
                .map(|c| ChannelDesc {
                    label: text(c, "label"),
                    unit: text(c, "unit"),
                    kind: text(c, "type"),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(StreamHeader {
        id,
        name: text(info, "name"),
        stream_type: text(info, "type"),
        channel_count,
        nominal_srate,
        format,
        channels,
    })
}
