//! The producing end of a `push` source, fed with numpy arrays without copying them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use neurostream::Marker;
use neurostream_sources::push_source::{producer, Producer, PushChunk, PushError, PushIndex, RowData};
use pyo3::exceptions::{PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors;

/// A float32 C-contiguous 2-D array, read in place: `owner` keeps its memory alive until the
/// source has read every row (the reference is released by whichever thread drops it last).
struct ArrayView {
    _owner: Py<PyAny>,
    ptr: *const f32,
    len: usize,
}

// SAFETY: the memory is only read, and stays valid while `_owner` holds the array; the package
// documents that the caller must not write into a pushed array until the source has read it.
unsafe impl Send for ArrayView {}
unsafe impl Sync for ArrayView {}

impl RowData for ArrayView {
    fn values(&self) -> &[f32] {
        // SAFETY: see the `Send` impl; `ptr` was checked non-null and `len` matches the shape.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The Python type name of `v`, for messages.
fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// Reads `array.__array_interface__` and checks it describes `(rows, width)` float32 values,
/// row-major and contiguous. Returns the address of the first value and the row count.
fn array_parts(array: &Bound<'_, PyAny>, width: usize, what: &str) -> PyResult<(usize, usize)> {
    let interface = array
        .getattr("__array_interface__")
        .map_err(|_| PyTypeError::new_err(format!("{what}: expected a numpy array, got {}", type_name(array))))?;
    let interface = interface.cast::<PyDict>()?;
    let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        interface
            .get_item(k)?
            .ok_or_else(|| PyTypeError::new_err(format!("{what}: __array_interface__ has no `{k}`")))
    };
    let typestr: String = get("typestr")?.extract()?;
    if typestr != "<f4" {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected float32 values (typestr <f4), got {typestr}"
        )));
    }
    let shape: Vec<usize> = get("shape")?.extract()?;
    if shape.len() != 2 || shape[1] != width {
        return Err(PyValueError::new_err(format!(
            "{what}: expected shape (n_rows, {width}), got {shape:?}"
        )));
    }
    if let Some(strides) = interface.get_item("strides")? {
        if !strides.is_none() {
            let s: Vec<isize> = strides.extract()?;
            if shape[0] > 1 && s != [width as isize * 4, 4] || shape[0] <= 1 && s.get(1) != Some(&4) {
                return Err(PyValueError::new_err(format!(
                    "{what}: the array is not C-contiguous (strides {s:?}); pass numpy.ascontiguousarray(a) or copy=True"
                )));
            }
        }
    }
    let data = get("data")?;
    let data = data.cast::<PyTuple>()?;
    let address: usize = data.get_item(0)?.extract()?;
    if address == 0 && shape[0] > 0 {
        return Err(PyValueError::new_err(format!("{what}: the array has no data pointer")));
    }
    Ok((address, shape[0]))
}

/// A 1-D index array (`seq_id` as uint64, `pos` as uint32) read through
/// `__array_interface__` when it is a numpy array of that dtype (one memcpy), else as a
/// sequence of ints.
fn index_values<T: Copy + for<'a, 'py> FromPyObject<'a, 'py>>(
    v: &Bound<'_, PyAny>,
    typestr: &str,
    what: &str,
) -> PyResult<Vec<T>> {
    if let Ok(interface) = v.getattr("__array_interface__") {
        let interface = interface.cast::<PyDict>()?;
        let ts: Option<String> = interface.get_item("typestr")?.map(|t| t.extract()).transpose()?;
        let shape: Option<Vec<usize>> = interface.get_item("shape")?.map(|s| s.extract()).transpose()?;
        let strides = interface.get_item("strides")?;
        if let (Some(ts), Some(shape)) = (ts, shape) {
            let contiguous = strides.is_none_or(|s| s.is_none());
            if ts == typestr && shape.len() == 1 && contiguous {
                let data = interface
                    .get_item("data")?
                    .ok_or_else(|| PyTypeError::new_err(format!("{what}: no data")))?;
                let address: usize = data.cast::<PyTuple>()?.get_item(0)?.extract()?;
                if shape[0] == 0 {
                    return Ok(Vec::new());
                }
                // SAFETY: a live numpy array of shape[0] contiguous elements of this dtype.
                let slice = unsafe { std::slice::from_raw_parts(address as *const T, shape[0]) };
                return Ok(slice.to_vec());
            }
        }
    }
    v.extract()
        .map_err(|_| PyTypeError::new_err(format!("{what}: expected a 1-D array or sequence of integers")))
}

/// Pushes arrays into the `push` source whose queue is called `name`.
#[pyclass(module = "neurostream._native", frozen)]
pub struct PushProducer {
    name: String,
    width: usize,
    signal: bool,
    inner: Mutex<Producer>,
}

#[pymethods]
impl PushProducer {
    /// The producer of queue `name` (`capacity` chunks), for rows `width` wide; `signal`
    /// false for activations (which need `seq_id` and `pos`).
    #[new]
    fn new(name: &str, capacity: usize, width: usize, signal: bool) -> PushProducer {
        PushProducer {
            name: name.to_string(),
            width,
            signal,
            inner: Mutex::new(producer(name, capacity)),
        }
    }

    /// Queues `array` (float32, C-contiguous, `(n_rows, width)`) without copying it; waits
    /// while the queue is full, up to `timeout` seconds (forever when None). Markers are
    /// `(row, label, duration_s)`; activations give `seq_id` and `pos` (and optionally
    /// `tokens`) per row. Returns the address the engine reads the values from.
    #[pyo3(signature = (array, markers=Vec::new(), seq_id=None, pos=None, tokens=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        py: Python<'_>,
        array: &Bound<'_, PyAny>,
        markers: Vec<(u32, String, f64)>,
        seq_id: Option<Bound<'_, PyAny>>,
        pos: Option<Bound<'_, PyAny>>,
        tokens: Option<Vec<String>>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let what = format!("push source `{}`", self.name);
        let seq_id: Option<Vec<u64>> = seq_id
            .map(|s| index_values(&s, "<u8", &format!("{what}: seq_id")))
            .transpose()?;
        let pos: Option<Vec<u32>> = pos.map(|p| index_values(&p, "<u4", &format!("{what}: pos"))).transpose()?;
        let (address, rows) = array_parts(array, self.width, &what)?;
        let index = if self.signal {
            if seq_id.is_some() || pos.is_some() || tokens.is_some() {
                return Err(PyValueError::new_err(format!(
                    "{what}: signal rows take no seq_id/pos/tokens"
                )));
            }
            PushIndex::Continue
        } else {
            let (Some(seq_id), Some(pos)) = (seq_id, pos) else {
                return Err(PyValueError::new_err(format!("{what}: activation rows need seq_id and pos")));
            };
            for (name, n) in [("seq_id", seq_id.len()), ("pos", pos.len())] {
                if n != rows {
                    return Err(PyValueError::new_err(format!(
                        "{what}: {name} has {n} entries for {rows} rows"
                    )));
                }
            }
            if let Some(t) = &tokens {
                if t.len() != rows {
                    return Err(PyValueError::new_err(format!(
                        "{what}: tokens has {} entries for {rows} rows",
                        t.len()
                    )));
                }
            }
            PushIndex::Tokens {
                seq_id,
                pos,
                token: tokens,
            }
        };
        if !self.signal && !markers.is_empty() {
            return Err(PyValueError::new_err(format!("{what}: markers apply to signals")));
        }
        let markers = markers
            .into_iter()
            .map(|(row, label, duration_s)| {
                if row as usize >= rows {
                    return Err(PyValueError::new_err(format!(
                        "{what}: marker `{label}` at row {row} is past the array's {rows} rows"
                    )));
                }
                if !(duration_s >= 0.0 && duration_s.is_finite()) {
                    return Err(PyValueError::new_err(format!(
                        "{what}: marker `{label}` has duration {duration_s}; expected seconds >= 0"
                    )));
                }
                Ok(Marker { row, label, duration_s })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let chunk = PushChunk {
            data: Arc::new(ArrayView {
                _owner: array.clone().unbind(),
                ptr: address as *const f32,
                len: rows * self.width,
            }),
            rows,
            index,
            markers,
        };
        let producer = self.inner.lock().unwrap().clone();
        // Wait in slices so Ctrl-C reaches Python while the queue is full.
        let deadline = timeout.map(|t| std::time::Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        let mut chunk = Some(chunk);
        loop {
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(std::time::Instant::now())
                    .min(Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            let c = chunk.take().expect("chunk kept until sent");
            let (sent, back) = py.detach(|| match producer.push(c, Some(slice)) {
                Ok(()) => (Ok(()), None),
                Err((e, c)) => (Err(e), Some(*c)),
            });
            match sent {
                Ok(()) => return Ok(address),
                Err(PushError::Timeout) => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        return Err(PyTimeoutError::new_err(format!(
                            "{what}: {} after {:.3} s",
                            PushError::Timeout,
                            timeout.unwrap_or_default()
                        )));
                    }
                    chunk = back;
                }
                Err(e) => return Err(errors::raise(py, "PipelineError", (format!("{what}: {e}"), Vec::new()))),
            }
        }
    }

    /// Ends the stream from this producer (the source ends once it has read what is queued).
    fn close(&self) {
        self.inner.lock().unwrap().close();
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().unwrap().is_closed()
    }

    /// Chunks waiting in the queue.
    #[getter]
    fn pending(&self) -> usize {
        self.inner.lock().unwrap().pending()
    }
}

impl PushProducer {
    /// A producer sharing this one's queue (for Rust threads that push).
    pub fn inner(&self) -> Producer {
        self.inner.lock().unwrap().clone()
    }
}
