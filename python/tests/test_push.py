"""Data in from numpy: push sources, zero copy, shapes, dtypes, markers, NaN policy, threads."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import neurostream as ns


def values(table, prefix=None):
    cols = [f.name for f in table.schema if f.name not in ("time", "sample", "marker", "seq_id", "pos", "token")]
    if cols == ["act"]:
        return np.stack(table["act"].to_numpy(zero_copy_only=False))
    return np.stack([table[c].to_numpy() for c in cols], axis=1)


def test_signal_round_trip_is_exact_with_markers():
    x = np.random.default_rng(1).standard_normal((10_000, 8)).astype(np.float32)
    p = ns.Pipeline()
    src = p.from_numpy(x, sfreq=500.0, ch_names=[f"E{i}" for i in range(8)], markers=[(100, "stim", 0.5), (9999, "end", 0.0)])
    out = p.collect(src)
    assert out.num_rows == 10_000
    assert out.column_names[2:10] == [f"E{i}" for i in range(8)]
    np.testing.assert_array_equal(values(out), x)  # copied once into frames, bit for bit
    assert out["sample"].to_pylist() == list(range(10_000))
    np.testing.assert_allclose(out["time"].to_numpy(), np.arange(10_000) / 500.0)
    marks = {i: m for i, m in enumerate(out["marker"].to_pylist()) if m is not None}
    assert marks == {100: "stim", 9999: "end"}
    assert out.schema.metadata[b"neurostream.sample_rate"] == b"500"


def test_activations_keep_seq_id_pos_and_tokens():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    seq = np.repeat([5, 6, 7], 100)
    pos = np.tile(np.arange(100), 3)
    tokens = [f"t{i}" for i in range(300)]
    p = ns.Pipeline()
    src = p.from_numpy(x, seq_id=seq, pos=pos, tokens=tokens)
    out = p.collect(src)
    np.testing.assert_array_equal(values(out), x)
    assert out["seq_id"].to_pylist() == seq.tolist()
    assert out["pos"].to_pylist() == pos.tolist()
    assert out["token"].to_pylist() == tokens


def test_pushes_from_threads_while_running_in_order_per_thread():
    p = ns.Pipeline()
    src = p.push_source(d_model=4, queue=4)
    handle = p.start(collect=[src])

    def feed(seq):
        for k in range(50):
            rows = np.full((10, 4), seq * 1000 + k, dtype=np.float32)
            src.push(rows, seq_id=np.full(10, seq), pos=np.arange(k * 10, k * 10 + 10))

    threads = [threading.Thread(target=feed, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    src.close()
    report = handle.wait(timeout=60)
    assert report is not None
    out = report.tables[src.name]
    assert out.num_rows == 1500
    for seq in range(3):
        mine = out.filter(np.array(out["seq_id"].to_pylist()) == seq)
        assert mine["pos"].to_pylist() == list(range(500))


def test_bad_arrays_are_refused_naming_the_argument():
    p = ns.Pipeline()
    src = p.push_source(channels=["a", "b"], sfreq=100.0)
    with pytest.raises(TypeError, match="data: expected float32 C-contiguous.*float64.*copy=True"):
        src.push(np.zeros((4, 2)))
    with pytest.raises(TypeError, match="non-C-contiguous"):
        src.push(np.zeros((2, 4), dtype=np.float32).T)
    with pytest.raises(ValueError, match=r"data: expected shape \(n_rows, 2\), got \(4, 3\)"):
        src.push(np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="expected a numpy array"):
        src.push("not an array")
    with pytest.raises(ValueError, match="marker `x` at row 9 is past the array's 4 rows"):
        src.push(np.zeros((4, 2), dtype=np.float32), markers=[(9, "x", 0.0)])
    with pytest.raises(ValueError, match="signal rows take no seq_id"):
        src.push(np.zeros((4, 2), dtype=np.float32), seq_id=[0] * 4, pos=[0, 1, 2, 3])
    # copy=True converts (one documented copy) and goes through.
    src.push(np.arange(8, dtype=np.float64).reshape(4, 2), copy=True)
    acts = p.push_source(d_model=3)
    with pytest.raises(ValueError, match="activation rows need seq_id and pos"):
        acts.push(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="pos has 1 entries for 2 rows"):
        acts.push(np.zeros((2, 3), dtype=np.float32), seq_id=[0, 0], pos=[0])
    with pytest.raises(ValueError, match="give channels= and sfreq="):
        p.push_source(channels=["a"], d_model=3)
    q = ns.Pipeline()
    q.push_source(channels=["a", "b"], sfreq=10.0, ch_types=["eeg"], name="typed")
    with pytest.raises(ns.ValidationError, match=r"\[sources.typed\].*channel_types` has 1 entries for 2 channels"):
        q.start()
    q = ns.Pipeline()
    q.push_source(channels=["a"], sfreq=10.0, ch_types=["EEG!"], name="typed")
    with pytest.raises(ns.ValidationError, match="channel type `EEG!` is not a type name"):
        q.start()


def test_nan_rows_follow_on_invalid():
    x = np.ones((100, 2), dtype=np.float32)
    x[[3, 50], 1] = np.nan
    x[70, 0] = np.inf
    p = ns.Pipeline()
    src = p.from_numpy(x, sfreq=10.0, on_invalid="drop")
    report = p.run(collect=[src])
    assert report.tables[src.name].num_rows == 97
    assert report.dropped_invalid == {"sources." + src.name: 3}
    p = ns.Pipeline()
    src = p.from_numpy(x, sfreq=10.0)
    with pytest.raises(ns.PipelineError, match="non-finite value at sample 3, channel 1"):
        p.run(collect=[src])


def test_push_after_the_run_ended_raises():
    p = ns.Pipeline()
    src = p.push_source(channels=["a"], sfreq=10.0)
    h = p.start(collect=[src])
    src.push(np.zeros((5, 1), dtype=np.float32))
    h.stop()
    h.wait()
    with pytest.raises(ns.PipelineError, match="no longer reading"):
        src.push(np.zeros((5, 1), dtype=np.float32), timeout=5)


def test_a_full_queue_times_out():
    p = ns.Pipeline()
    src = p.push_source(channels=["a"], sfreq=10.0, queue=1)
    src.push(np.zeros((5, 1), dtype=np.float32))  # nothing reads: the queue is now full
    with pytest.raises(TimeoutError, match="queue stayed full"):
        src.push(np.zeros((5, 1), dtype=np.float32), timeout=0.2)


def test_numpy_arrays_are_read_in_place():
    """The engine reads the array's own memory: the address it reads from is the array's, and
    a 1 GiB array costs no second GiB of resident memory (peak RSS grows by less than 200 MiB:
    the frames in flight and the reader's buffer)."""
    script = textwrap.dedent(
        """
        import resource
        import numpy as np, neurostream as ns
        x = np.empty(((1 << 28) // 16, 16), dtype=np.float32)   # 1 GiB
        x.fill(1.0)                                             # resident now
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        p = ns.Pipeline()
        src = p.push_source(channels=[f"c{i}" for i in range(16)], sfreq=1000.0, queue=2, batch_rows=65536)
        handle = p.start(stream=[src], slow="drop_oldest", stream_capacity=2)
        address = src._producer.push(x)
        src.close()
        report = handle.wait()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(address == x.__array_interface__["data"][0], report.rows("sources." + src.name), (after - before) // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    same, rows, grown_mib = out.stdout.split()
    assert same == "True"
    assert int(rows) == (1 << 28) // 16
    assert int(grown_mib) < 200, f"peak RSS grew by {grown_mib} MiB for a 1 GiB array"
