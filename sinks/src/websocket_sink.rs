//! `websocket` sink: live consumers for browsers and dashboards.
//!
//! A client opens `ws://HOST:PORT/OUTPUT?format=json|arrow&slow=drop_oldest|disconnect&token=SECRET`
//! (`OUTPUT`: a table such as `alerts`, or `frames`). A request for something the stream does
//! not offer, a wrong token or a request target over 4096 bytes is refused in the handshake
//! (HTTP 404, 401, 400) with the reason in the body. Then every matching batch comes as one
//! message:
//!
//! - `format=json` (default): a text message
//!   `{"output": "alerts", "dropped": 0, "rows": [{"column": value, ...}, ...]}`; fixed-size
//!   lists (activation vectors) are JSON arrays, NaN and infinities are `null`;
//! - `format=arrow`: a binary message holding a complete Arrow IPC stream (schema, the batch,
//!   end marker), readable on its own by `tableFromIPC` (apache-arrow JS) or
//!   `pyarrow.ipc.open_stream`.
//!
//! `dropped` (JSON) or the `_dropped_batches` column (Arrow, `drop_oldest` only) counts batches
//! dropped for this client because it read too slowly. Messages from clients are ignored apart
//! from close frames; any over 4096 bytes closes the connection. The stream ends with a close
//! frame when the run ends. Binds 127.0.0.1 by default; any other address needs `token`.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow::buffer::Buffer;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use neurostream_engine::{NodeConfig, NodeContext, Result, Schema, Sink, SinkKind};
use serde::{Deserialize, Serialize};
use tungstenite::handshake::server::{ErrorResponse, Request as HttpRequest, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Bytes, Message, Utf8Bytes, WebSocket};

use crate::live::{
    encoding, server_settings, with_dropped_column, Format, LiveServer, LiveSink, Request, ServerSettings, SlowPolicy,
    SubscriberEnd, MAX_REQUEST_BYTES,
};

/// Configuration of a `websocket` sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSinkConfig {
    /// Address to listen on (default `127.0.0.1:7072`; port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Write the bound address (`127.0.0.1:PORT`) to this file once listening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_file: Option<String>,
    /// Hold the start of the run until this many clients are connected (default 0).
    #[serde(default)]
    pub wait_for_subscribers: usize,
    /// How long to wait for them, in seconds (default 30); then the run fails.
    #[serde(default = "default_wait")]
    #[schemars(extend("x-unit" = "s"))]
    pub wait_timeout_s: f64,
    /// Messages queued per client before its slow policy applies (default 256).
    #[serde(default = "default_queue")]
    #[schemars(extend("x-unit" = "messages"))]
    pub queue_batches: usize,
    /// Shared secret clients must present (`?token=...`); required off loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:7072".into()
}
fn default_wait() -> f64 {
    30.0
}
fn default_queue() -> usize {
    256
}

impl NodeConfig for WebSocketSinkConfig {
    const KIND: &'static str = "websocket";
}

/// The `websocket` sink kind.
pub struct WebSocketSinkKind;

impl SinkKind for WebSocketSinkKind {
    type Config = WebSocketSinkConfig;

    fn describe(&self) -> &'static str {
        "live consumers for browsers: a table (e.g. alerts) or the frames as JSON or Arrow IPC WebSocket messages"
    }
    fn build(&self, cfg: WebSocketSinkConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
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
            protocol: "WebSocket, ws://",
        }))
    }
}

fn refusal(status: u16, reason: String) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(reason));
    *r.status_mut() = tungstenite::http::StatusCode::from_u16(status).unwrap_or(tungstenite::http::StatusCode::BAD_REQUEST);
    r
}

/// Reads a client's WebSocket handshake on `stream` and checks its target, token and output
/// against `settings` before upgrading; refusals are answered with their HTTP status and reason.
#[allow(clippy::result_large_err)] // the callback type is tungstenite's
pub fn accept<S: std::io::Read + std::io::Write>(
    stream: S,
    settings: &ServerSettings,
) -> std::result::Result<(WebSocket<S>, Request), String> {
    let mut accepted: Option<Request> = None;
    let check = |req: &HttpRequest, resp: Response| -> std::result::Result<Response, ErrorResponse> {
        let target = req.uri().to_string();
        if target.len() > MAX_REQUEST_BYTES {
            return Err(refusal(414, format!("request target longer than {MAX_REQUEST_BYTES} bytes")));
        }
        let r = Request::parse_target(req.uri().path_and_query().map_or("/", |p| p.as_str())).map_err(|m| refusal(400, m))?;
        settings.admit(&r).map_err(|(status, m)| refusal(status, m))?;
        accepted = Some(r);
        Ok(resp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_REQUEST_BYTES))
        .max_frame_size(Some(MAX_REQUEST_BYTES));
    let ws = tungstenite::accept_hdr_with_config(stream, check, Some(config)).map_err(|e| e.to_string())?;
    let request = accepted.ok_or("handshake ended without a request")?;
    Ok((ws, request))
}

/// The WebSocket handshake of a connection: time-outs, then [`accept`], then its writer thread.
fn handshake(stream: TcpStream, peer: SocketAddr, server: &LiveServer) -> std::result::Result<(), String> {
    crate::live::prepare_connection(&stream).map_err(|e| e.to_string())?;
    let (ws, request) = accept(stream, &server.settings)?;
    let end = server.subscribe(peer, &request);
    let output = request.output.clone();
    let socket = ws.get_ref().try_clone().ok();
    server.add_writer(std::thread::spawn(move || serve(ws, end, request, output, peer)), socket);
    Ok(())
}

/// The payload of one batch's WebSocket message in the client's format (text for JSON).
fn message(batch: &RecordBatch, request: &Request, output: &str, dropped: u64) -> std::result::Result<Vec<u8>, String> {
    match request.format {
        Format::Json => {
            let mut rows = arrow::json::ArrayWriter::new(Vec::new());
            rows.write(batch).map_err(|e| e.to_string())?;
            rows.finish().map_err(|e| e.to_string())?;
            let rows = rows.into_inner();
            let rows = if rows.is_empty() { b"[]".to_vec() } else { rows };
            let head = format!(
                "{{\"output\":{},\"dropped\":{dropped},\"rows\":",
                serde_json::Value::from(output)
            );
            let mut text = head.into_bytes();
            text.extend_from_slice(&rows);
            text.push(b'}');
            Ok(text)
        }
        Format::Arrow => {
            let batch = if request.slow == SlowPolicy::DropOldest {
                with_dropped_column(batch, dropped).map_err(|e| e.to_string())?
            } else {
                batch.clone()
            };
            let mut w = StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(|e| e.to_string())?;
            w.write(&batch).map_err(|e| e.to_string())?;
            w.finish().map_err(|e| e.to_string())?;
            w.into_inner().map_err(|e| e.to_string())
        }
    }
}

/// Sends a client its batches until the run ends (then a close frame) or the client leaves.
fn serve(mut ws: WebSocket<TcpStream>, end: SubscriberEnd, request: Request, output: String, peer: SocketAddr) {
    // Short reads between sends notice close frames (and oversized messages) from the client.
    let _ = ws.get_mut().set_read_timeout(Some(Duration::from_millis(1)));
    let result = (|| -> std::result::Result<(), String> {
        loop {
            match end.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(published) => {
                    let payload = if request.slow == SlowPolicy::DropOldest {
                        // Its own drop count is in every message.
                        let dropped = end.dropped.load(Ordering::Relaxed);
                        Bytes::from(message(&published.batch, &request, &output, dropped)?)
                    } else {
                        // The same bytes for every such client of this output (nothing dropped).
                        let kind = match request.format {
                            Format::Json => encoding::WEBSOCKET_JSON,
                            Format::Arrow => encoding::WEBSOCKET_ARROW,
                        };
                        let shared =
                            published.encoded(kind, |b| message(b, &request, &output, 0).map(|m| vec![Buffer::from(m)]))?;
                        // Every client sends the same bytes: shared, not copied.
                        Bytes::from_owner(shared[0].clone())
                    };
                    let m = match request.format {
                        Format::Json => Message::Text(Utf8Bytes::try_from(payload).map_err(|e| e.to_string())?),
                        Format::Arrow => Message::Binary(payload),
                    };
                    ws.send(m).map_err(|e| e.to_string())?;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            match ws.read() {
                Ok(Message::Close(_)) => return Err("closed by the client".into()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let _ = ws.close(None);
        let _ = ws.flush();
        Ok(())
    })();
    if let Err(e) = result {
        tracing::info!("websocket client {peer} left: {e}");
    }
}
