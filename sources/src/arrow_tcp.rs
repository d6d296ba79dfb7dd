//! `arrow_tcp`: live activations from model servers, as Arrow IPC streams over TCP.
//!
//! Each connection sends one Arrow IPC *stream* (schema, then record batches) in the activation
//! layout (`seq_id: uint64`, `pos: uint32`, optional `token: utf8`, `act:
//! fixed_size_list<float32>[d_model]`); LZ4- or zstd-compressed IPC buffers are accepted.
//! Every connection is its own stream, named `<source>/<n>` (n counts connections from 0;
//! `<source>/<run>.<n>` in the run-th resumed start of a checkpointed pipeline, so a name is
//! never reused) or `<source>/<name>` when the schema metadata carries `neurostream.stream =
//! <name>` (a client that reconnects under its name continues its stream; a name may not begin
//! with a digit, those are the unnamed streams'). An unnamed connection's stream ends with the
//! connection: operators emit its final tables and let go of its state then (see
//! [`neurostream_engine::StreamEnd`]); a named stream's state stays for its return, for the
//! whole run or until it has had no connection for `end_named_streams_after_s`. A resumed run
//! ends the unnamed streams its journal left open (their connections died with the previous
//! process) before it accepts a connection.
//!
//! A connection is decoded on its own thread; decoded frames wait in a bounded channel
//! (`queue_frames`), so a pipeline that falls behind slows the senders down through TCP flow
//! control instead of dropping data. A client that disconnects mid-message, sends a malformed
//! message, or the wrong `d_model` is dropped with a logged reason; every batch it sent before
//! was already accepted and stays in the pipeline.
//!
//! Limits (every one configurable): the source listens on loopback by default and needs a
//! `token` on any other address (clients put it in their schema metadata as
//! `neurostream.token`, checked before any batch is accepted); at most `max_connections`
//! connections are open at once (the next client waits in the listen queue until one closes,
//! so threads stay bounded and a burst of clients is served in turn, none refused); a
//! connection silent for `connection_timeout_s` is closed; an IPC message larger than
//! `max_message_mb` (compressed buffers counted at their uncompressed size) is refused before
//! it is read or decompressed.
//!
//! All connections are read by worker 0 (downstream `ByStream` operators spread the streams
//! over the workers). The event time of a row is its arrival ordinal across all connections.

use std::collections::{HashMap, VecDeque};
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use neurostream_engine::layout::Decoder;
use neurostream_engine::{
    Batch, EngineError, Frame, NodeConfig, NodeContext, Result, RowIndex, Schema, Source, SourceKind, SourceReader, SourceWaker,
    StreamEnd, WorkerPos,
};
use serde::{Deserialize, Serialize};

use crate::waker::WakerSlot;

/// Configuration of an `arrow_tcp` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrowTcpConfig {
    /// Address to listen on (default `127.0.0.1:7070`; port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Width of the activations every client must send.
    pub d_model: usize,
    /// Stop after this many connections have ended (default: run until interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// Stop after this many seconds without any connection open or data arriving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "s"))]
    pub idle_timeout_s: Option<f64>,
    /// Write the bound address (`127.0.0.1:PORT`) to this file once listening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_file: Option<String>,
    /// Decoded frames buffered before senders are slowed down (default 64).
    #[serde(default = "default_queue")]
    #[schemars(extend("x-unit" = "frames"))]
    pub queue_frames: usize,
    /// Model name recorded in the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Layer or hook name recorded in the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Shared secret clients present as `neurostream.token` in their schema metadata;
    /// required when `listen` is not a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Connections open at once (default 64); more wait to be accepted until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a named stream may stay without any connection before it ends: operators emit
    /// its final statistics and forget it, and a client that comes back later under the name
    /// starts it afresh (default: a named stream lasts the whole run, whatever its clients do).
    /// For services whose named clients may leave for good (replicas scaled down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "s"))]
    pub end_named_streams_after_s: Option<f64>,
    /// Seconds a connection may stay silent before it is closed (default: `idle_timeout_s` when
    /// set, else 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "s"))]
    pub connection_timeout_s: Option<f64>,
    /// Largest Arrow IPC message accepted, in MiB (default 64), also once its compressed
    /// buffers are decompressed; a larger one ends its connection before its body is read (or
    /// decompressed).
    #[serde(default = "default_max_message_mb")]
    #[schemars(extend("x-unit" = "MiB"))]
    pub max_message_mb: f64,
}

fn default_max_connections() -> usize {
    64
}
fn default_max_message_mb() -> f64 {
    64.0
}

/// What every connection of a source is held to.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// The token clients must present (`neurostream.token` schema metadata), if any.
    pub token: Option<String>,
    /// Largest IPC message (metadata and body), bytes.
    pub max_message_bytes: u64,
    /// Longest silence on a connection.
    pub timeout: Duration,
}

impl ConnectionLimits {
    /// Limits for tests and fuzzing: no token, 64 MiB messages, 60 s.
    pub fn default_for_tests() -> ConnectionLimits {
        ConnectionLimits {
            token: None,
            max_message_bytes: 64 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Longest client stream name (`neurostream.stream`), bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 256;

/// The stream of unnamed connection `n` in start `run` of the source (0: the first start).
fn unnamed_stream(source: &str, run: u64, n: usize) -> Arc<str> {
    match run {
        0 => format!("{source}/{n}").into(),
        _ => format!("{source}/{run}.{n}").into(),
    }
}

/// Whether `stream` is one of `source`'s unnamed connections (client names cannot begin with a
/// digit).
fn is_unnamed(source: &str, stream: &str) -> bool {
    stream
        .strip_prefix(source)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Checks a client's stream name (`neurostream.stream`): it becomes part of every output row's
/// stream, so it is short, printable, and never one of the unnamed connections' names.
fn check_client_name(name: &str) -> std::result::Result<(), String> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_STREAM_NAME_BYTES {
        "is longer than 256 bytes"
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        "begins with a digit (names of digits are the unnamed connections')"
    } else if name.chars().any(char::is_control) {
        "holds a control character"
    } else {
        return Ok(());
    };
    let shown: String = name.chars().take(40).collect();
    Err(format!("stream name (`neurostream.stream`) {shown:?} {problem}"))
}

fn default_listen() -> String {
    "127.0.0.1:7070".into()
}
fn default_queue() -> usize {
    64
}

impl NodeConfig for ArrowTcpConfig {
    const KIND: &'static str = "arrow_tcp";
}

/// The `arrow_tcp` source kind.
pub struct ArrowTcpKind;

impl SourceKind for ArrowTcpKind {
    type Config = ArrowTcpConfig;

    fn describe(&self) -> &'static str {
        "live activations: Arrow IPC streams over TCP from several clients (127.0.0.1 by default)"
    }
    fn build(&self, cfg: ArrowTcpConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        if cfg.d_model == 0 {
            return fail("`d_model` must be at least 1".into());
        }
        if cfg.queue_frames == 0 {
            return fail("`queue_frames` must be at least 1".into());
        }
        let listen: SocketAddr = match cfg.listen.parse() {
            Ok(a) => a,
            Err(e) => return fail(format!("`listen` {}: {e} (expected IP:PORT)", cfg.listen)),
        };
        if cfg.idle_timeout_s.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
            return fail("`idle_timeout_s` must be a positive number of seconds".into());
        }
        if cfg.connection_timeout_s.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
            return fail("`connection_timeout_s` must be a positive number of seconds".into());
        }
        if cfg.end_named_streams_after_s.is_some_and(|t| !(t >= 0.0 && t.is_finite())) {
            return fail("`end_named_streams_after_s` must be a number of seconds, 0 or more".into());
        }
        if cfg.max_connections == 0 {
            return fail("`max_connections` must be at least 1".into());
        }
        if !(cfg.max_message_mb > 0.0 && cfg.max_message_mb <= 4096.0) {
            return fail("`max_message_mb` must be above 0 and at most 4096".into());
        }
        if let Err(m) = neurostream_engine::net::check_bind(&listen, cfg.token.as_deref()) {
            return fail(m);
        }
        Ok(Arc::new(ArrowTcpSource {
            name: ctx.name.into(),
            listen,
            address_file: cfg.address_file.as_deref().map(|p| ctx.resolve(p)),
            schema: Arc::new(Schema::activation(cfg.d_model, cfg.model.clone(), cfg.layer.clone())),
            cfg,
        }))
    }
}

struct ArrowTcpSource {
    name: Arc<str>,
    listen: SocketAddr,
    address_file: Option<std::path::PathBuf>,
    schema: Arc<Schema>,
    cfg: ArrowTcpConfig,
}

/// What connection threads tell the reader.
enum Event {
    Frame(Frame),
    Opened,
    /// A connection named its stream (`neurostream.stream`), before its first frame.
    Named(Arc<str>),
    /// A connection ended.
    Closed {
        /// Its stream.
        stream: Arc<str>,
        /// `None` when it ended cleanly, else the reason it was dropped.
        reason: Option<String>,
        /// Whether the stream ended for good: an unnamed connection's stream cannot continue (a
        /// named client that reconnects continues its stream).
        ended: bool,
        /// Whether it sent [`Event::Named`] (a named connection that sent no frame did not).
        announced: bool,
    },
}

/// The connection threads' end of the queue to the reader: each event also wakes the reader's
/// worker, so a batch goes on as it arrives (not at the worker's next poll).
#[derive(Clone)]
struct Events {
    tx: Sender<Event>,
    waker: WakerSlot,
}

impl Events {
    /// Queues `event` (waiting while the queue is full) and wakes the reader; false once the
    /// reader is gone (the pipeline ended).
    fn send(&self, event: Event) -> bool {
        let sent = self.tx.send(event).is_ok();
        self.waker.wake();
        sent
    }
}

impl Source for ArrowTcpSource {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        None
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        if worker.index != 0 {
            return Ok(Box::new(IdleReader));
        }
        let listener = TcpListener::bind(self.listen)
            .map_err(|e| EngineError::Runtime(format!("source `{}`: cannot listen on {}: {e}", self.name, self.listen)))?;
        let local = listener.local_addr().map_err(|e| EngineError::Runtime(e.to_string()))?;
        if let Some(path) = &self.address_file {
            neurostream_engine::net::write_address_file(path, local)?;
        }
        tracing::info!("source `{}`: listening on {local}", self.name);
        let (tx, rx) = bounded(self.cfg.queue_frames);
        let waker = WakerSlot::default();
        let limits = ConnectionLimits {
            token: self.cfg.token.clone(),
            max_message_bytes: (self.cfg.max_message_mb * 1048576.0) as u64,
            timeout: Duration::from_secs_f64(self.cfg.connection_timeout_s.or(self.cfg.idle_timeout_s).unwrap_or(60.0)),
        };
        let acceptor = Acceptor {
            listener,
            events: Events {
                tx,
                waker: waker.clone(),
            },
            source: self.name.clone(),
            schema: self.schema.clone(),
            total: self.cfg.connections,
            max_open: self.cfg.max_connections,
            limits,
        };
        Ok(Box::new(LiveReader {
            acceptor: Some(acceptor),
            name: self.name.clone(),
            schema: self.schema.clone(),
            rx,
            pending: VecDeque::new(),
            next_time: 0,
            open: 0,
            ended: 0,
            dropped: Arc::new(Mutex::new(Vec::new())),
            limit: self.cfg.connections,
            idle: self.cfg.idle_timeout_s.map(Duration::from_secs_f64),
            last_activity: Instant::now(),
            named_open: HashMap::new(),
            named_gone: HashMap::new(),
            end_named_after: self.cfg.end_named_streams_after_s.map(Duration::from_secs_f64),
            done: false,
            waker,
        }))
    }
}

/// Connection slots: at most `max` connections are read at once.
struct Slots {
    open: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Slots {
    /// Waits for a free slot and takes it; returns whether it had to wait.
    fn take(&self) -> bool {
        let mut open = self.open.lock().unwrap();
        let waited = *open >= self.max;
        while *open >= self.max {
            open = self.freed.wait(open).unwrap();
        }
        *open += 1;
        waited
    }

    fn give_back(&self) {
        *self.open.lock().unwrap() -= 1;
        self.freed.notify_one();
    }
}

/// A bound listener whose connections are not accepted yet: the reader starts it once it knows
/// the run's number (a resumed run names its connections after it).
struct Acceptor {
    listener: TcpListener,
    events: Events,
    source: Arc<str>,
    schema: Arc<Schema>,
    /// Connections after which it stops (`connections`), if any.
    total: Option<usize>,
    /// Connections read at once (`max_connections`).
    max_open: usize,
    limits: ConnectionLimits,
}

impl Acceptor {
    /// Accepts connections on its own thread: one reader thread per connection, at most
    /// `max_open` at once. While that many are open the next client is not accepted: it waits in
    /// the listen queue (its sends block in TCP) until one closes. Refusing it instead would
    /// lose what it sent, unseen: a client that wrote a whole stream into its socket before the
    /// close could not tell. Stops after `total` connections when set.
    fn spawn(self, run: u64) {
        let Acceptor {
            listener,
            events: tx,
            source,
            schema,
            total,
            max_open,
            limits,
        } = self;
        let slots = Arc::new(Slots {
            open: Mutex::new(0),
            freed: Condvar::new(),
            max: max_open.max(1),
        });
        std::thread::Builder::new()
            .name(format!("{source}-accept"))
            .spawn(move || {
                let mut accepted = 0usize;
                loop {
                    if slots.take() {
                        tracing::info!(
                            "source `{source}`: {max_open} connections were open (max_connections); the next client waited for one to close"
                        );
                    }
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            slots.give_back();
                            tracing::warn!("source `{source}`: accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    };
                    let n = accepted;
                    accepted += 1;
                    if !tx.send(Event::Opened) {
                        break; // the pipeline is gone
                    }
                    let unnamed = unnamed_stream(&source, run, n);
                    let conn = (
                        tx.clone(),
                        source.clone(),
                        schema.clone(),
                        limits.clone(),
                        slots.clone(),
                        unnamed.clone(),
                    );
                    let spawned = std::thread::Builder::new().name(format!("{source}-conn{n}")).spawn(move || {
                        let (tx, source, schema, limits, slots, unnamed) = conn;
                        read_connection(stream, unnamed, &source, &schema, &limits, &tx);
                        slots.give_back();
                    });
                    if let Err(e) = spawned {
                        slots.give_back();
                        let reason = format!("cannot start a connection thread: {e}");
                        let _ = tx.send(Event::Closed {
                            stream: unnamed,
                            reason: Some(reason),
                            ended: true,
                            announced: false,
                        });
                    }
                    if total.is_some_and(|l| accepted >= l) {
                        break;
                    }
                }
            })
            .expect("spawn acceptor thread");
    }
}

/// Reads one client's IPC stream until it ends or fails; always reports how it ended.
fn read_connection(
    stream: TcpStream,
    unnamed: Arc<str>,
    source: &str,
    schema: &Arc<Schema>,
    limits: &ConnectionLimits,
    tx: &Events,
) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let mut name = unnamed.clone();
    let mut announced = false;
    let outcome = stream
        .set_read_timeout(Some(limits.timeout))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            decode_ipc_stream(BufReader::new(stream), &unnamed, source, schema, limits, &mut name, |frame| {
                if !announced && frame.stream != unnamed {
                    announced = true;
                    if !tx.send(Event::Named(frame.stream.clone())) {
                        return false;
                    }
                }
                tx.send(Event::Frame(frame))
            })
        });
    let reason = outcome.err().map(|e| format!("client {peer}: {e}"));
    let _ = tx.send(Event::Closed {
        ended: name == unnamed,
        stream: name,
        reason,
        announced,
    });
}

/// Decodes one client's Arrow IPC stream (activation layout) into frames of `schema`, handing
/// each to `emit` until it returns false (the pipeline ended) or the stream ends. `name` starts
/// as `default_name` and becomes `SOURCE/CLIENT` when the stream's metadata names the client.
/// Errors say which message failed and how many rows were accepted before it (those frames were
/// already emitted: nothing accepted is lost).
pub fn decode_ipc_stream<R: std::io::Read>(
    reader: R,
    default_name: &str,
    source: &str,
    schema: &Arc<Schema>,
    limits: &ConnectionLimits,
    name: &mut Arc<str>,
    emit: impl FnMut(Frame) -> bool,
) -> std::result::Result<(), String> {
    // arrow-rs's IPC reader panics on some malformed messages (buffer offsets beyond the body,
    // found by fuzz/fuzz_targets/arrow_ipc.rs) instead of returning an error: a client's bad
    // bytes must end that client's stream with an error, not the engine.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_ipc_stream_inner(reader, default_name, source, schema, limits, name, emit)
    }));
    match outcome {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "malformed Arrow IPC message: {}",
            neurostream_engine::panic_message(&*panic)
        )),
    }
}

fn decode_ipc_stream_inner<R: std::io::Read>(
    reader: R,
    default_name: &str,
    source: &str,
    schema: &Arc<Schema>,
    limits: &ConnectionLimits,
    name: &mut Arc<str>,
    mut emit: impl FnMut(Frame) -> bool,
) -> std::result::Result<(), String> {
    *name = default_name.into();
    let reader = crate::ipc_limit::MessageLimit::new(reader, limits.max_message_bytes);
    let reader = arrow::ipc::reader::StreamReader::try_new(reader, None).map_err(|e| match timed_out(&e) {
        true => format!("silent for {} s before sending a schema", limits.timeout.as_secs_f64()),
        false => format!("no valid Arrow IPC stream header: {e}"),
    })?;
    let arrow_schema = reader.schema();
    if !neurostream_engine::net::token_ok(
        limits.token.as_deref(),
        arrow_schema.metadata().get("neurostream.token").map(String::as_str),
    ) {
        return Err("unauthorized: this source needs its token as `neurostream.token` in the schema metadata".into());
    }
    if let Some(client) = arrow_schema.metadata().get("neurostream.stream") {
        check_client_name(client)?;
        *name = format!("{source}/{client}").into();
    }
    let mut decoder = Decoder::new(&arrow_schema, "act", None).map_err(|e| format!("not the activation layout: {e}"))?;
    if decoder.width() != 0 && decoder.width() != schema.width() {
        return Err(format!(
            "sends d_model {}, this source takes {}",
            decoder.width(),
            schema.width()
        ));
    }
    let mut rows = 0u64;
    for (i, batch) in reader.enumerate() {
        let batch = batch.map_err(|e| {
            let what = match e.to_string() {
                _ if timed_out(&e) => format!("silent for {} s (connection_timeout_s)", limits.timeout.as_secs_f64()),
                m if m.contains("failed to fill whole buffer") => "truncated: the connection closed in the middle of it".into(),
                m => m,
            };
            format!("message {} after {rows} rows: {what}", i + 1)
        })?;
        let mut frame = decoder
            .decode(&batch, name, rows, rows, &format!("batch {i}"))
            .map_err(|e| format!("batch {i}: {e}"))?;
        if frame.width() != schema.width() {
            return Err(format!(
                "batch {i}: d_model {}, this source takes {}",
                frame.width(),
                schema.width()
            ));
        }
        frame.schema = schema.clone();
        // Rows without a `time` column are stamped with their arrival time.
        let n = frame.rows();
        if let RowIndex::Tokens { time: time @ None, .. } = &mut frame.index {
            *time = Some(vec![neurostream_engine::now_ns(); n]);
        }
        rows += frame.rows() as u64;
        if !emit(frame) {
            return Ok(()); // the pipeline ended
        }
    }
    Ok(())
}

/// Whether an IPC read failed because the connection stayed silent past its read time-out.
fn timed_out(e: &arrow::error::ArrowError) -> bool {
    match e {
        arrow::error::ArrowError::IoError(_, io) => {
            matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
        _ => false,
    }
}

/// Workers other than 0 read nothing.
struct IdleReader;

impl SourceReader for IdleReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        Ok(None)
    }
    fn next_time(&self) -> Option<u64> {
        None
    }
}

struct LiveReader {
    /// The listener until the reader starts accepting (its first read, or its resume).
    acceptor: Option<Acceptor>,
    name: Arc<str>,
    schema: Arc<Schema>,
    rx: Receiver<Event>,
    /// Frames, and the ends of unnamed streams, in arrival order.
    pending: VecDeque<Batch>,
    next_time: u64,
    open: usize,
    ended: usize,
    dropped: Arc<Mutex<Vec<String>>>,
    limit: Option<usize>,
    idle: Option<Duration>,
    last_activity: Instant,
    /// Named streams: connections open for each, and since when one has had none.
    named_open: HashMap<Arc<str>, usize>,
    named_gone: HashMap<Arc<str>, Instant>,
    /// How long a named stream may stay without a connection before it ends (`None`: never).
    end_named_after: Option<Duration>,
    done: bool,
    /// Where connection threads find the worker's waker.
    waker: WakerSlot,
}

impl LiveReader {
    /// Starts accepting connections, naming unnamed ones after start `run`, once. The idle
    /// time-out counts from here: a long journal replay before it is not idleness.
    fn start(&mut self, run: u64) {
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.spawn(run);
            self.last_activity = Instant::now();
        }
    }

    fn drain(&mut self) {
        self.start(0);
        loop {
            match self.rx.try_recv() {
                Ok(Event::Frame(f)) => {
                    self.last_activity = Instant::now();
                    self.pending.push_back(Batch::Dense(f));
                }
                Ok(Event::Opened) => {
                    self.last_activity = Instant::now();
                    self.open += 1;
                }
                Ok(Event::Named(stream)) => {
                    self.named_gone.remove(&stream);
                    *self.named_open.entry(stream).or_default() += 1;
                }
                Ok(Event::Closed {
                    stream,
                    reason,
                    ended,
                    announced,
                }) => {
                    self.last_activity = Instant::now();
                    self.open -= 1;
                    self.ended += 1;
                    if announced {
                        let open = self.named_open.get_mut(&stream).expect("announced");
                        *open -= 1;
                        if *open == 0 {
                            self.named_open.remove(&stream);
                            if self.end_named_after.is_some() {
                                self.named_gone.insert(stream.clone(), Instant::now());
                            }
                        }
                    }
                    if ended {
                        self.pending.push_back(Batch::End(StreamEnd {
                            stream: stream.clone(),
                            schema: self.schema.clone(),
                        }));
                    }
                    match reason {
                        Some(r) => {
                            tracing::warn!("source `{}`: dropped stream {stream}: {r}", self.name);
                            self.dropped.lock().unwrap().push(format!("{stream}: {r}"));
                        }
                        None => tracing::info!("source `{}`: stream {stream} ended", self.name),
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if self.open == 0 {
                        self.done = true;
                    }
                    break;
                }
            }
        }
        if let Some(after) = self.end_named_after {
            let gone: Vec<Arc<str>> = self
                .named_gone
                .iter()
                .filter(|(_, since)| since.elapsed() >= after)
                .map(|(s, _)| s.clone())
                .collect();
            for stream in gone {
                self.named_gone.remove(&stream);
                tracing::info!("source `{}`: named stream {stream} ended: no client for {after:?}", self.name);
                self.pending.push_back(Batch::End(StreamEnd {
                    stream,
                    schema: self.schema.clone(),
                }));
            }
        }
        if self.limit.is_some_and(|l| self.ended >= l) {
            self.done = true;
        }
        if self.open == 0 && self.idle.is_some_and(|t| self.last_activity.elapsed() >= t) {
            self.done = true;
        }
    }
}

impl SourceReader for LiveReader {
    fn ready(&mut self) -> bool {
        if self.pending.is_empty() {
            self.drain();
        }
        !self.pending.is_empty() || self.done
    }

    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        if self.pending.is_empty() {
            self.drain();
        }
        Ok(self.pending.pop_front().map(|batch| {
            let time = self.next_time;
            self.next_time += batch.rows() as u64;
            (time, batch)
        }))
    }

    fn next_time(&self) -> Option<u64> {
        (!self.done || !self.pending.is_empty()).then_some(self.next_time)
    }

    fn location(&self) -> String {
        format!("live source {}", self.name)
    }

    fn set_waker(&mut self, waker: SourceWaker) -> bool {
        self.waker.set(waker);
        true
    }

    /// Ends the unnamed streams the previous run left open (their connections are gone; a new
    /// client must not continue them), starts the named ones' absence clocks, then accepts
    /// connections named after `run`.
    fn resume(&mut self, run: u64, open_streams: Vec<Arc<str>>) {
        let mut ended = 0;
        for stream in open_streams {
            if is_unnamed(&self.name, &stream) {
                ended += 1;
                self.pending.push_back(Batch::End(StreamEnd {
                    stream,
                    schema: self.schema.clone(),
                }));
            } else if self.end_named_after.is_some() {
                self.named_gone.insert(stream, Instant::now());
            }
        }
        if ended > 0 {
            tracing::info!(
                "source `{}`: ended {ended} unnamed streams whose connections did not survive the restart",
                self.name
            );
        }
        self.start(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, UInt32Array, UInt64Array};
    use arrow::datatypes::{DataType, Field};
    use arrow::ipc::writer::StreamWriter;
    use arrow::record_batch::RecordBatch;

    /// A source `live` of width 4 on a free loopback port with the `extra` keys, and the file
    /// holding its address.
    fn open_source(dir: &std::path::Path, extra: &str) -> (Box<dyn SourceReader>, std::path::PathBuf) {
        let address_file = dir.join("address");
        let cfg: ArrowTcpConfig =
            toml::from_str(&format!("listen = \"127.0.0.1:0\"\nd_model = 4\nconnections = 1\n{extra}")).unwrap();
        let source = ArrowTcpSource {
            name: "live".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            address_file: Some(address_file.clone()),
            schema: Arc::new(Schema::activation(4, None, None)),
            cfg,
        };
        (source.open(WorkerPos { index: 0, peers: 1 }).unwrap(), address_file)
    }

    /// Two rows of width 4 in the activation layout, the schema carrying `metadata`.
    fn two_rows(metadata: &[(&str, &str)]) -> RecordBatch {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let act = FixedSizeListArray::new(item.clone(), 4, Arc::new(Float32Array::from(vec![1.0f32; 8])), None);
        let schema = arrow::datatypes::Schema::new_with_metadata(
            vec![
                Field::new("seq_id", DataType::UInt64, false),
                Field::new("pos", DataType::UInt32, false),
                Field::new("act", DataType::FixedSizeList(item, 4), false),
            ],
            metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(vec![7u64, 7])),
            Arc::new(UInt32Array::from(vec![0u32, 1])),
            Arc::new(act),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    /// The next batch the reader returns, waiting up to 20 s for it.
    fn next_ready(reader: &mut dyn SourceReader) -> Batch {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reader.ready() {
            assert!(Instant::now() < deadline, "no batch came");
            std::thread::sleep(Duration::from_millis(2));
        }
        reader.next_batch().unwrap().expect("a batch").1
    }

    /// The reader takes the runtime's waker and a client's batch calls it, so the worker runs
    /// the source as the batch arrives instead of polling every millisecond for it.
    #[test]
    fn a_client_batch_wakes_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (mut reader, address_file) = open_source(dir.path(), "");
        let (woken_tx, woken) = crossbeam_channel::unbounded();
        assert!(reader.set_waker(Arc::new(move || {
            let _ = woken_tx.send(());
        })));
        assert!(!reader.ready(), "nothing has arrived yet");

        let address = std::fs::read_to_string(&address_file).unwrap();
        let batch = two_rows(&[]);
        let client = TcpStream::connect(address.trim()).unwrap();
        let mut writer = StreamWriter::try_new(client, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.flush().unwrap();

        // Woken for the connection, then for the batch: the reader is looked at only when woken.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            woken
                .recv_timeout(left)
                .expect("the reader was never woken for the client's batch");
            if reader.ready() {
                break;
            }
        }
        let (_, got) = reader.next_batch().unwrap().expect("the client's batch");
        assert_eq!(got.rows(), 2);
        writer.finish().unwrap();
    }

    /// A resumed reader first ends the unnamed streams the previous run left open (not the
    /// named ones: their clients may come back), then names new connections after its run, so
    /// a new client never continues a dead client's state.
    #[test]
    fn a_resumed_reader_ends_the_unnamed_streams_left_open_and_names_new_ones_after_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let (mut reader, address_file) = open_source(dir.path(), "");
        reader.resume(2, vec!["live/0".into(), "live/1.3".into(), "live/alpha".into()]);
        for expected in ["live/0", "live/1.3"] {
            let batch = next_ready(reader.as_mut());
            assert!(batch.is_end(), "{batch:?}");
            assert_eq!(&**batch.stream(), expected);
        }
        let address = std::fs::read_to_string(&address_file).unwrap();
        let batch = two_rows(&[]);
        let mut writer = StreamWriter::try_new(TcpStream::connect(address.trim()).unwrap(), &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.flush().unwrap();
        let got = next_ready(reader.as_mut());
        assert_eq!(got.rows(), 2);
        assert_eq!(&**got.stream(), "live/2.0");
        writer.finish().unwrap();
    }

    /// With `end_named_streams_after_s`, a resume starts the absence clock of the named streams
    /// the previous run left: one whose client does not come back ends after the limit.
    #[test]
    fn a_resume_times_the_named_streams_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut reader, _) = open_source(dir.path(), "end_named_streams_after_s = 0.2");
        let started = Instant::now();
        reader.resume(1, vec!["live/alpha".into()]);
        let end = next_ready(reader.as_mut());
        assert!(end.is_end() && &**end.stream() == "live/alpha", "{end:?}");
        assert!(started.elapsed() >= Duration::from_millis(200), "ended before the limit");
    }

    #[test]
    fn unnamed_streams_are_told_from_named_ones() {
        assert_eq!(&*unnamed_stream("live", 0, 4), "live/4");
        assert_eq!(&*unnamed_stream("live", 3, 4), "live/3.4");
        assert!(is_unnamed("live", "live/4") && is_unnamed("live", "live/3.4"));
        assert!(!is_unnamed("live", "live/a4") && !is_unnamed("live", "other/4") && !is_unnamed("live", "live4"));
    }

    /// A client's stream name is checked before any of its rows is accepted: one that could be
    /// taken for an unnamed connection's, an empty, oversized or unprintable one ends the
    /// connection with the reason.
    #[test]
    fn client_stream_names_are_checked() {
        for good in ["server-a", "a", "replica 7", "模型"] {
            assert_eq!(check_client_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_STREAM_NAME_BYTES + 1);
        for (bad, why) in [
            ("3", "begins with a digit"),
            ("0.1", "begins with a digit"),
            ("", "is empty"),
            (long.as_str(), "longer than 256"),
            ("a\nb", "control character"),
        ] {
            let e = check_client_name(bad).unwrap_err();
            assert!(e.contains(why) && e.contains("neurostream.stream"), "{bad:?}: {e}");
        }
        let batch = two_rows(&[("neurostream.stream", "3")]);
        let mut bytes = Vec::new();
        let mut w = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        let schema = Arc::new(Schema::activation(4, None, None));
        let (mut name, mut frames) = (Arc::<str>::from("live/0"), 0);
        let e = decode_ipc_stream(
            bytes.as_slice(),
            "live/0",
            "live",
            &schema,
            &ConnectionLimits::default_for_tests(),
            &mut name,
            |_| {
                frames += 1;
                true
            },
        )
        .unwrap_err();
        assert!(e.contains("begins with a digit"), "{e}");
        assert_eq!(frames, 0, "no row of a refused name is accepted");
    }
}
