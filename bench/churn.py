"""Connection churn: a model server that opens one `arrow_tcp` connection per request
(`neurostream.send`, no stream name), for thousands of requests, into SAE encoding and
`feature_stats`. Each unnamed connection is a stream that ends with it; the engine's resident
memory should level off instead of growing with every client.

    python bench/churn.py [--clients 2000] [--rows 64] [--baseline-binary PATH]

Pipeline: `arrow_tcp` (d_model 576) -> `sae_encode` (the bundled SmolLM2 SAE, 2,048 latents,
TopK 32) -> `feature_stats` (window 256, step 128) -> Parquet tables. The client sends `--rows`
random rows per connection, one connection after another (a refused connection, over
`max_connections`, is sent again; a client cannot tell one refused after its stream was written,
so the table counts the streams that reached the output). Resident memory (VmRSS) is sampled after every tenth of the
clients. `--baseline-binary` runs an older `neurostream` binary on the same traffic in the same
session (e.g. one built before streams could end) for a second column.
Writes bench/CHURN_RESULTS.md (or $NEUROSTREAM_BENCH_OUT/CHURN_RESULTS.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import subprocess
import tempfile
import time

import numpy as np

from benchlib import cargo_build, cpu_name, results_path

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "neurostream"
SAE = ROOT / "examples" / "data" / "smollm2_sae"

PIPELINE = """
[pipeline]
name = "churn"
device = "cpu"

[sources.acts]
kind = "arrow_tcp"
listen = "127.0.0.1:0"
address_file = "{addr}"
d_model = 576
idle_timeout_s = 3.0

[operators.sae]
kind = "sae_encode"
input = "acts"
sae = "{sae}"

[operators.stats]
kind = "feature_stats"
input = "sae"
window = 256
step = 128

[sinks.out]
kind = "parquet"
input = "stats"
path = "{out}"
"""


def load_client():
    """The package's pure-Python client module, without building the extension."""
    spec = importlib.util.spec_from_file_location("ns_client", ROOT / "python" / "neurostream" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def churn(binary: pathlib.Path, clients: int, rows: int) -> tuple[list[tuple[int, float]], float, str, int]:
    """Runs the pipeline on `binary` with `clients` one-request clients; returns the RSS samples
    (clients so far, MiB), the seconds the clients took, the run's summary and the number of
    streams (clients) whose statistics reached the output."""
    client = load_client()
    work = pathlib.Path(tempfile.mkdtemp(prefix="churn-"))
    addr = work / "address.txt"
    (work / "p.toml").write_text(PIPELINE.format(addr=addr, sae=SAE, out=work / "out"))
    with open(work / "stderr.txt", "w") as err:
        p = subprocess.Popen([str(binary), "run", str(work / "p.toml"), "--quiet"], stdout=subprocess.PIPE, stderr=err, text=True)
    while not (addr.exists() and addr.read_text().strip()):
        if p.poll() is not None:
            raise SystemExit(f"{binary} ended before listening: {(work / 'stderr.txt').read_text()[-2000:]}")
        time.sleep(0.05)
    host, port = addr.read_text().strip().rsplit(":", 1)
    x = np.random.default_rng(0).standard_normal((rows, 576)).astype(np.float32)
    samples = []
    t0 = time.perf_counter()
    for i in range(clients):
        for _ in range(100):
            try:
                client.send(x, i, host=host, port=int(port))
                break
            except (BrokenPipeError, ConnectionResetError):
                time.sleep(0.05)  # refused over max_connections: send again
        else:
            p.kill()
            raise SystemExit(f"client {i} was refused 100 times")
        if (i + 1) % max(1, clients // 10) == 0:
            time.sleep(0.2)  # let the engine take in what was sent
            samples.append((i + 1, rss_mib(p.pid)))
    seconds = time.perf_counter() - t0
    out, _ = p.communicate(timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"{binary} failed: {(work / 'stderr.txt').read_text()[-2000:]}")
    import pyarrow.parquet as pq

    delivered = len(set(pq.read_table(work / "out" / "l0.parquet").column("stream").to_pylist()))
    return samples, seconds, out.strip(), delivered


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--baseline-binary", type=pathlib.Path)
    a = ap.parse_args()
    cargo_build("--bin", "neurostream")
    runs = [("neurostream", BIN)]
    if a.baseline_binary:
        runs.append((f"baseline ({a.baseline_binary.name})", a.baseline_binary))
    results = {}
    for name, binary in runs:
        print(f"== {name}: {a.clients} clients", flush=True)
        results[name] = churn(binary, a.clients, a.rows)
        print(f"   {results[name][0][-1][1]:.1f} MiB after {a.clients} clients", flush=True)
    names = [n for n, _ in runs]
    lines = [
        "# Connection churn: one unnamed connection per request",
        "",
        f"Command: `python bench/churn.py --clients {a.clients} --rows {a.rows}"
        + (f" --baseline-binary {a.baseline_binary}`" if a.baseline_binary else "`")
        + f" (release build, 1 worker, CPU; {cpu_name()}, {os.cpu_count()} cores). "
        f"{a.clients} clients, one after another, each open a connection, send {a.rows} rows of 576 "
        "floats and close it: arrow_tcp -> sae_encode (bundled SmolLM2 SAE, 2,048 latents) -> "
        "feature_stats (window 256, step 128) -> Parquet tables. Each connection is a stream that ends "
        "with it; resident memory (VmRSS) after every tenth of the clients.",
        "",
        "| clients | " + " | ".join(f"{n} RSS MiB" for n in names) + " |",
        "| ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for k in range(len(results[names[0]][0])):
        clients = results[names[0]][0][k][0]
        lines.append(f"| {clients:,} | " + " | ".join(f"{results[n][0][k][1]:.1f}" for n in names) + " |")
    lines.append("")
    for n in names:
        samples, seconds, _, delivered = results[n]
        first, last = samples[0], samples[-1]
        per = (last[1] - first[1]) / max(1, last[0] - first[0]) * 1024
        lines.append(
            f"- {n}: {last[1] - first[1]:+.1f} MiB from {first[0]:,} to {last[0]:,} clients "
            f"({per:.0f} KiB per client); the clients took {seconds:.1f} s; "
            f"{delivered:,} of {a.clients:,} clients' streams reached the output."
        )
    lines += ["", "Engine summary (neurostream):", "", "```text", results[names[0]][2], "```", ""]
    path = results_path("CHURN_RESULTS.md")
    pathlib.Path(path).write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
