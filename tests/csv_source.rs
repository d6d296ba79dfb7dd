//! The `csv` source against pandas.read_csv on an OpenBCI GUI export (`%` header with the rate,
//! `, `-separated, a marker column) and a `;`-separated file with a time column, quoted names
//! and values in mV, a BrainFlow file (tab-separated, no header row) and a Muse Mind Monitor
//! export (marker rows with the other cells empty), the OpenBCI export gzip-compressed: every
//! value, the columns picked by default, by pattern and by position, the markers;
//! damaged and incomplete files as errors naming the file, row and column, with nothing written.

mod common;

use std::path::Path;

use common::{python, run_err, run_ok, run_python};

fn pipeline(file: &Path, extra: &str) -> String {
    format!(
        "[sources.rec]\nkind = \"csv\"\npath = \"{}\"\nchunk = 100\n{extra}\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"rec\"\npath = \"out.parquet\"\nmarkers = true\n",
        file.display()
    )
}

fn run_and_check(py: &Path, d: &Path, file: &str, extra: &str, check: &[&str]) {
    std::fs::write(d.join("p.toml"), pipeline(&d.join(file), extra)).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let out = d.join("out.parquet");
    let path = d.join(file);
    let mut args = vec!["check", path.to_str().unwrap(), out.to_str().unwrap()];
    args.extend(check);
    eprintln!("{}", run_python(py, "check_csv.py", &args));
    std::fs::remove_file(out).unwrap();
}

#[test]
fn device_exports_equal_pandas_with_their_markers() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = run_python(&py, "check_csv.py", &["write", d.to_str().unwrap()]);
    assert!(
        names.contains("openbci.txt semicolon.csv brainflow.csv mindmonitor.txt german.csv emotiv.csv openbci.txt.gz"),
        "{names}"
    );
    let exg = "EXG Channel 0,EXG Channel 1,EXG Channel 2,EXG Channel 3";
    // OpenBCI: the rate from its `%Sample Rate` line; the EXG channels by pattern, in µV.
    run_and_check(
        &py,
        d,
        "openbci.txt",
        "channels = [\"EXG Channel *\"]\nmarkers = \"Marker Channel\"",
        &[exg, "1", "Marker Channel", "250"],
    );
    // The same gzip-compressed, as pandas reads it.
    run_and_check(
        &py,
        d,
        "openbci.txt.gz",
        "channels = [\"EXG Channel *\"]\nmarkers = \"Marker Channel\"",
        &[exg, "1", "Marker Channel", "250"],
    );
    // By default every numeric column but the index, time and marker columns.
    let all = format!("{exg},Accel Channel 0,Accel Channel 1,Accel Channel 2");
    run_and_check(
        &py,
        d,
        "openbci.txt",
        "markers = \"Marker Channel\"",
        &[&all, "1", "Marker Channel"],
    );
    // `;`, a time column left out by default, quoted names, a blank line; mV to µV.
    run_and_check(
        &py,
        d,
        "semicolon.csv",
        "sample_rate = 500\nunit = \"mV\"",
        &["Fp1 (mV),Fp2 (mV)", "1000"],
    );
    // BrainFlow: no header row, tab-separated; columns by position from 0.
    run_and_check(
        &py,
        d,
        "brainflow.csv",
        "sample_rate = 250\nheader = false\nchannels = [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\"]\nmarkers = \"23\"",
        &["1,2,3,4,5,6,7,8", "1", "23"],
    );
    // Muse via Mind Monitor: marker rows (`Elements`, the other cells empty) are not samples.
    run_and_check(
        &py,
        d,
        "mindmonitor.txt",
        "sample_rate = 256\nchannels = [\"RAW_*\"]\nmarkers = \"Elements\"",
        &["RAW_TP9,RAW_AF7,RAW_AF8,RAW_TP10", "1", "Elements"],
    );
    // Decimal commas.
    run_and_check(
        &py,
        d,
        "german.csv",
        "sample_rate = 200\ndecimal = \",\"\nchannels = [\"C*\"]\nmarkers = \"Ereignis\"",
        &["C3,C4", "1", "Ereignis"],
    );
    // EmotivPRO: the rate from its first line; motion rows left out.
    run_and_check(
        &py,
        d,
        "emotiv.csv",
        "channels = [\"EEG.[ATP][F0-9z]*\"]\nmarkers = \"MarkerValueInt\"\nskip_empty_rows = true",
        &["EEG.AF3,EEG.T7,EEG.Pz,EEG.T8,EEG.AF4", "1", "MarkerValueInt", "128"],
    );
    // By default, the numeric columns of the first row that is not a marker row.
    run_and_check(
        &py,
        d,
        "mindmonitor.txt",
        "sample_rate = 256\nmarkers = \"Elements\"",
        &[
            "Delta_TP9,RAW_TP9,RAW_AF7,RAW_AF8,RAW_TP10,AUX_RIGHT,HeadBandOn,Battery",
            "1",
            "Elements",
        ],
    );
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // As Excel saves "CSV UTF-8": a byte-order mark, then the header row.
    std::fs::write(d.join("t.csv"), "\u{feff}time,Cz\n0,1.5\n0.01,-2\n").unwrap();
    std::fs::write(d.join("p.toml"), pipeline(&d.join("t.csv"), "sample_rate = 100")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let batches = common::read_parquet(&d.join("out.parquet"));
    let channels: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !["time", "sample", "marker"].contains(&n.as_str()))
        .collect();
    assert_eq!(channels, ["Cz"], "the file's `time` column is recognised and left out");
    assert_eq!(common::column_f32(&d.join("out.parquet"), "Cz"), [1.5, -2.0]);
}

#[test]
fn inspect_shows_the_channels_rate_and_markers_of_an_openbci_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // OpenBCI GUI's layout: its `Marker Channel` holds markers by default, not a channel.
    let text = "%OpenBCI Raw EXG Data\n%Sample Rate = 200 Hz\nSample Index, EXG Channel 0, EXG Channel 1, Marker Channel\n\
                0, 1.5, -2, 0\n1, 2.5, -3, 7.0\n2, 3.5, -4, 0\n3, 4.5, -5, 2.0\n4, 5.5, -6, 0\n";
    std::fs::write(d.join("OpenBCI-RAW-test.txt"), text).unwrap();
    let out = run_ok(d, &["inspect", "OpenBCI-RAW-test.txt", "-n", "1"]);
    for line in [
        "format:   csv",
        "signal:   2 channels at 200 Hz, 5 samples (0.025 s)",
        "  EXG Channel 0    uV     -",
        "  EXG Channel 1    uV     -",
        "markers:  2",
        "         0.005 s  7.0",
        "  ... (1 more; `-n` shows more)",
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in:\n{out}");
    }
    assert!(!out.lines().any(|l| l.starts_with("  Marker Channel")), "{out}");
    // Keys a file does not state come from `--set`, as a pipeline would give them.
    std::fs::write(d.join("t.tsv"), "time\tCz\tPz\n0\t1\t2\n0.004\t3\t4\n").unwrap();
    let err = run_err(d, &["inspect", "t.tsv"]);
    assert!(err.contains("key `sample_rate`: required"), "{err}");
    let out = run_ok(
        d,
        &[
            "inspect",
            "t.tsv",
            "--set",
            "sample_rate=250",
            "--set",
            "channels=[\"Pz\"]",
            "--set",
            "unit=mV",
        ],
    );
    assert!(
        out.lines()
            .any(|l| l == "signal:   1 channels at 250 Hz, 2 samples (0.008 s)"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "  Pz               uV     -"), "{out}");
    let err = run_err(d, &["inspect", "t.tsv", "--set", "sample rate=250"]);
    assert!(err.contains("`sample rate` is not a key name"), "{err}");
}

#[test]
fn lines_before_the_table_and_rows_of_another_stream_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = "device X, firmware 1\nexported 2026-12-07\n\ntime,Cz,Pz,acc\n0,1,2,\n0.01,,,0.5\n0.02,3,4,\n";
    std::fs::write(d.join("t.csv"), text).unwrap();
    let keys = "sample_rate = 100\nskip_lines = 2\nchannels = [\"Cz\", \"Pz\"]\nskip_empty_rows = true";
    std::fs::write(d.join("p.toml"), pipeline(&d.join("t.csv"), keys)).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    assert_eq!(common::column_f32(&d.join("out.parquet"), "Cz"), [1.0, 3.0]);
    assert_eq!(common::column_f32(&d.join("out.parquet"), "Pz"), [2.0, 4.0]);
}

#[test]
fn damaged_and_incomplete_tables_are_errors_naming_the_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "a,b\n1,2\n",
            "",
            "key `sample_rate`: required (the file does not say its rate",
        ),
        (
            "a,b\n1,2\n3,x\n4,5\n",
            "sample_rate = 100",
            "data row 2 (sample 1), column `b`: `x` is not a number",
        ),
        (
            "a,b\n1,2\n3,\n",
            "sample_rate = 100",
            "data row 2 (sample 1), column `b`: `` is not a number",
        ),
        ("a,b\n1,2\n3,4,5\n", "sample_rate = 100", "row 1:"),
        (
            "time,a\n0.000,1\n0.004,2\n0.008,3\n0.012,4\n",
            "",
            "its `time` column steps by 0.004000: 250 Hz if it counts seconds",
        ),
        ("a,b\n1,2\n", "sample_rate = 100\nmarkers = \"c\"", "key `markers`: "),
        ("a,a\n1,2\n", "sample_rate = 100", "the header row names column `a` twice"),
        ("", "sample_rate = 100", "no header row"),
        (
            "a,b\n1,2\n,\n3,4\n",
            "sample_rate = 100",
            "data row 2 (sample 1): no value in any channel read (a row of another stream",
        ),
        (
            "a,b\n1,2\n",
            "sample_rate = 100\ndecimal = \",\"",
            "key `decimal`: `,` is also the delimiter (the header row's most frequent); set `delimiter`",
        ),
        (
            "a;b\n1,5;2\n3,5;x\n",
            "sample_rate = 100\ndecimal = \",\"",
            "data row 2 (sample 1), column `b`: `x` is not a number",
        ),
        ("%c\n", "sample_rate = 100\nheader = false\nchannels = [\"0\"]", "no rows"),
        (
            "1\t2\n",
            "sample_rate = 100\nheader = false",
            "key `channels`: required with `header = false`",
        ),
        (
            "1\t2\n3\t4\n",
            "sample_rate = 100\nheader = false\nchannels = [\"2\"]",
            "the file has: 0, 1",
        ),
    ];
    for (text, extra, message) in cases {
        std::fs::write(d.join("t.csv"), text).unwrap();
        std::fs::write(d.join("p.toml"), pipeline(&d.join("t.csv"), extra)).unwrap();
        let err = run_err(d, &["run", "p.toml", "--quiet"]);
        assert!(err.contains(message), "{text:?}: {err}");
        assert!(!d.join("out.parquet").exists(), "{text:?}: nothing is written");
    }
    // A file without line breaks is refused before it is read whole.
    std::fs::write(d.join("t.csv"), vec![b'1'; (16 << 20) + 10]).unwrap();
    std::fs::write(d.join("p.toml"), pipeline(&d.join("t.csv"), "sample_rate = 100")).unwrap();
    let err = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(err.contains("line 1 is longer than 16777216 bytes"), "{err}");
}
