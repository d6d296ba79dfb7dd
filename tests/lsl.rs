//! Lab Streaming Layer on loopback: a pylsl outlet (8 channels at 250 Hz plus a marker stream)
//! into the `lsl` source, and the `lsl` sink into a pylsl inlet, checked sample for sample.
//! Discovery sends multicast and broadcast packets, so both sides run inside a loopback-only
//! network namespace (`unshare -n`, `ip link set lo up`: needs root) with an lsl_api.cfg of
//! `ResolveScope = machine` and `KnownPeers = {127.0.0.1}`. liblsl is the one in the pylsl wheel.
//! Without root or `unshare` the tests fail with instructions, unless
//! NEUROSTREAM_SKIP_LSL_TESTS=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, python, run_err, run_python};

const LSL_CFG: &str = "[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = machine\n\n[lab]\nKnownPeers = {127.0.0.1}\n";

/// The Python interpreter and liblsl, or None when the LSL tests are skipped on purpose.
fn setup() -> Option<(PathBuf, String)> {
    if std::env::var("NEUROSTREAM_SKIP_LSL_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping the LSL tests (NEUROSTREAM_SKIP_LSL_TESTS=1)");
        return None;
    }
    let py = python()?;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let unshare = Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        root.unwrap_or(false) && unshare,
        "the LSL tests run in a loopback-only network namespace and need root and `unshare` (util-linux) and `ip` \
         (iproute2); set NEUROSTREAM_SKIP_LSL_TESTS=1 to skip them"
    );
    let out = Command::new(&py)
        .args([
            "-c",
            "import pylsl, os; print(os.path.join(os.path.dirname(pylsl.__file__), 'lib', 'liblsl.so'))",
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "pylsl is not installed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((py, String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// Runs `script` (sh) inside a fresh loopback-only network namespace, in `dir`.
fn in_netns(dir: &Path, py: &Path, liblsl: &str, script: &str) -> String {
    std::fs::write(dir.join("lsl_api.cfg"), LSL_CFG).unwrap();
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/lsl_peer.py");
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &format!("ip link set lo up && {script}")])
        .current_dir(dir)
        .env("LSLAPICFG", dir.join("lsl_api.cfg"))
        .env("NEUROSTREAM_LIBLSL", liblsl)
        .env("NS", bin())
        .env("PY", py)
        .env("PEER", peer)
        .output()
        .expect("unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}\n{text}");
    text
}

#[test]
fn a_pylsl_outlet_streams_into_the_lsl_source_with_markers_and_times() {
    let Some((py, liblsl)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("in.toml"),
        r#"
[sources.amp]
kind = "lsl"
name = "NS_TEST"
markers = "NS_TEST-markers"
chunk = 16
stream_timeout_s = 2.0

[sinks.out]
kind = "parquet"
input = "amp"
path = "out.parquet"
markers = true
"#,
    )
    .unwrap();
    let log = in_netns(
        d,
        &py,
        &liblsl,
        r#"$PY $PEER outlet NS_TEST 4 sent.npz & $NS run in.toml; status=$?; wait; exit $status"#,
    );
    assert!(log.contains("stream stopped: no samples for 2 s"), "{log}");
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(&py, "lsl_peer.py", &["check_inlet", &s("sent.npz"), &s("out.parquet")]);
}

/// An outlet in volts that states its unit as MNE-LSL does (`0`: the SI unit, volts) reads as
/// µV, like every other source's EEG.
#[test]
fn volts_in_mne_lsl_units_read_as_microvolts() {
    let Some((py, liblsl)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("in.toml"),
        "[sources.amp]\nkind = \"lsl\"\nname = \"NS_SI\"\nmarkers = \"NS_SI-markers\"\nchunk = 16\nstream_timeout_s = 2.0\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"amp\"\npath = \"out.parquet\"\nmarkers = true\n",
    )
    .unwrap();
    in_netns(
        d,
        &py,
        &liblsl,
        r#"$PY $PEER outlet NS_SI 3 sent.npz -1 si & $NS run in.toml; status=$?; wait; exit $status"#,
    );
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(&py, "lsl_peer.py", &["check_inlet", &s("sent.npz"), &s("out.parquet"), "si"]);
}

#[test]
fn samples_lost_upstream_are_counted_and_reported() {
    let Some((py, liblsl)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("in.toml"),
        "[sources.amp]\nkind = \"lsl\"\nname = \"NS_GAP\"\nstream_timeout_s = 6.0\ndejitter = false\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"amp\"\npath = \"out.parquet\"\n",
    )
    .unwrap();
    let log = in_netns(
        d,
        &py,
        &liblsl,
        r#"$PY $PEER outlet NS_GAP 2 sent.npz 250 & $NS run in.toml; status=$?; wait; exit $status"#,
    );
    assert!(log.contains("10 samples were missing from the stream"), "{log}");
}

#[test]
fn the_lsl_sink_publishes_rows_and_markers_to_a_pylsl_inlet() {
    let Some((py, liblsl)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rec = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/eeg/test_subsecond.edf");
    std::fs::write(
        d.join("out.toml"),
        format!(
            r#"
[sources.rec]
kind = "edf"
path = "{}"
chunk = 512

[sinks.ref]
kind = "parquet"
input = "rec"
path = "ref.parquet"
markers = true

[sinks.lsl]
kind = "lsl"
input = "rec"
name = "NS_OUT"
markers = true
wait_for_consumers_s = 20.0
nominal_rate = 128.0
max_buffered = 3600
linger_s = 60.0
"#,
            rec.display()
        ),
    )
    .unwrap();
    let log = in_netns(
        d,
        &py,
        &liblsl,
        r#"$PY $PEER inlet NS_OUT got.npz 89344 4 & $NS run out.toml; status=$?; wait; exit $status"#,
    );
    assert!(log.contains("published 89344 samples (4 markers)"), "{log}");
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(&py, "lsl_peer.py", &["check_outlet", &s("got.npz"), &s("ref.parquet"), "yes"]);
}

#[test]
fn a_missing_liblsl_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.toml"),
        "[sources.amp]\nkind = \"lsl\"\nname = \"X\"\nliblsl = \"/nonexistent/liblsl.so\"\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"amp\"\npath = \"o.parquet\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "p.toml"])
        .current_dir(d)
        .env("NEUROSTREAM_LIBLSL", "/nonexistent/also.so")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("liblsl could not be loaded") && e.contains("pip install pylsl"),
        "{e}"
    );
    let _ = run_err; // shared helpers
}

/// MNE-LSL's `StreamLSL` reads the engine's outlets right: a signal (sfreq, names, types, µV,
/// every sample) and a windowed stream whose nominal rate is one row per step.
#[test]
fn mne_lsl_stream_reads_the_engines_outlets_with_rate_names_types_units_and_values() {
    let Some((py, liblsl)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rec = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/eeg/short_psg.edf");
    std::fs::write(
        d.join("out.toml"),
        format!(
            r#"
[sources.rec]
kind = "edf"
path = "{}"
chunk = 50
speed = 30.0

[operators.power]
kind = "bandpower"
input = "rec"
window_s = 2.0
step_s = 0.5
bands = [["alpha", 8.0, 12.0]]

[sinks.ref]
kind = "parquet"
input = "rec"
path = "ref.parquet"

[sinks.power_ref]
kind = "parquet"
input = "power"
path = "power.parquet"

[sinks.signal]
kind = "lsl"
input = "rec"
name = "NS_SIGNAL"
type = "EEG"
wait_for_consumers_s = 30.0
linger_s = 5.0

[sinks.power_out]
kind = "lsl"
input = "power"
name = "NS_POWER"
type = "Power"
wait_for_consumers_s = 30.0
"#,
            rec.display()
        ),
    )
    .unwrap();
    let mne_peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mne_lsl_peer.py");
    let log = in_netns(
        d,
        &py,
        &liblsl,
        &format!(
            "$PY {} stream NS_SIGNAL NS_POWER 30000 seen.json & $NS run out.toml; status=$?; wait $! || status=1; exit $status",
            mne_peer.display()
        ),
    );
    assert!(log.contains("StreamLSL: "), "{log}");
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(
        &py,
        "mne_lsl_peer.py",
        &["check_stream", &s("seen.json"), &s("ref.parquet"), &s("power.parquet"), "0.5"],
    );
}

/// The engine's inlet reads MNE-LSL's `PlayerLSL` playing a bundled recording: names, types,
/// rate, and values converted from the player's volts to µV.
#[test]
fn the_lsl_source_reads_mne_lsl_player_in_microvolts() {
    let Some((py, liblsl)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rec = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/eeg/mi_test.edf");
    std::fs::write(
        d.join("in.toml"),
        "[sources.amp]\nkind = \"lsl\"\nname = \"NS_PLAYER\"\ntimestamps = \"count\"\nduration_s = 4.0\nresolve_timeout_s = 30.0\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"amp\"\npath = \"played.parquet\"\n",
    )
    .unwrap();
    let mne_peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mne_lsl_peer.py");
    in_netns(
        d,
        &py,
        &liblsl,
        &format!(
            "$PY {} play {} NS_PLAYER 2 & player=$!; $NS run in.toml; status=$?; kill $player; exit $status",
            mne_peer.display(),
            rec.display()
        ),
    );
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(
        &py,
        "mne_lsl_peer.py",
        &["check_played", rec.to_str().unwrap(), "2", &s("played.parquet")],
    );
}

/// A decoder's outlet also publishes each decision's class by name on `NAME-class` (a string
/// stream at the decisions' rate), since the float stream can only carry the class index.
#[test]
fn decisions_publish_their_class_names_on_a_string_outlet() {
    let Some((py, liblsl)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::write(
        d.join("dec.toml"),
        format!(
            r#"
[sources.amp]
kind = "edf"
path = "{}"
chunk = 10

[operators.band]
kind = "butterworth"
input = "amp"
btype = "bandpass"
cutoff = [8.0, 30.0]

[operators.dec]
kind = "decode"
input = "band"
model = "{}"
window_s = 2.0
step_s = 0.5

[sinks.ref]
kind = "parquet"
input = "dec"
path = "dec.parquet"

[sinks.outlet]
kind = "lsl"
input = "dec"
name = "NS_DEC"
wait_for_consumers_s = 20.0
linger_s = 5.0
"#,
            examples.join("data/eeg/mi_test.edf").display(),
            examples.join("data/bci/mi_model.json").display()
        ),
    )
    .unwrap();
    let log = in_netns(
        d,
        &py,
        &liblsl,
        r#"$PY $PEER classes NS_DEC-class got.json 297 & $NS run dec.toml; status=$?; wait $! || status=1; exit $status"#,
    );
    assert!(log.contains("published"), "{log}");
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(&py, "lsl_peer.py", &["check_classes", &s("got.json"), &s("dec.parquet")]);
}
