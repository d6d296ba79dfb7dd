"""Runs every side-by-side benchmark in the repo in one go, each in the same run as its peers.

  python bench/all.py                 # full configurations -> target/bench-results/<time>/
  python bench/all.py --quick         # reduced configurations (minutes, not hours)
  python bench/all.py --record        # rewrite the recorded tables in bench/ (and the README's
                                      # results, by bench/readme.py) instead
  python bench/all.py --only checkpoint cluster

It builds the whole workspace once (`cargo build --release --workspace --bins --examples`: one
feature resolution, so no benchmark rebuilds the tree with `-p`), then runs each benchmark with
`NEUROSTREAM_BENCH_PREBUILT=1` and `NEUROSTREAM_BENCH_OUT` pointing at the results directory
(see bench/benchlib.py). Benchmarks whose peer library is missing (PyTorch for the SAE and GPU
tables, transformers for the language model's) are reported as skipped with the reason, not
failed. `SUMMARY.md` in the results directory lists each benchmark's command, status and time,
the machine, the Rust and Python library versions and how both sides were built.

The live-view and fan-out benchmarks are Rust examples (`examples/bench_ui.rs`,
`examples/bench_fanout.rs`); they run from the same build. Not run here:
`bench/runtime_split.py` (it needs a binary of an older commit).
"""
import argparse
import datetime
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (script, full arguments, quick arguments, Python modules it needs)
BENCHMARKS = {
    "parquet_normalize": ("parquet_normalize.py", [], ["--tokens", "100000", "--repeat", "1"], ["pyarrow", "numpy"]),
    "scale_out": ("scale_out.py", [], ["--quick"], ["pyarrow"]),
    "bci": ("bci.py", [], [], ["scipy", "mne", "sklearn", "pyarrow"]),
    "lsl_roundtrip": ("lsl_roundtrip.py", [], ["--chunks", "300", "--repeats", "1"], ["pylsl", "root"]),
    "bandpower": ("bandpower_parquet.py", [], ["--seconds", "300", "--repeats", "1"], ["scipy", "pyarrow"]),
    "edf_dataset": ("edf_dataset.py", [], ["--recordings", "4", "--seconds", "60", "--repeats", "1"], ["mne", "scipy", "pyarrow"]),
    "recording_formats": ("recording_formats.py", [], ["--seconds", "60", "--repeats", "1"], ["mne", "pandas", "pybv", "pyarrow"]),
    "checkpoint": ("checkpoint.py", ["--repeats", "5"], ["--rows", "200000", "--repeats", "1"], ["pyarrow"]),
    "cluster": ("cluster.py", [], ["--rows", "10000", "--tokens", "10000"], ["sklearn", "scipy"]),
    "language_model": ("language_model.py", [], ["--documents", "8", "--repeats", "1"], ["torch", "transformers", "gguf", "pyarrow"]),
    "sae_encode": ("sae_encode.py", [], ["--seconds", "0.5"], ["torch", "safetensors"]),
    "sae_encode_blas": ("sae_encode_blas.py", [], ["--seconds", "0.5"], ["numpy", "safetensors"]),
    "sae_train": ("sae_train.py", [], ["--quick"], ["torch"]),
    "python_package": ("python_package.py", [], [], ["neurostream", "pyarrow", "scipy"]),
    "gpu": ("gpu.py", [], ["--quick"], ["numpy"]),
    "soak": ("soak.py", [], ["--hours", "0.5", "--bci-hours", "1"], ["pyarrow"]),
    "churn": ("churn.py", [], ["--clients", "300"], ["numpy", "pyarrow"]),
    "ui": ("examples/bench_ui", ["--repeats", "7"], ["--repeats", "1", "--tokens", "100000"], []),
    "fanout": ("examples/bench_fanout", [], ["--batches", "200", "--paced", "50", "--repeats", "1"], ["pyarrow"]),
}


def missing_modules(names: list[str]) -> list[str]:
    """What of `names` this machine lacks: Python modules, and `root` (a benchmark that runs in a
    loopback-only network namespace needs root, `unshare` and `ip`)."""
    def lacks(n: str) -> bool:
        if n == "root":
            return os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None
        return importlib.util.find_spec(n) is None
    return [n for n in names if lacks(n)]


def version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        return getattr(__import__(module), "__version__", "?")
    except Exception as e:  # a broken install is worth reporting, not a crash
        return f"import fails ({e})"


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
            flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
        cpu = names[0] if names else cpu
        simd = [s for s in ("avx2", "fma", "avx512f") if f" {s}" in flags]
    except OSError:
        simd = []
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return [
        f"- Machine: {cpu}, {os.cpu_count()} cores ({', '.join(simd) or 'no AVX2'}), {mem:.0f} GiB, {platform.platform()}",
        f"- Rust: {rustc}; neurostream built with `cargo build --release` (no `target-cpu`; RUSTFLAGS="
        f"`{os.environ.get('RUSTFLAGS', '')}`; SIMD kernels chosen at run time)",
        f"- Python {platform.python_version()}: "
        + ", ".join(f"{m} {version(m)}" for m in ("numpy", "scipy", "torch", "transformers", "sklearn", "pyarrow", "mne", "polars", "duckdb")),
        "- Peers run as installed from their wheels (their own BLAS and threads).",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced configurations")
    ap.add_argument("--record", action="store_true", help="rewrite the recorded tables in bench/")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    ap.add_argument("--out", help="results directory (default target/bench-results/<time>)")
    a = ap.parse_args()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.join(ROOT, "bench") if a.record else (a.out or os.path.join(ROOT, "target", "bench-results", stamp))
    os.makedirs(out, exist_ok=True)
    print(f"== building the workspace once (release)", flush=True)
    t0 = time.time()
    subprocess.run(["cargo", "build", "--release", "--workspace", "--bins", "--examples"], cwd=ROOT, check=True)
    build_s = time.time() - t0
    env = dict(os.environ, NEUROSTREAM_BENCH_PREBUILT="1", NEUROSTREAM_BENCH_OUT=out)
    rows = []
    names = a.only or list(BENCHMARKS)
    for i, name in enumerate(names, 1):
        script, full, quick, needs = BENCHMARKS[name]
        args = quick if a.quick else full
        if script.endswith(".py"):
            cmd = [sys.executable, os.path.join("bench", script), *args]
            shown = " ".join(["python", f"bench/{script}", *args])
        else:  # a Rust example from the workspace build
            cmd = [os.path.join(ROOT, "target", "release", script), *args]
            shown = " ".join([f"target/release/{script}", *args])
        lacking = missing_modules(needs)
        if lacking:
            print(f"== [{i}/{len(names)}] {name}: skipped (needs {', '.join(lacking)})", flush=True)
            rows.append((name, shown, f"skipped: needs {', '.join(lacking)}", 0.0))
            continue
        print(f"== [{i}/{len(names)}] {name}: {shown}", flush=True)
        t0 = time.time()
        r = subprocess.run(cmd, cwd=ROOT, env=env)
        took = time.time() - t0
        status = "ok" if r.returncode == 0 else f"failed (exit {r.returncode})"
        print(f"== {name}: {status} in {took:.0f} s", flush=True)
        rows.append((name, shown, status, took))
    lines = [
        "# Benchmarks: one run of bench/all.py",
        "",
        f"Command: `python bench/all.py{' --quick' if a.quick else ''}{' --record' if a.record else ''}"
        f"{' --only ' + ' '.join(a.only) if a.only else ''}` on {datetime.date.today()}; "
        f"workspace build {build_s:.0f} s. Each table was written by its benchmark into this directory.",
        "",
        *machine(),
        "",
        "| benchmark | command | status | seconds |",
        "| --- | --- | --- | ---: |",
        *[f"| {n} | `{c}` | {s} | {t:.0f} |" for n, c, s, t in rows],
        "",
    ]
    summary = os.path.join(out, "SUMMARY.md" if not a.record else "ALL_RESULTS.md")
    with open(summary, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    print(f"results in {out}")
    if a.record:
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "readme.py")], check=True)
    if any(s.startswith("failed") for _, _, s, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
