//! `lsl`: a Lab Streaming Layer inlet as a signal source (liblsl loaded at run time, see
//! `neurostream_engine::lsl`). Resolves a stream by name or type, pulls float32 chunks on a
//! thread of its own that wakes the worker as they arrive (`puller`; with a marker stream the
//! worker also polls, since a chunk waits `marker_wait_ms` for its markers), maps time stamps to
//! the local clock (liblsl's clock synchronization)
//! and optionally dejitters them; a marker stream's strings become markers on the samples they
//! fall on. A stream that goes quiet for `stream_timeout_s` ends the source (or fails the run),
//! with the reason logged, instead of hanging.
//!
//! Rows are indexed, with `timestamps = "lsl"` (default), by `round(t · fs)` of each sample's
//! corrected LSL time stamp `t` (seconds on this machine's LSL clock), so the signal layout's
//! `time` column carries LSL time and gaps show; with `timestamps = "count"`, by the sample's
//! position in the stream.

mod puller;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::TryRecvError;
use puller::{Pulled, Puller};

use neurostream_engine::lsl::{self, Api, Handle};

use neurostream_engine::{
    Batch, Channel, EngineError, Frame, Marker, NodeConfig, NodeContext, Result, RowIndex, Schema, Source, SourceKind,
    SourceReader, SourceWaker, StreamKind, WorkerPos,
};
use serde::{Deserialize, Serialize};

/// Configuration of an `lsl` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LslSourceConfig {
    /// The stream's name (give `name` or `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The stream's type, e.g. `EEG` (the first stream of that type).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub stream_type: Option<String>,
    /// A marker stream (string channel) whose samples become markers, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markers: Option<String>,
    /// Seconds to wait for the streams to be found (default 10).
    #[serde(default = "default_resolve")]
    #[schemars(extend("x-unit" = "s"))]
    pub resolve_timeout_s: f64,
    /// Samples per frame at most (default 32); a frame holds what arrived, up to this.
    #[serde(default = "default_chunk")]
    #[schemars(extend("x-unit" = "samples"))]
    pub chunk: usize,
    /// `lsl` (default): rows indexed by their corrected LSL time; `count`: by position.
    #[serde(default = "default_timestamps")]
    pub timestamps: String,
    /// Smooth the time stamps (liblsl's dejittering; default true).
    #[serde(default = "yes")]
    pub dejitter: bool,
    /// Seconds without a sample after which the stream counts as stopped (default 5).
    #[serde(default = "default_timeout")]
    #[schemars(extend("x-unit" = "s"))]
    pub stream_timeout_s: f64,
    /// When the stream stops: `end` (default; the pipeline completes) or `error`.
    #[serde(default = "default_on_timeout")]
    pub on_timeout: String,
    /// With `markers`: hold each chunk this long after its last sample's time stamp so markers
    /// (which travel on their own connection) are in before it leaves (default 20 ms; the
    /// latency cost of exact marker placement).
    #[serde(default = "default_marker_wait")]
    #[schemars(extend("x-unit" = "ms"))]
    pub marker_wait_ms: f64,
    /// Stop after this many seconds of data (default: until the stream stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "s"))]
    pub duration_s: Option<f64>,
    /// Path of liblsl (default: `$NEUROSTREAM_LIBLSL`, then the system's, then pylsl's in `$VIRTUAL_ENV` or a `.venv` here or above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liblsl: Option<String>,
}

fn default_resolve() -> f64 {
    10.0
}
fn default_chunk() -> usize {
    32
}
fn default_timestamps() -> String {
    "lsl".into()
}
fn yes() -> bool {
    true
}
fn default_timeout() -> f64 {
    5.0
}
fn default_marker_wait() -> f64 {
    20.0
}
fn default_on_timeout() -> String {
    "end".into()
}

impl NodeConfig for LslSourceConfig {
    const KIND: &'static str = "lsl";
}

/// The `lsl` source kind.
pub struct LslSourceKind;

/// Resolves one stream by `prop` = `value` within `timeout` seconds.
fn resolve(api: &Api, prop: &str, value: &str, timeout: f64) -> std::result::Result<Handle, String> {
    let mut found: Handle = std::ptr::null_mut();
    let (p, v) = (lsl::cstr(prop), lsl::cstr(value));
    // SAFETY: one-element buffer, valid C strings.
    let n = unsafe { (api.lsl_resolve_byprop)(&mut found, 1, p.as_ptr(), v.as_ptr(), 1, timeout) };
    if n < 1 || found.is_null() {
        return Err(format!(
            "no LSL stream with {prop} `{value}` found within {timeout} s (is the outlet running? LSL discovery \
             follows lsl_api.cfg: ResolveScope, KnownPeers)"
        ));
    }
    Ok(found)
}

impl SourceKind for LslSourceKind {
    type Config = LslSourceConfig;

    fn describe(&self) -> &'static str {
        "Lab Streaming Layer inlet: float32 signal chunks with corrected time stamps, marker streams as markers"
    }
    fn build(&self, cfg: LslSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        if cfg.name.is_some() == cfg.stream_type.is_some() {
            return Err(fail("give the stream's `name` or its `type` (one of them)".into()));
        }
        if cfg.chunk == 0 || cfg.stream_timeout_s.is_nan() || cfg.stream_timeout_s <= 0.0 {
            return Err(fail("`chunk` and `stream_timeout_s` must be positive".into()));
        }
        if !matches!(cfg.timestamps.as_str(), "lsl" | "count") || !matches!(cfg.on_timeout.as_str(), "end" | "error") {
            return Err(fail("`timestamps` is lsl or count; `on_timeout` is end or error".into()));
        }
        let api = lsl::load(cfg.liblsl.as_deref()).map_err(fail)?;
        let (prop, value) = match (&cfg.name, &cfg.stream_type) {
            (Some(n), _) => ("name", n.clone()),
            (_, Some(t)) => ("type", t.clone()),
            _ => unreachable!(),
        };
        let info = resolve(&api, prop, &value, cfg.resolve_timeout_s).map_err(fail)?;
        // SAFETY: `info` is a valid stream info from resolve.
        let (channels, rate, format, name) = unsafe {
            (
                (api.lsl_get_channel_count)(info),
                (api.lsl_get_nominal_srate)(info),
                (api.lsl_get_channel_format)(info),
                lsl::string((api.lsl_get_name)(info)),
            )
        };
        // SAFETY: as above.
        unsafe { (api.lsl_destroy_streaminfo)(info) };
        if format == lsl::CFT_STRING {
            return Err(fail(format!(
                "stream `{name}` carries strings (a marker stream): give it as `markers` of a signal source"
            )));
        }
        if !rate.is_finite() || rate <= 0.0 || channels < 1 {
            return Err(fail(format!(
                "stream `{name}` has {channels} channels at nominal rate {rate} Hz: a signal stream needs a regular rate"
            )));
        }
        if channels as usize > crate::MAX_CHANNELS {
            return Err(fail(format!(
                "stream `{name}` declares {channels} channels; at most {} are accepted",
                crate::MAX_CHANNELS
            )));
        }
        // The channel labels come with the full info of an opened inlet.
        let (probe, labels) = open_inlet(&api, &cfg, prop, &value).map_err(fail)?;
        // SAFETY: valid inlet, destroyed once.
        unsafe { (api.lsl_destroy_inlet)(probe) };
        if let Some(m) = &cfg.markers {
            let info = resolve(&api, "name", m, cfg.resolve_timeout_s).map_err(fail)?;
            // SAFETY: valid info.
            unsafe { (api.lsl_destroy_streaminfo)(info) };
        }
        tracing::info!("lsl: stream `{name}`, {channels} channels at {rate} Hz");
        let (schema, factors) = schema_with(channels as usize, rate, &labels);
        Ok(Arc::new(LslSource {
            name: ctx.name.into(),
            schema,
            factors: factors.iter().any(|&f| f != 1.0).then_some(Arc::new(factors)),
            api,
            prop: prop.into(),
            value,
            channels: channels as usize,
            rate,
            cfg,
        }))
    }
}

/// Opens an inlet on the stream with `prop` = `value`: resolved, post-processing set, opened.
/// Returns it with the channel labels and units of its description (empty when none).
fn open_inlet(api: &Api, cfg: &LslSourceConfig, prop: &str, value: &str) -> std::result::Result<(Handle, Vec<Channel>), String> {
    let info = resolve(api, prop, value, cfg.resolve_timeout_s)?;
    // SAFETY: valid info; the inlet copies what it needs.
    let inlet = unsafe { (api.lsl_create_inlet)(info, 360, 0, 1) };
    // SAFETY: as above.
    unsafe { (api.lsl_destroy_streaminfo)(info) };
    if inlet.is_null() {
        return Err(format!("could not open an inlet on LSL stream {prop} `{value}`"));
    }
    let mut ec = 0;
    // SAFETY: valid inlet.
    let full = unsafe { (api.lsl_get_fullinfo)(inlet, cfg.resolve_timeout_s, &mut ec) };
    let mut labels = Vec::new();
    if ec == 0 && !full.is_null() {
        // channels/channel/{label, unit, type} in the stream's description (the XDF
        // convention), when given.
        // SAFETY: XML handles from a valid info.
        unsafe {
            let desc = (api.lsl_get_desc)(full);
            let chans = (api.lsl_child)(desc, lsl::cstr("channels").as_ptr());
            let mut ch = (api.lsl_child)(chans, lsl::cstr("channel").as_ptr());
            while (api.lsl_empty)(ch) == 0 {
                labels.push(Channel {
                    name: lsl::string((api.lsl_child_value_n)(ch, lsl::cstr("label").as_ptr())),
                    unit: lsl::string((api.lsl_child_value_n)(ch, lsl::cstr("unit").as_ptr())),
                    kind: lsl::string((api.lsl_child_value_n)(ch, lsl::cstr("type").as_ptr())).to_ascii_lowercase(),
                });
                ch = (api.lsl_next_sibling)(ch);
            }
            (api.lsl_destroy_streaminfo)(full);
        }
    }
    let mut flags = lsl::PROC_CLOCKSYNC | lsl::PROC_MONOTONIZE;
    if cfg.dejitter {
        flags |= lsl::PROC_DEJITTER;
    }
    // SAFETY: valid inlet.
    unsafe {
        (api.lsl_set_postprocessing)(inlet, flags);
        (api.lsl_open_stream)(inlet, cfg.resolve_timeout_s, &mut ec);
    }
    if ec != 0 {
        // SAFETY: valid inlet, destroyed once.
        unsafe { (api.lsl_destroy_inlet)(inlet) };
        return Err(format!("opening LSL stream {prop} `{value}`: {}", lsl::error_name(ec)));
    }
    Ok((inlet, labels))
}

/// The signal schema of `channels` channels at `rate` Hz named by `labels` (when it names
/// them all), else `ch1..`, in the engine's units, with the factor per channel that converts
/// the stream's values into them (volts, or MNE-LSL's power-of-ten units, become µV).
fn schema_with(channels: usize, rate: f64, labels: &[Channel]) -> (Arc<Schema>, Vec<f32>) {
    let named = labels.len() == channels && labels.iter().all(|c| !c.name.is_empty());
    let mut factors = Vec::with_capacity(channels);
    let channels = (0..channels)
        .map(|i| {
            let mut c = if named {
                labels[i].clone()
            } else {
                Channel {
                    name: format!("ch{}", i + 1),
                    ..labels.get(i).cloned().unwrap_or_default()
                }
            };
            let (unit, factor) = if c.unit.is_empty() {
                (String::new(), 1.0)
            } else {
                neurostream_engine::schema::to_engine_unit(&c.unit, &c.kind)
            };
            c.unit = unit;
            factors.push(factor as f32);
            c
        })
        .collect();
    let schema = Arc::new(Schema {
        kind: StreamKind::Signal {
            sample_rate: rate,
            row_rate: None,
        },
        channels,
    });
    (schema, factors)
}

/// A configured `lsl` source (the inlet opens in `open`).
pub struct LslSource {
    name: Arc<str>,
    schema: Arc<Schema>,
    /// Per channel: the factor into the engine's unit, when any is not 1.
    factors: Option<Arc<Vec<f32>>>,
    api: Arc<Api>,
    prop: String,
    value: String,
    channels: usize,
    rate: f64,
    cfg: LslSourceConfig,
}

impl Source for LslSource {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        None
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let label = format!("[sources.{}]", self.name);
        let fail = |m: String| EngineError::config(label.as_str(), m);
        let (puller, markers) = if worker.index == 0 {
            let (inlet, _) = open_inlet(&self.api, &self.cfg, &self.prop, &self.value).map_err(fail)?;
            let markers = match &self.cfg.markers {
                Some(m) => Some(open_inlet(&self.api, &self.cfg, "name", m).map_err(fail)?.0),
                None => None,
            };
            let puller = Puller::start(self.api.clone(), inlet, self.channels, self.cfg.chunk, &self.name)
                .map_err(|e| EngineError::Runtime(format!("lsl `{}`: cannot start its pulling thread: {e}", self.name)))?;
            (Some(puller), markers)
        } else {
            (None, None)
        };
        let schema = self.schema.clone();
        Ok(Box::new(LslReader {
            name: self.name.clone(),
            api: self.api.clone(),
            schema,
            factors: self.factors.clone(),
            channels: self.channels,
            rate: self.rate,
            cfg: self.cfg.clone(),
            puller,
            carried: None,
            marker_inlet: markers,
            staged: None,
            staged_stamps: Vec::new(),
            pending_markers: VecDeque::new(),
            last_data: Instant::now(),
            first_stamp: None,
            count: 0,
            last_index: -1,
            done: false,
            error: None,
            last_stamp: None,
            dropped: 0,
        }))
    }
}

struct LslReader {
    name: Arc<str>,
    api: Arc<Api>,
    schema: Arc<Schema>,
    factors: Option<Arc<Vec<f32>>>,
    channels: usize,
    rate: f64,
    cfg: LslSourceConfig,
    /// The data inlet, pulled on its own thread.
    puller: Option<Puller>,
    /// What the pulling thread handed over that did not fit the last frame: the next one's.
    carried: Option<Pulled>,
    marker_inlet: Option<Handle>,
    staged: Option<Frame>,
    /// The corrected LSL time stamps of the staged frame's samples.
    staged_stamps: Vec<f64>,
    /// Markers pulled but not yet attached: (LSL time, label).
    pending_markers: VecDeque<(f64, String)>,
    last_data: Instant,
    first_stamp: Option<f64>,
    count: u64,
    last_index: i64,
    done: bool,
    /// A failure found while polling, reported by the next `next_batch`.
    error: Option<EngineError>,
    /// The last sample's time stamp, and the samples missing between stamps so far.
    last_stamp: Option<f64>,
    dropped: u64,
}

// SAFETY: the marker inlet is used only by the worker that owns the reader (the data inlet by
// its pulling thread alone).
unsafe impl Send for LslReader {}

impl LslReader {
    fn pull_markers(&mut self) {
        let Some(m) = self.marker_inlet else { return };
        loop {
            let mut s: *mut std::ffi::c_char = std::ptr::null_mut();
            let mut ec = 0;
            // SAFETY: one string slot; liblsl allocates it, we free it with lsl_destroy_string.
            let t = unsafe { (self.api.lsl_pull_sample_str)(m, &mut s, 1, 0.0, &mut ec) };
            if t == 0.0 || s.is_null() {
                break;
            }
            // SAFETY: s is a NUL-terminated string from liblsl.
            let label = unsafe { lsl::string(s) };
            // SAFETY: freed once.
            unsafe { (self.api.lsl_destroy_string)(s) };
            self.pending_markers.push_back((t, label));
        }
    }

    /// Takes the next chunk the pulling thread handed over (up to `chunk` samples) into a
    /// staged frame.
    fn pull(&mut self) -> Result<()> {
        self.pull_markers();
        let Some(puller) = &self.puller else {
            self.done = true;
            return Ok(());
        };
        let next = match self.carried.take() {
            Some(chunk) => Ok(chunk),
            None => puller.rx.try_recv(),
        };
        let (mut data, mut stamps) = match next {
            Ok(Pulled::Chunk { data, stamps }) => (data, stamps),
            Ok(Pulled::Lost) | Err(TryRecvError::Disconnected) => return self.stopped("the outlet went away"),
            Err(TryRecvError::Empty) => {
                if self.last_data.elapsed().as_secs_f64() > self.cfg.stream_timeout_s {
                    let why = format!("no samples for {} s", self.cfg.stream_timeout_s);
                    return self.stopped(&why);
                }
                return Ok(());
            }
        };
        // What else has arrived joins this frame, up to `chunk` samples (a sender pushing one
        // sample at a time would otherwise make a frame per sample).
        while stamps.len() < self.cfg.chunk {
            match puller.rx.try_recv() {
                Ok(Pulled::Chunk { data: d, stamps: t }) if stamps.len() + t.len() <= self.cfg.chunk => {
                    data.extend(d);
                    stamps.extend(t);
                }
                Ok(other) => {
                    self.carried = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let rows = stamps.len();
        self.last_data = Instant::now();
        // Gaps in the time stamps are samples lost on the way (the sender's or liblsl's buffer
        // overflowed under load): counted and reported, never silent.
        let mut prev = self.last_stamp;
        for &t in &stamps {
            if let Some(p) = prev {
                let missing = ((t - p) * self.rate).round() as i64 - 1;
                if missing > 0 {
                    if self.dropped == 0 {
                        tracing::warn!(
                            "lsl `{}`: {missing} samples missing before LSL time {t:.3} (a buffer overflowed upstream); \
                             counting further gaps",
                            self.name
                        );
                    }
                    self.dropped += missing as u64;
                }
            }
            prev = Some(t);
        }
        self.last_stamp = prev;
        let first = *self.first_stamp.get_or_insert(stamps[0]);
        let mut index = Vec::with_capacity(rows);
        for &t in &stamps {
            let i = if self.cfg.timestamps == "lsl" {
                ((t * self.rate).round() as i64).max(self.last_index + 1)
            } else {
                self.count as i64
            };
            self.last_index = i;
            self.count += 1;
            index.push(i);
        }
        let mut values = data;
        if let Some(f) = &self.factors {
            for row in values.chunks_exact_mut(self.channels) {
                for (v, k) in row.iter_mut().zip(f.iter()) {
                    *v *= k;
                }
            }
        }
        let frame = Frame::new(self.name.clone(), self.schema.clone(), RowIndex::Samples(index), values)?;
        self.staged_stamps = stamps;
        if let Some(d) = self.cfg.duration_s {
            if self.staged_stamps[rows - 1] - first >= d {
                self.close();
                self.done = true;
            }
        }
        self.staged = Some(frame);
        Ok(())
    }

    /// Whether the staged frame may leave: without a marker stream at once; with one, once
    /// `marker_wait_ms` passed since its last sample's time stamp (markers travel on their own
    /// connection and may arrive a little after the samples they mark).
    fn release_due(&self) -> bool {
        if self.marker_inlet.is_none() || self.done {
            return true;
        }
        let last = self.staged_stamps.last().copied().unwrap_or(0.0);
        // SAFETY: plain clock read.
        let now = unsafe { (self.api.lsl_local_clock)() };
        now >= last + self.cfg.marker_wait_ms / 1e3
    }

    /// Puts the markers pulled so far on the staged frame's samples nearest them (a marker
    /// older than the frame goes on its first row).
    fn attach_markers(&mut self) {
        self.pull_markers();
        let Some(frame) = self.staged.as_mut() else { return };
        let stamps = &self.staged_stamps;
        let rows = stamps.len();
        let half = 0.5 / self.rate;
        while let Some((t, _)) = self.pending_markers.front() {
            if *t > stamps[rows - 1] + half {
                break;
            }
            let (t, label) = self.pending_markers.pop_front().unwrap();
            let after = stamps.partition_point(|s| *s < t);
            let row = if after > 0 && (after == rows || t - stamps[after - 1] < stamps[after] - t) {
                after - 1
            } else {
                after
            };
            frame.markers.push(Marker {
                row: row.min(rows - 1) as u32,
                label,
                duration_s: 0.0,
            });
        }
    }

    fn stopped(&mut self, why: &str) -> Result<()> {
        self.close();
        self.done = true;
        let msg = format!("lsl `{}`: stream stopped: {why} after {} samples", self.name, self.count);
        if self.cfg.on_timeout == "error" {
            return Err(EngineError::Runtime(msg));
        }
        tracing::warn!("{msg}; ending the source");
        Ok(())
    }

    fn close(&mut self) {
        // Dropping the puller stops its thread, which destroys the data inlet.
        self.puller = None;
        if let Some(h) = self.marker_inlet.take() {
            // SAFETY: destroyed once.
            unsafe { (self.api.lsl_destroy_inlet)(h) };
        }
    }
}

impl Drop for LslReader {
    fn drop(&mut self) {
        self.close();
        if self.dropped > 0 {
            tracing::warn!(
                "lsl `{}`: {} samples were missing from the stream (gaps in its time stamps)",
                self.name,
                self.dropped
            );
        }
    }
}

impl SourceReader for LslReader {
    fn ready(&mut self) -> bool {
        if self.staged.is_none() && !self.done {
            if let Err(e) = self.pull() {
                self.error = Some(e);
                self.done = true;
            }
        }
        (self.staged.is_some() && self.release_due()) || self.done
    }

    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.staged.is_none() && !self.done {
            self.pull()?;
        }
        self.attach_markers();
        Ok(self.staged.take().map(|f| {
            let t = match &f.index {
                RowIndex::Samples(s) => s[0].max(0) as u64,
                _ => 0,
            };
            (t, Batch::Dense(f))
        }))
    }

    fn next_time(&self) -> Option<u64> {
        if let Some(RowIndex::Samples(s)) = self.staged.as_ref().map(|f| &f.index) {
            return Some(s[0].max(0) as u64);
        }
        (!self.done).then_some((self.last_index + 1).max(0) as u64)
    }

    fn location(&self) -> String {
        format!("lsl `{}`, sample {}", self.name, self.count)
    }

    /// Woken by the pulling thread, except with a marker stream: a chunk then waits
    /// `marker_wait_ms` for its markers, which only polling sees pass.
    fn set_waker(&mut self, waker: SourceWaker) -> bool {
        match (&self.puller, &self.marker_inlet) {
            (Some(puller), None) => {
                puller.waker.set(waker);
                true
            }
            _ => false,
        }
    }
}
