#!/usr/bin/env bash
# The test command: prepares what the reference checks need, then runs every test.
#
#   ./scripts/test.sh            # all tests, CPU and wgpu (lavapipe when there is no GPU)
#   ./scripts/test.sh -p neurostream-operators   # extra arguments go to `cargo test`
#
# It installs, when missing:
#   - Mesa's Vulkan CPU driver (lavapipe) through apt when run as root, so the wgpu kernels run
#     without a GPU (otherwise install `mesa-vulkan-drivers libvulkan1` yourself, or set
#     NEUROSTREAM_SKIP_GPU_TESTS=1);
#   - iproute2 and util-linux when run as root (the LSL tests run in a loopback-only network
#     namespace; set NEUROSTREAM_SKIP_LSL_TESTS=1 where that is impossible);
#   - Debian's chromium when run as root (the live view's browser tests drive it headless;
#     set CHROMIUM to another Chromium binary);
#   - a Python venv in .venv with numpy, pyarrow, duckdb, polars, scipy, pyedflib, MNE,
#     scikit-learn, pylsl and gguf for the reference checks (set NEUROSTREAM_PYTHON to use another
#     interpreter), and the Python package (python/) built into it with the tests' profile.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1 || ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing the Vulkan loader and Mesa's lavapipe driver"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
    else
        echo "warning: no Vulkan driver found; install mesa-vulkan-drivers and libvulkan1, or set NEUROSTREAM_SKIP_GPU_TESTS=1" >&2
    fi
fi

if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing iproute2 and util-linux (the LSL tests run in a loopback-only network namespace)"
        apt-get update -qq
        apt-get install -y -qq iproute2 util-linux >/dev/null
    fi
fi

if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing chromium (the live view's browser tests)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq chromium >/dev/null
    else
        echo "warning: no chromium found; install Debian's chromium or set CHROMIUM for the browser tests" >&2
    fi
fi

if [ -z "${NEUROSTREAM_PYTHON:-}" ]; then
    if ! .venv/bin/python -c "import numpy, pyarrow, duckdb, polars, scipy, safetensors, pandas, pyedflib, mne, pymatreader, hdf5storage, eeglabio, sklearn, pylsl, pyriemann, pytest, gguf" 2>/dev/null; then
        echo "== creating .venv with the Python reference libraries"
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
    fi
    export NEUROSTREAM_PYTHON="$PWD/.venv/bin/python"
fi

if [ "${NEUROSTREAM_SKIP_PYTHON_TESTS:-}" != "1" ]; then
    # The Python package (python/), built with the tests' profile into the same target dir, so
    # the dependencies compile once for both.
    echo "== building the Python package into $NEUROSTREAM_PYTHON"
    "$NEUROSTREAM_PYTHON" -m pip install -q --disable-pip-version-check "maturin>=1.9.4,<2" pytest
    rm -rf target/wheels
    "$NEUROSTREAM_PYTHON" -m maturin build --quiet --profile dev --manifest-path python/Cargo.toml --out target/wheels
    "$NEUROSTREAM_PYTHON" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels/neurostream-*.whl
fi

if [ "${NEUROSTREAM_SKIP_MODEL_TESTS:-}" != "1" ]; then
    ./scripts/fetch_models.sh   # SmolLM2 + MiniLM weights (~190 MB) into ~/.cache/neurostream/models, once
fi

echo "== cargo test"
df -h . | tail -1 || true
# Every target runs even after a failure, so one run reports every failing test.
cargo test --workspace --no-fail-fast "$@"
