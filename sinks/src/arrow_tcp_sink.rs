//! `arrow_tcp` sink: live consumers subscribe over TCP and receive a stream's batches as they
//! are produced, as an Arrow IPC stream.
//!
//! Protocol: a subscriber connects and sends one line (at most 4096 bytes) naming what it wants,
//! with options: `OUTPUT [lz4] [slow=drop_oldest|disconnect] [token=SECRET]`. `OUTPUT` is a
//! table of a result-table stream (`alerts`, `windows`, ...) or `frames` for a stream of frames
//! (activations, features, signals, token scalars, in the Parquet layouts). The sink answers one
//! line, `OK` or `ERR <reason>`, then (after `OK`) an Arrow IPC stream of every matching batch
//! from then on (buffers LZ4-compressed with `lz4`), ending with the IPC end-of-stream marker
//! when the run ends.
//!
//! Subscribers never slow the pipeline down: each has a bounded queue (`queue_batches`) and its
//! own slow policy (see [`crate::live`]). Binds 127.0.0.1 by default; any other address needs
//! `token`, which every subscriber must present.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::buffer::Buffer;
use arrow::ipc::writer::{write_message, DictionaryTracker, IpcDataGenerator, IpcWriteOptions, StreamEncoder};
use arrow::record_batch::RecordBatch;
use neurostream_engine::{NodeConfig, NodeContext, Result, Schema, Sink, SinkKind};
use serde::{Deserialize, Serialize};

use crate::live::{
    encoding, server_settings, with_dropped_column, LiveServer, LiveSink, Request, SlowPolicy, SubscriberEnd, MAX_REQUEST_BYTES,
};

pub use crate::live::FRAMES;

/// Configuration of an `arrow_tcp` sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrowTcpSinkConfig {
    /// Address to listen on (default `127.0.0.1:7071`; port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Write the bound address (`127.0.0.1:PORT`) to this file once listening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_file: Option<String>,
    /// Hold the start of the run until this many subscribers are connected (default 0), so
    /// they miss nothing.
    #[serde(default)]
    pub wait_for_subscribers: usize,
    /// How long to wait for them, in seconds (default 30); then the run fails.
    #[serde(default = "default_wait")]
    #[schemars(extend("x-unit" = "s"))]
    pub wait_timeout_s: f64,
    /// Batches queued per subscriber before its slow policy applies (default 1024).
    #[serde(default = "default_queue")]
    #[schemars(extend("x-unit" = "batches"))]
    pub queue_batches: usize,
    /// Shared secret subscribers must present (`token=...`); required off loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:7071".into()
}
fn default_wait() -> f64 {
    30.0
}
fn default_queue() -> usize {
    1024
}

impl NodeConfig for ArrowTcpSinkConfig {
    const KIND: &'static str = "arrow_tcp";
}

/// The `arrow_tcp` sink kind.
pub struct ArrowTcpSinkKind;

impl SinkKind for ArrowTcpSinkKind {
    type Config = ArrowTcpSinkConfig;

    fn describe(&self) -> &'static str {
        "live consumers: subscribers receive a table (e.g. alerts) or the frames as an Arrow IPC stream over TCP"
    }
    fn build(&self, cfg: ArrowTcpSinkConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let settings = server_settings(
            ctx,
            input,
            &cfg.listen,
            cfg.address_file.as_deref(),
            cfg.queue_batches,
            cfg.token.clone(),
            cfg.wait_for_subscribers,
            cfg.wait_timeout_s,
        )?;
        Ok(Arc::new(LiveSink {
            settings,
            input: input.clone(),
            handshake,
            protocol: "Arrow IPC over TCP",
        }))
    }
}

/// Reads one request line of at most [`MAX_REQUEST_BYTES`]; `Err` with the reason otherwise.
fn read_request_line(stream: &TcpStream) -> std::io::Result<String> {
    let mut limited = BufReader::new(stream.try_clone()?.take(MAX_REQUEST_BYTES as u64 + 1));
    let mut raw = Vec::new();
    limited.read_until(b'\n', &mut raw)?;
    if !raw.ends_with(b"\n") {
        return Err(std::io::Error::other(if raw.len() > MAX_REQUEST_BYTES {
            format!("request longer than {MAX_REQUEST_BYTES} bytes")
        } else {
            "disconnected before finishing its request line".to_string()
        }));
    }
    String::from_utf8(raw).map_err(|_| std::io::Error::other("request is not UTF-8"))
}

/// Reads the subscriber's request line, answers, and registers it with a writer thread.
fn handshake(stream: TcpStream, peer: SocketAddr, server: &LiveServer) -> std::result::Result<(), String> {
    crate::live::prepare_connection(&stream).map_err(|e| e.to_string())?;
    let line = read_request_line(&stream);
    let mut out = BufWriter::new(stream);
    let admitted = line
        .map_err(|e| e.to_string())
        .and_then(|l| Request::parse_line(&l))
        .and_then(|r| server.admit(&r).map(|()| r).map_err(|(_, m)| m));
    let request = match admitted {
        Ok(r) => r,
        Err(reason) => {
            let _ = writeln!(out, "ERR {reason}");
            let _ = out.flush();
            return Err(reason);
        }
    };
    writeln!(out, "OK").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    let end = server.subscribe(peer, &request);
    let socket = out.get_ref().try_clone().ok();
    server.add_writer(std::thread::spawn(move || serve(out, end, request, peer)), socket);
    Ok(())
}

/// Writes a subscriber's batches as one IPC stream (its schema from the first batch) until the
/// queue closes, then the end-of-stream marker. A write error means the subscriber left. Batch
/// messages are encoded once per batch for every subscriber with the same compression
/// ([`Published::encoded`]); only drop_oldest subscribers, whose batches carry their own drop
/// count, get their own.
fn serve(mut out: BufWriter<TcpStream>, end: SubscriberEnd, request: Request, peer: SocketAddr) {
    let result = (|| -> std::result::Result<(), String> {
        let options = if request.lz4 {
            IpcWriteOptions::default()
                .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
                .map_err(|e| e.to_string())?
        } else {
            IpcWriteOptions::default()
        };
        let mut started = false;
        for published in end.rx.iter() {
            let messages = if request.slow == SlowPolicy::DropOldest {
                let batch =
                    with_dropped_column(&published.batch, end.dropped.load(Ordering::Relaxed)).map_err(|e| e.to_string())?;
                if !started {
                    write_chunks(&mut out, &schema_message(&batch, &options)?)?;
                }
                Arc::new(batch_messages(&batch, &options)?)
            } else {
                if !started {
                    write_chunks(&mut out, &schema_message(&published.batch, &options)?)?;
                }
                let kind = if request.lz4 { encoding::IPC_LZ4 } else { encoding::IPC };
                published.encoded(kind, |b| batch_messages(b, &options))?
            };
            started = true;
            write_chunks(&mut out, &messages)?;
            out.flush().map_err(|e| e.to_string())?;
        }
        if started {
            // The end-of-stream marker: a continuation and a zero length.
            out.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])
                .map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::info!("subscriber {peer} left: {e}");
    }
}

fn write_chunks(out: &mut impl Write, chunks: &[Buffer]) -> std::result::Result<(), String> {
    chunks.iter().try_for_each(|c| out.write_all(c)).map_err(|e| e.to_string())
}

/// The IPC schema message of `batch`'s schema.
fn schema_message(batch: &RecordBatch, options: &IpcWriteOptions) -> std::result::Result<Vec<Buffer>, String> {
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        &batch.schema(),
        &mut DictionaryTracker::new(false),
        options,
    );
    let mut bytes = Vec::new();
    write_message(&mut bytes, encoded, options).map_err(|e| e.to_string())?;
    Ok(vec![Buffer::from(bytes)])
}

/// The IPC messages of `batch` (its dictionaries, then the record batch) as the chunks to write.
/// Uncompressed value buffers are the batch's own (shared, not copied): only the headers and
/// padding are new bytes.
fn batch_messages(batch: &RecordBatch, options: &IpcWriteOptions) -> std::result::Result<Vec<Buffer>, String> {
    // A fresh stream encoder writes the schema message first (then every dictionary, as each
    // batch's encoding must stand alone): skip exactly those bytes.
    let schema_len: usize = schema_message(batch, options)?.iter().map(|b| b.len()).sum();
    let mut encoder = StreamEncoder::try_new_with_options(&batch.schema(), options.clone()).map_err(|e| e.to_string())?;
    let mut chunks = encoder.encode(batch).map_err(|e| e.to_string())?.into_iter();
    let mut skipped = 0;
    while skipped < schema_len {
        skipped += chunks.next().map_or(usize::MAX, |c| c.len());
    }
    if skipped != schema_len {
        return Err(format!(
            "the IPC encoder's schema message is not the {schema_len} bytes expected"
        ));
    }
    Ok(chunks.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, FixedSizeListArray, Float32Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn batch() -> RecordBatch {
        let values = Float32Array::from((0..4096).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
        let act = FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            256,
            Arc::new(values),
            None,
        );
        let tokens = StringArray::from((0..16).map(|i| format!("t{i}")).collect::<Vec<_>>());
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            Field::new("token", DataType::Utf8, false),
            Field::new("act", act.data_type().clone(), false),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(tokens), Arc::new(act)]).unwrap()
    }

    fn read_back(chunks: &[Buffer]) -> Vec<RecordBatch> {
        let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.as_slice().to_vec()).collect();
        arrow::ipc::reader::StreamReader::try_new(&bytes[..], None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn batch_messages_share_the_value_buffers_and_read_back_equal() {
        let b = batch();
        let values = b.column(1).to_data().child_data()[0].buffers()[0].clone();
        for (options, compressed) in [
            (IpcWriteOptions::default(), false),
            (
                IpcWriteOptions::default()
                    .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
                    .unwrap(),
                true,
            ),
        ] {
            let mut stream = schema_message(&b, &options).unwrap();
            let messages = batch_messages(&b, &options).unwrap();
            let shared = messages
                .iter()
                .any(|c| c.as_ptr() == values.as_ptr() && c.len() == values.len());
            assert_eq!(shared, !compressed, "uncompressed values are written from the batch's buffer");
            stream.extend(messages.iter().cloned());
            stream.extend(messages);
            stream.push(Buffer::from(vec![0xffu8, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
            assert_eq!(
                read_back(&stream),
                vec![b.clone(), b.clone()],
                "two batches, then the end of the stream"
            );
        }
    }
}
