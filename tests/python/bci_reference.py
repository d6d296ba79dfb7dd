"""Motor-imagery test data and the MNE / scikit-learn reference of CSP + LDA decoding.

  bci_reference.py make PSG.edf OUT_DIR SEED
      Writes OUT_DIR/train.edf and OUT_DIR/test.edf (EDF+, 8 channels, 100 Hz, 150 s each, 25
      trials of 4 s labelled "left" / "right" as annotations). Background: the real sleep-EEG
      recording's EEG and EOG channels (first and second half respectively), mixed into 8
      channels with per-channel delays. Planted: two 9-13 Hz "mu" sources projecting to the left
      (channels 0-2) and right (5-7) sides; during a "left" trial the right source drops to 55%
      of its amplitude, during "right" the left one (contralateral desynchronization).
  bci_reference.py check DIR OURS.parquet TMIN TMAX COMPONENTS
      Fits mne.decoding.CSP(COMPONENTS, reg=None, log=True) and
      sklearn LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto") on the train.edf epochs
      (band-passed causally: scipy sosfilt of butter(4, [8, 30]) over the recording), applies
      them to test.edf's, and compares with OURS (the `decode` operator's rows on test.edf):
      CSP features within 1e-3 (absolute, log power), probabilities within 1e-3, the same
      predicted class wherever the reference's margin exceeds 1e-3, and the same accuracy.
"""
import sys

import numpy as np
import pyarrow.parquet as pq
import pyedflib
from scipy import signal

FS = 100.0
CLASSES = ["left", "right"]


def make(psg, out, seed):
    rng = np.random.default_rng(int(seed))
    r = pyedflib.EdfReader(psg)
    labels = r.getSignalLabels()
    bg = np.stack([r.readSignal(labels.index(n)) for n in ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"]])
    r.close()
    n = int(150 * FS)
    for part, name in enumerate(["train", "test"]):
        seg = bg[:, part * n:(part + 1) * n]
        mix = rng.normal(size=(8, 3)) * 0.5
        x = np.zeros((8, n))
        for c in range(8):
            for j in range(3):
                x[c] += mix[c, j] * np.roll(seg[j], int(rng.integers(0, 50)))
        sos = signal.butter(4, [9, 13], "bandpass", fs=FS, output="sos")
        mu = [signal.sosfiltfilt(sos, rng.normal(size=n)) for _ in range(2)]
        mu = [m / m.std() * 6.0 for m in mu]
        gain = [np.ones(n), np.ones(n)]
        onsets, kinds = [], []
        t = 2.0
        while t + 4.0 < 148.0:
            k = int(rng.integers(0, 2))
            a, b = int(t * FS), int((t + 4.0) * FS)
            gain[1 - k][a:b] = 0.55  # "left" desynchronizes the right source, and vice versa
            onsets.append(t)
            kinds.append(CLASSES[k])
            t += 4.0 + 1.5 + rng.uniform(0, 1.0)
        pattern_left = np.array([1.0, 0.8, 0.6, 0.3, 0.2, 0.1, 0.05, 0.0])
        x += np.outer(pattern_left, mu[0] * gain[0]) + np.outer(pattern_left[::-1], mu[1] * gain[1])
        x += rng.normal(size=x.shape) * 1.5
        w = pyedflib.EdfWriter(f"{out}/{name}.edf", 8, file_type=pyedflib.FILETYPE_EDFPLUS)
        w.setSignalHeaders([{"label": f"C{c + 1}", "dimension": "uV", "sample_frequency": FS,
                             "physical_max": 1000.0, "physical_min": -1000.0,
                             "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""}
                            for c in range(8)])
        w.writeSamples(list(x))
        for on, kind in zip(onsets, kinds):
            w.writeAnnotation(on, 4.0, kind)
        w.close()
        print(f"{name}.edf: {len(onsets)} trials ({kinds.count('left')} left, {kinds.count('right')} right)")


def epochs(path, tmin, tmax):
    r = pyedflib.EdfReader(path)
    x = np.stack([r.readSignal(i) for i in range(r.signals_in_file)])
    onsets, _, texts = r.readAnnotations()
    r.close()
    sos = signal.butter(4, [8.0, 30.0], "bandpass", fs=FS, output="sos")
    x = signal.sosfilt(sos, x, axis=1)
    a, length = int(round(tmin * FS)), int(round(tmax * FS)) - int(round(tmin * FS)) + 1
    X, y = [], []
    for on, text in zip(onsets, texts):
        if text not in CLASSES:
            continue
        s = int(round(on * FS)) + a
        if s < 0 or s + length > x.shape[1]:
            continue
        X.append(x[:, s:s + length])
        y.append(CLASSES.index(text))
    return np.array(X), np.array(y)


def check(d, ours, tmin, tmax, components):
    from mne.decoding import CSP
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    tmin, tmax, components = float(tmin), float(tmax), int(components)
    Xtr, ytr = epochs(f"{d}/train.edf", tmin, tmax)
    Xte, yte = epochs(f"{d}/test.edf", tmin, tmax)
    csp = CSP(n_components=components, reg=None, log=True)
    ftr = csp.fit_transform(Xtr, ytr)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(ftr, ytr)
    fte = csp.transform(Xte)
    pte = lda.predict_proba(fte)
    t = pq.read_table(ours)
    assert t.num_rows == len(yte), f"{t.num_rows} decoded epochs vs {len(yte)} test epochs"
    assert t.column("marker").to_pylist() == [CLASSES[k] for k in yte], "epoch labels differ"
    f_ours = np.stack([t.column(f"csp{k}").to_numpy() for k in range(components)], axis=1)
    p_ours = np.stack([t.column(f"p:{c}").to_numpy() for c in CLASSES], axis=1)
    err_f = np.abs(f_ours - fte).max()
    err_p = np.abs(p_ours - pte).max()
    assert err_f <= 1e-3, f"CSP features differ from MNE's by {err_f:.2e}"
    assert err_p <= 1e-3, f"probabilities differ from scikit-learn's by {err_p:.2e}"
    pred_ours = t.column("class").to_numpy().astype(int)
    pred_ref = pte.argmax(1)
    clear = np.abs(pte[:, 1] - 0.5) > 1e-3
    assert (pred_ours[clear] == pred_ref[clear]).all(), "predicted classes differ"
    acc_ours, acc_ref = (pred_ours == yte).mean(), (pred_ref == yte).mean()
    assert acc_ours == acc_ref, f"accuracy {acc_ours} vs reference {acc_ref}"
    assert acc_ref >= 0.7, f"the planted effect is not decodable (reference accuracy {acc_ref})"
    print(f"{len(yte)} held-out trials: accuracy {acc_ours:.3f} (MNE + scikit-learn {acc_ref:.3f}); "
          f"CSP features within {err_f:.1e}, probabilities within {err_p:.1e}")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](*sys.argv[2:])
