"""Clients for the live-ingest test, using the repo's Python client (python/neurostream/client.py).

  live_clients.py send ADDRESS EXPECTED.parquet
      connects 5 clients to the engine's arrow_tcp source at ADDRESS (host:port):
        a: named "a", 3 batches with token text, LZ4        (seq_id 0..2)
        b: named "b", 2 batches, uncompressed                 (seq_id 10..11)
        c: 1 good batch (seq_id 20), then a malformed message
        d: 1 good batch (seq_id 30), then half a message and a hang-up (truncated frame)
        e: the wrong d_model
      and writes every row the engine must have accepted to EXPECTED.parquet.
  live_clients.py slow ADDRESS GAP_MS
      one client (d_model 64) sends a 4-row frame, waits GAP_MS, sends another, and closes.
  live_clients.py subscribe ADDRESS OUT_DIR
      subscribes to the engine's arrow_tcp sink at ADDRESS: `alerts` and `windows` are read to
      the end and written to OUT_DIR/<table>.parquet; a `features` subscriber reads one batch and
      hangs up; a request for `nope` must be refused with the list of tables offered.
  live_clients.py same A.parquet B.parquet
      the two files hold the same rows (same schema and values, in order).
  live_clients.py hook ADDRESS EXPECTED.parquet
      runs a two-layer model with stream_module_output hooked on its first layer: PyTorch when it
      is installed, else a stand-in module with PyTorch's hook protocol (register_forward_hook,
      tensors with detach/to/float/numpy). Two forward passes, batches of 2 and 1 sequences of
      5 tokens (d_model 16), then writes the hooked outputs to EXPECTED.parquet.
  live_clients.py check OUT.parquet EXPECTED.parquet
      the engine's output holds exactly the expected rows (matched on seq_id, pos), values equal.
"""
import os
import socket
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from neurostream.client import Client, SubscribeError, activation_schema, stream_module_output, subscribe  # noqa: E402

D = 16


def send(address, expected_path):
    host, port = address.rsplit(":", 1)
    port = int(port)
    rng = np.random.default_rng(3)
    rows = []

    def batch(seq, n):
        x = rng.normal(size=(n, D)).astype(np.float32)
        rows.extend((seq, p, x[p]) for p in range(n))
        return x

    with Client(host, port, stream="a") as c:
        for s in range(3):
            c.send(batch(s, 7 + s), seq_id=s, tokens=[f" w{s}_{p}" for p in range(7 + s)])
    with Client(host, port, stream="b", compression=None) as c:
        for s in (10, 11):
            c.send(batch(s, 5), seq_id=s)
    # c: one good batch, then bytes that are not an IPC message.
    c = Client(host, port)
    c.send(batch(20, 6), seq_id=20)
    c._file.write(b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"\x07" * 16)
    c._file.flush()
    c._sock.close()
    # d: one good batch, then half of the next message, then the connection drops.
    d = Client(host, port)
    d.send(batch(30, 4), seq_id=30)
    x = rng.normal(size=(4, D)).astype(np.float32)
    schema = activation_schema(D)
    msg = pa.record_batch([pa.array(np.full(4, 31, np.uint64)), pa.array(np.arange(4, dtype=np.uint32)),
                           pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), type=schema.field("act").type)],
                          schema=schema).serialize()
    d._file.write(msg.to_pybytes()[: msg.size // 2])
    d._file.flush()
    d._sock.close()
    # e: wrong width.
    with Client(host, port) as e:
        e.send(np.zeros((3, D // 2), np.float32), seq_id=40)

    table = pa.table({"seq_id": pa.array([r[0] for r in rows], pa.uint64()), "pos": pa.array([r[1] for r in rows], pa.uint32()),
                      "act": pa.FixedSizeListArray.from_arrays(pa.array(np.stack([r[2] for r in rows]).ravel()), D)})
    pq.write_table(table, expected_path)
    print(f"sent {len(rows)} good rows")


def slow(address, gap_ms):
    import time
    host, port = address.rsplit(":", 1)
    rng = np.random.default_rng(4)
    with Client(host, int(port), stream="slow") as c:
        c.send(rng.normal(size=(4, 64)).astype(np.float32), seq_id=0)
        time.sleep(int(gap_ms) / 1000)
        c.send(rng.normal(size=(4, 64)).astype(np.float32), seq_id=1)


def check(out, expected):
    got = pq.read_table(out).to_pydict()
    exp = pq.read_table(expected).to_pydict()
    g = {(s, p): np.asarray(a, np.float32) for s, p, a in zip(got["seq_id"], got["pos"], got["act"])}
    e = {(s, p): np.asarray(a, np.float32) for s, p, a in zip(exp["seq_id"], exp["pos"], exp["act"])}
    assert len(g) == len(got["seq_id"]), "duplicate rows in the engine's output"
    assert set(g) == set(e), f"rows differ: missing {sorted(set(e) - set(g))}, unexpected {sorted(set(g) - set(e))}"
    for k in e:
        assert np.array_equal(g[k], e[k]), f"row {k} differs"
    print(f"{len(g)} rows match")


class _Tensor:
    """The part of torch.Tensor the hook helper touches."""

    def __init__(self, a):
        self.a = np.asarray(a)

    def detach(self):
        return self

    def to(self, device):
        assert device == "cpu"
        return self

    def float(self):
        return _Tensor(self.a.astype(np.float32))

    def numpy(self):
        return self.a


class _Linear:
    """A linear layer with PyTorch's forward-hook protocol; returns a tuple, as transformer blocks do."""

    def __init__(self, w):
        self.w, self.hooks = w, []

    def register_forward_hook(self, fn):
        self.hooks.append(fn)
        hooks = self.hooks

        class Handle:
            def remove(self):
                hooks.remove(fn)
        return Handle()

    def __call__(self, x):
        out = (_Tensor(x.a @ self.w), None)
        for fn in list(self.hooks):
            fn(self, (x,), out)
        return out


def hook(address, expected_path):
    host, port = address.rsplit(":", 1)
    rng = np.random.default_rng(9)
    w1, w2 = rng.normal(size=(8, D)).astype(np.float32), rng.normal(size=(D, 4)).astype(np.float32)
    inputs = [rng.normal(size=(2, 5, 8)).astype(np.float32), rng.normal(size=(1, 5, 8)).astype(np.float32)]
    try:
        import torch
    except ImportError:
        torch = None
    rows = []
    with Client(host, int(port), stream="hooked") as c:
        if torch is not None:
            class Block(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.lin = torch.nn.Linear(8, D, bias=False)
                    self.lin.weight.data = torch.from_numpy(w1.T.copy())

                def forward(self, x):
                    return (self.lin(x), None)
            first, second = Block(), torch.nn.Linear(D, 4, bias=False)
            handle = stream_module_output(first, c, seq_ids=[100, 101, 102])
            with torch.no_grad():
                outs = [first(torch.from_numpy(x))[0].numpy() for x in inputs]
                for o in outs:
                    second(torch.from_numpy(o))
        else:
            first = _Linear(w1)
            handle = stream_module_output(first, c, seq_ids=[100, 101, 102])
            outs = [first(_Tensor(x))[0].a for x in inputs]
        handle.remove()
        first_out = np.concatenate(outs)  # [3, 5, D]
    for s, seq in enumerate(first_out):
        rows.extend((100 + s, p, seq[p]) for p in range(5))
    print(f"hooked {'torch ' + torch.__version__ if torch is not None else 'stand-in'} module: {len(rows)} rows")
    schema = activation_schema(D)
    pq.write_table(pa.table({
        "seq_id": pa.array([r[0] for r in rows], pa.uint64()),
        "pos": pa.array([r[1] for r in rows], pa.uint32()),
        "act": pa.FixedSizeListArray.from_arrays(pa.array(np.stack([r[2] for r in rows]).ravel()), type=schema.field("act").type),
    }), expected_path)


def subscribe_all(address, out_dir):
    import threading
    host, port = address.rsplit(":", 1)
    port = int(port)
    try:
        next(subscribe("nope", host, port))
        raise AssertionError("a request for a table that does not exist was accepted")
    except SubscribeError as e:
        assert "no `nope` here" in str(e) and "alerts" in str(e), str(e)
    errors = []

    def read_all(table):
        try:
            batches = list(subscribe(table, host, port, timeout=60))
            assert batches, f"no {table} arrived"
            pq.write_table(pa.Table.from_batches(batches), os.path.join(out_dir, f"{table}.parquet"))
        except Exception as e:  # reported by the main thread
            errors.append(f"{table}: {e!r}")

    def hang_up():
        stream = subscribe("features", host, port, timeout=60)
        next(stream)
        stream.close()

    threads = [threading.Thread(target=read_all, args=(t,)) for t in ["alerts", "windows"]] + [threading.Thread(target=hang_up)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def same(a, b):
    ta, tb = pq.read_table(a), pq.read_table(b)
    ta, tb = ta.replace_schema_metadata(None), tb.replace_schema_metadata(None)
    assert ta.schema == tb.schema, f"schemas differ:\n{ta.schema}\n{tb.schema}"
    assert ta.num_rows > 0 and ta.equals(tb), f"{a} and {b} differ ({ta.num_rows} vs {tb.num_rows} rows)"
    print(f"{ta.num_rows} rows match")


if __name__ == "__main__":
    {"send": send, "check": check, "slow": slow, "subscribe": subscribe_all, "same": same, "hook": hook}[sys.argv[1]](*sys.argv[2:])
