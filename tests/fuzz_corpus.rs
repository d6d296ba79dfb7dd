//! Replays every fuzz corpus and regression input (`fuzz/corpus/<target>/`, including the
//! inputs that once crashed, kept after their fix) through the fuzz targets' code on stable Rust,
//! so each test run re-checks that none panics; then a short mutation fuzz run per target
//! (`NEUROSTREAM_FUZZ_SECONDS`, default 4 s each; seed from `NEUROSTREAM_FUZZ_SEED` or the
//! clock, printed). The long coverage-guided runs: see fuzz/README.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| f(&data));
        assert!(outcome.is_ok(), "{} panics on {}", target, path.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
    eprintln!("{target}: {n} inputs replayed");
}

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit: bit flip, interesting byte, insert, delete, duplicate a range, splice from
/// another input, or truncate.
fn mutate(data: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b'=', b'"'];
    let len = data.len();
    match rng.below(7) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 if len > 1 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        4 if len > 1 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let piece = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, piece);
        }
        5 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(256));
            let at = rng.below(len + 1);
            let end = (at + n).min(len);
            data.splice(at..end, other[from..from + n].iter().copied());
        }
        _ if len > 0 => data.truncate(rng.below(len)),
        _ => data.push(rng.next() as u8),
    }
}

/// Silences panic messages on the mutation threads and on the Parquet source's read-ahead
/// threads (some targets catch the panics of the libraries they wrap, e.g. arrow-rs's IPC reader
/// and Parquet decoder, and turn them into errors); other threads keep the default hook.
fn quiet_panics_on_fuzz_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The fuzz loops, and the Parquet source's read-ahead threads (`parquet <source>`),
            // where arrow-rs's decoder panics on corrupt pages are caught and become errors.
            let fuzzing = std::thread::current()
                .name()
                .is_some_and(|n| n.ends_with("_mutations") || n.starts_with("parquet "));
            if !fuzzing {
                default(info);
            }
        }));
    });
}

/// Mutates corpus inputs for the time budget; a panic fails the test and keeps the input.
fn fuzz(target: &str, f: fn(&[u8])) {
    quiet_panics_on_fuzz_threads();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let seconds: f64 = std::env::var("NEUROSTREAM_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let seed = std::env::var("NEUROSTREAM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    // Each input is written here before it runs: an abort (out of memory, stack overflow) cannot
    // keep its input the way a panic does.
    let last_input = std::env::var_os("NEUROSTREAM_FUZZ_LAST_INPUT").map(PathBuf::from);
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut execs = 0u64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        let mut input = corpus[rng.below(corpus.len())].clone();
        let other = &corpus[rng.below(corpus.len())];
        for _ in 0..1 + rng.below(8) {
            mutate(&mut input, other, &mut rng);
        }
        if let Some(path) = &last_input {
            std::fs::write(path, &input).unwrap();
        }
        if std::panic::catch_unwind(|| f(&input)).is_err() {
            let out: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-crash-{target}-{seed}-{execs}"));
            std::fs::write(&out, &input).unwrap();
            let _ = std::panic::catch_unwind(|| {
                // Once more with the message shown.
                let _ = std::panic::take_hook();
                f(&input)
            });
            eprintln!("{target}: crash input kept at {}", out.display());
            panic!(
                "{target} panics on a mutated input (seed {seed}, exec {execs}), kept at {}; add it to fuzz/corpus/{target}/ once fixed",
                out.display()
            );
        }
        execs += 1;
    }
    eprintln!("{target}: {execs} mutated inputs in {seconds} s (seed {seed}), no panic");
    assert!(execs > 0);
}

#[test]
fn arrow_ipc_mutations() {
    fuzz("arrow_ipc", neurostream::fuzz_support::arrow_ipc);
}

#[test]
fn edf_mutations() {
    fuzz("edf", neurostream::fuzz_support::edf);
}

#[test]
fn pipeline_toml_mutations() {
    fuzz("pipeline_toml", neurostream::fuzz_support::pipeline_toml);
}

#[test]
fn sae_files_mutations() {
    fuzz("sae_files", neurostream::fuzz_support::sae_files);
}

#[test]
fn arrow_ipc_corpus() {
    replay("arrow_ipc", neurostream::fuzz_support::arrow_ipc);
}

#[test]
fn brainvision_mutations() {
    fuzz("brainvision", neurostream::fuzz_support::brainvision);
}

#[test]
fn brainvision_corpus() {
    replay("brainvision", neurostream::fuzz_support::brainvision);
}

#[test]
fn xdf_mutations() {
    fuzz("xdf", neurostream::fuzz_support::xdf);
}

#[test]
fn xdf_corpus() {
    replay("xdf", neurostream::fuzz_support::xdf);
}

#[test]
fn fif_mutations() {
    fuzz("fif", neurostream::fuzz_support::fif);
}

#[test]
fn parquet_mutations() {
    fuzz("parquet", neurostream::fuzz_support::parquet);
}

#[test]
fn parquet_corpus() {
    replay("parquet", neurostream::fuzz_support::parquet);
}

#[test]
fn gdf_mutations() {
    fuzz("gdf", neurostream::fuzz_support::gdf);
}

#[test]
fn gdf_corpus() {
    replay("gdf", neurostream::fuzz_support::gdf);
}

#[test]
fn eeglab_mutations() {
    fuzz("eeglab", neurostream::fuzz_support::eeglab);
}

#[test]
fn eeglab_corpus() {
    replay("eeglab", neurostream::fuzz_support::eeglab);
}

#[test]
fn csv_mutations() {
    fuzz("csv", neurostream::fuzz_support::csv);
}

#[test]
fn csv_corpus() {
    replay("csv", neurostream::fuzz_support::csv);
}

#[test]
fn fif_corpus() {
    replay("fif", neurostream::fuzz_support::fif);
}

#[test]
fn edf_corpus() {
    replay("edf", neurostream::fuzz_support::edf);
}

#[test]
fn pipeline_toml_corpus() {
    replay("pipeline_toml", neurostream::fuzz_support::pipeline_toml);
}

#[test]
fn sae_files_corpus() {
    replay("sae_files", neurostream::fuzz_support::sae_files);
}

#[test]
fn metrics_request_mutations() {
    fuzz("metrics_request", neurostream::fuzz_support::metrics_request);
}

#[test]
fn live_requests_mutations() {
    fuzz("live_requests", neurostream::fuzz_support::live_requests);
}

#[test]
fn metrics_request_corpus() {
    replay("metrics_request", neurostream::fuzz_support::metrics_request);
}

#[test]
fn live_requests_corpus() {
    replay("live_requests", neurostream::fuzz_support::live_requests);
}
