//! Python values to TOML (pipelines given as dicts), and run reports to Python dicts.

use neurostream::RunReport;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// TOML text of a pipeline given as nested dicts with the keys of a pipeline file.
pub fn dict_to_toml(spec: &Bound<'_, PyAny>) -> PyResult<String> {
    match value(spec, "pipeline")? {
        toml::Value::Table(t) => {
            toml::to_string(&t).map_err(|e| PyTypeError::new_err(format!("cannot write the pipeline as TOML: {e}")))
        }
        _ => Err(PyTypeError::new_err(
            "a pipeline must be a dict (with `pipeline`, `sources`, `operators`, `sinks`)",
        )),
    }
}

/// One Python value as TOML; `at` names it in errors (`sources.eeg.path`).
fn value(v: &Bound<'_, PyAny>, at: &str) -> PyResult<toml::Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(toml::Value::Integer(v.extract()?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(v.extract()?));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(v.extract()?));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut table = toml::Table::new();
        for (k, item) in d.iter() {
            let key: String = k
                .extract()
                .map_err(|_| PyTypeError::new_err(format!("`{at}`: keys must be strings, found {k}")))?;
            if item.is_none() {
                continue; // None means "not set": the default applies.
            }
            let here = format!("{at}.{key}");
            table.insert(key, value(&item, &here)?);
        }
        return Ok(toml::Value::Table(table));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items: PyResult<Vec<toml::Value>> = v
            .try_iter()?
            .enumerate()
            .map(|(i, item)| value(&item?, &format!("{at}[{i}]")))
            .collect();
        return Ok(toml::Value::Array(items?));
    }
    // numpy scalars, pathlib paths and the like: by their Python meaning.
    if let Ok(f) = v.call_method0("__float__") {
        if v.hasattr("is_integer")? || v.hasattr("dtype")? {
            if let Ok(i) = v.call_method0("__index__") {
                return Ok(toml::Value::Integer(i.extract()?));
            }
            return Ok(toml::Value::Float(f.extract()?));
        }
    }
    if v.hasattr("__fspath__")? {
        let p = v.call_method0("__fspath__")?;
        return Ok(toml::Value::String(p.extract()?));
    }
    Err(PyTypeError::new_err(format!(
        "`{at}`: cannot use a value of type {} in a pipeline (expected str, int, float, bool, list or dict)",
        v.get_type().name()?
    )))
}

/// The run report as a dict (the package's `Report` wraps it).
pub fn report_dict<'py>(py: Python<'py>, r: &RunReport, stopped: bool) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("elapsed_s", r.elapsed.as_secs_f64())?;
    d.set_item("workers", r.workers)?;
    d.set_item("stopped", stopped)?;
    let nodes = PyDict::new(py);
    for (name, s) in &r.nodes {
        let n = PyDict::new(py);
        n.set_item("rows_in", s.rows_in)?;
        n.set_item("rows_out", s.rows_out)?;
        n.set_item("bytes_in", s.bytes_in)?;
        n.set_item("busy_s", s.busy.as_secs_f64())?;
        let per: std::collections::BTreeMap<usize, f64> = s.busy_by_worker.iter().map(|(w, d)| (*w, d.as_secs_f64())).collect();
        n.set_item("busy_s_by_worker", per)?;
        let latency = s.latencies.percentiles_ms().map(|[p50, p95, p99, max]| {
            let l = PyDict::new(py);
            let _ = l.set_item("p50", p50);
            let _ = l.set_item("p95", p95);
            let _ = l.set_item("p99", p99);
            let _ = l.set_item("max", max);
            let _ = l.set_item("frames", s.latencies.len());
            l
        });
        n.set_item("latency_ms", latency)?;
        nodes.set_item(name, n)?;
    }
    d.set_item("nodes", nodes)?;
    d.set_item("devices", r.devices.clone())?;
    d.set_item("dropped_invalid", r.dropped_invalid.clone())?;
    d.set_item("overload", r.overload.clone())?;
    d.set_item("sink_lines", r.sink_lines.clone())?;
    Ok(d)
}
