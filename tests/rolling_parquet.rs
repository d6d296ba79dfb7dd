//! Rolling, partitioned Parquet output: parts readable while the run writes them, rows in the
//! partition and time bucket of their event time, retention, late rows, manifests and
//! `_SUCCESS`, a fresh run replacing an earlier one, and clear errors for bad settings and
//! partitions that cannot be created.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type, UInt64Type};
use common::{bin, python, read_parquet, run_err, run_ok};

const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;
/// 2026-12-03T16:30:00Z.
const START_S: i64 = 1_796_315_400;

/// Every visible part under `root` (relative), sorted.
fn parts(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(at).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

/// Hidden files (temporaries, staged parts) anywhere under `root`.
fn hidden(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    out
}

fn manifest(root: &Path, worker: usize) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join(format!("_manifest/worker-{worker:05}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The UTC civil date of a day count since 1970-01-01 (Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `date=YYYY-MM-DD/hour=HH` of an event time in ns.
fn date_hour(t: i64) -> String {
    let (y, m, d) = civil(t.div_euclid(24 * HOUR_NS));
    format!("date={y:04}-{m:02}-{d:02}/hour={:02}", t.div_euclid(HOUR_NS).rem_euclid(24))
}

/// Writes `pipeline` to `dir/p.toml` and starts running it in the background.
fn spawn_run(dir: &Path, pipeline: &str) -> std::process::Child {
    std::fs::write(dir.join("p.toml"), pipeline).unwrap();
    Command::new(bin())
        .args(["run", "p.toml", "--quiet"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

/// Activations with event times: 5 tokens/s from 16:30 UTC, so they cross two hour boundaries.
fn token_pipeline(tokens: u64, sink: &str) -> String {
    format!(
        r#"
[pipeline]
name = "rolling"

[sources.acts]
kind = "synthetic_activations"
d_model = 16
tokens = {tokens}
chunk = 500
seq_len = 100
tokens_per_s = 5.0
start_time_s = {START_S}

[sinks.out]
kind = "parquet"
input = "acts"
path = "out"
{sink}
"#
    )
}

#[test]
fn eeg_parts_are_complete_whenever_a_reader_looks_during_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // One hour of 8-channel EEG replayed at 900x: four seconds, a part per minute of signal.
    let seconds = 3600;
    let pipeline = format!(
        r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 8
sample_rate = 256.0
seconds = {seconds}.0
chunk = 256
speed = 900.0

[sinks.out]
kind = "parquet"
input = "eeg"
path = "out"
roll_every = "1m"
partition_by = ["date", "hour"]
"#
    );
    let mut child = spawn_run(dir.path(), &pipeline);
    let out = dir.path().join("out");
    let mut seen_during_run = 0;
    let mut reads = 0;
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if out.is_dir() {
            // Every part a reader can see is a complete Parquet file.
            let now = parts(&out);
            for p in &now {
                match std::fs::File::open(out.join(p)) {
                    Ok(f) => {
                        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                            .unwrap_or_else(|e| panic!("{} is not a complete Parquet file: {e}", p.display()));
                        for b in reader.build().unwrap() {
                            b.unwrap();
                        }
                        reads += 1;
                    }
                    Err(e) => panic!("{} listed but not openable: {e}", p.display()),
                }
            }
            seen_during_run = seen_during_run.max(now.len());
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(
        seen_during_run >= 2 && reads > 0,
        "parts must appear while the run goes on (saw {seen_during_run})"
    );

    let all = parts(&out);
    assert!(hidden(&out).is_empty(), "temporaries left: {:?}", hidden(&out));
    // 60 minutes of signal in one-minute buckets aligned to UTC minutes: 60 or 61 parts.
    assert!((60..=61).contains(&all.len()), "{} parts", all.len());
    let m = manifest(&out, 0);
    assert_eq!(m["finished"], true);
    let listed: Vec<&serde_json::Value> = m["parts"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), all.len());
    let mut samples = Vec::new();
    for p in listed {
        let path = PathBuf::from(p["path"].as_str().unwrap());
        let (lo, hi) = (p["min_time_ns"].as_i64().unwrap(), p["max_time_ns"].as_i64().unwrap());
        assert_eq!(
            lo.div_euclid(MINUTE_NS),
            hi.div_euclid(MINUTE_NS),
            "{}: spans minutes",
            path.display()
        );
        assert_eq!(path.parent().unwrap().to_str().unwrap(), date_hour(lo), "{}", path.display());
        assert!(out.join(path.parent().unwrap()).join("_SUCCESS").exists());
        let b = concat(&read_parquet(&out.join(&path)));
        assert_eq!(b.num_rows() as u64, p["rows"].as_u64().unwrap());
        let s = b.column_by_name("sample").unwrap().as_primitive::<Int64Type>();
        samples.extend(s.values().iter().copied());
    }
    samples.sort_unstable();
    let expected: Vec<i64> = (0..seconds * 256).collect();
    assert!(samples == expected, "every sample exactly once across the parts");
}

#[test]
fn token_rows_go_to_the_partition_and_bucket_of_their_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = 30_000; // 6000 s of traffic from 16:30 to 18:10: hours 16, 17 and 18
    let sink = "roll_every = \"10m\"\nroll_rows = 1200\npartition_by = [\"date\", \"hour\"]";
    std::fs::write(dir.path().join("p.toml"), token_pipeline(tokens, sink)).unwrap();
    let text = run_ok(dir.path(), &["run", "p.toml", "-w", "2"]);
    let out = dir.path().join("out");
    assert!(text.contains("rows in"), "{text}");
    let mut keys = BTreeSet::new();
    let mut total = 0;
    for p in parts(&out) {
        let b = concat(&read_parquet(&out.join(&p)));
        assert!(b.num_rows() <= 1200, "{}: {} rows > roll_rows", p.display(), b.num_rows());
        let times = b.column_by_name("time").unwrap().as_primitive::<TimestampNanosecondType>();
        let bucket = times.value(0).div_euclid(10 * MINUTE_NS);
        for t in times.values() {
            assert_eq!(p.parent().unwrap().to_str().unwrap(), date_hour(*t), "{}", p.display());
            assert_eq!(
                t.div_euclid(10 * MINUTE_NS),
                bucket,
                "{}: rows of two 10-minute buckets",
                p.display()
            );
        }
        let seq = b.column_by_name("seq_id").unwrap().as_primitive::<UInt64Type>();
        let pos = b.column_by_name("pos").unwrap().as_primitive::<UInt32Type>();
        for (s, q) in seq.values().iter().zip(pos.values()) {
            assert!(keys.insert((*s, *q)), "token ({s}, {q}) written twice");
        }
        total += b.num_rows();
    }
    assert_eq!(total, tokens as usize);
    for hour in [
        "date=2026-12-03/hour=16",
        "date=2026-12-03/hour=17",
        "date=2026-12-03/hour=18",
        "", // the output as a whole, once both writers finished
    ] {
        assert!(out.join(hour).join("_SUCCESS").exists(), "{hour} has no _SUCCESS");
    }
    for w in 0..2 {
        let m = manifest(&out, w);
        assert_eq!(m["writers"], 2);
        assert_eq!(m["finished"], true);
    }
    // What a DuckDB user runs against the directory, with the Hive partitions as columns.
    let Some(py) = python() else { return };
    let script = format!(
        "import duckdb\n\
         r = duckdb.sql(\"SELECT count(*), count(DISTINCT (seq_id, pos)), count(DISTINCT hour), min(hour), max(hour) \
         FROM read_parquet('{}/**/*.parquet', hive_partitioning = true)\").fetchall()[0]\n\
         print(r)\n\
         assert r == ({tokens}, {tokens}, 3, 16, 18), r\n",
        out.display()
    );
    let o = Command::new(py).args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "duckdb: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn retention_keeps_the_newest_parts_and_removes_emptied_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let sink = "roll_rows = 1000\npartition_by = [\"hour\"]\nkeep = 3";
    std::fs::write(dir.path().join("p.toml"), token_pipeline(30_000, sink)).unwrap();
    run_ok(dir.path(), &["run", "p.toml"]);
    let out = dir.path().join("out");
    let kept = parts(&out);
    assert_eq!(kept.len(), 3, "{kept:?}");
    let m = manifest(&out, 0);
    let listed: Vec<String> = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    let on_disk: Vec<String> = kept.iter().map(|p| p.to_string_lossy().to_string()).collect();
    assert_eq!(listed, on_disk);
    // The newest 3000 tokens (18:00 to 18:10) all lie in hour 18: hours 16 and 17 are gone.
    assert!(!out.join("hour=16").exists() && !out.join("hour=17").exists());
    assert!(on_disk.iter().all(|p| p.starts_with("hour=18/")), "{on_disk:?}");

    // By age: parts whose newest row is more than 20 minutes behind the newest row go.
    let sink = "roll_every = \"5m\"\nkeep = \"20m\"";
    std::fs::write(dir.path().join("p.toml"), token_pipeline(30_000, sink)).unwrap();
    run_ok(dir.path(), &["run", "p.toml"]);
    let m = manifest(&out, 0);
    let newest = m["watermark_ns"].as_i64().unwrap();
    let listed = m["parts"].as_array().unwrap();
    assert_eq!(listed.len(), parts(&out).len());
    for p in listed {
        assert!(p["max_time_ns"].as_i64().unwrap() >= newest - 20 * MINUTE_NS, "{p}");
    }
    // 20 minutes of 5-minute buckets plus the one it reaches into.
    assert!((4..=5).contains(&listed.len()), "{} parts kept", listed.len());
}

#[test]
fn late_rows_go_to_their_partition_or_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let Some(py) = python() else { return };
    // Event times from 16:30; rows 10000..11000 carry a time three hours earlier (a clock jump).
    let src = dir.path().join("src.toml");
    std::fs::write(
        &src,
        token_pipeline(20_000, "").replace("path = \"out\"", "path = \"acts.parquet\""),
    )
    .unwrap();
    run_ok(dir.path(), &["run", "src.toml"]);
    let script = "import pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc\n\
                  t = pq.read_table('acts.parquet')\n\
                  time = t.column('time').cast(pa.int64()).to_numpy().copy()\n\
                  time[10000:11000] -= 3 * 3600 * 10**9\n\
                  t = t.set_column(t.schema.get_field_index('time'), 'time', pa.array(time).cast(pa.timestamp('ns', tz='UTC')))\n\
                  pq.write_table(t, 'jumped.parquet')\n";
    let o = Command::new(&py)
        .args(["-c", script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pipeline = |late: &str| {
        format!(
            "[sources.acts]\nkind = \"parquet\"\npath = \"jumped.parquet\"\nbatch_rows = 500\n\n\
             [sinks.out]\nkind = \"parquet\"\ninput = \"acts\"\npath = \"out\"\npartition_by = [\"date\", \"hour\"]\n{late}\n"
        )
    };
    std::fs::write(dir.path().join("p.toml"), pipeline("")).unwrap();
    run_ok(dir.path(), &["run", "p.toml"]);
    let out = dir.path().join("out");
    // Late rows went to their own (earlier) hour: 14:03:20 to 14:06:40.
    assert_eq!(common::row_count(&out.join("date=2026-12-03/hour=14")), 1000);
    let total: usize = parts(&out).iter().map(|p| common::row_count(&out.join(p))).sum();
    assert_eq!(total, 20_000);

    std::fs::write(dir.path().join("p.toml"), pipeline("late_after = \"1h\"")).unwrap();
    let text = run_ok(dir.path(), &["run", "p.toml"]);
    assert!(text.contains("1000 late rows dropped"), "{text}");
    assert_eq!(manifest(&out, 0)["late_rows"], 1000);
    assert!(
        !out.join("date=2026-12-03/hour=14").exists(),
        "the earlier run's parts were not replaced"
    );
    let total: usize = parts(&out).iter().map(|p| common::row_count(&out.join(p))).sum();
    assert_eq!(total, 19_000);
}

#[test]
fn bad_rolling_settings_and_unwritable_partitions_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "path = \"out\"",
            "path = \"out.parquet\"\nroll_rows = 10",
            "is a directory of parts",
        ),
        (
            "path = \"out\"",
            "path = \"out\"\npartition_by = [\"colour\"]",
            "no column `colour`",
        ),
        (
            "path = \"out\"",
            "path = \"out\"\nroll_every = \"soon\"",
            "`roll_every` = \"soon\"",
        ),
        ("path = \"out\"", "path = \"out\"\nkeep = 0", "at least 1 part"),
        (
            "path = \"out\"",
            "path = \"out\"\nroll_bytes = \"12 parsecs\"",
            "unknown unit",
        ),
        (
            "path = \"out\"",
            "path = \"out\"\npartition_by = [\"act\"]",
            "partition by a string, integer",
        ),
    ];
    for (from, to, message) in cases {
        std::fs::write(dir.path().join("p.toml"), token_pipeline(100, "").replace(from, to)).unwrap();
        let err = run_err(dir.path(), &["run", "p.toml"]);
        assert!(err.contains(message) && err.contains("[sinks.out]"), "{to}: {err}");
    }
    // A partition directory that cannot be created (a file is in the way): the run fails
    // naming it, and the parts of the other partitions are committed complete.
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/seq_id=3"), b"in the way").unwrap();
    std::fs::write(dir.path().join("p.toml"), token_pipeline(1000, "partition_by = [\"seq_id\"]")).unwrap();
    let err = run_err(dir.path(), &["run", "p.toml"]);
    assert!(err.contains("seq_id=3") && err.contains("cannot create a part"), "{err}");
    let out = dir.path().join("out");
    assert_eq!(common::row_count(&out.join("seq_id=0")), 100);
    assert!(hidden(&out).is_empty(), "{:?}", hidden(&out));
}

#[test]
fn open_part_limit_byte_limit_and_retention_under_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let total = |out: &Path| -> usize { parts(out).iter().map(|p| common::row_count(&out.join(p))).sum() };
    // 10 sequences interleaved in every frame of 500 tokens, at most 2 parts open: parts close
    // least recently written first, and every row still lands once in its sequence's partition.
    let sink = "partition_by = [\"seq_id\"]\nmax_open_parts = 2";
    std::fs::write(
        dir.path().join("p.toml"),
        token_pipeline(5_000, sink).replace("seq_len = 100", "seq_len = 50"),
    )
    .unwrap();
    run_ok(dir.path(), &["run", "p.toml"]);
    assert_eq!(total(&out), 5_000);
    let dirs: BTreeSet<PathBuf> = parts(&out).iter().map(|p| p.parent().unwrap().to_path_buf()).collect();
    assert_eq!(dirs.len(), 100, "one partition per sequence");
    for p in parts(&out) {
        let b = concat(&read_parquet(&out.join(&p)));
        let seq = b.column_by_name("seq_id").unwrap().as_primitive::<UInt64Type>();
        let want = format!("seq_id={}", seq.value(0));
        assert!(seq.values().iter().all(|s| format!("seq_id={s}") == want));
        assert_eq!(p.parent().unwrap().to_str().unwrap(), want);
    }

    // Parts close at about `roll_bytes` of encoded data.
    std::fs::write(dir.path().join("p.toml"), token_pipeline(20_000, "roll_bytes = \"128KiB\"")).unwrap();
    run_ok(dir.path(), &["run", "p.toml"]);
    assert_eq!(total(&out), 20_000);
    let sizes: Vec<u64> = parts(&out)
        .iter()
        .map(|p| std::fs::metadata(out.join(p)).unwrap().len())
        .collect();
    assert!(sizes.len() >= 4, "{sizes:?}");
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s <= 4 * 128 * 1024), "{sizes:?}");

    // Retention in a checkpointed run: at the end exactly the newest `keep` parts remain, and
    // the manifest lists exactly them.
    std::fs::write(
        dir.path().join("p.toml"),
        token_pipeline(20_000, "roll_rows = 1000\nkeep = 2"),
    )
    .unwrap();
    run_ok(
        dir.path(),
        &["run", "p.toml", "--checkpoint-dir", "ck", "--checkpoint-every", "0.01"],
    );
    let kept = parts(&out);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(hidden(&out).is_empty(), "{:?}", hidden(&out));
    let m = manifest(&out, 0);
    let listed: Vec<&str> = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed, kept.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>());
    // Checkpoints close parts early too, so the two newest hold at most 2000 rows, ending with
    // the last token (sequence 199, position 99).
    let rows = total(&out);
    assert!(rows > 0 && rows <= 2_000, "{rows}");
    let last = kept
        .iter()
        .flat_map(|p| read_parquet(&out.join(p)))
        .map(|b| {
            let seq = b.column_by_name("seq_id").unwrap().as_primitive::<UInt64Type>().clone();
            let pos = b.column_by_name("pos").unwrap().as_primitive::<UInt32Type>().clone();
            seq.values().iter().zip(pos.values()).map(|(s, p)| (*s, *p)).max().unwrap()
        })
        .max()
        .unwrap();
    assert_eq!(last, (199, 99));
}

/// A reader that holds a part open while retention deletes it keeps reading a complete file
/// (POSIX unlink), and the directory never shows more than the kept parts plus those closing.
#[test]
fn a_reader_holding_a_part_open_while_retention_deletes_it_reads_it_whole() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 4
sample_rate = 256.0
seconds = 1800.0
chunk = 256
speed = 600.0

[sinks.out]
kind = "parquet"
input = "eeg"
path = "out"
roll_every = "1m"
keep = 2
"#;
    let mut child = spawn_run(dir.path(), pipeline);
    let out = dir.path().join("out");
    let started = Instant::now();
    let (held_path, mut held) = loop {
        if let Some(p) = out.is_dir().then(|| parts(&out)).and_then(|v| v.first().cloned()) {
            if let Ok(f) = std::fs::File::open(out.join(&p)) {
                break (p, f);
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no part appeared");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut most = 0;
    while child.try_wait().unwrap().is_none() {
        most = most.max(parts(&out).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(
        !out.join(&held_path).exists(),
        "retention should have deleted {}",
        held_path.display()
    );
    let mut bytes = Vec::new();
    held.read_to_end(&mut bytes).unwrap();
    // What the reader got through its handle after the unlink is a whole Parquet file.
    let copy = dir.path().join("held.parquet");
    std::fs::write(&copy, &bytes).unwrap();
    let rows = common::row_count(&copy);
    assert!(rows > 0 && rows <= 60 * 256, "{rows} rows in the held part");
    assert!(most <= 4, "up to {most} parts visible at once with keep = 2");
    assert_eq!(parts(&out).len(), 2);
}
