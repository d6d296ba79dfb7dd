"""Shared fixtures of the Python package's tests.

Run by `./scripts/test.sh` (through tests/python_package.rs) against the package it builds;
`NEUROSTREAM_BIN` names the CLI binary for the parity tests.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli() -> str:
    """The `neurostream` command-line binary."""
    path = os.environ.get("NEUROSTREAM_BIN") or shutil.which("neurostream")
    if not path:
        candidate = REPO / "target" / "debug" / "neurostream"
        if not candidate.exists():
            subprocess.run(["cargo", "build", "--bin", "neurostream"], cwd=REPO, check=True)
        path = str(candidate)
    return path


@pytest.fixture
def repo() -> Path:
    return REPO
