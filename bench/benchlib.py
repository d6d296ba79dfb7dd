"""What the benchmark scripts share: where their result tables go and how they build.

- `results_path(NAME)`: `bench/NAME` (the recorded tables), or `$NEUROSTREAM_BENCH_OUT/NAME`
  when that is set (`bench/all.py` sets it to an untracked directory unless `--record`).
- `cpu_name()`: the CPU's model name for a table's machine line.
- `cargo_build(ARGS...)`: `cargo build --release ARGS` in the repo, skipped when
  `NEUROSTREAM_BENCH_PREBUILT=1` (`bench/all.py` builds the whole workspace once: a `-p` build
  re-resolves features and recompiles much of the tree).
"""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def results_path(name: str) -> str:
    """Where the result table `name` goes."""
    out = os.environ.get("NEUROSTREAM_BENCH_OUT") or os.path.join(ROOT, "bench")
    os.makedirs(out, exist_ok=True)
    return os.path.join(out, name)


def cargo_build(*args: str) -> None:
    """Builds release artifacts, unless bench/all.py already built the workspace."""
    if os.environ.get("NEUROSTREAM_BENCH_PREBUILT") == "1":
        return
    subprocess.run(["cargo", "build", "--release", *args], cwd=ROOT, check=True)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo), or the architecture where there is none."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), platform.machine())
    except OSError:
        return platform.machine()
