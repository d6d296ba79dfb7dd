//! A reader that holds an Arrow IPC stream to a maximum message size.
//!
//! Each encapsulated IPC message is `[0xFFFFFFFF] <metadata length: i32> <metadata> <body>`
//! (the continuation marker is absent in the pre-1.0 format), and the flatbuffer metadata says
//! how long the body is. [`MessageLimit`] reads the prefix and the metadata itself, refuses a
//! message whose metadata plus body exceed the limit, and only then lets the bytes through to
//! arrow's `StreamReader`, which would otherwise allocate whatever body length a client claims.
//!
//! A batch with LZ4- or zstd-compressed buffers is held to the same limit once decompressed:
//! each buffer starts with its uncompressed length, which arrow allocates before decompressing
//! (a lying length of a petabyte aborts the process; a few KiB of compressed zeros expand to
//! gigabytes). Such a message's body is read here, the lengths summed, and the message refused
//! when they exceed the limit.

use std::io::{Error, ErrorKind, Read};

const CONTINUATION: [u8; 4] = [0xFF; 4];

/// Wraps an IPC stream; reads fail with `InvalidData` at the first message over `max_bytes`.
pub struct MessageLimit<R> {
    inner: R,
    max_bytes: u64,
    /// Prefix and metadata of the current message, read ahead and not yet handed on.
    head: Vec<u8>,
    head_at: usize,
    /// Body bytes of the current message still to pass through.
    body_left: u64,
    /// The end-of-stream marker was seen: nothing more is checked.
    ended: bool,
}

impl<R: Read> MessageLimit<R> {
    /// Limits `inner` to messages of at most `max_bytes` (metadata and body together).
    pub fn new(inner: R, max_bytes: u64) -> MessageLimit<R> {
        MessageLimit {
            inner,
            max_bytes,
            head: Vec::new(),
            head_at: 0,
            body_left: 0,
            ended: false,
        }
    }

    /// Reads up to `buf.len()` bytes, stopping early only at the end of input.
    fn read_full(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// Reads the next message's prefix and metadata into `head` and checks its size.
    fn next_message(&mut self) -> std::io::Result<()> {
        self.head.clear();
        self.head_at = 0;
        let mut word = [0u8; 4];
        let got = self.read_full(&mut word)?;
        self.head.extend_from_slice(&word[..got]);
        if got < 4 {
            return Ok(()); // end of input: arrow reports it
        }
        if word == CONTINUATION {
            let got = self.read_full(&mut word)?;
            self.head.extend_from_slice(&word[..got]);
            if got < 4 {
                return Ok(());
            }
        }
        let meta_len = i32::from_le_bytes(word);
        if meta_len == 0 {
            self.ended = true;
            return Ok(());
        }
        if meta_len < 0 || meta_len as u64 > self.max_bytes {
            return Err(self.too_large(meta_len as i64, 0));
        }
        let start = self.head.len();
        self.head.resize(start + meta_len as usize, 0);
        let mut filled = 0;
        while filled < meta_len as usize {
            match self.inner.read(&mut self.head[start + filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.head.truncate(start + filled);
        if filled < meta_len as usize {
            return Ok(()); // truncated: arrow reports it
        }
        // Metadata that does not parse is passed on for arrow to reject with its own message.
        let Ok(message) = arrow::ipc::root_as_message(&self.head[start..]) else {
            return Ok(());
        };
        let body = message.bodyLength();
        if body < 0 || meta_len as u64 + body as u64 > self.max_bytes {
            return Err(self.too_large(meta_len as i64, body));
        }
        self.body_left = body as u64;
        if let Some(buffers) = compressed_buffers(&message) {
            self.check_decompressed(&buffers)?;
        }
        Ok(())
    }

    /// Reads the body of a message with compressed `buffers` (offset, length) into `head` and
    /// refuses it when their uncompressed lengths add up to more than the limit.
    fn check_decompressed(&mut self, buffers: &[(u64, u64)]) -> std::io::Result<()> {
        let body_len = self.body_left as usize; // at most `max_bytes`, checked above
        let mut body = vec![0u8; body_len];
        let filled = self.read_full(&mut body)?;
        self.head.extend_from_slice(&body[..filled]);
        self.body_left = 0;
        if filled < body_len {
            return Ok(()); // truncated: arrow reports it
        }
        let mut total = 0u64;
        for &(offset, length) in buffers {
            // Out-of-range buffers are arrow's to reject; a buffer shorter than its 8-byte prefix too.
            let Some(prefix) = body.get(offset as usize..(offset as usize).saturating_add(8)) else {
                continue;
            };
            if length < 8 {
                continue;
            }
            // -1: stored uncompressed (already counted in the body); 0: empty.
            let uncompressed = i64::from_le_bytes(prefix.try_into().unwrap());
            total = total.saturating_add(uncompressed.max(0) as u64);
        }
        if total > self.max_bytes {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!(
                    "an IPC message whose compressed buffers claim {total} bytes uncompressed exceeds \
                     the limit of {} bytes (max_message_mb)",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }

    fn too_large(&self, meta: i64, body: i64) -> Error {
        Error::new(
            ErrorKind::InvalidData,
            format!(
                "an IPC message of {meta} metadata and {body} body bytes exceeds the limit of {} bytes (max_message_mb)",
                self.max_bytes
            ),
        )
    }
}

/// The (offset, length) of each body buffer of a record or dictionary batch message whose
/// buffers are compressed; `None` for any other message.
fn compressed_buffers(message: &arrow::ipc::Message) -> Option<Vec<(u64, u64)>> {
    let batch = match message.header_as_record_batch() {
        Some(batch) => batch,
        None => message.header_as_dictionary_batch()?.data()?,
    };
    batch.compression()?;
    let buffers = batch.buffers()?;
    Some(
        buffers
            .iter()
            .map(|b| (b.offset().max(0) as u64, b.length().max(0) as u64))
            .collect(),
    )
}

impl<R: Read> Read for MessageLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.head_at < self.head.len() {
            let n = buf.len().min(self.head.len() - self.head_at);
            buf[..n].copy_from_slice(&self.head[self.head_at..self.head_at + n]);
            self.head_at += n;
            return Ok(n);
        }
        if self.body_left > 0 || self.ended {
            let want = if self.ended {
                buf.len()
            } else {
                buf.len().min(self.body_left.min(usize::MAX as u64) as usize)
            };
            let n = self.inner.read(&mut buf[..want])?;
            if !self.ended {
                self.body_left -= n as u64;
            }
            return Ok(n);
        }
        self.next_message()?;
        if self.head.is_empty() {
            return Ok(0);
        }
        self.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float32Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn stream(rows: usize) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float32, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Float32Array::from(vec![1.5f32; rows]))]).unwrap();
        let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
        w.write(&batch).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    }

    #[test]
    fn passes_a_stream_within_the_limit_byte_for_byte() {
        let bytes = stream(1000);
        let mut out = Vec::new();
        MessageLimit::new(&bytes[..], 1 << 20).read_to_end(&mut out).unwrap();
        assert_eq!(out, bytes);
        let reader = arrow::ipc::reader::StreamReader::try_new(MessageLimit::new(&bytes[..], 1 << 20), None).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2000);
    }

    #[test]
    fn refuses_a_message_over_the_limit_before_its_body() {
        let bytes = stream(100_000); // 400 KB bodies
        let reader = arrow::ipc::reader::StreamReader::try_new(MessageLimit::new(&bytes[..], 64 << 10), None).unwrap();
        let err = reader.into_iter().next().unwrap().unwrap_err().to_string();
        assert!(err.contains("exceeds the limit of 65536 bytes"), "{err}");
        // A lying metadata length is refused without reading it.
        let mut lie = CONTINUATION.to_vec();
        lie.extend_from_slice(&i32::MAX.to_le_bytes());
        let mut out = Vec::new();
        let err = MessageLimit::new(&lie[..], 1 << 20).read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn refuses_compressed_buffers_that_claim_more_than_the_limit() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float32, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Float32Array::from(vec![0f32; 50_000]))]).unwrap();
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
            .unwrap();
        let mut w = arrow::ipc::writer::StreamWriter::try_new_with_options(Vec::new(), &schema, options).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        let bytes = w.into_inner().unwrap();
        let read = |bytes: &[u8], limit: u64| -> Result<usize, String> {
            let reader = arrow::ipc::reader::StreamReader::try_new(MessageLimit::new(bytes, limit), None).unwrap();
            reader.map(|b| b.map(|b| b.num_rows()).map_err(|e| e.to_string())).sum()
        };
        assert!(bytes.len() < 8 << 10, "{} bytes", bytes.len());
        assert_eq!(read(&bytes, 1 << 20), Ok(50_000), "200 KB decompressed is within 1 MiB");
        let err = read(&bytes, 64 << 10).unwrap_err();
        assert!(
            err.contains("claim 200000 bytes uncompressed") && err.contains("limit of 65536"),
            "{err}"
        );
        // A length prefix that lies (1 PiB) is refused before arrow allocates it.
        let mut lie = bytes.clone();
        let at = lie.windows(4).position(|w| w == [0x04, 0x22, 0x4D, 0x18]).unwrap() - 8;
        lie[at..at + 8].copy_from_slice(&(1i64 << 50).to_le_bytes());
        assert!(read(&lie, 1 << 20).unwrap_err().contains("exceeds the limit"));
    }
}
