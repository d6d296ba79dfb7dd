//! A pipeline run in a background thread of the interpreter's process: started, watched,
//! stopped and read from Python without holding the GIL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use arrow_pyarrow::{IntoPyArrow, ToPyArrow};
use crossbeam_channel::RecvTimeoutError;
use neurostream::layout::{arrow_schema, frame_into_batch, sparse_to_batch, EncodeOptions};
use neurostream::spec::Built;
use neurostream::{
    Batch, CheckpointOptions, CompiledPipeline, DeviceChoice, EngineError, PipelineSpec, RowIndex, RunOptions, Schema,
};
use neurostream_sinks::channel_sink::{subscribe, SlowPolicy, Subscription};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::report_dict;
use crate::errors;

/// Parses and checks pipeline text against every registered kind.
pub fn compile(text: &str, base_dir: &str, origin: Option<&str>) -> Result<CompiledPipeline, EngineError> {
    Ok(compile_viewed(text, base_dir, origin, None)?.0)
}

/// [`compile`], and the live view of the run when `view` gives the run's metrics.
fn compile_viewed(
    text: &str,
    base_dir: &str,
    origin: Option<&str>,
    view: Option<&Arc<neurostream::Metrics>>,
) -> Result<(CompiledPipeline, Option<Arc<neurostream::ui::UiState>>), EngineError> {
    let mut spec = PipelineSpec::from_toml_str(text, base_dir)?;
    if let Some(o) = origin {
        spec.origin = Some(PathBuf::from(o));
    }
    let pipeline = spec.compile(&neurostream::registry())?;
    Ok((pipeline, view.map(|m| neurostream::ui::UiState::new(&spec, m.clone()))))
}

/// How the package reads one node's output while the run goes.
enum Reading {
    /// Every batch, kept in memory until the run ends (`collect`): lossless, the pipeline waits
    /// for the collector, which never waits for Python.
    Collect(Mutex<Option<JoinHandle<Vec<Batch>>>>),
    /// Live batches for Python to iterate, with a slow-consumer policy.
    Stream(Mutex<Subscription>),
}

/// One read output: its stream's schema and how it is read.
struct Output {
    schema: Arc<Schema>,
    /// For table streams: the one table wanted (`None`: every table, or frames).
    table: Option<String>,
    reading: Reading,
    encoder: Mutex<Encoder>,
}

/// Batches in the Parquet layouts, with the optional columns the stream actually has: `token`
/// and `time` only when its rows carry them, `marker` for signals (fixed by the first frame).
struct Encoder {
    input: Arc<Schema>,
    frames: Option<(arrow::datatypes::SchemaRef, EncodeOptions)>,
}

impl Encoder {
    fn encode(&mut self, batch: Batch) -> Result<RecordBatch, String> {
        let index = match &batch {
            Batch::Table(t) => return Ok(t.data.clone()),
            Batch::End(e) => return Err(format!("the end of stream {} has no rows", e.stream)),
            Batch::Dense(f) => &f.index,
            Batch::Sparse(f) => &f.index,
        };
        let (schema, opts) = self.frames.get_or_insert_with(|| {
            let (tokens, time) = match index {
                RowIndex::Tokens { token, time, .. } => (token.is_some(), time.is_some()),
                RowIndex::Samples(_) => (false, false),
            };
            let opts = EncodeOptions {
                markers: self.input.is_signal(),
                tokens,
                time,
            };
            (arrow_schema(&self.input, &opts), opts)
        });
        match batch {
            Batch::Dense(f) => frame_into_batch(f, schema, opts),
            Batch::Sparse(f) => sparse_to_batch(&f, schema),
            Batch::Table(_) | Batch::End(_) => unreachable!("returned above"),
        }
    }
}

/// The end of the run, once there is one.
#[derive(Default)]
struct Outcome {
    result: Option<Result<neurostream::RunReport, String>>,
}

/// A running (or finished) pipeline.
#[pyclass(module = "neurostream._native", frozen)]
pub struct Run {
    stop: Arc<AtomicBool>,
    progress: Arc<neurostream::RunProgress>,
    metrics: Arc<neurostream::Metrics>,
    total: Option<u64>,
    outcome: Arc<(Mutex<Outcome>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    outputs: HashMap<String, Output>,
    /// The live view, when asked for (`ui`): served until the handle is dropped.
    view: Option<neurostream::ui::UiServer>,
}

/// A read request from Python: `(hub name, node name, table or None, mode, capacity, policy)`.
type ReadSpec = (String, String, Option<String>, String, usize, String);

#[pymethods]
impl Run {
    /// Compiles `text` and starts running it in a background thread. `reads` lists the outputs
    /// the package reads: each names the hub of a `channel` sink already in `text`, the node it
    /// reads, an optional table, `collect` or `stream`, and for streams the buffer in batches
    /// and the slow policy (`drop_oldest`, `disconnect` or `block`). `ui` serves the live view on
    /// that address (loopback unless `ui_token` is given) while the handle lives.
    #[staticmethod]
    #[pyo3(signature = (text, base_dir, origin, workers, device, checkpoint_dir, checkpoint_every, resume, reads, ui=None, ui_token=None))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        py: Python<'_>,
        text: &str,
        base_dir: &str,
        origin: Option<&str>,
        workers: usize,
        device: Option<&str>,
        checkpoint_dir: Option<PathBuf>,
        checkpoint_every: f64,
        resume: bool,
        reads: Vec<ReadSpec>,
        ui: Option<String>,
        ui_token: Option<String>,
    ) -> PyResult<Run> {
        let device = device
            .map(DeviceChoice::from_str)
            .transpose()
            .map_err(|e| PyValueError::new_err(format!("device: {e}")))?;
        if checkpoint_dir.is_some() && !(checkpoint_every > 0.0 && checkpoint_every.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "checkpoint_every must be a positive number of seconds, found {checkpoint_every}"
            )));
        }
        if resume && checkpoint_dir.is_none() {
            return Err(PyValueError::new_err("resume=True needs checkpoint_dir"));
        }
        let metrics = neurostream::Metrics::new();
        let (pipeline, view_state) = py
            .detach(|| compile_viewed(text, base_dir, origin, ui.as_ref().map(|_| &metrics)))
            .map_err(|e| errors::to_py(py, e))?;
        let view = match (&ui, &view_state) {
            (Some(addr), Some(state)) => {
                Some(neurostream::ui::serve(state.clone(), addr, ui_token).map_err(|e| errors::to_py(py, e))?)
            }
            _ => None,
        };
        let mut outputs = HashMap::new();
        for (hub, node, table, mode, capacity, policy) in reads {
            let schema = output_schema(&pipeline, &node).ok_or_else(|| PyKeyError::new_err(format!("no node `{node}`")))?;
            let table = pick_table(&schema, &node, table)?;
            let reading = match mode.as_str() {
                "collect" => {
                    let sub = subscribe(&hub, 64, SlowPolicy::Block);
                    Reading::Collect(Mutex::new(Some(std::thread::spawn(move || {
                        // The whole subscription moves here: dropping it would unsubscribe.
                        let sub = sub;
                        sub.receiver.iter().collect()
                    }))))
                }
                "stream" => {
                    let slow = match policy.as_str() {
                        "drop_oldest" => SlowPolicy::DropOldest,
                        "disconnect" => SlowPolicy::Disconnect,
                        "block" => SlowPolicy::Block,
                        other => {
                            return Err(PyValueError::new_err(format!(
                                "slow policy `{other}`: expected drop_oldest, disconnect or block"
                            )))
                        }
                    };
                    Reading::Stream(Mutex::new(subscribe(&hub, capacity.max(1), slow)))
                }
                other => return Err(PyValueError::new_err(format!("read mode `{other}`"))),
            };
            let encoder = Mutex::new(Encoder {
                input: schema.clone(),
                frames: None,
            });
            outputs.insert(
                hub,
                Output {
                    schema,
                    table,
                    reading,
                    encoder,
                },
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(neurostream::RunProgress::default());
        let total = pipeline.total_source_rows();
        let options = RunOptions {
            workers,
            device,
            progress: Some(progress.clone()),
            metrics: Some(metrics.clone()),
            checkpoint: checkpoint_dir.map(|dir| CheckpointOptions {
                dir,
                every: Duration::from_secs_f64(checkpoint_every),
                resume,
            }),
            stop: Some(stop.clone()),
            observer: view_state.clone().map(|s| s as Arc<dyn neurostream::BatchObserver>),
            ..Default::default()
        };
        let outcome: Arc<(Mutex<Outcome>, Condvar)> = Arc::default();
        let done = outcome.clone();
        let thread = std::thread::Builder::new()
            .name("neurostream-run".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| neurostream::run(pipeline, options)))
                    .unwrap_or_else(|_| Err(EngineError::Runtime("the run panicked".into())))
                    .map_err(|e| e.to_string());
                if let Some(state) = &view_state {
                    state.finish(&match &result {
                        Ok(_) => "ok".to_string(),
                        Err(e) => format!("failed: {e}"),
                    });
                }
                let (lock, cv) = &*done;
                lock.lock().unwrap().result = Some(result);
                cv.notify_all();
            })
            .map_err(|e| PyValueError::new_err(format!("cannot start the run's thread: {e}")))?;
        Ok(Run {
            stop,
            progress,
            metrics,
            total,
            outcome,
            thread: Mutex::new(Some(thread)),
            outputs,
            view,
        })
    }

    /// Waits up to `timeout` seconds (forever when None) for the run to end; True when it has.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        let finished = py.detach(|| {
            let (lock, cv) = &*self.outcome;
            let guard = lock.lock().unwrap();
            let guard = match timeout {
                None => cv.wait_while(guard, |o| o.result.is_none()).unwrap(),
                Some(t) => {
                    cv.wait_timeout_while(guard, Duration::from_secs_f64(t.max(0.0)), |o| o.result.is_none())
                        .unwrap()
                        .0
                }
            };
            guard.result.is_some()
        });
        if finished {
            if let Some(t) = self.thread.lock().unwrap().take() {
                let _ = py.detach(|| t.join());
            }
        }
        finished
    }

    /// Asks the run to stop: the sources end now and what they read is processed and written
    /// (with checkpoints: the run stops as a crash would, resumable from its last checkpoint).
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Rows the sources have read so far, and the total when known.
    fn progress(&self) -> (u64, Option<u64>) {
        (self.progress.rows_read.load(Ordering::Relaxed), self.total)
    }

    /// Live counters per node while the run goes (`rows_in`, `rows_out`, `bytes_in`, `busy_s`,
    /// `batches`, drops, `in_flight`), and the seconds since the start.
    fn live<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, m) in self.metrics.nodes() {
            let n = PyDict::new(py);
            n.set_item("rows_in", m.rows_in.load(Ordering::Relaxed))?;
            n.set_item("rows_out", m.rows_out.load(Ordering::Relaxed))?;
            n.set_item("bytes_in", m.bytes_in.load(Ordering::Relaxed))?;
            n.set_item("batches", m.batches.load(Ordering::Relaxed))?;
            n.set_item("busy_s", m.busy_ns.load(Ordering::Relaxed) as f64 * 1e-9)?;
            n.set_item("dropped_invalid", m.dropped_invalid.load(Ordering::Relaxed))?;
            n.set_item("dropped_overload", m.dropped_overload.load(Ordering::Relaxed))?;
            n.set_item("in_flight", m.in_flight.load(Ordering::Relaxed))?;
            d.set_item(name, n)?;
        }
        Ok(d)
    }

    /// The live view's address (`http://HOST:PORT/`), when the run serves one.
    #[getter]
    fn ui_url(&self) -> Option<String> {
        self.view.as_ref().map(|v| format!("http://{}/", v.addr))
    }

    /// Seconds since the run started.
    fn elapsed(&self) -> f64 {
        self.metrics.uptime().as_secs_f64()
    }

    /// The report of a finished run as a dict; raises the run's error when it failed, and
    /// RuntimeError while it still runs.
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (lock, _) = &*self.outcome;
        let outcome = lock.lock().unwrap();
        match &outcome.result {
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the run has not ended yet; wait() for it",
            )),
            Some(Ok(r)) => report_dict(py, r, self.stop.load(Ordering::SeqCst)),
            Some(Err(message)) => Err(errors::raise(py, "PipelineError", (message.clone(), Vec::new()))),
        }
    }

    /// A collected output as a `pyarrow.Table`, once the run has ended.
    fn collected(&self, py: Python<'_>, hub: &str) -> PyResult<Py<PyAny>> {
        let out = self.output(hub)?;
        let Reading::Collect(handle) = &out.reading else {
            return Err(PyValueError::new_err(format!("`{hub}` is streamed, not collected")));
        };
        let Some(handle) = handle.lock().unwrap().take() else {
            return Err(PyValueError::new_err(format!("`{hub}` was already taken")));
        };
        let batches = py
            .detach(|| handle.join())
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("the collector thread panicked"))?;
        let (records, schema) = py.detach(|| out.encode_all(batches)).map_err(PyValueError::new_err)?;
        let table = arrow_pyarrow::Table::try_new(records, schema)
            .map_err(|e| PyValueError::new_err(format!("cannot build the table: {e}")))?;
        Ok(table.into_pyarrow(py)?.unbind())
    }

    /// The next batch of a streamed output as a `pyarrow.RecordBatch`: `("batch", rb)`,
    /// `("timeout", None)` when none came within `timeout` seconds, or `("end", None)` when the
    /// stream has ended. Also returns how many batches were dropped for this reader so far.
    #[pyo3(signature = (hub, timeout=None))]
    fn next_batch(&self, py: Python<'_>, hub: &str, timeout: Option<f64>) -> PyResult<(&'static str, Option<Py<PyAny>>, u64)> {
        let out = self.output(hub)?;
        let Reading::Stream(sub) = &out.reading else {
            return Err(PyValueError::new_err(format!("`{hub}` is collected, not streamed")));
        };
        loop {
            let (got, dropped) = py.detach(|| {
                let sub = sub.lock().unwrap();
                let got = match timeout {
                    None => sub.receiver.recv_timeout(Duration::from_millis(100)),
                    Some(t) => sub.receiver.recv_timeout(Duration::from_secs_f64(t.max(0.0))),
                };
                (got, sub.dropped())
            });
            match got {
                Ok(batch) => {
                    let records = py.detach(|| out.encode(batch)).map_err(PyValueError::new_err)?;
                    let Some(rb) = records else { continue };
                    return Ok(("batch", Some(rb.to_pyarrow(py)?.unbind()), dropped));
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(("end", None, dropped)),
                Err(RecvTimeoutError::Timeout) if timeout.is_some() => return Ok(("timeout", None, dropped)),
                // No time-out: give Python a chance to see Ctrl-C, then wait on.
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            }
        }
    }
}

impl Run {
    fn output(&self, hub: &str) -> PyResult<&Output> {
        self.outputs
            .get(hub)
            .ok_or_else(|| PyKeyError::new_err(format!("this run reads no output `{hub}`")))
    }
}

impl Output {
    /// `batch` in the Parquet layout, or `None` when it belongs to another table than the one
    /// read.
    fn encode(&self, batch: Batch) -> Result<Option<RecordBatch>, String> {
        if let (Some(want), Batch::Table(t)) = (&self.table, &batch) {
            if *t.table != **want {
                return Ok(None);
            }
        }
        self.encoder.lock().unwrap().encode(batch).map(Some)
    }

    /// Every batch of the read table or stream, and their schema.
    fn encode_all(&self, batches: Vec<Batch>) -> Result<(Vec<RecordBatch>, arrow::datatypes::SchemaRef), String> {
        let mut records = Vec::new();
        for b in batches {
            if let Some(r) = self.encode(b)? {
                records.push(r);
            }
        }
        let schema = match records.first() {
            Some(r) => r.schema(),
            None if self.schema.is_tables() => Arc::new(arrow::datatypes::Schema::empty()),
            None => arrow_schema(
                &self.schema,
                &EncodeOptions {
                    markers: self.schema.is_signal(),
                    tokens: false,
                    time: false,
                },
            ),
        };
        Ok((records, schema))
    }
}

/// The table to read from a node that emits tables: the one asked for, or its only one.
fn pick_table(schema: &Schema, node: &str, asked: Option<String>) -> PyResult<Option<String>> {
    let neurostream::StreamKind::Tables { tables, .. } = &schema.kind else {
        return match asked {
            Some(t) => Err(PyValueError::new_err(format!(
                "`{node}` emits frames, not tables; drop table=\"{t}\""
            ))),
            None => Ok(None),
        };
    };
    match asked {
        Some(t) if tables.contains(&t) => Ok(Some(t)),
        Some(t) => Err(PyValueError::new_err(format!(
            "`{node}` has no table `{t}`; its tables: {}",
            tables.join(", ")
        ))),
        None if tables.len() == 1 => Ok(Some(tables[0].clone())),
        None => Err(PyValueError::new_err(format!(
            "`{node}` writes several tables ({}); choose one with table=...",
            tables.join(", ")
        ))),
    }
}

/// The schema of the stream node `name` emits.
fn output_schema(pipeline: &CompiledPipeline, name: &str) -> Option<Arc<Schema>> {
    pipeline
        .nodes
        .iter()
        .find(|n| n.spec.name == name)
        .and_then(|n| match &n.built {
            Built::Source(s) => Some(s.schema()),
            Built::Operator(o) => Some(o.output_schema()),
            Built::Sink(_) => None,
        })
}
