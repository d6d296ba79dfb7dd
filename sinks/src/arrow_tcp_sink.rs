//! `arrow_tcp` sink: live consumers subscribe over TCP and receive a stream's batches as they
//! are produced, as an Arrow IPC stream.
//!
//! Protocol: a subscriber connects and sends one line naming what it wants: a table of a
//! result-table stream (`alerts`, `windows`, ...), or `frames` for a stream of frames
//! (activations, features, signals, token scalars, written in the Parquet layouts). The sink
//! answers one line, `OK` or `ERR <reason>`, then (after `OK`) an Arrow IPC stream of every
//! matching batch from then on, ending with the IPC end-of-stream marker when the run ends.
//!
//! Subscribers never slow the pipeline down: each has a bounded queue (`queue_batches`); one
//! that falls that far behind, or disconnects, is dropped with a logged reason and the others
//! and every other sink go on. Binds 127.0.0.1 by default.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use neurostream_engine::layout::{arrow_schema, frame_to_batch, sparse_to_batch, EncodeOptions};
use neurostream_engine::{
    parse_config, Batch, ConfigTable, EngineError, NodeConfig, NodeContext, Placement, Result, RowIndex, Schema, Sink, SinkKind,
    SinkWriter, StreamKind, WorkerPos,
};
use serde::{Deserialize, Serialize};

/// What a frame stream's subscribers ask for.
pub const FRAMES: &str = "frames";

/// Configuration of an `arrow_tcp` sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    pub wait_timeout_s: f64,
    /// Batches queued per subscriber before it is dropped as too slow (default 1024).
    #[serde(default = "default_queue")]
    pub queue_batches: usize,
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
    fn kind(&self) -> &'static str {
        "arrow_tcp"
    }
    fn describe(&self) -> &'static str {
        "live consumers: subscribers receive a table (e.g. alerts) or the frames as an Arrow IPC stream over TCP"
    }
    fn build(&self, config: ConfigTable, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let cfg: ArrowTcpSinkConfig = parse_config(config, ctx)?;
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        let listen: SocketAddr = match cfg.listen.parse() {
            Ok(a) => a,
            Err(e) => return fail(format!("`listen` {}: {e} (expected IP:PORT)", cfg.listen)),
        };
        if cfg.queue_batches == 0 {
            return fail("`queue_batches` must be at least 1".into());
        }
        if !(cfg.wait_timeout_s > 0.0 && cfg.wait_timeout_s.is_finite()) {
            return fail("`wait_timeout_s` must be a positive number of seconds".into());
        }
        let offered = match &input.kind {
            StreamKind::Tables { tables, .. } => tables.clone(),
            _ => vec![FRAMES.to_string()],
        };
        Ok(Arc::new(ArrowTcpSink {
            name: ctx.name.to_string(),
            listen,
            address_file: cfg.address_file.as_deref().map(|p| ctx.resolve(p)),
            input: input.clone(),
            offered,
            cfg,
        }))
    }
}

struct ArrowTcpSink {
    name: String,
    listen: SocketAddr,
    address_file: Option<std::path::PathBuf>,
    input: Arc<Schema>,
    offered: Vec<String>,
    cfg: ArrowTcpSinkConfig,
}

/// A registered subscriber: what it wants and its queue.
struct Subscriber {
    peer: SocketAddr,
    wants: String,
    tx: Sender<Arc<RecordBatch>>,
}

/// State shared by the writer and the accepting thread.
struct Shared {
    subscribers: Mutex<Vec<Subscriber>>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    served: AtomicUsize,
    stop: AtomicBool,
}

impl Sink for ArrowTcpSink {
    fn placement(&self) -> Placement {
        Placement::Single
    }

    fn open(&self, _worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        let listener = TcpListener::bind(self.listen)
            .map_err(|e| EngineError::Runtime(format!("sink `{}`: cannot listen on {}: {e}", self.name, self.listen)))?;
        let local = listener.local_addr().map_err(|e| EngineError::Runtime(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| EngineError::Runtime(e.to_string()))?;
        if let Some(path) = &self.address_file {
            neurostream_engine::net::write_address_file(path, local)?;
        }
        tracing::info!(
            "sink `{}`: serving {} to subscribers on {local}",
            self.name,
            self.offered.join(", ")
        );
        let shared = Arc::new(Shared {
            subscribers: Mutex::new(Vec::new()),
            writers: Mutex::new(Vec::new()),
            served: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let (shared, offered, name, queue) = (
                shared.clone(),
                self.offered.clone(),
                self.name.clone(),
                self.cfg.queue_batches,
            );
            std::thread::spawn(move || accept_loop(listener, shared, offered, name, queue))
        };
        if self.cfg.wait_for_subscribers > 0 {
            let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.wait_timeout_s);
            while shared.subscribers.lock().unwrap().len() < self.cfg.wait_for_subscribers {
                if Instant::now() > deadline {
                    shared.stop.store(true, Ordering::SeqCst);
                    return Err(EngineError::Runtime(format!(
                        "sink `{}`: {} of {} subscribers connected to {local} within {} s (wait_for_subscribers)",
                        self.name,
                        shared.subscribers.lock().unwrap().len(),
                        self.cfg.wait_for_subscribers,
                        self.cfg.wait_timeout_s
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(Box::new(LiveWriter {
            name: self.name.clone(),
            input: self.input.clone(),
            frames: None,
            shared,
            acceptor: Some(acceptor),
            batches: 0,
            dropped: 0,
        }))
    }
}

/// Accepts connections until told to stop; each gets a thread that reads its request.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>, offered: Vec<String>, name: String, queue: usize) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let (shared, offered, name) = (shared.clone(), offered.clone(), name.clone());
                std::thread::spawn(move || {
                    if let Err(e) = handshake(stream, peer, &shared, &offered, queue) {
                        tracing::warn!("sink `{name}`: subscriber {peer} not served: {e}");
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                tracing::warn!("sink `{name}`: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Reads the subscriber's request line, answers, and registers it with a writer thread.
fn handshake(stream: TcpStream, peer: SocketAddr, shared: &Shared, offered: &[String], queue: usize) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // A subscriber that stops reading without leaving cannot hold the end of the run forever.
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    let wants = line.trim().to_string();
    let mut out = BufWriter::new(stream);
    if !offered.contains(&wants) {
        let reason = format!("no `{wants}` here; ask for one of: {}", offered.join(", "));
        writeln!(out, "ERR {reason}")?;
        out.flush()?;
        return Err(std::io::Error::other(reason));
    }
    writeln!(out, "OK")?;
    out.flush()?;
    let (tx, rx) = bounded(queue);
    let handle = std::thread::spawn(move || serve(out, rx, peer));
    shared.writers.lock().unwrap().push(handle);
    shared.subscribers.lock().unwrap().push(Subscriber { peer, wants, tx });
    shared.served.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Writes a subscriber's batches as one IPC stream (its schema from the first batch) until the
/// queue closes, then the end-of-stream marker. A write error means the subscriber left.
fn serve(out: BufWriter<TcpStream>, rx: Receiver<Arc<RecordBatch>>, peer: SocketAddr) {
    let mut out = Some(out);
    let mut writer: Option<StreamWriter<BufWriter<TcpStream>>> = None;
    let result = (|| -> std::result::Result<(), arrow::error::ArrowError> {
        for batch in rx.iter() {
            if writer.is_none() {
                writer = Some(StreamWriter::try_new(out.take().unwrap(), &batch.schema())?);
            }
            let w = writer.as_mut().unwrap();
            w.write(&batch)?;
            w.flush()?;
        }
        if let Some(w) = writer.as_mut() {
            w.finish()?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::info!("subscriber {peer} left: {e}");
    }
}

struct LiveWriter {
    name: String,
    input: Arc<Schema>,
    /// Frame streams: the Arrow schema and options, fixed by the first frame.
    frames: Option<(Arc<arrow::datatypes::Schema>, EncodeOptions)>,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    batches: u64,
    dropped: usize,
}

impl LiveWriter {
    fn encode(&mut self, batch: &Batch) -> std::result::Result<(String, RecordBatch), String> {
        if let Batch::Table(t) = batch {
            return Ok((t.table.to_string(), t.data.clone()));
        }
        if self.frames.is_none() {
            let timed = match batch {
                Batch::Dense(f) => matches!(f.index, RowIndex::Tokens { time: Some(_), .. }),
                Batch::Sparse(f) => matches!(f.index, RowIndex::Tokens { time: Some(_), .. }),
                Batch::Table(_) => false,
            };
            let opts = EncodeOptions {
                markers: true,
                tokens: true,
                time: timed,
            };
            self.frames = Some((arrow_schema(&self.input, &opts), opts));
        }
        let (schema, opts) = self.frames.as_ref().unwrap();
        let record = match batch {
            Batch::Dense(f) => frame_to_batch(f, schema, opts)?,
            Batch::Sparse(f) => sparse_to_batch(f, schema)?,
            Batch::Table(_) => unreachable!(),
        };
        Ok((FRAMES.to_string(), record))
    }
}

impl SinkWriter for LiveWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        if self.shared.subscribers.lock().unwrap().is_empty() {
            return Ok(());
        }
        let (key, record) = self
            .encode(batch)
            .map_err(|m| EngineError::Runtime(format!("sink `{}`: {m}", self.name)))?;
        let record = Arc::new(record);
        let mut subs = self.shared.subscribers.lock().unwrap();
        let name = &self.name;
        let before = subs.len();
        subs.retain(|s| {
            if s.wants != key {
                return true;
            }
            match s.tx.try_send(record.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        "sink `{name}`: subscriber {} dropped: {} batches of `{}` queued unread (too slow)",
                        s.peer,
                        s.tx.len(),
                        s.wants
                    );
                    false
                }
                Err(TrySendError::Disconnected(_)) => {
                    tracing::info!("sink `{name}`: subscriber {} disconnected", s.peer);
                    false
                }
            }
        });
        self.dropped += before - subs.len();
        self.batches += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>, _failure: Option<&str>) -> Result<Vec<String>> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // Closing the queues ends every subscriber's stream once it has drained.
        self.shared.subscribers.lock().unwrap().clear();
        let writers: Vec<JoinHandle<()>> = std::mem::take(&mut *self.shared.writers.lock().unwrap());
        for w in writers {
            let _ = w.join();
        }
        Ok(vec![format!(
            "{} subscriber(s) served {} batches; {} dropped (slow or disconnected)",
            self.shared.served.load(Ordering::SeqCst),
            self.batches,
            self.dropped
        )])
    }
}
