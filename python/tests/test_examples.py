"""The README's Python examples run as shown, after `./scripts/test.sh` (which builds the package)."""
import re
import subprocess
import sys

import numpy as np

import neurostream as ns


def test_readme_python_quick_start_runs(repo, monkeypatch):
    readme = (repo / "README.md").read_text()
    section = readme[readme.index("### From Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(repo)
    scope = {}
    exec(compile(code, "README.md (From Python)", "exec"), scope)
    assert scope["table"].num_rows == 25_000
    assert isinstance(scope["report"], ns.Report)


def test_notebook_example_runs(repo):
    out = subprocess.run(
        [sys.executable, str(repo / "examples" / "python" / "quickstart.py")], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "streamed 5000 rows" in out.stdout


def test_push_source_overload_policy_accounts_for_every_row():
    """A push source with overload = "drop_oldest" behind a slow reader: every row read is
    either delivered or counted as dropped (read = kept + dropped)."""
    import threading
    import time

    p = ns.Pipeline(max_in_flight_mb=0.001)
    src = p.push_source(channels=["a", "b"], sfreq=1000.0, queue=4, batch_rows=16, overload="drop_oldest")
    handle = p.start(stream=[src], slow="block", stream_capacity=1)
    kept = [0]

    def read():
        for b in handle.stream(src):
            kept[0] += b.num_rows
            time.sleep(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(200):
        src.push(np.full((16, 2), i, dtype=np.float32))
    src.close()
    reader.join()
    report = handle.wait()
    read, dropped = report.overload["sources." + src.name]
    assert read == 200 * 16
    assert kept[0] + dropped == read
