//! What the live-consumer servers (`arrow_tcp`, `websocket`) share: the subscription request,
//! shared-secret tokens, a hub of subscribers with a bounded queue and a slow policy each, and
//! the encoding of batches as Arrow record batches.
//!
//! A subscriber asks for one *output*: a table of a result-table stream (`alerts`, `windows`,
//! ...) or `frames` for a stream of frames. Its queue holds `queue_batches` batches; when it is
//! full the subscriber's policy applies: `drop_oldest` discards its oldest queued batch and
//! counts it (the count travels with every later batch: column `_dropped_batches` in Arrow,
//! field `dropped` in JSON), `disconnect` (the default) cuts it off. Publishing never blocks, so
//! a slow subscriber never slows the pipeline or the other subscribers.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, UInt64Array};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field};
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender, TrySendError};
use neurostream_engine::layout::{arrow_schema, frame_into_batch, sparse_to_batch, EncodeOptions};
use neurostream_engine::{
    Batch, EngineError, NodeContext, Placement, Result, RowIndex, Schema, Sink, SinkWriter, StreamKind, WorkerPos,
};

/// What a frame stream's subscribers ask for.
pub const FRAMES: &str = "frames";

/// Longest subscription request accepted, in bytes (a request line, or a WebSocket handshake's
/// URL; WebSocket messages from clients have the same limit).
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Name of the column that carries a `drop_oldest` subscriber's dropped-batch count.
pub const DROPPED_COLUMN: &str = "_dropped_batches";

/// What happens when a subscriber's buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Drop the oldest buffered batch to make room (counted, and reported to the subscriber).
    DropOldest,
    /// Disconnect the subscriber.
    Disconnect,
    /// Wait for room: lossless, the pipeline slows to the subscriber's pace. Only for
    /// in-process subscribers that always drain (never offered to network clients).
    Block,
}

/// How batches are written to a WebSocket subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Binary messages, each a complete Arrow IPC stream (schema, one batch, end marker).
    Arrow,
    /// Text messages: `{"output": ..., "dropped": N, "rows": [{column: value, ...}, ...]}`.
    Json,
}

/// A parsed subscription request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The output wanted (a table name or `frames`).
    pub output: String,
    /// Compress IPC buffers with LZ4 (frame format).
    pub lz4: bool,
    /// What to do when this subscriber falls behind.
    pub slow: SlowPolicy,
    /// WebSocket message format.
    pub format: Format,
    /// The shared secret presented, if any.
    pub token: Option<String>,
}

impl Request {
    fn new(output: &str) -> Request {
        Request {
            output: output.to_string(),
            lz4: false,
            slow: SlowPolicy::Disconnect,
            format: Format::Arrow,
            token: None,
        }
    }

    fn option(&mut self, key: &str, value: Option<&str>) -> std::result::Result<(), String> {
        match (key, value) {
            ("lz4", None) => self.lz4 = true,
            ("compression", Some("lz4")) => self.lz4 = true,
            ("compression", Some("none")) => self.lz4 = false,
            ("slow", Some("drop_oldest")) => self.slow = SlowPolicy::DropOldest,
            ("slow", Some("disconnect")) => self.slow = SlowPolicy::Disconnect,
            ("format", Some("arrow")) => self.format = Format::Arrow,
            ("format", Some("json")) => self.format = Format::Json,
            ("token", Some(t)) => self.token = Some(t.to_string()),
            (k, v) => {
                return Err(format!(
                    "unknown option `{k}{}` (options: lz4, compression=lz4|none, slow=drop_oldest|disconnect, format=arrow|json, token=SECRET)",
                    v.map(|v| format!("={v}")).unwrap_or_default()
                ))
            }
        }
        Ok(())
    }

    /// Parses a TCP request line: `OUTPUT [lz4] [slow=drop_oldest|disconnect] [token=SECRET]`.
    pub fn parse_line(line: &str) -> std::result::Result<Request, String> {
        let mut words = line.split_whitespace();
        let output = words.next().ok_or("empty request: send the output you want, e.g. `alerts`")?;
        let mut r = Request::new(output);
        for w in words {
            let (k, v) = match w.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (w, None),
            };
            r.option(k, v)?;
        }
        Ok(r)
    }

    /// Parses a WebSocket request target: `/OUTPUT?format=json&slow=drop_oldest&token=SECRET`
    /// (without `format`: JSON, what browsers read most easily).
    pub fn parse_target(target: &str) -> std::result::Result<Request, String> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let output = path.trim_start_matches('/');
        if output.is_empty() || output.contains('/') {
            return Err(format!("request `/OUTPUT`, e.g. `/alerts`; got `{path}`"));
        }
        let mut r = Request::new(output);
        r.format = Format::Json;
        // Percent-decoded as browsers encode them (`encodeURIComponent`), like the engine's
        // other HTTP servers; a key without `=` is a flag.
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = form_urlencoded::parse(pair.as_bytes()).next().unwrap_or_default();
            r.option(&k, pair.contains('=').then_some(&*v))?;
        }
        Ok(r)
    }
}

pub use neurostream_engine::net::{check_bind, token_ok};

struct Subscriber<T> {
    /// Who it is, for log lines (a peer address).
    who: String,
    output: String,
    slow: SlowPolicy,
    tx: Sender<T>,
    /// A receiver clone used to discard the oldest queued batch (drop_oldest).
    rx: Receiver<T>,
    dropped: Arc<AtomicU64>,
    cut_off: Arc<AtomicBool>,
    /// Set when its end was dropped (the subscriber left): the hub then forgets it.
    left: Arc<AtomicBool>,
}

/// The subscriber's end: its queue and its counters.
pub struct SubscriberEnd<T = Arc<Published>> {
    /// Batches to send, in order; disconnected when the run ends or the policy cut it off.
    pub rx: Receiver<T>,
    /// Batches dropped for this subscriber so far (drop_oldest).
    pub dropped: Arc<AtomicU64>,
    /// Set when the disconnect policy cut it off.
    pub cut_off: Arc<AtomicBool>,
    /// Keep it as long as the subscriber is there: dropping it tells the hub it left.
    pub presence: Presence,
}

/// A subscriber's presence: when dropped (its writer ended, it went away), the hub forgets it
/// at its next publish instead of queueing (and counting drops) for no one.
pub struct Presence(Arc<AtomicBool>);

impl Drop for Presence {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Encodings of a [`Published`] batch that subscribers share: at most this many kinds per batch.
pub const SHARED_ENCODINGS: usize = 4;

/// The kinds of shared encodings (indices below [`SHARED_ENCODINGS`]).
pub mod encoding {
    /// `arrow_tcp`: the IPC record-batch message.
    pub const IPC: usize = 0;
    /// `arrow_tcp`: the IPC record-batch message with LZ4-compressed buffers.
    pub const IPC_LZ4: usize = 1;
    /// `websocket`: the message of an Arrow client (an IPC stream of the batch).
    pub const WEBSOCKET_ARROW: usize = 2;
    /// `websocket`: the message of a JSON client.
    pub const WEBSOCKET_JSON: usize = 3;
}

/// Bytes to write in order: one encoding of a batch. Arrow buffers, so an encoding can hold the
/// batch's own value buffers (shared, not copied) between its message headers.
pub type Chunks = Arc<Vec<Buffer>>;

/// A batch published to a live sink's subscribers. What does not depend on the subscriber is
/// encoded once for all of them: the first writer thread to need an encoding makes it while the
/// others wait for it, then every one writes the same bytes.
pub struct Published {
    /// The batch, in the Parquet layouts.
    pub batch: RecordBatch,
    encodings: [OnceLock<std::result::Result<Chunks, String>>; SHARED_ENCODINGS],
}

impl Published {
    /// Wraps `batch` with no encoding made yet.
    pub fn new(batch: RecordBatch) -> Published {
        Published {
            batch,
            encodings: Default::default(),
        }
    }

    /// Encoding number `kind` (below [`SHARED_ENCODINGS`]), made by `make` on first use.
    pub fn encoded(
        &self,
        kind: usize,
        make: impl FnOnce(&RecordBatch) -> std::result::Result<Vec<Buffer>, String>,
    ) -> std::result::Result<Chunks, String> {
        self.encodings[kind].get_or_init(|| make(&self.batch).map(Arc::new)).clone()
    }
}

/// The subscribers of one live sink (`T`: what they receive).
pub struct Hub<T = Arc<Published>> {
    subscribers: Mutex<Vec<Subscriber<T>>>,
    /// Subscribers accepted so far.
    pub served: AtomicUsize,
    /// Subscribers cut off as too slow.
    pub cut_off: AtomicUsize,
    /// Batches dropped for drop_oldest subscribers.
    pub dropped: AtomicU64,
}

impl<T> Default for Hub<T> {
    fn default() -> Self {
        Hub {
            subscribers: Mutex::new(Vec::new()),
            served: AtomicUsize::new(0),
            cut_off: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl<T: Clone> Hub<T> {
    /// Registers a subscriber (`who`, for logs) of `output` with a queue of `queue` batches.
    pub fn add(&self, who: &str, output: &str, slow: SlowPolicy, queue: usize) -> SubscriberEnd<T> {
        let (tx, rx) = bounded(queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let cut_off = Arc::new(AtomicBool::new(false));
        let left = Arc::new(AtomicBool::new(false));
        let mut subs = self.subscribers.lock().unwrap();
        subs.retain(|s| !s.left.load(Ordering::SeqCst));
        subs.push(Subscriber {
            who: who.to_string(),
            output: output.to_string(),
            slow,
            tx,
            rx: rx.clone(),
            dropped: dropped.clone(),
            cut_off: cut_off.clone(),
            left: left.clone(),
        });
        self.served.fetch_add(1, Ordering::SeqCst);
        SubscriberEnd {
            rx,
            dropped,
            cut_off,
            presence: Presence(left),
        }
    }

    /// Subscribers connected now.
    pub fn len(&self) -> usize {
        let mut subs = self.subscribers.lock().unwrap();
        subs.retain(|s| !s.left.load(Ordering::SeqCst));
        subs.len()
    }

    /// True when nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether anyone wants `output` (so the sink can skip encoding what nobody reads).
    pub fn wants(&self, output: &str) -> bool {
        self.subscribers
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.output == output && !s.left.load(Ordering::SeqCst))
    }

    /// Queues `batch` for every subscriber of `output`, applying each one's slow policy. Never blocks.
    pub fn publish(&self, output: &str, batch: T, sink: &str) {
        let mut subs = self.subscribers.lock().unwrap();
        subs.retain(|s| {
            if s.left.load(Ordering::SeqCst) {
                tracing::info!("sink `{sink}`: subscriber {} left", s.who);
                return false;
            }
            if s.output != output {
                return true;
            }
            loop {
                match s.tx.try_send(batch.clone()) {
                    Ok(()) => return true,
                    Err(TrySendError::Disconnected(_)) => {
                        tracing::info!("sink `{sink}`: subscriber {} disconnected", s.who);
                        return false;
                    }
                    Err(TrySendError::Full(_)) => match s.slow {
                        SlowPolicy::DropOldest => {
                            if s.rx.try_recv().is_ok() {
                                s.dropped.fetch_add(1, Ordering::Relaxed);
                                self.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        SlowPolicy::Block => match s.tx.send_timeout(batch.clone(), Duration::from_millis(50)) {
                            Ok(()) => return true,
                            Err(SendTimeoutError::Disconnected(_)) => return false,
                            Err(SendTimeoutError::Timeout(_)) => {
                                if s.left.load(Ordering::SeqCst) {
                                    return false;
                                }
                            }
                        },
                        SlowPolicy::Disconnect => {
                            tracing::warn!(
                                "sink `{sink}`: subscriber {} cut off: {} batches of `{}` queued unread (too slow)",
                                s.who,
                                s.tx.len(),
                                s.output
                            );
                            s.cut_off.store(true, Ordering::Relaxed);
                            self.cut_off.fetch_add(1, Ordering::Relaxed);
                            return false;
                        }
                    },
                }
            }
        });
    }

    /// Closes every queue: each subscriber's stream ends once it has drained.
    pub fn close_all(&self) {
        self.subscribers.lock().unwrap().clear();
    }

    /// The summary line of a finished sink.
    pub fn summary(&self, batches: u64) -> String {
        format!(
            "{} subscriber(s) served {batches} batches; {} cut off as too slow or gone, {} batches dropped for drop_oldest subscribers",
            self.served.load(Ordering::SeqCst),
            self.cut_off.load(Ordering::SeqCst),
            self.dropped.load(Ordering::SeqCst)
        )
    }
}

/// `batch` with the `_dropped_batches` column appended (every row: `dropped`).
pub fn with_dropped_column(batch: &RecordBatch, dropped: u64) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(DROPPED_COLUMN, DataType::UInt64, false)));
    let schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        batch.schema().metadata().clone(),
    ));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from(vec![dropped; batch.num_rows()])));
    RecordBatch::try_new(schema, columns)
}

/// Encodes a live sink's input batches as Arrow record batches, with the output each belongs to.
pub struct LiveEncoder {
    input: Arc<Schema>,
    /// Frame streams: the Arrow schema and options, fixed by the first frame.
    frames: Option<(Arc<arrow::datatypes::Schema>, EncodeOptions)>,
}

impl LiveEncoder {
    /// An encoder for a stream of schema `input`.
    pub fn new(input: Arc<Schema>) -> LiveEncoder {
        LiveEncoder { input, frames: None }
    }

    /// The output a batch belongs to: its table, or `frames`.
    pub fn output_of(batch: &Batch) -> &str {
        match batch {
            Batch::Table(t) => &t.table,
            _ => FRAMES,
        }
    }

    /// The batch in the Parquet layouts (tables as they are; activation values moved, not
    /// copied).
    pub fn encode(&mut self, batch: Batch) -> std::result::Result<RecordBatch, String> {
        if let Batch::Table(t) = batch {
            return Ok(t.data);
        }
        if let Batch::End(e) = batch {
            return Err(format!("the end of stream {} has no rows", e.stream));
        }
        if self.frames.is_none() {
            let timed = match &batch {
                Batch::Dense(f) => matches!(f.index, RowIndex::Tokens { time: Some(_), .. }),
                Batch::Sparse(f) => matches!(f.index, RowIndex::Tokens { time: Some(_), .. }),
                Batch::Table(_) | Batch::End(_) => false,
            };
            let opts = EncodeOptions {
                markers: true,
                tokens: true,
                time: timed,
            };
            self.frames = Some((arrow_schema(&self.input, &opts), opts));
        }
        let (schema, opts) = self.frames.as_ref().unwrap();
        match batch {
            Batch::Dense(f) => frame_into_batch(f, schema, opts),
            Batch::Sparse(f) => sparse_to_batch(&f, schema),
            Batch::Table(_) | Batch::End(_) => unreachable!(),
        }
    }
}

/// The outputs a stream offers its subscribers: its tables, or `frames`.
pub fn offered_outputs(input: &Schema) -> Vec<String> {
    match &input.kind {
        StreamKind::Tables { tables, .. } => tables.clone(),
        _ => vec![FRAMES.to_string()],
    }
}

/// How a live server greets a new connection: reads its request, answers, and (when accepted)
/// registers it with the hub and starts its writer thread via [`LiveServer::add_writer`].
pub type Handshake = fn(TcpStream, SocketAddr, &LiveServer) -> std::result::Result<(), String>;

/// Settings of a live server.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// The sink's name, for messages.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// File to write the bound address to.
    pub address_file: Option<std::path::PathBuf>,
    /// Outputs offered.
    pub offered: Vec<String>,
    /// Batches queued per subscriber.
    pub queue: usize,
    /// Shared secret subscribers must present.
    pub token: Option<String>,
    /// Subscribers to wait for before the run starts, and for how long (s).
    pub wait_for: (usize, f64),
}

impl ServerSettings {
    /// Checks a request's token and output; `Err` with the reason to send back.
    pub fn admit(&self, request: &Request) -> std::result::Result<(), (u16, String)> {
        if !token_ok(self.token.as_deref(), request.token.as_deref()) {
            return Err((401, "unauthorized: this server needs `token=SECRET`".into()));
        }
        if !self.offered.contains(&request.output) {
            return Err((
                404,
                format!("no `{}` here; ask for one of: {}", request.output, self.offered.join(", ")),
            ));
        }
        Ok(())
    }
}

/// Checks a live sink's keys (errors name the key) and returns its server's settings.
#[allow(clippy::too_many_arguments)]
pub fn server_settings(
    ctx: &NodeContext,
    input: &Schema,
    listen: &str,
    address_file: Option<&str>,
    queue: usize,
    token: Option<String>,
    wait_for: usize,
    wait_timeout_s: f64,
) -> Result<ServerSettings> {
    let fail = |m: String| Err(EngineError::config(ctx.label, m));
    let addr: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => return fail(format!("`listen` {listen}: {e} (expected IP:PORT)")),
    };
    if let Err(m) = check_bind(&addr, token.as_deref()) {
        return fail(m);
    }
    if queue == 0 {
        return fail("`queue_batches` must be at least 1".into());
    }
    if !(wait_timeout_s > 0.0 && wait_timeout_s.is_finite()) {
        return fail("`wait_timeout_s` must be a positive number of seconds".into());
    }
    Ok(ServerSettings {
        name: ctx.name.to_string(),
        listen: addr,
        address_file: address_file.map(|p| ctx.resolve(p)),
        offered: offered_outputs(input),
        queue,
        token,
        wait_for: (wait_for, wait_timeout_s),
    })
}

/// A live sink: a server with `settings` that greets each connection with `handshake`.
pub struct LiveSink {
    /// The server's settings.
    pub settings: ServerSettings,
    /// The schema of the stream it serves.
    pub input: Arc<Schema>,
    /// The protocol's handshake (which also starts the subscriber's writer thread).
    pub handshake: Handshake,
    /// How it serves, for the start-up log line (e.g. `Arrow IPC over TCP`).
    pub protocol: &'static str,
}

impl Sink for LiveSink {
    fn placement(&self) -> Placement {
        Placement::Single
    }

    fn open(&self, _worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        let (server, local, acceptor) = LiveServer::start(self.settings.clone(), self.handshake)?;
        tracing::info!(
            "sink `{}`: serving {} on {local} ({})",
            self.settings.name,
            self.settings.offered.join(", "),
            self.protocol
        );
        Ok(Box::new(LiveWriter::new(self.input.clone(), server, acceptor)))
    }
}

/// How long the end of a run waits for subscribers to drain their queues before it
/// disconnects them.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Sets a subscriber connection's limits: blocking, 10 s to send its request, 10 s per write
/// (a subscriber that stops reading without leaving cannot hold its writer forever), no Nagle.
pub fn prepare_connection(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)
}

/// Subscribers and handshakes a live server keeps open at once (one thread each); more
/// connections are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 256;

/// A TCP server of live subscribers: an accepting thread, one thread per subscriber.
pub struct LiveServer {
    /// The settings it runs with.
    pub settings: ServerSettings,
    /// Its subscribers.
    pub hub: Hub,
    /// Each subscriber's writer thread and a handle on its socket (shut down to end a writer
    /// that is still blocked when the end-of-run grace period is over).
    writers: Mutex<Vec<(JoinHandle<()>, Option<TcpStream>)>>,
    /// Connections still in their handshake (each on its own thread, at most 10 s).
    handshaking: AtomicUsize,
    stop: AtomicBool,
}

impl LiveServer {
    /// Binds, starts accepting (each connection goes through `handshake`), and waits for the
    /// subscribers the settings ask for. Returns the server, its address and the accepting thread.
    pub fn start(settings: ServerSettings, handshake: Handshake) -> Result<(Arc<LiveServer>, SocketAddr, JoinHandle<()>)> {
        let name = settings.name.clone();
        let listener = TcpListener::bind(settings.listen)
            .map_err(|e| EngineError::Runtime(format!("sink `{name}`: cannot listen on {}: {e}", settings.listen)))?;
        let local = listener.local_addr().map_err(|e| EngineError::Runtime(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| EngineError::Runtime(e.to_string()))?;
        if let Some(path) = &settings.address_file {
            neurostream_engine::net::write_address_file(path, local)?;
        }
        let (count, timeout_s) = settings.wait_for;
        let server = Arc::new(LiveServer {
            settings,
            hub: Hub::default(),
            writers: Mutex::new(Vec::new()),
            handshaking: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let server = server.clone();
            std::thread::spawn(move || server.accept_loop(listener, handshake))
        };
        let deadline = Instant::now() + Duration::from_secs_f64(timeout_s);
        while server.hub.len() < count {
            if Instant::now() > deadline {
                server.stop.store(true, Ordering::SeqCst);
                return Err(EngineError::Runtime(format!(
                    "sink `{name}`: {} of {count} subscribers connected to {local} within {timeout_s} s (wait_for_subscribers)",
                    server.hub.len(),
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((server, local, acceptor))
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener, handshake: Handshake) {
        while !self.stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let open = self.handshaking.load(Ordering::SeqCst) + self.hub.len();
                    if open >= MAX_CONNECTIONS {
                        tracing::warn!(
                            "sink `{}`: refused {peer}: {MAX_CONNECTIONS} subscribers and handshakes are open",
                            self.settings.name
                        );
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
                    self.handshaking.fetch_add(1, Ordering::SeqCst);
                    let server = self.clone();
                    std::thread::spawn(move || {
                        if let Err(e) = handshake(stream, peer, &server) {
                            tracing::warn!("sink `{}`: subscriber {peer} not served: {e}", server.settings.name);
                        }
                        server.handshaking.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    tracing::warn!("sink `{}`: accept failed: {e}", self.settings.name);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Checks a request's token and output; `Err` with the status and reason to send back.
    pub fn admit(&self, request: &Request) -> std::result::Result<(), (u16, String)> {
        self.settings.admit(request)
    }

    /// Registers an accepted subscriber and returns its end of the queue.
    pub fn subscribe(&self, peer: SocketAddr, request: &Request) -> SubscriberEnd {
        self.hub
            .add(&peer.to_string(), &request.output, request.slow, self.settings.queue)
    }

    /// Keeps a subscriber's writer thread, joined when the run ends.
    pub fn add_writer(&self, handle: JoinHandle<()>, socket: Option<TcpStream>) {
        let mut writers = self.writers.lock().unwrap();
        writers.retain(|(h, _)| !h.is_finished());
        writers.push((handle, socket));
    }
}

/// The writer of a live sink: encodes what someone subscribed to and publishes it.
pub struct LiveWriter {
    encoder: LiveEncoder,
    server: Arc<LiveServer>,
    acceptor: Option<JoinHandle<()>>,
    batches: u64,
}

impl LiveWriter {
    /// A writer for a stream of schema `input` served by `server`.
    pub fn new(input: Arc<Schema>, server: Arc<LiveServer>, acceptor: JoinHandle<()>) -> LiveWriter {
        LiveWriter {
            encoder: LiveEncoder::new(input),
            server,
            acceptor: Some(acceptor),
            batches: 0,
        }
    }
}

impl SinkWriter for LiveWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        self.write_owned(batch.clone())
    }

    fn write_owned(&mut self, batch: Batch) -> Result<()> {
        self.batches += 1;
        let output = LiveEncoder::output_of(&batch).to_string();
        if !self.server.hub.wants(&output) {
            return Ok(());
        }
        let record = self
            .encoder
            .encode(batch)
            .map_err(|m| EngineError::Runtime(format!("sink `{}`: {m}", self.server.settings.name)))?;
        self.server
            .hub
            .publish(&output, Arc::new(Published::new(record)), &self.server.settings.name);
        Ok(())
    }

    fn finish(mut self: Box<Self>, _failure: Option<&str>) -> Result<Vec<String>> {
        self.server.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // Closing the queues ends every subscriber's stream once it has drained.
        self.server.hub.close_all();
        let writers = std::mem::take(&mut *self.server.writers.lock().unwrap());
        let deadline = Instant::now() + DRAIN_GRACE;
        while Instant::now() < deadline && writers.iter().any(|(w, _)| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        for (w, socket) in writers {
            if !w.is_finished() {
                tracing::warn!(
                    "sink `{}`: a subscriber did not drain its queue within {} s of the end; disconnecting it",
                    self.server.settings.name,
                    DRAIN_GRACE.as_secs()
                );
                if let Some(s) = socket {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
            let _ = w.join();
        }
        Ok(vec![self.server.hub.summary(self.batches)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_options_are_named() {
        let r = Request::parse_line("alerts lz4 slow=drop_oldest token=s3cret").unwrap();
        assert_eq!((r.output.as_str(), r.lz4, r.slow), ("alerts", true, SlowPolicy::DropOldest));
        assert_eq!(r.token.as_deref(), Some("s3cret"));
        assert_eq!(Request::parse_line("frames").unwrap().slow, SlowPolicy::Disconnect);
        let e = Request::parse_line("alerts fast=yes").unwrap_err();
        assert!(e.contains("unknown option `fast=yes`"), "{e}");
        assert!(Request::parse_line("   ").is_err());
        let w = Request::parse_target("/windows?format=json&slow=drop_oldest").unwrap();
        assert_eq!(
            (w.output.as_str(), w.format, w.slow),
            ("windows", Format::Json, SlowPolicy::DropOldest)
        );
        assert!(Request::parse_target("/").is_err());
        assert!(Request::parse_target("/a/b").is_err());
        // Tokens arrive percent-encoded from browsers (`encodeURIComponent`).
        let t = Request::parse_target("/alerts?token=a%20b%3Bc%2Bd%26e&lz4").unwrap();
        assert_eq!((t.token.as_deref(), t.lz4), (Some("a b;c+d&e"), true));
    }

    #[test]
    fn tokens_are_required_off_loopback_and_compared_exactly() {
        assert!(check_bind(&"127.0.0.1:0".parse().unwrap(), None).is_ok());
        assert!(check_bind(&"0.0.0.0:0".parse().unwrap(), None).is_err());
        assert!(check_bind(&"0.0.0.0:0".parse().unwrap(), Some("")).is_err());
        assert!(check_bind(&"0.0.0.0:0".parse().unwrap(), Some("t")).is_ok());
        assert!(token_ok(None, None));
        assert!(token_ok(Some("abc"), Some("abc")));
        assert!(!token_ok(Some("abc"), Some("abd")));
        assert!(!token_ok(Some("abc"), Some("ab")));
        assert!(!token_ok(Some("abc"), None));
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts_disconnect_cuts_off() {
        let hub: Hub = Hub::default();
        let keep = hub.add("a", FRAMES, SlowPolicy::DropOldest, 3);
        let cut = hub.add("b", FRAMES, SlowPolicy::Disconnect, 3);
        let other = hub.add("c", "alerts", SlowPolicy::DropOldest, 3);
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![Field::new("x", DataType::UInt64, false)]));
        for i in 0..10u64 {
            let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt64Array::from(vec![i]))]).unwrap();
            hub.publish(FRAMES, Arc::new(Published::new(b)), "test");
        }
        let got: Vec<u64> = keep
            .rx
            .try_iter()
            .map(|b| b.batch.column(0).as_any().downcast_ref::<UInt64Array>().unwrap().value(0))
            .collect();
        assert_eq!(got, vec![7, 8, 9]);
        assert_eq!(keep.dropped.load(Ordering::Relaxed), 7);
        assert_eq!(cut.rx.try_iter().count(), 3);
        assert!(
            cut.rx.try_recv().is_err() && hub.len() == 2,
            "the disconnect subscriber is gone"
        );
        assert!(cut.cut_off.load(Ordering::Relaxed) && !keep.cut_off.load(Ordering::Relaxed));
        assert_eq!(other.rx.try_iter().count(), 0);
        assert_eq!(hub.cut_off.load(Ordering::Relaxed), 1);
        let b = RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![1, 2]))]).unwrap();
        let d = with_dropped_column(&b, 5).unwrap();
        assert_eq!(d.schema().field(1).name(), DROPPED_COLUMN);
        assert_eq!(d.num_columns(), 2);
    }

    #[test]
    fn a_published_batch_is_encoded_once_for_all_subscribers() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![Field::new("x", DataType::UInt64, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![4, 5]))]).unwrap();
        let published = Arc::new(Published::new(b));
        let made = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (published, made) = (published.clone(), made.clone());
                std::thread::spawn(move || {
                    published
                        .encoded(1, |b| {
                            made.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            Ok(vec![Buffer::from(vec![b.num_rows() as u8])])
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap()[0].as_slice(), [2u8]);
        }
        assert_eq!(made.load(Ordering::SeqCst), 1, "eight subscribers, one encoding");
        let other = published.encoded(0, |_| Err("no".into()));
        assert_eq!(other.unwrap_err(), "no", "each kind is its own encoding");
    }
}
