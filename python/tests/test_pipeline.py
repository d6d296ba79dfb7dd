"""Building, checking and running pipelines from Python: the same results as the CLI."""
import os
import subprocess
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import signal

import neurostream as ns

EEG = dict(channels=4, sample_rate=250.0, seconds=4.0, seed=7)


def butter_pipeline() -> ns.Pipeline:
    p = ns.Pipeline()
    eeg = p.source("synthetic_eeg", name="eeg", **EEG)
    eeg.then("butterworth", name="bp", btype="bandpass", order=4, cutoff=[8, 30])
    return p


def channels(table: pa.Table) -> np.ndarray:
    names = [f.name for f in table.schema if pa.types.is_floating(f.type) and f.name != "time"]
    return np.stack([table[c].to_numpy() for c in names], axis=1).astype(np.float64)


def test_builder_output_matches_scipy():
    """The band-pass computed in process equals scipy's sosfilt on the raw samples (float64
    reference, float32 engine: tolerance 1e-4 of the signal's scale)."""
    p = butter_pipeline()
    raw = p.collect("eeg")
    out = p.collect("bp")
    assert raw.num_rows == out.num_rows == 1000
    assert raw["sample"].to_pylist() == list(range(1000))
    sos = signal.butter(4, [8, 30], btype="bandpass", fs=250.0, output="sos")
    want = signal.sosfilt(sos, channels(raw), axis=0)
    got = channels(out)
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))


def test_dict_builder_and_toml_agree(tmp_path):
    text = textwrap.dedent(
        """
        [sources.eeg]
        kind = "synthetic_eeg"
        channels = 4
        sample_rate = 250.0
        seconds = 4.0
        seed = 7

        [operators.bp]
        kind = "butterworth"
        input = "eeg"
        btype = "bandpass"
        order = 4
        cutoff = [8, 30]
        """
    )
    path = tmp_path / "p.toml"
    path.write_text(text)
    from_file = ns.Pipeline.from_toml(path).collect("bp")
    from_dict = ns.Pipeline.from_dict(
        {
            "sources": {"eeg": {"kind": "synthetic_eeg", **EEG}},
            "operators": {"bp": {"kind": "butterworth", "input": "eeg", "btype": "bandpass", "order": 4, "cutoff": [8, 30]}},
        }
    ).collect("bp")
    built = butter_pipeline().collect("bp")
    assert from_file.equals(from_dict)
    assert from_file.equals(built)


def test_same_output_as_the_cli(tmp_path, cli):
    """One pipeline file, run by the CLI and by Pipeline.from_toml(...).run(): identical Parquet."""
    def write(out: str) -> str:
        path = tmp_path / f"{out}.toml"
        path.write_text(
            textwrap.dedent(
                f"""
                [sources.eeg]
                kind = "synthetic_eeg"
                channels = 8
                sample_rate = 500.0
                seconds = 6.0
                seed = 3

                [operators.bp]
                kind = "butterworth"
                input = "eeg"
                btype = "bandpass"
                order = 4
                cutoff = [1, 40]

                [operators.car]
                kind = "reref"
                input = "bp"

                [sinks.out]
                kind = "parquet"
                input = "car"
                path = "{out}.parquet"
                """
            )
        )
        return str(path)

    subprocess.run([cli, "run", "--quiet", write("cli")], check=True, capture_output=True)
    report = ns.Pipeline.from_toml(write("py")).run()
    a = pq.read_table(tmp_path / "cli.parquet")
    b = pq.read_table(tmp_path / "py.parquet")
    assert a.num_rows == 3000
    assert a.equals(b)
    assert report.rows("sinks.out") == 3000
    assert report["out"].rows_in == 3000
    assert "operators.bp" in report.devices


def test_validate_lists_every_problem(tmp_path):
    p = ns.Pipeline()
    p.source("synthetic_eeg", name="eeg", chanels=4).then("butterworth", name="bp", ordr=3).to("parquet", name="out")
    with pytest.raises(ns.ValidationError) as e:
        p.validate()
    problems = e.value.problems
    assert any("[sources.eeg]" in x and "did you mean `channels`" in x for x in problems), problems
    assert any("[operators.bp]" in x and "did you mean `order`" in x for x in problems), problems
    assert any("[sinks.out]" in x and "path" in x for x in problems), problems
    assert not any(x.startswith("line ") for x in problems)
    # A file: the CLI's FILE:LINE locations.
    path = tmp_path / "bad.toml"
    path.write_text('[sources.eeg]\nkind = "synthetic_eeg"\nchanels = 4\n\n[sinks.out]\nkind = "parquet"\ninput = "nowhere"\npath = "o.parquet"\n')
    with pytest.raises(ns.ValidationError) as e:
        ns.Pipeline.from_toml(path).validate()
    text = str(e.value)
    assert f"{path}:3:" in text and f"{path}:7:" in text, text
    assert len(e.value.problems) == 2


def test_validate_describes_a_good_pipeline():
    p = butter_pipeline()
    p.node("bp").to("parquet", path="never-written.parquet")
    lines = p.validate()
    assert any("bp" in line for line in lines)
    assert not os.path.exists("never-written.parquet")


def test_report_repr_and_html():
    p = butter_pipeline()
    report = p.run(collect=["bp"])
    assert isinstance(report, ns.Report)
    text = repr(report)
    assert "operators.bp" in text and "rows/s" in text
    html = report._repr_html_()
    assert "<table>" in html and "operators.bp" in html
    assert report["bp"].rows_out == 1000
    assert report.devices["operators.bp"].startswith("cpu")
    assert report.tables["bp"].num_rows == 1000
    assert report.elapsed_s > 0


def test_device_option_forces_the_gpu_kernel_or_fails_clearly():
    """device="gpu" runs the wgpu kernel (lavapipe in CI) and matches the CPU within 1e-4."""
    if os.environ.get("NEUROSTREAM_SKIP_GPU_TESTS") == "1":
        pytest.skip("NEUROSTREAM_SKIP_GPU_TESTS=1")
    p = ns.Pipeline(allow_software_gpu=True)
    p.source("synthetic_eeg", name="eeg", **EEG).then("butterworth", name="bp", btype="lowpass", order=4, cutoff=[30])
    cpu = channels(p.collect("bp", device="cpu"))
    report = p.run(collect=["bp"], device="gpu")
    assert report.devices["operators.bp"].startswith("gpu")
    gpu = channels(report.tables["bp"])
    assert np.max(np.abs(gpu - cpu)) <= 1e-4 * np.max(np.abs(cpu))


def test_tables_need_a_name_when_there_are_several():
    p = ns.Pipeline()
    acts = p.from_numpy(np.random.default_rng(0).standard_normal((2048, 8)).astype(np.float32))
    acts.then("kmeans", name="km", k=4, seed=1)
    with pytest.raises(ValueError, match="several tables .*assignments.*centroids"):
        p.collect("km")
    with pytest.raises(KeyError, match="no node 'nowhere'"):
        p.collect("nowhere")
    with pytest.raises(ValueError, match="emits frames, not tables"):
        p.collect(acts, table="centroids")


def test_collects_one_table_of_several():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 8)).astype(np.float32) * 10
    x = (centers[rng.integers(0, 3, 3000)] + rng.standard_normal((3000, 8))).astype(np.float32)
    p = ns.Pipeline()
    p.from_numpy(x).then("kmeans", name="km", k=3, seed=1)
    report = p.run(collect=[("km", "assignments"), ("km", "centroids")])
    assign = report.tables["km/assignments"]
    assert assign.num_rows == 3000
    assert report.tables["km/centroids"].num_rows >= 3


def test_kinds_lists_every_kind_with_keys():
    kinds = {k.kind: k for k in ns.kinds()}
    assert {"edf", "parquet", "push", "butterworth", "sae_encode", "channel"} <= set(kinds)
    assert "sample_rate" in kinds["push"].reference
    assert kinds["butterworth"].section == "operator"


def test_engine_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    p = ns.Pipeline()
    p.source("parquet", name="acts", path=str(bad)).to("console", name="show")
    with pytest.raises(ns.NeurostreamError, match="bad.parquet") as e:
        p.run()
    assert isinstance(e.value, (ns.ValidationError, ns.PipelineError))


def test_client_module_needs_no_engine():
    """neurostream.client stays pure Python (numpy + pyarrow): importing it does not load the
    native module."""
    import subprocess
    import sys

    code = "import sys, neurostream.client as c; print('neurostream._native' in sys.modules, c.Client.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "Client"]


def test_client_refuses_stream_names_the_source_would_refuse():
    """The client checks a stream name as the ``arrow_tcp`` source does (before connecting), so
    a name that could be taken for an unnamed connection's is a ValueError, not a dropped link."""
    from neurostream.client import Client, activation_schema

    assert activation_schema(4, stream="server-a").metadata[b"neurostream.stream"] == b"server-a"
    for bad, why in [("3", "digit"), ("0.2", "digit"), ("", "empty"), ("a" * 257, "longer"), ("a\nb", "control")]:
        with pytest.raises(ValueError, match=why):
            activation_schema(4, stream=bad)
    with pytest.raises(ValueError, match="digit"):
        Client(port=1, stream="7")


def test_live_view_serves_the_runs_state_while_it_goes():
    """``start(ui=...)`` serves the live view: /api/state shows the graph and counters as the
    run goes, the report leaves the view's taps out, and a token is required when set."""
    import json
    import time
    import urllib.error
    import urllib.request

    p = ns.Pipeline()
    eeg = p.source("synthetic_eeg", name="eeg", channels=4, sample_rate=250.0, seconds=3.0, speed=1.0, seed=7)
    eeg.then("butterworth", name="bp", btype="bandpass", order=4, cutoff=[8, 30])
    handle = p.start(ui="127.0.0.1:0", ui_token="t0k", collect=["bp"])
    url = handle.ui_url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "api/state", timeout=10)
    assert e.value.code == 401
    seen = 0
    deadline = time.time() + 30
    while time.time() < deadline and seen == 0:
        state = json.load(urllib.request.urlopen(url + "api/state?token=t0k", timeout=10))
        nodes = {n["id"]: n for n in state["nodes"]}
        assert {"sources.eeg", "operators.bp"} <= set(nodes), nodes
        seen = nodes["sources.eeg"]["rows"]
        time.sleep(0.2)
    assert seen > 0, "the view never showed rows while the run went"
    signals = [s for s in state["streams"] if s["type"] == "signal"]
    assert {s["node"] for s in signals} >= {"sources.eeg"}
    report = handle.wait()
    assert all("__ui_" not in name for name in report.nodes), report.nodes
    state = json.load(urllib.request.urlopen(url + "api/state?token=t0k", timeout=10))
    assert state["outcome"] == "ok"
    rows = {n["id"]: n["rows"] for n in state["nodes"]}
    assert rows["sources.eeg"] == 750
