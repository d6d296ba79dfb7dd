//! Exactly-once restart: a file-to-Parquet pipeline with running statistics, killed with
//! SIGKILL at random moments and resumed with `--resume` until it completes, must produce
//! output identical, row for row, to an uninterrupted run; so must a filter pipeline (IIR and FIR
//! state). Also: corrupt checkpoints, checkpoints
//! of another pipeline, a full disk while checkpointing, and pipelines that cannot be checkpointed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use common::{bin, read_parquet, run_err, run_ok};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sample_activations.parquet");
const SAE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sample_sae");

/// The bundled 8192 activations, eight times over (65 536 rows in row groups of 8192), so a run
/// lasts long enough to be killed in the middle.
fn write_input(dir: &Path) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(SAMPLE).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(8192)).build();
    let file = std::fs::File::create(dir.join("acts.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for _ in 0..8 {
        for b in &batches {
            w.write(b).unwrap();
        }
    }
    w.close().unwrap();
}

/// Running z-score (state: Welford sums), SAE encoding (stateless), sliding-window feature
/// statistics (state: panes, all-time sums, top examples) into a single file, per-worker parts
/// and per-table files.
fn pipeline(window: u64) -> String {
    format!(
        r#"
[pipeline]
name = "checkpointed"

[sources.acts]
kind = "parquet"
path = "acts.parquet"
batch_rows = 128

[operators.z]
kind = "normalize"
input = "acts"
method = "running_zscore"

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "{SAE}"

[operators.stats]
kind = "feature_stats"
input = "enc"
window = {window}
step = 256
top_k = 3

[sinks.z]
kind = "parquet"
input = "z"
path = "out/z.parquet"

[sinks.features]
kind = "parquet"
input = "enc"
path = "out/features"

[sinks.stats]
kind = "parquet"
input = "stats"
path = "out/stats"
"#
    )
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path());
    std::fs::write(dir.path().join("p.toml"), pipeline(1024)).unwrap();
    dir
}

/// Every visible `*.parquet` under `dir`, relative, sorted; panics on leftover staging files.
fn outputs(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(at).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                !name.starts_with('.'),
                "staging left behind after completion: {}",
                p.display()
            );
            if p.is_dir() {
                walk(root, &p, out);
            } else if name.ends_with(".parquet") {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Asserts that the Parquet outputs under `a` and `b` hold the same rows in the same order.
fn assert_same_outputs(a: &Path, b: &Path, what: &str) {
    assert_same_files(a, b, what, 8);
}

/// [`assert_same_outputs`] for a pipeline that writes at least `files` Parquet files.
fn assert_same_files(a: &Path, b: &Path, what: &str, files: usize) {
    let (fa, fb) = (outputs(a), outputs(b));
    assert_eq!(fa, fb, "{what}: different output files");
    assert!(fa.len() >= files, "{what}: expected at least {files} output files: {fa:?}");
    for f in fa {
        let concat = |root: &Path| {
            let batches = read_parquet(&root.join(&f));
            let schema = batches[0].schema();
            arrow::compute::concat_batches(&schema, &batches).unwrap()
        };
        let (x, y) = (concat(a), concat(b));
        assert_eq!(x.num_rows(), y.num_rows(), "{what}: {} row counts", f.display());
        assert_eq!(x.columns(), y.columns(), "{what}: {} differs", f.display());
    }
}

/// A small deterministic generator for the kill delays (xorshift64*).
struct Delays(u64);

impl Delays {
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn checkpointed(dir: &Path, workers: usize, resume: bool) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .args([
            "run",
            "p.toml",
            "--quiet",
            "--checkpoint-dir",
            "ck",
            "--checkpoint-every",
            "0.03",
        ])
        .args(["-w", &workers.to_string()])
        .env("NEUROSTREAM_ALLOW_SOFTWARE_GPU", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

/// Runs the checkpointed pipeline, killing it with SIGKILL after a random delay and resuming,
/// until one attempt completes. Returns the number of kills.
fn run_with_kills(dir: &Path, workers: usize, delays: &mut Delays, longest: Duration) -> usize {
    let mut kills = 0;
    let mut resume = false;
    loop {
        let mut child = checkpointed(dir, workers, resume).spawn().unwrap();
        let delay = longest.mul_f64(0.02 + 0.9 * delays.next_unit());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() >= delay {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match status {
            Some(s) => {
                let out = child.wait_with_output().unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !s.success() && resume && stderr.contains("nothing to resume") && !dir.join("ck").exists() {
                    // The kill came before the run created its checkpoint directory: nothing
                    // was checkpointed, so the run starts afresh, as the error tells a user to.
                    resume = false;
                    continue;
                }
                assert!(s.success(), "attempt {} failed:\n{}", kills + 1, stderr);
                return kills;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                resume = true;
                assert!(kills < 60, "no progress after {kills} kills");
            }
        }
    }
}

#[test]
fn killed_runs_resume_to_output_identical_to_an_uninterrupted_run() {
    let dir = setup();
    let d = dir.path();
    let mut delays = Delays(0x5eed_1234_abcd_0001);
    let mut total_kills = 0;
    let mut trials = 0;
    for workers in [1usize, 2] {
        // The reference: the same pipeline without checkpoints, uninterrupted.
        run_ok(d, &["run", "p.toml", "--quiet", "-w", &workers.to_string()]);
        let reference = d.join(format!("reference-{workers}"));
        std::fs::rename(d.join("out"), &reference).unwrap();
        // How long an uninterrupted checkpointed run takes bounds the kill delays.
        let t0 = Instant::now();
        let out = checkpointed(d, workers, false).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let longest = t0.elapsed();
        assert_same_outputs(&reference, &d.join("out"), "uninterrupted checkpointed run");
        for trial in 0..10 {
            std::fs::remove_dir_all(d.join("out")).unwrap();
            std::fs::remove_dir_all(d.join("ck")).unwrap();
            let kills = run_with_kills(d, workers, &mut delays, longest);
            eprintln!("workers {workers}, trial {trial}: {kills} kills");
            assert_same_outputs(
                &reference,
                &d.join("out"),
                &format!("workers {workers}, trial {trial} ({kills} kills)"),
            );
            total_kills += kills;
            trials += 1;
        }
    }
    eprintln!("{trials} trials, {total_kills} kills, all outputs identical to the uninterrupted runs");
    assert!(
        total_kills >= 20,
        "only {total_kills} kills landed mid-run: the runs are too short to test resuming"
    );
}

/// The pids of `parent`'s child processes (from `/proc`).
fn children_of(parent: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            kids.push(pid);
        }
    }
    kids.sort();
    kids
}

/// The checkpointed pipeline as a local 2-process × 2-worker cluster.
fn checkpointed_cluster(dir: &Path, resume: bool) -> Command {
    let mut cmd = checkpointed(dir, 2, resume);
    cmd.args(["--processes", "2"]);
    cmd
}

/// Runs the 2-process cluster, killing one of its processes (leader or follower, at random)
/// with SIGKILL after a random delay and resuming every process with `--resume`, until one
/// attempt completes. Returns the number of kills.
fn run_cluster_with_kills(dir: &Path, delays: &mut Delays, longest: Duration) -> usize {
    let mut kills = 0;
    let mut resume = false;
    loop {
        let mut launcher = checkpointed_cluster(dir, resume).spawn().unwrap();
        let delay = longest.mul_f64(0.05 + 0.9 * delays.next_unit());
        let victim = usize::from(delays.next_unit() < 0.5);
        let started = Instant::now();
        let mut killed = false;
        let status = loop {
            if let Some(status) = launcher.try_wait().unwrap() {
                break status;
            }
            if !killed && started.elapsed() >= delay {
                // The launcher starts process 0 first, so the lower pid is the leader.
                let kids = children_of(launcher.id());
                if kids.len() == 2 {
                    let _ = Command::new("kill").args(["-9", &kids[victim].to_string()]).status();
                    killed = true;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let out = launcher.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if status.success() {
            // The kill may have come too late to land: then the run had completed.
            return kills;
        }
        if !killed && resume && stderr.contains("nothing to resume") && !dir.join("ck/pipeline.json").exists() {
            // The kill came before process 0 recorded the pipeline (a follower killed while the
            // leader was starting): nothing was checkpointed, so the run starts afresh, as the
            // error tells a user to.
            resume = false;
            continue;
        }
        assert!(killed, "attempt {} failed without a kill:\n{stderr}", kills + 1);
        assert!(
            stderr.contains(&format!("process {victim} of 2 failed")) || stderr.contains("lost the connection"),
            "the launcher does not name the killed process {victim}:\n{stderr}"
        );
        kills += 1;
        resume = true;
        assert!(kills < 60, "no progress after {kills} kills");
    }
}

/// A 2-process × 2-worker cluster (checkpoints coordinated by process 0 over timely), one of its
/// processes killed with SIGKILL at random moments and every process resumed: the outputs equal,
/// row for row, an uninterrupted 2-process run's (and therefore one process's rows).
#[test]
fn a_killed_two_process_cluster_resumes_to_output_identical_to_an_uninterrupted_run() {
    let dir = setup();
    let d = dir.path();
    run_ok(d, &["run", "p.toml", "--quiet", "--processes", "2", "-w", "2"]);
    let reference = d.join("reference-cluster");
    std::fs::rename(d.join("out"), &reference).unwrap();
    let t0 = Instant::now();
    let out = checkpointed_cluster(d, false).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let longest = t0.elapsed();
    assert!(d.join("ck/COMPLETE").exists(), "the leader did not mark the run complete");
    assert_same_outputs(&reference, &d.join("out"), "uninterrupted checkpointed cluster");
    let mut delays = Delays(0xc105_7e12_0000_0002);
    let mut total_kills = 0;
    for trial in 0..8 {
        std::fs::remove_dir_all(d.join("out")).unwrap();
        std::fs::remove_dir_all(d.join("ck")).unwrap();
        let kills = run_cluster_with_kills(d, &mut delays, longest);
        eprintln!("cluster trial {trial}: {kills} kills");
        assert_same_outputs(&reference, &d.join("out"), &format!("cluster trial {trial} ({kills} kills)"));
        total_kills += kills;
    }
    assert!(total_kills >= 6, "only {total_kills} kills landed mid-run");
    // Rolling outputs: parts of both processes commit with the leader's checkpoints.
    let toml = pipeline(1024)
        .replace("path = \"out/z.parquet\"", "path = \"out/z\"\nroll_bytes = \"2MiB\"")
        .replace("path = \"out/features\"", "path = \"out/features\"\nroll_rows = 5000");
    std::fs::write(d.join("p.toml"), toml).unwrap();
    std::fs::remove_dir_all(d.join("out")).unwrap();
    std::fs::remove_dir_all(d.join("ck")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet", "--processes", "2", "-w", "2"]);
    let outputs = ["z", "features"];
    let reference: Vec<Vec<Vec<u8>>> = outputs.iter().map(|o| row_multiset(&d.join("out"), o)).collect();
    assert!(outputs_in(&d.join("out/features")) >= 4, "features were not rolled");
    let mut rolling_kills = 0;
    for trial in 0..3 {
        std::fs::remove_dir_all(d.join("out")).unwrap();
        let _ = std::fs::remove_dir_all(d.join("ck"));
        let kills = run_cluster_with_kills(d, &mut delays, longest);
        for (o, expected) in outputs.iter().zip(&reference) {
            let got = row_multiset(&d.join("out"), o);
            assert!(
                got == *expected,
                "rolling cluster trial {trial} ({kills} kills): `{o}` has {} rows, expected {}",
                got.len(),
                expected.len()
            );
        }
        rolling_kills += kills;
    }
    eprintln!("rolling cluster: {rolling_kills} kills");
}

/// The rows under `root/sub` (every part, any order) as sorted byte strings (Arrow's row
/// format), so two runs that split their rows into different parts still compare equal.
fn row_multiset(root: &Path, sub: &str) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    let mut stack = vec![root.join(sub)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert!(!name.starts_with('.'), "staged or temporary file left: {}", p.display());
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") {
                files.push(p);
            }
        }
    }
    let mut rows = Vec::new();
    for f in files {
        for b in read_parquet(&f) {
            let fields = b
                .schema()
                .fields()
                .iter()
                .map(|f| arrow::row::SortField::new(f.data_type().clone()))
                .collect();
            let converter = arrow::row::RowConverter::new(fields).unwrap();
            let converted = converter.convert_columns(b.columns()).unwrap();
            rows.extend(converted.iter().map(|r| r.as_ref().to_vec()));
        }
    }
    rows.sort_unstable();
    rows
}

/// Rolling outputs (parts by rows and by size, result tables in parts), killed with SIGKILL at
/// random moments and resumed: the rows across all parts equal an uninterrupted run's, and no
/// staged or temporary part is left.
#[test]
fn killed_runs_with_rolling_outputs_resume_to_the_same_rows() {
    let dir = setup();
    let d = dir.path();
    let toml = pipeline(1024)
        .replace("path = \"out/z.parquet\"", "path = \"out/z\"\nroll_bytes = \"2MiB\"")
        .replace("path = \"out/features\"", "path = \"out/features\"\nroll_rows = 5000")
        .replace("path = \"out/stats\"", "path = \"out/stats\"\nroll_rows = 2000\nkeep = 1000");
    assert_eq!(toml.matches("roll_").count(), 3);
    std::fs::write(d.join("p.toml"), toml).unwrap();
    let outputs = ["z", "features", "stats/windows", "stats/features", "stats/top_examples"];
    let mut delays = Delays(0x0707_aaaa_5555_0001);
    let mut kills = 0;
    for workers in [1usize, 2] {
        run_ok(d, &["run", "p.toml", "--quiet", "-w", &workers.to_string()]);
        let reference: Vec<Vec<Vec<u8>>> = outputs.iter().map(|o| row_multiset(&d.join("out"), o)).collect();
        assert!(reference.iter().all(|r| !r.is_empty()), "an output is empty");
        assert!(outputs_in(&d.join("out/features")) >= 13, "features were not rolled");
        std::fs::remove_dir_all(d.join("out")).unwrap();
        let t0 = Instant::now();
        let out = checkpointed(d, workers, false).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let longest = t0.elapsed();
        for trial in 0..3 {
            std::fs::remove_dir_all(d.join("out")).unwrap();
            std::fs::remove_dir_all(d.join("ck")).unwrap();
            let k = run_with_kills(d, workers, &mut delays, longest);
            for (o, expected) in outputs.iter().zip(&reference) {
                let got = row_multiset(&d.join("out"), o);
                assert!(
                    got == *expected,
                    "workers {workers}, trial {trial} ({k} kills): `{o}` has {} rows, expected {}",
                    got.len(),
                    expected.len()
                );
            }
            kills += k;
        }
    }
    assert!(kills >= 4, "only {kills} kills landed mid-run");
}

/// Number of visible Parquet parts directly in `dir`.
fn outputs_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".parquet"))
        .count()
}

/// The running z-score with a warm-up (its held-back frames are saved), SAE encoding in
/// micro-batches (the frames waiting for their batch are saved) and Mahalanobis drift scores
/// against a reference taken from the stream's first rows (collected rows, then the whitening,
/// are saved), streaming k-means (pending rows, centroids, counts, window totals) and
/// co-occurrence over a sliding span and all time (the open window, the span's windows or the
/// all-time counts; the differential arrangements, components and spectral clusters are rebuilt
/// from them), killed and resumed. Each checkpoint's cut lets the encoder's waiting rows go in a
/// short batch: the outputs still equal the reference's bit for bit because a row's encoding
/// does not depend on the rows sharing its batch.
#[test]
fn warm_up_and_micro_batching_resume_to_identical_output() {
    let dir = setup();
    let d = dir.path();
    let toml = pipeline(512)
        .replacen("method = \"running_zscore\"", "method = \"running_zscore\"\nwarmup = 700", 1)
        .replacen(
            &format!("sae = \"{SAE}\""),
            &format!("sae = \"{SAE}\"\nmax_batch = 300\nmax_delay_ms = 600000.0"),
            1,
        )
        + "\n[operators.drift]\nkind = \"mahalanobis\"\ninput = \"acts\"\nreference_rows = 3000\n\n\
           [sinks.drift]\nkind = \"parquet\"\ninput = \"drift\"\npath = \"out/drift.parquet\"\n\n\
           [operators.km]\nkind = \"kmeans\"\ninput = \"acts\"\nk = 4\nseed = 1\nwindow = 2048\n\n\
           [sinks.km]\nkind = \"parquet\"\ninput = \"km\"\npath = \"out/km\"\n\n\
           [operators.co]\nkind = \"cooccurrence\"\ninput = \"enc\"\nwindow = \"block\"\nblock_tokens = 64\n\
           span_windows = 40\nreport_every = 150\ncomponent_threshold = 0.2\nclusters = 3\n\n\
           [sinks.co]\nkind = \"parquet\"\ninput = \"co\"\npath = \"out/co\"\n\n\
           [operators.co_all]\nkind = \"cooccurrence\"\ninput = \"enc\"\nwindow = \"block\"\nblock_tokens = 128\n\
           report_every = 100\ncomponent_threshold = 0.3\n\n\
           [sinks.co_all]\nkind = \"parquet\"\ninput = \"co_all\"\npath = \"out/co_all\"\n";
    assert!(toml.contains("warmup = 700") && toml.contains("max_batch = 300"));
    std::fs::write(d.join("p.toml"), toml).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    std::fs::rename(d.join("out"), d.join("reference")).unwrap();
    let t0 = Instant::now();
    let out = checkpointed(d, 1, false).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let longest = t0.elapsed();
    assert_same_outputs(&d.join("reference"), &d.join("out"), "uninterrupted checkpointed run");
    let mut delays = Delays(0x0b5e_55ed_0000_0123);
    let (mut kills, mut trial) = (0, 0);
    // At least 4 trials; more (up to 12) while fewer than 3 kills landed mid-run, which happens
    // when the runs go faster than the uninterrupted one did (a loaded machine measured it).
    while trial < 4 || (kills < 3 && trial < 12) {
        std::fs::remove_dir_all(d.join("out")).unwrap();
        std::fs::remove_dir_all(d.join("ck")).unwrap();
        let k = run_with_kills(d, 1, &mut delays, longest);
        assert_same_outputs(&d.join("reference"), &d.join("out"), &format!("trial {trial} ({k} kills)"));
        kills += k;
        trial += 1;
    }
    assert!(kills >= 3, "only {kills} kills landed mid-run in {trial} trials");
}

/// A BCI-style signal path: synthetic EEG -> causal Butterworth band-pass (IIR state) -> FIR
/// low-pass (history) -> Parquet, killed and resumed like the statistics pipeline.
#[test]
fn a_killed_filter_pipeline_resumes_to_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = r#"
[pipeline]
name = "checkpointed-signals"

[sources.eeg]
kind = "synthetic_eeg"
channels = 32
sample_rate = 1000.0
seconds = 400.0
chunk = 500
seed = 11

[operators.band]
kind = "butterworth"
input = "eeg"
cutoff = [8.0, 30.0]
order = 4

[operators.low]
kind = "fir"
input = "band"
h_freq = 40.0

[sinks.out]
kind = "parquet"
input = "low"
path = "out/filtered.parquet"
"#;
    std::fs::write(d.join("p.toml"), toml).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    std::fs::rename(d.join("out"), d.join("reference")).unwrap();
    let t0 = Instant::now();
    let out = checkpointed(d, 1, false).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let longest = t0.elapsed();
    let mut delays = Delays(0x0b5e_55ed_0000_0077);
    let mut kills = 0;
    for trial in 0..4 {
        std::fs::remove_dir_all(d.join("out")).unwrap();
        std::fs::remove_dir_all(d.join("ck")).unwrap();
        let k = run_with_kills(d, 1, &mut delays, longest);
        let (a, b) = (
            read_parquet(&d.join("reference/filtered.parquet")),
            read_parquet(&d.join("out/filtered.parquet")),
        );
        let (a, b) = (
            arrow::compute::concat_batches(&a[0].schema(), &a).unwrap(),
            arrow::compute::concat_batches(&b[0].schema(), &b).unwrap(),
        );
        assert_eq!(a.num_rows(), 400_000);
        assert_eq!(a.columns(), b.columns(), "trial {trial} ({k} kills): filtered signal differs");
        kills += k;
    }
    assert!(kills >= 3, "only {kills} kills landed mid-run");
}

/// Operators that hold rows back (window buffers and pending markers, the resampler's history,
/// hilbert's pending block, the signal a zero-phase filter holds): a recording replayed at 40x real time -> band-pass -> CSP+LDA
/// decisions every 0.1 s, labelled band power every 0.25 s, resampling 100 -> 40 Hz, a hilbert
/// envelope per 2.5 s block, a zero-phase band-pass, Riemannian-potato artifact scores (windows,
/// pending covariances, the fitted potato) -> Parquet, killed and resumed; every output equals an
/// uninterrupted run's.
#[test]
fn a_killed_windowed_pipeline_resumes_to_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let toml = format!(
        r#"
[pipeline]
name = "checkpointed-windows"

[sources.amp]
kind = "edf"
path = "{}"
chunk = 10
speed = 40.0

[operators.band]
kind = "butterworth"
input = "amp"
cutoff = [8.0, 30.0]

[operators.dec]
kind = "decode"
input = "band"
model = "{}"
window_s = 2.0
step_s = 0.1

[operators.power]
kind = "bandpower"
input = "band"
window_s = 1.0
step_s = 0.25
label_from_markers = true
bands = [["mu", 8.0, 12.0], ["beta", 13.0, 30.0]]

[operators.down]
kind = "resample"
input = "band"
up = 2
down = 5

[operators.env]
kind = "hilbert"
input = "band"
block = 250

[operators.smooth]
kind = "butterworth"
input = "amp"
cutoff = [1.0, 40.0]
zero_phase = true

[operators.potato]
kind = "riemann_potato"
input = "band"
window_s = 1.0
step_s = 0.5
reference_windows = 20

[sinks.dec]
kind = "parquet"
input = "dec"
path = "out/decisions.parquet"
markers = true

[sinks.down]
kind = "parquet"
input = "down"
path = "out/resampled.parquet"
markers = true

[sinks.env]
kind = "parquet"
input = "env"
path = "out/envelope.parquet"

[sinks.smooth]
kind = "parquet"
input = "smooth"
path = "out/zero_phase.parquet"

[sinks.potato]
kind = "parquet"
input = "potato"
path = "out/potato.parquet"

[sinks.power]
kind = "parquet"
input = "power"
path = "out/power.parquet"
markers = true
"#,
        examples.join("data/eeg/mi_test.edf").display(),
        examples.join("data/bci/mi_model.json").display()
    );
    std::fs::write(d.join("p.toml"), toml).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    std::fs::rename(d.join("out"), d.join("reference")).unwrap();
    let t0 = Instant::now();
    let out = checkpointed(d, 1, false).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let longest = t0.elapsed();
    assert_same_files(&d.join("reference"), &d.join("out"), "uninterrupted checkpointed run", 6);
    let mut delays = Delays(0x0b5e_55ed_0000_0099);
    let mut kills = 0;
    for trial in 0..4 {
        std::fs::remove_dir_all(d.join("out")).unwrap();
        std::fs::remove_dir_all(d.join("ck")).unwrap();
        let k = run_with_kills(d, 1, &mut delays, longest);
        assert_same_files(&d.join("reference"), &d.join("out"), &format!("trial {trial} ({k} kills)"), 6);
        kills += k;
    }
    assert!(kills >= 3, "only {kills} kills landed mid-run");
}

/// Starts a checkpointed run and kills it once at least one checkpoint is committed.
fn kill_after_first_checkpoint(d: &Path) {
    let mut child = checkpointed(d, 1, false).spawn().unwrap();
    let started = Instant::now();
    loop {
        let committed = std::fs::read_dir(d.join("ck"))
            .map(|es| es.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".nsck")))
            .unwrap_or(false);
        if committed || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn newest_checkpoint(d: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(d.join("ck"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "nsck"))
        .collect();
    files.sort();
    files.pop().expect("a checkpoint")
}

#[test]
fn a_corrupt_checkpoint_is_refused_not_silently_restarted() {
    let dir = setup();
    let d = dir.path();
    kill_after_first_checkpoint(d);
    let newest = newest_checkpoint(d);
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    let err = run_err(d, &["run", "p.toml", "--quiet", "--checkpoint-dir", "ck", "--resume"]);
    assert!(
        err.contains("corrupt")
            && err.contains("checksum")
            && err.contains(&newest.file_name().unwrap().to_string_lossy().to_string()),
        "{err}"
    );
    // Without --resume the unfinished run's directory is not silently reused either.
    let err = run_err(d, &["run", "p.toml", "--quiet", "--checkpoint-dir", "ck"]);
    assert!(err.contains("unfinished run") && err.contains("--resume"), "{err}");
    // Garbage in place of a checkpoint: wrong magic bytes.
    std::fs::write(&newest, b"not a checkpoint at all").unwrap();
    let err = run_err(d, &["run", "p.toml", "--quiet", "--checkpoint-dir", "ck", "--resume"]);
    assert!(err.contains("wrong magic"), "{err}");
}

#[test]
fn input_files_that_changed_since_the_checkpoint_are_refused() {
    let dir = setup();
    let d = dir.path();
    let mut child = checkpointed(d, 1, false).spawn().unwrap();
    let started = Instant::now();
    while !d.join("ck/ckpt-00000002.nsck").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its second checkpoint"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The input rewritten (here the same rows in other row groups): its size and modification
    // time changed, so the saved source position cannot be trusted.
    let batches = read_parquet(&d.join("acts.parquet"));
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(8000)).build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(d.join("acts.parquet")).unwrap(),
        batches[0].schema(),
        Some(props),
    )
    .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    let err = run_err(d, &["run", "p.toml", "--quiet", "--checkpoint-dir", "ck", "--resume"]);
    assert!(err.contains("changed since"), "{err}");
}

#[test]
fn a_checkpoint_of_another_pipeline_or_worker_count_is_refused() {
    let dir = setup();
    let d = dir.path();
    kill_after_first_checkpoint(d);
    std::fs::write(d.join("q.toml"), pipeline(2048)).unwrap();
    let err = run_err(d, &["run", "q.toml", "--quiet", "--checkpoint-dir", "ck", "--resume"]);
    assert!(
        err.contains("belongs to another run") && err.contains("operators.stats") && err.contains("configured differently"),
        "{err}"
    );
    let err = run_err(
        d,
        &["run", "p.toml", "--quiet", "-w", "2", "--checkpoint-dir", "ck", "--resume"],
    );
    assert!(err.contains("1 workers") && err.contains("-w 1"), "{err}");
    let err = run_err(
        d,
        &["run", "p.toml", "--quiet", "--checkpoint-dir", "nothing-here", "--resume"],
    );
    assert!(err.contains("nothing to resume"), "{err}");
    assert!(!d.join("nothing-here").exists(), "a refused --resume created its directory");
    // The right pipeline still resumes, to the uninterrupted output.
    run_ok(d, &["run", "p.toml", "--quiet", "--checkpoint-dir", "ck", "--resume"]);
    std::fs::rename(d.join("out"), d.join("resumed")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    assert_same_outputs(&d.join("out"), &d.join("resumed"), "resumed after refusals");
    // Resuming a completed run changes nothing and says so.
    let log = run_ok(d, &["run", "p.toml", "--checkpoint-dir", "ck", "--resume"]);
    assert!(log.contains("already completed"), "{log}");
}

#[test]
fn a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_resumes() {
    let dir = setup();
    let d = dir.path();
    // Checkpoint 3 is written into /dev/full (every write fails with ENOSPC); 1 and 2 succeed.
    std::fs::create_dir_all(d.join("ck")).unwrap();
    std::os::unix::fs::symlink("/dev/full", d.join("ck/.ckpt-00000003.nsck.tmp")).unwrap();
    let out = checkpointed(d, 1, false).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("checkpoint 3 could not be written")
            && err.contains("No space left")
            && err.contains("previous checkpoint stays valid"),
        "{err}"
    );
    assert!(
        !d.join("out/z.parquet").exists(),
        "a failed checkpointed run writes no final output"
    );
    assert!(newest_checkpoint(d).ends_with("ckpt-00000002.nsck"));
    let log = run_ok(d, &["run", "p.toml", "--checkpoint-dir", "ck", "--resume"]);
    assert!(log.contains("resuming from checkpoint 2"), "{log}");
    std::fs::rename(d.join("out"), d.join("resumed")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    assert_same_outputs(&d.join("out"), &d.join("resumed"), "resumed after a full disk");
}

#[test]
fn pipelines_that_cannot_be_checkpointed_are_refused_with_the_reasons() {
    let dir = setup();
    let d = dir.path();
    let toml = pipeline(1024)
        + "\n[sinks.train]\nkind = \"sae_train\"\ninput = \"acts\"\nout = \"out/sae\"\nd_sae = 128\n"
        + "\n[sources.live]\nkind = \"arrow_tcp\"\nlisten = \"127.0.0.1:0\"\nd_model = 4\noverload = \"drop_newest\"\n\n[sinks.live_out]\nkind = \"parquet\"\ninput = \"live\"\npath = \"out/live.parquet\"\n";
    std::fs::write(d.join("bad.toml"), toml).unwrap();
    let err = run_err(d, &["run", "bad.toml", "--quiet", "--checkpoint-dir", "ck"]);
    assert!(err.contains("cannot be checkpointed"), "{err}");
    assert!(err.contains("[sinks.train]"), "{err}");
    assert!(!err.contains("[operators.z]") && !err.contains("[operators.enc]"), "{err}");
    assert!(err.contains("[sources.live]") && err.contains("overloaded"), "{err}");
    assert!(
        !d.join("ck/pipeline.json").exists(),
        "nothing is written for a refused pipeline"
    );
}

/// Copies a directory's files (one level).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_second_run_on_a_locked_checkpoint_directory_is_refused_naming_the_holder() {
    let dir = setup();
    let d = dir.path();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    std::fs::rename(d.join("out"), d.join("reference")).unwrap();
    let first = checkpointed(d, 1, false).spawn().unwrap();
    let started = Instant::now();
    while !d.join("ck/pipeline.json").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "the first run never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    for resume in [true, false] {
        let out = checkpointed(d, 1, resume).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a second run on a locked directory ran");
        assert!(
            err.contains("in use by another run") && err.contains(&format!("pid {}", first.id())),
            "{err}"
        );
    }
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_outputs(&d.join("reference"), &d.join("out"), "the run that held the lock");
    // kill -9 frees the lock: a resume after it runs.
    std::fs::remove_dir_all(d.join("out")).unwrap();
    std::fs::remove_dir_all(d.join("ck")).unwrap();
    kill_after_first_checkpoint(d);
    let out = checkpointed(d, 1, true).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_outputs(&d.join("reference"), &d.join("out"), "resumed after kill -9");
}

#[test]
fn changed_operator_files_are_refused_on_resume() {
    let dir = setup();
    let d = dir.path();
    copy_dir(Path::new(SAE), &d.join("sae"));
    std::fs::write(d.join("p.toml"), pipeline(1024).replace(SAE, "sae")).unwrap();
    kill_after_first_checkpoint(d);
    // Same shape and size, other values (every float slightly changed), same modification time.
    let weights = d.join("sae/sae_weights.safetensors");
    let modified = std::fs::metadata(&weights).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 4096..] {
        *b ^= 0x01;
    }
    std::fs::write(&weights, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let err = run_err(d, &["run", "p.toml", "--quiet", "--checkpoint-dir", "ck", "--resume"]);
    assert!(
        err.contains("changed since") && err.contains("operators.enc") && err.contains("sae_weights.safetensors"),
        "{err}"
    );
}

#[test]
fn a_run_killed_before_recording_its_pipeline_resumes_from_the_start() {
    let dir = setup();
    let d = dir.path();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    std::fs::rename(d.join("out"), d.join("reference")).unwrap();
    std::fs::create_dir_all(d.join("ck")).unwrap();
    std::fs::write(d.join("ck/.pipeline.json.tmp"), b"{\"pipel").unwrap();
    let out = checkpointed(d, 1, true).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_same_outputs(&d.join("reference"), &d.join("out"), "resumed from an empty start");
}

/// Killed even earlier: right after it locked the directory, before writing anything else.
#[test]
fn a_run_killed_right_after_locking_its_directory_resumes_from_the_start() {
    let dir = setup();
    let d = dir.path();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    std::fs::rename(d.join("out"), d.join("reference")).unwrap();
    std::fs::create_dir_all(d.join("ck")).unwrap();
    std::fs::write(d.join("ck/LOCK"), b"4711\n").unwrap();
    let out = checkpointed(d, 1, true).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_same_outputs(&d.join("reference"), &d.join("out"), "resumed from a locked, empty directory");
}

#[test]
fn temporary_files_of_killed_runs_are_removed_and_reported() {
    let dir = setup();
    let d = dir.path();
    std::fs::create_dir_all(d.join("out/features")).unwrap();
    // Pids above the kernel's maximum (4194304) belong to no live process.
    let dead = [
        "out/.z.parquet.4294967290-0.tmp",
        "out/features/.part-00000.parquet.4294967291-1.tmp",
    ];
    for f in dead {
        std::fs::write(d.join(f), vec![0u8; 1024]).unwrap();
    }
    // A live process's temporary file (this test's) is kept.
    let live = format!("out/.z.parquet.{}-0.tmp", std::process::id());
    std::fs::write(d.join(&live), b"x").unwrap();
    let out = common::run_cli(d, &["run", "p.toml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for f in dead {
        assert!(!d.join(f).exists(), "{f} was left behind");
    }
    assert!(d.join(&live).exists(), "a live run's temporary file was removed");
    assert!(
        err.contains("removed 1 temporary file(s) left by runs that were killed") && err.contains("4294967290"),
        "{err}"
    );
}

/// Ctrl-C (SIGINT) on `neurostream run`: the sources end, every row read so far is written,
/// the Parquet file is complete and final, and the process exits with 130.
#[test]
fn ctrl_c_stops_a_run_with_complete_outputs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 8
sample_rate = 1000.0
seconds = 3600.0
speed = 1.0
chunk = 100

[operators.bp]
kind = "butterworth"
input = "eeg"
btype = "bandpass"
order = 4
cutoff = [1.0, 40.0]

[sinks.out]
kind = "parquet"
input = "bp"
path = "out.parquet"
"#,
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--quiet", "p.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run is writing (its Ctrl-C handler is installed before the run starts).
    let started = Instant::now();
    while std::fs::read_dir(dir.path()).unwrap().count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "the run never started writing");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("stopped by Ctrl-C"), "{text}");
    let batches = read_parquet(&dir.path().join("out.parquet"));
    let samples: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("sample")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert!(samples.len() > 100, "{} rows", samples.len());
    assert!(
        samples.iter().enumerate().all(|(i, &s)| s == i as i64),
        "rows missing or out of order"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "p.toml" && n != "out.parquet")
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// Activation value `j` of row `seq` that the live sender below sends.
fn live_value(seq: u64, j: u64) -> f32 {
    ((seq as f64 * 0.37 + j as f64 * 1.3).sin() * (1.0 + j as f64) + 0.1 * j as f64) as f32
}

/// Sends rows `next..until` (16 per IPC batch, one batch a millisecond) as the named stream `s`
/// to an `arrow_tcp` source at `address`. Stops at the first failed write (the run was
/// killed) and leaves `next` at the first row not written. True when every row was sent.
fn send_live(address: &str, next: &mut u64, until: u64) -> bool {
    use arrow::array::{FixedSizeListArray, Float32Array, UInt32Array, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let Ok(stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("seq_id", DataType::UInt64, false),
            Field::new("pos", DataType::UInt32, false),
            Field::new("act", DataType::FixedSizeList(item.clone(), 8), false),
        ],
        std::collections::HashMap::from([("neurostream.stream".to_string(), "s".to_string())]),
    ));
    let Ok(mut w) = arrow::ipc::writer::StreamWriter::try_new(stream, &schema) else {
        return false;
    };
    while *next < until {
        let seq: Vec<u64> = (*next..*next + 16).collect();
        let values: Vec<f32> = seq.iter().flat_map(|&s| (0..8).map(move |j| live_value(s, j))).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt64Array::from(seq)),
                Arc::new(UInt32Array::from(vec![0u32; 16])),
                Arc::new(FixedSizeListArray::new(
                    item.clone(),
                    8,
                    Arc::new(Float32Array::from(values)),
                    None,
                )),
            ],
        )
        .unwrap();
        if w.write(&batch).is_err() || w.flush().is_err() {
            return false;
        }
        *next += 16;
        std::thread::sleep(Duration::from_millis(1));
    }
    w.finish().is_ok()
}

/// A live `arrow_tcp` source under checkpoints, killed with SIGKILL while a client streams into
/// it and resumed: what it had read after the last checkpoint is replayed from its journal, no
/// row is written twice, and the running z-score (operator state) equals the same operator run
/// afresh over exactly the rows written: state and outputs agree on every row accepted.
#[test]
fn a_killed_run_with_a_live_source_replays_its_journal_and_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.toml"),
        "[sources.live]\nkind = \"arrow_tcp\"\nlisten = \"127.0.0.1:0\"\nd_model = 8\n\
         address_file = \"address.txt\"\nidle_timeout_s = 1.5\n\n\
         [operators.z]\nkind = \"normalize\"\ninput = \"live\"\nmethod = \"running_zscore\"\n\n\
         [sinks.raw]\nkind = \"parquet\"\ninput = \"live\"\npath = \"out/raw.parquet\"\n\n\
         [sinks.z]\nkind = \"parquet\"\ninput = \"z\"\npath = \"out/z.parquet\"\n",
    )
    .unwrap();
    let total = 16 * 3000;
    let mut next = 0u64;
    let mut delays = Delays(0x11fe_0000_5eed_0003);
    let (mut kills, mut replays) = (0, 0);
    for attempt in 0..6 {
        let _ = std::fs::remove_file(d.join("address.txt"));
        // Not --quiet: the report says what the resume promised for the live source.
        let mut cmd = Command::new(bin());
        cmd.current_dir(d)
            .args([
                "run",
                "p.toml",
                "-w",
                "2",
                "--log",
                "info",
                "--checkpoint-dir",
                "ck",
                "--checkpoint-every",
                "0.03",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if attempt > 0 {
            cmd.arg("--resume");
        }
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        let address = loop {
            if let Ok(a) = std::fs::read_to_string(d.join("address.txt")) {
                break a.trim().to_string();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the engine never listened");
            std::thread::sleep(Duration::from_millis(5));
        };
        let last = attempt == 5;
        let kill_after = Duration::from_secs_f64(0.1 + 0.4 * delays.next_unit());
        let mut sent_from = next;
        let sender = std::thread::spawn(move || {
            let done = send_live(&address, &mut sent_from, total);
            (done, sent_from)
        });
        if !last {
            std::thread::sleep(kill_after);
            child.kill().unwrap();
            kills += 1;
        }
        let (done, reached) = sender.join().unwrap();
        next = reached;
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        replays += log.matches("replayed").count();
        if last {
            assert!(done, "the last attempt did not take every row");
            assert!(out.status.success(), "the last attempt failed:\n{log}");
            assert!(log.contains("is live: every row it read is journaled"), "{log}");
        }
    }
    let raw = common::rows(&d.join("out/raw.parquet"));
    let keys: Vec<u64> = raw.iter().map(|(k, _)| *k).collect();
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "rows were written twice");
    assert!(
        raw.len() as u64 > total / 2,
        "only {} of {total} rows arrived ({kills} kills)",
        raw.len()
    );
    for (k, v) in &raw {
        let seq = k >> 32;
        let expected: Vec<f32> = (0..8).map(|j| live_value(seq, j)).collect();
        assert_eq!(v, &expected, "row {seq} arrived changed");
    }
    assert!(
        replays >= 1,
        "no kill left batches to replay from the journal ({kills} kills)"
    );
    // The operator afresh over exactly the written rows, in their order.
    std::fs::write(
        d.join("ref.toml"),
        "[sources.raw]\nkind = \"parquet\"\npath = \"out/raw.parquet\"\n\n\
         [operators.z]\nkind = \"normalize\"\ninput = \"raw\"\nmethod = \"running_zscore\"\n\n\
         [sinks.z]\nkind = \"parquet\"\ninput = \"z\"\npath = \"ref/z.parquet\"\n",
    )
    .unwrap();
    run_ok(d, &["run", "ref.toml", "--quiet"]);
    let (z, reference) = (common::rows(&d.join("out/z.parquet")), common::rows(&d.join("ref/z.parquet")));
    assert_eq!(z.len(), reference.len());
    for ((k, a), (k2, b)) in z.iter().zip(&reference) {
        assert_eq!(k, k2);
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "row {}: z {x} vs afresh {y}",
                k >> 32
            );
        }
    }
    eprintln!(
        "{kills} kills, {replays} journal replays, {} of {total} rows written once",
        raw.len()
    );
}
