"""Stopping runs: Ctrl-C, stop(), exceptions in callbacks. Outputs are complete, never half
written, and the interpreter stays usable."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

import neurostream as ns


def long_pipeline(out: str) -> ns.Pipeline:
    """An hour of 8-channel EEG at 1 kHz, paced at real time, band-passed into Parquet."""
    p = ns.Pipeline()
    eeg = p.source("synthetic_eeg", name="eeg", channels=8, sample_rate=1000.0, seconds=3600.0, speed=1.0, chunk=100)
    eeg.then("butterworth", name="bp", btype="bandpass", order=4, cutoff=[1, 40]).to("parquet", name="out", path=out)
    return p


def test_ctrl_c_stops_cleanly_and_the_interpreter_goes_on(tmp_path):
    out = tmp_path / "eeg.parquet"
    script = textwrap.dedent(
        f"""
        import sys, time
        import pyarrow.parquet as pq
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_interrupt import long_pipeline
        p = long_pipeline({str(out)!r})
        print("running", flush=True)
        t0 = time.monotonic()
        try:
            p.run()
            print("finished?!")
        except KeyboardInterrupt:
            print("interrupted after", round(time.monotonic() - t0, 1), flush=True)
        t = pq.read_table({str(out)!r})
        print("rows", t.num_rows, t["sample"][0].as_py(), t["sample"][t.num_rows - 1].as_py())
        print("alive", sum(range(10)))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "running"
    deadline = time.monotonic() + 60
    while not os.listdir(tmp_path):  # the run is writing once its output's temporary file exists
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("interrupted after"), stdout + stderr
    assert float(lines[0].split()[-1]) < 10
    _, rows, first, last = lines[1].split()
    # Every row read before the stop is in the file, in order, nothing after a hole.
    assert int(rows) > 100 and int(first) == 0 and int(last) == int(rows) - 1
    assert lines[2] == "alive 45"
    assert [f for f in os.listdir(tmp_path) if f != "eeg.parquet"] == [], "temporary files left behind"


def test_stop_from_python_ends_the_run_with_complete_outputs(tmp_path):
    out = str(tmp_path / "eeg.parquet")
    handle = long_pipeline(out).start()
    time.sleep(1.0)
    live = handle.report()
    assert live.nodes["sources.eeg"].rows_out > 0
    handle.stop()
    report = handle.wait(timeout=30)
    assert report is not None and report.stopped
    table = pq.read_table(out)
    assert table.num_rows == report.rows("sinks.out") > 0


def test_ctrl_c_with_checkpoints_is_resumable(tmp_path):
    """With checkpoints, stopping is like a crash: nothing half-committed, and resume=True
    continues; the resumed run's output equals an uninterrupted run's."""
    def pipeline(out):
        p = ns.Pipeline()
        eeg = p.source("synthetic_eeg", name="eeg", channels=4, sample_rate=500.0, seconds=8.0, speed=2.0, chunk=50)
        eeg.then("butterworth", name="bp", btype="lowpass", order=2, cutoff=[40]).to("parquet", name="out", path=out)
        return p

    whole = tmp_path / "whole.parquet"
    pipeline(str(whole)).run()
    out = tmp_path / "resumed.parquet"
    ck = tmp_path / "ck"
    handle = pipeline(str(out)).start(checkpoint_dir=ck, checkpoint_every=0.2)
    time.sleep(1.5)
    handle.stop()
    with pytest.raises(ns.PipelineError, match="resume from the last checkpoint"):
        handle.wait()
    assert not out.exists(), "a stopped checkpointed run must not leave a final file"
    pipeline(str(out)).run(checkpoint_dir=ck, resume=True)
    assert pq.read_table(out).equals(pq.read_table(whole))


def test_an_exception_in_the_progress_callback_stops_the_run(tmp_path):
    out = str(tmp_path / "eeg.parquet")
    calls = []

    def progress(rows, total):
        calls.append(rows)
        if len(calls) == 5:
            raise RuntimeError("my callback failed")

    with pytest.raises(RuntimeError, match="my callback failed"):
        long_pipeline(out).run(progress=progress)
    assert pq.read_table(out).num_rows > 0  # the run stopped; its output is complete


def test_progress_callback_sees_rows_and_total():
    seen = []
    p = ns.Pipeline()
    p.source("synthetic_eeg", name="eeg", channels=2, sample_rate=100.0, seconds=3.0, speed=2.0).then(
        "butterworth", btype="lowpass", order=2, cutoff=[20], name="bp"
    )
    p.run(collect=["bp"], progress=lambda rows, total: seen.append((rows, total)))
    assert seen and seen[-1] == (300, 300)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


def test_the_gil_is_released_while_the_engine_runs():
    """A Python thread keeps running while run() waits on the engine: it counts at least half
    as far as when the engine is idle."""
    import threading

    def count_for(seconds, work=None):
        n = [0]
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                n[0] += 1

        t = threading.Thread(target=spin)
        t.start()
        if work is None:
            time.sleep(seconds)
        else:
            work()
        stop.set()
        t.join()
        return n[0]

    p = ns.Pipeline()
    p.source("synthetic_eeg", name="eeg", channels=64, sample_rate=1000.0, seconds=2.0, speed=2.0, chunk=100).then(
        "butterworth", name="bp", btype="bandpass", order=4, cutoff=[1, 40]
    ).to("channel", name="nobody")
    t0 = time.monotonic()
    busy = count_for(0, work=p.run)
    elapsed = time.monotonic() - t0
    idle = count_for(elapsed)
    assert busy > 0.5 * idle, (busy, idle)
