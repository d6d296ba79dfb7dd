//! `push`: rows handed over in-process by the program that embeds the engine (the Python
//! package's `Pipeline.push_source`, or Rust code), through a bounded queue.
//!
//! A producer calls [`producer`]`("NAME", capacity)` and [`Producer::push`]es [`PushChunk`]s;
//! the source called `NAME` (key `name`, default the source's own name) reads them in order on
//! worker 0 and cuts them into frames of at most `batch_rows` rows. The queue holds `queue`
//! chunks: `push` waits while it is full (the source's `overload` policy decides what happens
//! when the pipeline itself falls behind). The stream ends when every producer has closed (or
//! been dropped) and the queue is empty. A chunk's values are not copied when pushed: the
//! producer hands over an owner of the memory ([`RowData`]) and the source copies one frame at a
//! time out of it, so a large array costs no second copy of itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::waker::WakerSlot;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError};
use neurostream_engine::{
    Batch, EngineError, Frame, Marker, NodeConfig, NodeContext, Result, RowIndex, Schema, Source, SourceKind, SourceReader,
    SourceWaker, WorkerPos,
};
use serde::{Deserialize, Serialize};

/// What the rows of a `push` source are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushLayout {
    /// Signal samples, `(n_samples, n_channels)`; event time = sample index.
    #[default]
    Signal,
    /// Model activations, `(n_tokens, d_model)`, with `seq_id` and `pos` per row.
    Activations,
}

/// Configuration of a `push` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushSourceConfig {
    /// The name producers push to (default: the source's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `signal` (samples × channels) or `activations` (tokens × d_model).
    #[serde(default)]
    pub layout: PushLayout,
    /// signal: channel names, in column order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// signal: sampling rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub sample_rate: Option<f64>,
    /// signal: unit of every channel (the engine's signals are in µV).
    #[serde(default = "default_unit")]
    pub unit: String,
    /// signal: each channel's unit, one per channel, instead of `unit` (e.g. EEG in µV and
    /// magnetometers in fT in one stream).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// signal: each channel's type (`eeg`, `mag`, `grad`, `eog`, `emg`, `ecg`, `stim`,
    /// `misc`, ...), one per channel; empty: unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_types: Vec<String>,
    /// activations: width of each row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_model: Option<usize>,
    /// activations: model name recorded in the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// activations: layer or hook name recorded in the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Chunks the queue holds before `push` waits.
    #[serde(default = "default_queue")]
    #[schemars(extend("x-unit" = "chunks"))]
    pub queue: usize,
    /// Most rows per frame; larger chunks are cut.
    #[serde(default = "default_batch_rows")]
    #[schemars(extend("x-unit" = "rows"))]
    pub batch_rows: usize,
}

fn default_unit() -> String {
    "uV".into()
}
fn default_queue() -> usize {
    64
}
fn default_batch_rows() -> usize {
    4096
}

impl NodeConfig for PushSourceConfig {
    const KIND: &'static str = "push";
}

impl PushSourceConfig {
    /// The schema of the frames this source produces, or what is missing.
    pub fn schema(&self) -> std::result::Result<Schema, String> {
        match self.layout {
            PushLayout::Signal => {
                if self.channels.is_empty() {
                    return Err("layout \"signal\" needs `channels` (the channel names)".into());
                }
                let rate = self.sample_rate.ok_or("layout \"signal\" needs `sample_rate` (Hz)")?;
                if !(rate > 0.0 && rate.is_finite()) {
                    return Err(format!("`sample_rate` must be a positive number of Hz, found {rate}"));
                }
                if self.d_model.is_some() {
                    return Err("`d_model` applies to layout \"activations\"; signals take `channels`".into());
                }
                if !self.channel_types.is_empty() && self.channel_types.len() != self.channels.len() {
                    return Err(format!(
                        "`channel_types` has {} entries for {} channels",
                        self.channel_types.len(),
                        self.channels.len()
                    ));
                }
                if !self.units.is_empty() && self.units.len() != self.channels.len() {
                    return Err(format!(
                        "`units` has {} entries for {} channels",
                        self.units.len(),
                        self.channels.len()
                    ));
                }
                let mut schema = Schema::signal(&self.channels, &self.unit, rate);
                for (c, kind) in schema.channels.iter_mut().zip(&self.channel_types) {
                    neurostream_engine::schema::check_channel_type(kind)?;
                    c.kind = kind.clone();
                }
                for (c, unit) in schema.channels.iter_mut().zip(&self.units) {
                    c.unit = unit.clone();
                }
                Ok(schema)
            }
            PushLayout::Activations => {
                let d = self.d_model.ok_or("layout \"activations\" needs `d_model`")?;
                if d == 0 {
                    return Err("`d_model` must be at least 1".into());
                }
                if !self.channels.is_empty()
                    || self.sample_rate.is_some()
                    || !self.channel_types.is_empty()
                    || !self.units.is_empty()
                {
                    return Err("`channels`, `channel_types`, `units` and `sample_rate` apply to layout \"signal\"".into());
                }
                Ok(Schema::activation(d, self.model.clone(), self.layer.clone()))
            }
        }
    }
}

/// Memory holding a chunk's values, row-major `rows × width` `f32`, owned by whoever produced it
/// (a `Vec`, or a handle keeping a foreign array alive). Read from the source's worker thread.
pub trait RowData: Send + Sync {
    /// The values.
    fn values(&self) -> &[f32];
}

impl RowData for Vec<f32> {
    fn values(&self) -> &[f32] {
        self
    }
}

/// The row index of a pushed chunk.
#[derive(Clone, Debug, PartialEq)]
pub enum PushIndex {
    /// Signal: the chunk continues the stream (its first sample follows the last one pushed).
    Continue,
    /// Activations: sequence id and position per row, and optionally the token text.
    Tokens {
        /// Sequence id per row.
        seq_id: Vec<u64>,
        /// Position within the sequence per row.
        pos: Vec<u32>,
        /// Token text per row.
        token: Option<Vec<String>>,
    },
    /// The producer could not make this chunk (e.g. an unreadable Arrow batch): the run fails
    /// with this message.
    Failed(String),
}

/// One block of rows handed to a `push` source.
pub struct PushChunk {
    /// The values, `rows × width`.
    pub data: Arc<dyn RowData>,
    /// Rows in the chunk.
    pub rows: usize,
    /// Row index (signals continue; activations carry `seq_id`/`pos`).
    pub index: PushIndex,
    /// Signal markers, their `row` relative to the chunk's first row.
    pub markers: Vec<Marker>,
}

/// A queue between producers and the source that reads it.
struct Queue {
    tx: Sender<PushChunk>,
    rx: Receiver<PushChunk>,
    waker: WakerSlot,
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        let (tx, rx) = bounded(capacity.max(1));
        Queue {
            tx,
            rx,
            waker: WakerSlot::default(),
        }
    }
}

/// Queues by name, until the source opens (and takes the receiving end).
fn queues() -> &'static Mutex<HashMap<String, Queue>> {
    static QUEUES: OnceLock<Mutex<HashMap<String, Queue>>> = OnceLock::new();
    QUEUES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The producing end of the queue of the `push` source called `name` (created with room for
/// `capacity` chunks when it does not exist yet). Clone it to push from several threads.
pub fn producer(name: &str, capacity: usize) -> Producer {
    let mut q = queues().lock().unwrap();
    let queue = q.entry(name.to_string()).or_insert_with(|| Queue::new(capacity));
    Producer {
        name: name.to_string(),
        tx: Some(queue.tx.clone()),
        waker: queue.waker.clone(),
    }
}

/// Why a push did not go through.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue stayed full for the whole time-out.
    Timeout,
    /// Nothing reads the queue any more: the run ended or failed.
    Disconnected,
    /// This producer was closed.
    Closed,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushError::Timeout => "the queue stayed full (the pipeline is behind or not running)",
            PushError::Disconnected => "the pipeline is no longer reading (the run ended or failed)",
            PushError::Closed => "this source was closed",
        })
    }
}

/// A producer of a `push` source; dropping or [`Producer::close`]-ing every producer ends the
/// stream once the source has read what is queued.
pub struct Producer {
    name: String,
    tx: Option<Sender<PushChunk>>,
    waker: WakerSlot,
}

impl Clone for Producer {
    fn clone(&self) -> Self {
        Producer {
            name: self.name.clone(),
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.close();
    }
}

impl Producer {
    /// Queues `chunk`, waiting up to `timeout` (forever when `None`) while the queue is full.
    /// A chunk that was not queued comes back with the reason.
    pub fn push(&self, chunk: PushChunk, timeout: Option<Duration>) -> std::result::Result<(), (PushError, Box<PushChunk>)> {
        let Some(tx) = self.tx.as_ref() else {
            return Err((PushError::Closed, Box::new(chunk)));
        };
        match timeout {
            None => tx.send(chunk).map_err(|e| (PushError::Disconnected, Box::new(e.0))),
            Some(t) => tx.send_timeout(chunk, t).map_err(|e| match e {
                SendTimeoutError::Timeout(c) => (PushError::Timeout, Box::new(c)),
                SendTimeoutError::Disconnected(c) => (PushError::Disconnected, Box::new(c)),
            }),
        }?;
        self.waker.wake();
        Ok(())
    }

    /// Chunks waiting in the queue.
    pub fn pending(&self) -> usize {
        self.tx.as_ref().map_or(0, |t| t.len())
    }

    /// Ends this producer's part of the stream. When the source has not opened yet, the queue
    /// keeps what was pushed for it.
    pub fn close(&mut self) {
        if self.tx.take().is_some() {
            self.waker.wake();
        }
    }

    /// True after [`Producer::close`].
    pub fn is_closed(&self) -> bool {
        self.tx.is_none()
    }
}

/// The `push` source kind.
pub struct PushSourceKind;

impl SourceKind for PushSourceKind {
    type Config = PushSourceConfig;

    fn describe(&self) -> &'static str {
        "rows pushed in-process by the embedding program (Python: numpy arrays, MNE, PyTorch hooks), bounded queue"
    }
    fn build(&self, cfg: PushSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if cfg.batch_rows == 0 {
            return Err(EngineError::config(ctx.label, "`batch_rows` must be at least 1"));
        }
        if cfg.queue == 0 {
            return Err(EngineError::config(ctx.label, "`queue` must be at least 1 chunk"));
        }
        let schema = cfg.schema().map_err(|m| EngineError::config(ctx.label, m))?;
        Ok(Arc::new(PushSource {
            name: cfg.name.clone().unwrap_or_else(|| ctx.name.to_string()),
            stream: Arc::from(ctx.name),
            schema: Arc::new(schema),
            queue: cfg.queue,
            batch_rows: cfg.batch_rows,
        }))
    }
}

struct PushSource {
    name: String,
    stream: Arc<str>,
    schema: Arc<Schema>,
    queue: usize,
    batch_rows: usize,
}

impl Source for PushSource {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        None
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        // One queue, one reader: worker 0 reads; the others end at once.
        let (rx, waker) = if worker.index == 0 {
            let mut q = queues().lock().unwrap();
            let queue = q.remove(&self.name).unwrap_or_else(|| Queue::new(self.queue));
            // Only producers' senders remain: when they all close, the stream ends.
            drop(queue.tx);
            (Some(queue.rx), queue.waker)
        } else {
            (None, WakerSlot::default())
        };
        Ok(Box::new(PushReader {
            name: self.name.clone(),
            stream: self.stream.clone(),
            schema: self.schema.clone(),
            batch_rows: self.batch_rows,
            rx,
            waker,
            current: None,
            error: None,
            next_row: 0,
            chunks: 0,
        }))
    }
}

/// A chunk being cut into frames: the chunk and the first row not yet emitted.
struct Current {
    chunk: PushChunk,
    at: usize,
}

struct PushReader {
    name: String,
    stream: Arc<str>,
    schema: Arc<Schema>,
    batch_rows: usize,
    /// `None` once the stream has ended (or on workers other than 0).
    rx: Option<Receiver<PushChunk>>,
    /// Where producers find this reader's waker.
    waker: WakerSlot,
    current: Option<Current>,
    /// A bad chunk seen by `ready`, reported by the next `next_batch`.
    error: Option<EngineError>,
    /// Event time of the next row: sample index (signals) or row ordinal (activations).
    next_row: u64,
    chunks: u64,
}

impl PushReader {
    /// Takes the next chunk off the queue without waiting; false when none is there yet. Checks
    /// its shape, so a bad chunk fails the run naming the source and the chunk.
    fn fetch(&mut self) -> Result<bool> {
        loop {
            if self.current.is_some() {
                return Ok(true);
            }
            let Some(rx) = &self.rx else { return Ok(false) };
            match rx.try_recv() {
                Ok(chunk) => self.accept(chunk)?,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => {
                    self.rx = None;
                    return Ok(false);
                }
            }
        }
    }

    /// Makes `chunk` the current one (empty chunks are skipped) after checking its shape.
    fn accept(&mut self, chunk: PushChunk) -> Result<()> {
        self.chunks += 1;
        self.check(&chunk)?;
        if chunk.rows > 0 {
            self.current = Some(Current { chunk, at: 0 });
        }
        Ok(())
    }

    fn check(&self, c: &PushChunk) -> Result<()> {
        let width = self.schema.width();
        let at = || format!("push source `{}`, chunk {}", self.name, self.chunks);
        if c.data.values().len() != c.rows * width {
            return Err(EngineError::Shape(format!(
                "{}: {} values for {} rows of {width} columns (expected {})",
                at(),
                c.data.values().len(),
                c.rows,
                c.rows * width
            )));
        }
        if let PushIndex::Failed(message) = &c.index {
            return Err(EngineError::Runtime(format!("{}: {message}", at())));
        }
        match (&c.index, self.schema.is_signal()) {
            (PushIndex::Failed(_), _) => {}
            (PushIndex::Continue, true) => {}
            (PushIndex::Tokens { seq_id, pos, token }, false) => {
                if seq_id.len() != c.rows || pos.len() != c.rows || token.as_ref().is_some_and(|t| t.len() != c.rows) {
                    return Err(EngineError::Shape(format!(
                        "{}: seq_id, pos and token must have one entry per row ({} rows)",
                        at(),
                        c.rows
                    )));
                }
            }
            (PushIndex::Continue, false) => {
                return Err(EngineError::Shape(format!("{}: activation rows need seq_id and pos", at())))
            }
            (PushIndex::Tokens { .. }, true) => {
                return Err(EngineError::Shape(format!("{}: signal rows take no seq_id/pos", at())))
            }
        }
        if let Some(m) = c.markers.iter().find(|m| m.row as usize >= c.rows) {
            return Err(EngineError::Shape(format!(
                "{}: marker `{}` at row {} is past the chunk's {} rows",
                at(),
                m.label,
                m.row,
                c.rows
            )));
        }
        Ok(())
    }
}

impl SourceReader for PushReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        // The runtime asks only when `ready`, so this wait is short.
        while !self.fetch()? {
            let Some(rx) = &self.rx else { return Ok(None) };
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(chunk) => self.accept(chunk)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.rx = None,
            }
        }
        let cur = self.current.as_mut().expect("fetched");
        let width = self.schema.width();
        let (a, b) = (cur.at, (cur.at + self.batch_rows).min(cur.chunk.rows));
        let data = cur.chunk.data.values()[a * width..b * width].to_vec();
        let time = self.next_row;
        let index = match &cur.chunk.index {
            PushIndex::Continue | PushIndex::Failed(_) => {
                RowIndex::Samples((0..(b - a) as i64).map(|i| time as i64 + i).collect())
            }
            PushIndex::Tokens { seq_id, pos, token } => RowIndex::Tokens {
                seq_id: seq_id[a..b].to_vec(),
                pos: pos[a..b].to_vec(),
                token: token.as_ref().map(|t| t[a..b].to_vec()),
                time: None,
            },
        };
        let mut frame = Frame::new(self.stream.clone(), self.schema.clone(), index, data)?;
        frame.markers = cur
            .chunk
            .markers
            .iter()
            .filter(|m| (a..b).contains(&(m.row as usize)))
            .map(|m| Marker {
                row: m.row - a as u32,
                ..m.clone()
            })
            .collect();
        cur.at = b;
        if cur.at >= cur.chunk.rows {
            self.current = None;
        }
        self.next_row += (b - a) as u64;
        Ok(Some((time, Batch::Dense(frame))))
    }

    fn next_time(&self) -> Option<u64> {
        (self.rx.is_some() || self.current.is_some()).then_some(self.next_row)
    }

    fn ready(&mut self) -> bool {
        match self.fetch() {
            Ok(true) => true,
            Ok(false) => self.rx.is_none(),
            Err(e) => {
                self.error = Some(e);
                true
            }
        }
    }

    fn location(&self) -> String {
        format!("push source `{}`, chunk {}", self.name, self.chunks)
    }

    fn set_waker(&mut self, waker: SourceWaker) -> bool {
        self.waker.set(waker);
        true
    }
}
