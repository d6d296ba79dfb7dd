//! `lsl`: publishes a dense stream (decoder outputs, band powers, filtered signals) as a Lab
//! Streaming Layer outlet of float32 channels named like the stream's, each row one sample
//! stamped with the LSL clock when it is pushed; with `markers = true`, the rows' markers go to
//! a second, string outlet `NAME-markers`. liblsl is loaded at run time (see
//! `neurostream_engine::lsl`).

use std::sync::Arc;

use neurostream_engine::lsl::{self, Api, Handle};
use neurostream_engine::{
    Batch, EngineError, NodeConfig, NodeContext, Placement, Result, Schema, Sink, SinkKind, SinkWriter, WorkerPos,
};
use serde::{Deserialize, Serialize};

/// Configuration of an `lsl` sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LslSinkConfig {
    /// The outlet's stream name.
    pub name: String,
    /// Its type (default `Decisions`).
    #[serde(default = "default_type", rename = "type")]
    pub stream_type: String,
    /// Its source id (default `neurostream:NAME`, the same on every run), so consumers
    /// reconnect to it after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Nominal rate in Hz. Default: the stream's row rate: its sampling rate for signals, one
    /// row per step for windowed outputs (band power, decisions over sliding windows), 0
    /// (irregular) for epochs and for streams that are not signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub nominal_rate: Option<f64>,
    /// Also publish the rows' markers on a string outlet `NAME-markers`.
    #[serde(default)]
    pub markers: bool,
    /// Hold the first push until a consumer connects (to the data or, for a decoder, its class
    /// names; and to the markers with `markers`), for up to this many seconds (default 0:
    /// publish at once).
    #[serde(default)]
    #[schemars(extend("x-unit" = "s"))]
    pub wait_for_consumers_s: f64,
    /// Data the outlet buffers for each consumer: seconds at the nominal rate, or hundreds of
    /// samples for irregular streams (liblsl's convention; default 360). A consumer that falls
    /// further behind loses the oldest samples.
    #[serde(default = "default_buffered")]
    pub max_buffered: i32,
    /// After the stream ends, keep the outlet open while consumers stay connected, at most this
    /// many seconds, so they receive the tail (default 1 s).
    #[serde(default = "default_linger")]
    #[schemars(extend("x-unit" = "s"))]
    pub linger_s: f64,
    /// Path of liblsl (default: `$NEUROSTREAM_LIBLSL`, then the system's, then pylsl's in `$VIRTUAL_ENV` or a `.venv` here or above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liblsl: Option<String>,
}

fn default_type() -> String {
    "Decisions".into()
}
fn default_buffered() -> i32 {
    360
}
fn default_linger() -> f64 {
    1.0
}

impl NodeConfig for LslSinkConfig {
    const KIND: &'static str = "lsl";
}

/// The `lsl` sink kind.
pub struct LslSinkKind;

impl SinkKind for LslSinkKind {
    type Config = LslSinkConfig;

    fn describe(&self) -> &'static str {
        "Lab Streaming Layer outlet: each row a float32 sample, markers on a string outlet"
    }
    fn build(&self, cfg: LslSinkConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        if input.is_sparse() || input.width() == 0 {
            return Err(fail(format!(
                "an LSL outlet publishes dense rows; the input is {}",
                input.describe()
            )));
        }
        let non_negative = |v: f64| v >= 0.0 && v.is_finite();
        if !cfg.nominal_rate.is_none_or(non_negative) || !non_negative(cfg.linger_s) || !non_negative(cfg.wait_for_consumers_s) {
            return Err(fail(
                "`nominal_rate`, `linger_s` and `wait_for_consumers_s` must be >= 0".into(),
            ));
        }
        let api = lsl::load(cfg.liblsl.as_deref()).map_err(fail)?;
        Ok(Arc::new(LslSink {
            api,
            schema: input.clone(),
            cfg,
            name: ctx.name.to_string(),
        }))
    }
}

struct LslSink {
    api: Arc<Api>,
    schema: Arc<Schema>,
    cfg: LslSinkConfig,
    name: String,
}

impl LslSink {
    /// The data outlet's nominal rate: as configured, else the stream's row rate.
    fn nominal_rate(&self) -> f64 {
        self.cfg.nominal_rate.unwrap_or_else(|| self.schema.row_rate())
    }

    /// An outlet; `labels` gives each channel's (label, unit, type) for the XDF-standard
    /// `desc/channels/channel` metadata (an empty type is left out).
    fn outlet(
        &self,
        name: &str,
        stream_type: &str,
        channels: usize,
        format: i32,
        nominal_rate: f64,
        labels: &[(String, String, String)],
    ) -> Result<Handle> {
        let api = &self.api;
        // Companion outlets (`NAME-markers`, `NAME-class`) carry the main id with their suffix.
        let source_id = match &self.cfg.source_id {
            Some(id) => format!("{id}{}", name.strip_prefix(self.cfg.name.as_str()).unwrap_or_default()),
            None => format!("neurostream:{name}"),
        };
        let (n, t, s) = (lsl::cstr(name), lsl::cstr(stream_type), lsl::cstr(&source_id));
        // SAFETY: valid C strings; the info is owned by us until destroyed below.
        let info =
            unsafe { (api.lsl_create_streaminfo)(n.as_ptr(), t.as_ptr(), channels as i32, nominal_rate, format, s.as_ptr()) };
        if info.is_null() {
            return Err(EngineError::Runtime(format!(
                "sink `{}`: liblsl refused the stream info",
                self.name
            )));
        }
        // SAFETY: XML handles of a valid info; strings copied by liblsl.
        unsafe {
            let desc = (api.lsl_get_desc)(info);
            let chans = (api.lsl_append_child)(desc, lsl::cstr("channels").as_ptr());
            for (label, unit, kind) in labels {
                let ch = (api.lsl_append_child)(chans, lsl::cstr("channel").as_ptr());
                (api.lsl_append_child_value)(ch, lsl::cstr("label").as_ptr(), lsl::cstr(label).as_ptr());
                (api.lsl_append_child_value)(ch, lsl::cstr("unit").as_ptr(), lsl::cstr(unit).as_ptr());
                if !kind.is_empty() {
                    (api.lsl_append_child_value)(ch, lsl::cstr("type").as_ptr(), lsl::cstr(kind).as_ptr());
                }
            }
            let acquisition = (api.lsl_append_child)(desc, lsl::cstr("acquisition").as_ptr());
            (api.lsl_append_child_value)(
                acquisition,
                lsl::cstr("manufacturer").as_ptr(),
                lsl::cstr("neurostream").as_ptr(),
            );
            (api.lsl_append_child_value)(
                acquisition,
                lsl::cstr("model").as_ptr(),
                lsl::cstr(&format!("neurostream {} sink `{}`", env!("CARGO_PKG_VERSION"), self.name)).as_ptr(),
            );
        }
        // SAFETY: valid info; the outlet copies it.
        let outlet = unsafe { (api.lsl_create_outlet)(info, 0, self.cfg.max_buffered.max(1)) };
        // SAFETY: destroyed once.
        unsafe { (api.lsl_destroy_streaminfo)(info) };
        if outlet.is_null() {
            return Err(EngineError::Runtime(format!(
                "sink `{}`: could not create LSL outlet `{name}`",
                self.name
            )));
        }
        Ok(outlet)
    }
}

impl Sink for LslSink {
    fn placement(&self) -> Placement {
        Placement::Single
    }
    fn open(&self, _worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        let labels: Vec<(String, String, String)> = self
            .schema
            .channels
            .iter()
            .map(|c| (c.name.clone(), c.unit.clone(), c.kind.clone()))
            .collect();
        let outlet = self.outlet(
            &self.cfg.name,
            &self.cfg.stream_type,
            self.schema.width(),
            lsl::CFT_FLOAT32,
            self.nominal_rate(),
            &labels,
        )?;
        let markers = if self.cfg.markers {
            let name = format!("{}-markers", self.cfg.name);
            Some(self.outlet(&name, "Markers", 1, lsl::CFT_STRING, 0.0, &[])?)
        } else {
            None
        };
        // A decoder's output (`p:<class>` columns and `class`, the index of the most probable):
        // the class also goes out by name on a string outlet, one sample per decision, since an
        // LSL stream has one value type and the float channel would only carry its index.
        let classes: Vec<String> = self
            .schema
            .channels
            .iter()
            .filter_map(|c| c.name.strip_prefix("p:").map(str::to_string))
            .collect();
        let class_column = self.schema.channels.iter().position(|c| c.name == "class");
        let class_outlet = match class_column {
            Some(col) if !classes.is_empty() => {
                let name = format!("{}-class", self.cfg.name);
                let labels = [("class".to_string(), String::new(), String::new())];
                let rate = self.nominal_rate();
                Some((
                    self.outlet(&name, "Decisions", 1, lsl::CFT_STRING, rate, &labels)?,
                    col,
                    classes,
                ))
            }
            _ => None,
        };
        tracing::info!(
            "sink `{}`: LSL outlet `{}` ({} channels)",
            self.name,
            self.cfg.name,
            self.schema.width()
        );
        Ok(Box::new(LslWriter {
            api: self.api.clone(),
            outlet,
            markers,
            class_outlet,
            width: self.schema.width(),
            waited: self.cfg.wait_for_consumers_s <= 0.0,
            cfg: self.cfg.clone(),
            samples: 0,
            marker_count: 0,
        }))
    }
}

struct LslWriter {
    api: Arc<Api>,
    outlet: Handle,
    markers: Option<Handle>,
    /// With a decoder's output: the `NAME-class` outlet, the `class` column, the class names.
    class_outlet: Option<(Handle, usize, Vec<String>)>,
    width: usize,
    waited: bool,
    cfg: LslSinkConfig,
    samples: u64,
    marker_count: u64,
}

// SAFETY: the outlets are used only by the worker that owns the writer.
unsafe impl Send for LslWriter {}

impl SinkWriter for LslWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Ok(());
        };
        if !self.waited {
            self.waited = true;
            // A consumer of the data (the float outlet, or the class names of a decoder), and
            // of the markers when they are published.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(self.cfg.wait_for_consumers_s);
            let ok = loop {
                // SAFETY: valid outlets.
                let ready = unsafe {
                    let has = |h: Handle| (self.api.lsl_have_consumers)(h) != 0;
                    (has(self.outlet) || self.class_outlet.as_ref().is_some_and(|(c, _, _)| has(*c)))
                        && self.markers.is_none_or(has)
                };
                if ready || std::time::Instant::now() >= deadline {
                    break ready;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            if !ok {
                tracing::warn!(
                    "LSL outlet `{}`: no consumer within {} s; publishing anyway",
                    self.cfg.name,
                    self.cfg.wait_for_consumers_s
                );
            }
        }
        for (r, row) in frame.data.chunks_exact(self.width).enumerate() {
            // SAFETY: valid outlet; `row` holds `width` floats.
            unsafe {
                let now = (self.api.lsl_local_clock)();
                (self.api.lsl_push_sample_ftp)(self.outlet, row.as_ptr(), now, 1);
                if let Some((outlet, col, classes)) = &self.class_outlet {
                    let name = classes.get(row[*col] as usize).map_or("", String::as_str);
                    let s = lsl::cstr(name);
                    let p = [s.as_ptr()];
                    (self.api.lsl_push_sample_strtp)(*outlet, p.as_ptr(), now, 1);
                }
                if let Some(m) = self.markers {
                    for mk in frame.markers.iter().filter(|mk| mk.row as usize == r) {
                        let s = lsl::cstr(&mk.label);
                        let p = [s.as_ptr()];
                        (self.api.lsl_push_sample_strtp)(m, p.as_ptr(), now, 1);
                        self.marker_count += 1;
                    }
                }
            }
            self.samples += 1;
        }
        Ok(())
    }

    fn finish(self: Box<Self>, _failure: Option<&str>) -> Result<Vec<String>> {
        let started = std::time::Instant::now();
        // SAFETY: valid outlet.
        while started.elapsed().as_secs_f64() < self.cfg.linger_s && unsafe { (self.api.lsl_have_consumers)(self.outlet) } != 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: each outlet destroyed once.
        unsafe {
            (self.api.lsl_destroy_outlet)(self.outlet);
            if let Some(m) = self.markers {
                (self.api.lsl_destroy_outlet)(m);
            }
            if let Some((c, _, _)) = &self.class_outlet {
                (self.api.lsl_destroy_outlet)(*c);
            }
        }
        Ok(vec![format!(
            "published {} samples ({} markers) on LSL outlet `{}`",
            self.samples, self.marker_count, self.cfg.name
        )])
    }
}
