"""neurostream from Python, notebook style: run it cell by cell in Jupyter, or as a script:

    .venv/bin/python examples/python/quickstart.py      # after ./scripts/test.sh (which builds the package)

Uses only the bundled data under examples/data.
"""
# %% A pipeline file, run in process: the same outputs as `neurostream run`.
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import neurostream as ns

here = Path(__file__).resolve().parent
examples = here.parent
report = ns.Pipeline.from_toml(examples / "sleep_bandpower.toml").run()
print(report)  # in Jupyter the report renders as a table
epochs = pq.read_table(examples / "out" / "sleep_bandpower.parquet")
print(epochs.select(["sample", "marker"]).to_pandas().head())

# %% The same kind of pipeline built in Python, collected straight into pyarrow.
p = ns.Pipeline()
psg = p.source("edf", path=str(examples / "data/eeg/short_psg.edf"), channels=["EEG Fpz-Cz", "EEG Pz-Oz"])
band = psg.then("butterworth", btype="bandpass", order=4, cutoff=[0.3, 35.0])
table = band.collect()
print(table.num_rows, "samples,", table.schema.metadata[b"neurostream.sample_rate"].decode(), "Hz")

# %% Data already in memory: a numpy array (read in place, not copied) with markers.
rng = np.random.default_rng(0)
sfreq = 250.0
t = np.arange(int(20 * sfreq)) / sfreq
eeg = (10 * np.sin(2 * np.pi * 10 * t)[:, None] + rng.standard_normal((t.size, 4))).astype(np.float32)
p = ns.Pipeline()
src = p.from_numpy(eeg, sfreq=sfreq, ch_names=["C3", "Cz", "C4", "Pz"], markers=[(1000, "cue", 0.0)])
power = src.then("bandpower", window_s=2.0, bands=[["alpha", 8.0, 12.0], ["beta", 13.0, 30.0]])
print(power.collect().to_pandas().filter(like="alpha").head())

# %% Live: push chunks from another thread while the pipeline runs, read results as they come.
import threading

p = ns.Pipeline()
live = p.push_source(channels=["C3", "Cz", "C4", "Pz"], sfreq=sfreq)
filtered = live.then("butterworth", btype="highpass", order=2, cutoff=[1.0])


def amplifier() -> None:
    for start in range(0, eeg.shape[0], 32):
        live.push(eeg[start : start + 32])  # 32-sample chunks, as an amplifier sends them
    live.close()


with p.start(stream=[filtered], slow="block") as run:  # block: lossless, the pipeline waits for us
    threading.Thread(target=amplifier).start()
    rows = sum(batch.num_rows for batch in run.stream(filtered))
print("streamed", rows, "rows")
print(run.report())
