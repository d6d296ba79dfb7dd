//! Device-resident chains (issue 21): consecutive GPU operators hand each other device buffers,
//! and rows come back to the host only where something else needs them. The LLM chain
//! normalize → sae_encode on wgpu must equal the numpy reference for SAEs of every input
//! preparation (none, fixed scale, constant-norm rescale, layer norm; with and without `b_dec`)
//! and read back nothing but the sparse result: exactly k × 8 bytes per token for TopK, 4 + 8 ×
//! L0 for the thresholded architectures. Where the encoder runs on the CPU instead, the
//! normalized rows must come back whole, so the counters can tell the two apart.
//!
//! The EEG chain band-pass → common average → pick on wgpu must equal the same pipeline on
//! the CPU (to the GPU filter tolerance of `tests/signal_filters.rs`) and read back only the
//! picked channels and each frame's filter state.
//!
//! The BCI chain band-pass → `decode` on wgpu must give the CPU chain's decisions and read
//! back only the CSP sources (and the filter state).
//!
//! The LLM chain with `feature_stats` on wgpu must equal `feature_stats` on the CPU over the
//! same features and read back only the pairs and the settled counts.
//!
//! Runs on any wgpu adapter (lavapipe in CI); `NEUROSTREAM_SKIP_GPU_TESTS=1` skips it.

mod common;

use common::{python, read_parquet, run_ok, run_python};
use neurostream::operators::stats::FEATURE_TABLES;

const D_IN: usize = 48;
const D_SAE: usize = 160;
const TOKENS: usize = 700;
const CHUNK: usize = 128;

/// acts → normalize (GPU) → sae_encode (`encoder_device`) → features.parquet, and the same
/// normalization on the CPU → normed.parquet as the reference's input.
fn pipeline(normalize: &str, encoder_device: &str) -> String {
    format!(
        r#"
[sources.acts]
kind = "synthetic_activations"
d_model = {D_IN}
features = 96
active = 6
noise = 0.1
tokens = {TOKENS}
chunk = {CHUNK}
seed = 21

[operators.norm]
kind = "normalize"
input = "acts"
device = "gpu"
{normalize}

[operators.enc]
kind = "sae_encode"
input = "norm"
sae = "sae"
device = "{encoder_device}"

[operators.norm_cpu]
kind = "normalize"
input = "acts"
device = "cpu"
{normalize}

[sinks.normed]
kind = "parquet"
input = "norm_cpu"
path = "normed.parquet"

[sinks.features]
kind = "parquet"
input = "enc"
path = "features.parquet"
"#
    )
}

/// (uploaded, read back) bytes from the run report's `gpu DEVICE: …` line.
fn gpu_bytes(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.trim_start().starts_with("gpu ") && l.contains("bytes read back"))
        .unwrap_or_else(|| panic!("no gpu bytes line in the report:\n{log}"));
    let number_before = |what: &str| -> u64 {
        let head = &line[..line.find(what).unwrap()];
        head.split_whitespace().last().unwrap().parse().unwrap()
    };
    (number_before(" bytes uploaded"), number_before(" bytes read back"))
}

/// Latents written to a features file in all.
fn latents(path: &std::path::Path) -> usize {
    use arrow::array::AsArray;
    read_parquet(path)
        .iter()
        .map(|b| b.column_by_name("features").unwrap().as_list::<i32>().values().len())
        .sum()
}

struct Case {
    arch: &'static str,
    opts: &'static [&'static str],
    /// `k` for TopK SAEs: the encoder reads back exactly k pairs per token.
    k: Option<usize>,
    normalize: &'static str,
}

/// A temporary directory with a `D_IN → D_SAE` SAE of `arch` (options `opts`) made by the
/// reference script in `sae/`: (python, directory, SAE path); `None` when the GPU tests are
/// skipped or there is no Python.
fn with_sae(arch: &str, opts: &[&str]) -> Option<(std::path::PathBuf, tempfile::TempDir, String)> {
    if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        return None;
    }
    let py = python()?;
    let dir = tempfile::tempdir().unwrap();
    let sae = dir.path().join("sae").to_string_lossy().to_string();
    let (di, ds) = (D_IN.to_string(), D_SAE.to_string());
    let mut args = vec!["make", sae.as_str(), "saelens", arch, di.as_str(), ds.as_str(), "7"];
    args.extend(opts);
    run_python(&py, "sae_reference.py", &args);
    Some((py, dir, sae))
}

fn check(case: Case) {
    let Some((py, dir, sae)) = with_sae(case.arch, case.opts) else {
        return;
    };
    let d = dir.path();
    let stats = serde_json::json!({
        "mean": (0..D_IN).map(|c| 0.01 * c as f64 - 0.2).collect::<Vec<_>>(),
        "std": (0..D_IN).map(|c| 0.5 + 0.02 * c as f64).collect::<Vec<_>>(),
    });
    std::fs::write(d.join("stats.json"), stats.to_string()).unwrap();
    let p = |f: &str| d.join(f).to_string_lossy().to_string();

    std::fs::write(d.join("chain.toml"), pipeline(case.normalize, "gpu")).unwrap();
    let log = run_ok(d, &["run", "chain.toml", "-w", "2"]);
    let out = run_python(
        &py,
        "sae_reference.py",
        &["check", &sae, &p("normed.parquet"), &p("features.parquet")],
    );
    let (up, down) = gpu_bytes(&log);
    let nnz = latents(&d.join("features.parquet"));
    eprintln!(
        "{} {:?} {}: {out}; {up} bytes up, {down} back, {nnz} latents",
        case.arch, case.opts, case.normalize
    );
    let sparse = match case.k {
        Some(k) => (TOKENS * k * 8) as u64,
        None => (TOKENS * 4 + nnz * 8) as u64,
    };
    assert_eq!(down, sparse, "only the sparse result comes back:\n{log}");
    // The activations once, the encoder once, and a few small parameter blocks per batch.
    let weights = (D_IN * D_SAE + 3 * D_SAE + D_IN) * 4;
    let batches = 2 * TOKENS.div_ceil(CHUNK);
    let bound = (TOKENS * D_IN * 4 + weights + batches * 4096) as u64;
    assert!(
        up >= (TOKENS * D_IN * 4) as u64 && up <= bound,
        "{up} bytes uploaded, expected the activations once ({}) up to {bound}",
        TOKENS * D_IN * 4
    );

    // The encoder on the CPU: the GPU normalize must hand it host rows, all of them.
    std::fs::write(d.join("split.toml"), pipeline(case.normalize, "cpu")).unwrap();
    let log = run_ok(d, &["run", "split.toml", "-w", "2"]);
    run_python(
        &py,
        "sae_reference.py",
        &["check", &sae, &p("normed.parquet"), &p("features.parquet")],
    );
    let (_, down) = gpu_bytes(&log);
    assert_eq!(
        down,
        (TOKENS * D_IN * 4) as u64,
        "the normalized rows come back whole:\n{log}"
    );
}

#[test]
fn topk_chain_with_constant_norm_input_reads_back_k_pairs_per_token() {
    check(Case {
        arch: "topk",
        opts: &["k=12", "normalize_activations=constant_norm_rescale"],
        k: Some(12),
        normalize: "method = \"l2\"",
    });
}

#[test]
fn jumprelu_chain_with_layer_norm_input_reads_back_only_active_latents() {
    check(Case {
        arch: "jumprelu",
        opts: &["normalize_activations=layer_norm"],
        k: None,
        normalize: "method = \"fixed\"\nstats = \"stats.json\"",
    });
}

#[test]
fn standard_and_scaled_chains_without_b_dec_equal_the_reference() {
    check(Case {
        arch: "standard",
        opts: &[],
        k: None,
        normalize: "method = \"l2\"\ntarget_norm = 3.0",
    });
    check(Case {
        arch: "batchtopk",
        opts: &[
            "scalar_threshold=true",
            "normalize_activations=expected_average_only_in",
            "norm_scaling_factor=1.7",
            "apply_b_dec_to_input=false",
        ],
        k: None,
        normalize: "method = \"fixed\"\nstats = \"stats.json\"",
    });
}

/// normalize → sae_encode → feature_stats, all on wgpu, beside `feature_stats` on the CPU over
/// the same features (run A, with the features also written): the statistics tables must be
/// equal (counts, histograms, L0 exactly; float columns within 1e-5 relative: the device sums
/// in float32 between settles), and what comes back from the device is the sparse result plus,
/// per settled window, `(4 + 24 bins / 2) × 4` bytes per feature (two 16-bit bins a word) and 4 bytes per token. Run B has
/// `feature_stats` on the GPU as the encoder's only consumer: it counts the pairs the encoder
/// left on the device, so they are not uploaded again, and its tables equal A's CPU tables.
fn stats_chain(arch: &str, opts: &[&str], k: Option<usize>) {
    let Some((_, dir, _)) = with_sae(arch, opts) else { return };
    let d = dir.path();
    let stats = |name: &str, device: &str| {
        format!(
            r#"
[operators.{name}]
kind = "feature_stats"
input = "enc"
device = "{device}"
window = 256
top_k = 3
dead_after = 100

[sinks.{name}]
kind = "parquet"
input = "{name}"
path = "{name}"
"#
        )
    };
    let chain = pipeline("method = \"l2\"", "gpu");
    std::fs::write(
        d.join("a.toml"),
        chain.clone() + &stats("stats_gpu", "gpu") + &stats("stats_cpu", "cpu"),
    )
    .unwrap();
    let log = run_ok(d, &["run", "a.toml", "-w", "2"]);
    let nnz = latents(&d.join("features.parquet"));
    let sparse = match k {
        Some(k) => TOKENS * k * 8,
        None => TOKENS * 4 + nnz * 8,
    };
    // Settled at tokens 256 and 512, and at the end (700).
    let counts = 3 * (4 + 24 / 2) * D_SAE * 4 + TOKENS * 4;
    let (up_a, down) = gpu_bytes(&log);
    assert_eq!(down, (sparse + counts) as u64, "the sparse result and counts only:\n{log}");
    assert_same_tables(&d.join("stats_gpu"), &d.join("stats_cpu"));

    // Run B: the encoder's only consumer is feature_stats on the same GPU.
    let only_stats = chain[..chain.find("[operators.norm_cpu]").unwrap()].to_string() + &stats("stats_resident", "gpu");
    std::fs::write(d.join("b.toml"), only_stats).unwrap();
    // Two workers in both runs: the encoders leave batches in flight and emit them later, each
    // at its input's time, so both runs' statistics count the stream in its order.
    let log = run_ok(d, &["run", "b.toml", "-w", "2"]);
    let (up_b, down_b) = gpu_bytes(&log);
    assert_eq!(down_b, down, "the same bytes come back:\n{log}");
    let weights = (D_IN * D_SAE + 3 * D_SAE + D_IN) * 4;
    let batches = 2 * TOKENS.div_ceil(CHUNK);
    let bound = (TOKENS * D_IN * 4 + weights + batches * 4096) as u64;
    assert!(
        up_b <= bound,
        "{up_b} bytes uploaded: the activations, the encoder and parameters only, up to {bound}"
    );
    assert!(
        up_a >= up_b + (nnz * 8) as u64,
        "run A uploads the {nnz} pairs again ({up_a} bytes), run B does not ({up_b})"
    );
    assert_same_tables(&d.join("stats_resident"), &d.join("stats_cpu"));
}

#[test]
fn topk_chain_with_statistics_on_the_device_reads_back_pairs_and_counts() {
    stats_chain("topk", &["k=12"], Some(12));
}

#[test]
fn jumprelu_chain_with_statistics_on_the_device_counts_the_compacted_pairs_there() {
    stats_chain("jumprelu", &[], None);
}

/// The statistics tables in `got` equal those in `want`: the same rows, every column equal,
/// floats within 1e-5 relative.
fn assert_same_tables(got: &std::path::Path, want: &std::path::Path) {
    // Every table but the alerts (no rule is set).
    for table in FEATURE_TABLES.iter().filter(|&&t| t != "alerts") {
        let file = format!("{table}.parquet");
        let (got, want) = (
            concat(&read_parquet(&got.join(&file))),
            concat(&read_parquet(&want.join(&file))),
        );
        assert_eq!(got.schema(), want.schema(), "{table}");
        assert_eq!(got.num_rows(), want.num_rows(), "{table}");
        assert!(want.num_rows() > 0, "{table} is empty");
        for (c, field) in want.schema().fields().iter().enumerate() {
            let (g, w) = (got.column(c), want.column(c));
            match field.data_type() {
                arrow::datatypes::DataType::Float64 | arrow::datatypes::DataType::Float32 => {
                    let cast = |a: &arrow::array::ArrayRef| -> Vec<f64> {
                        use arrow::array::AsArray;
                        let a = arrow::compute::cast(a, &arrow::datatypes::DataType::Float64).unwrap();
                        a.as_primitive::<arrow::datatypes::Float64Type>().values().to_vec()
                    };
                    for (r, (a, b)) in cast(g).iter().zip(cast(w)).enumerate() {
                        assert!(
                            a == &b || (a - b).abs() <= 1e-5 * b.abs(),
                            "{table}.{} row {r}: {a} vs {b}",
                            field.name()
                        );
                    }
                }
                _ => assert_eq!(g.to_data(), w.to_data(), "{table}.{}", field.name()),
            }
        }
    }
}

/// One record batch of all of `batches`.
fn concat(batches: &[arrow::record_batch::RecordBatch]) -> arrow::record_batch::RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

const EEG_CHANNELS: usize = 16;
const EEG_RATE: usize = 250;
const EEG_SECONDS: usize = 8;
const EEG_CHUNK: usize = 50;
const PICKED: [&str; 4] = ["C3", "Cz", "C4", "Pz"];

/// eeg → butterworth → reref average → pick 4 → picked.parquet (with `picked_sink`) and
/// bandpower → power.parquet.
fn eeg_pipeline(filter_device: &str, map_device: &str, power_device: &str, picked_sink: bool) -> String {
    let picked = PICKED.map(|c| format!("\"{c}\"")).join(", ");
    let picked_sink = match picked_sink {
        true => "[sinks.picked]\nkind = \"parquet\"\ninput = \"motor\"\npath = \"picked.parquet\"\n",
        false => "",
    };
    format!(
        r#"
[pipeline]
allow_software_gpu = true

[sources.eeg]
kind = "synthetic_eeg"
channels = {EEG_CHANNELS}
sample_rate = {EEG_RATE}.0
seconds = {EEG_SECONDS}.0
chunk = {EEG_CHUNK}
seed = 3

[operators.band]
kind = "butterworth"
input = "eeg"
btype = "bandpass"
cutoff = [8.0, 30.0]
order = 4
device = "{filter_device}"

[operators.car]
kind = "reref"
input = "band"
method = "average"
device = "{map_device}"

[operators.motor]
kind = "pick"
input = "car"
channels = [{picked}]
device = "{map_device}"

[operators.power]
kind = "bandpower"
input = "motor"
window_s = 1.0
step_s = 0.5
bands = [["alpha", 8.0, 13.0], ["beta", 13.0, 30.0]]
device = "{power_device}"

{picked_sink}
[sinks.power]
kind = "parquet"
input = "power"
path = "power.parquet"
"#
    )
}

/// max |a − b| ≤ tol · max |b| over two files' rows (same keys).
fn assert_close(a: &std::path::Path, b: &std::path::Path, tol: f32) {
    let (a, b) = (common::rows(a), common::rows(b));
    assert_eq!(a.len(), b.len(), "row counts");
    let scale = b.iter().flat_map(|r| r.1.iter()).fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0, "row keys");
        for (u, v) in x.1.iter().zip(&y.1) {
            worst = worst.max((u - v).abs());
        }
    }
    assert!(
        scale > 0.0 && worst <= tol * scale,
        "{}: max error {worst} > {tol} × {scale}",
        a.len()
    );
}

#[test]
fn eeg_chain_filters_references_and_picks_on_the_device() {
    if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |name: &str, filter: &str, map: &str| {
        let sub = d.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("p.toml"), eeg_pipeline(filter, map, "cpu", true)).unwrap();
        let log = run_ok(&sub, &["run", "p.toml", "-w", "2"]);
        (sub, log)
    };
    let (cpu, _) = run("cpu", "cpu", "cpu");
    let (chain, chain_log) = run("chain", "gpu", "gpu");
    let (split, split_log) = run("split", "gpu", "cpu");
    for f in ["picked.parquet", "power.parquet"] {
        assert_close(&chain.join(f), &cpu.join(f), 2e-3);
        assert_close(&split.join(f), &cpu.join(f), 2e-3);
    }
    // Both runs read back each frame's filter state. The split run also reads back the band-pass
    // output of all 16 channels for the CPU maps; the chain only the 4 picked channels.
    let samples = EEG_RATE * EEG_SECONDS;
    let (_, chain_down) = gpu_bytes(&chain_log);
    let (_, split_down) = gpu_bytes(&split_log);
    assert_eq!(
        split_down - chain_down,
        (samples * (EEG_CHANNELS - PICKED.len()) * 4) as u64,
        "chain:\n{chain_log}\nsplit:\n{split_log}"
    );
    let state = split_down - (samples * EEG_CHANNELS * 4) as u64;
    assert_eq!(
        state % (samples / EEG_CHUNK) as u64,
        0,
        "the same state bytes per frame: {state}"
    );
}

/// The whole EEG chain on the device: band-pass → common average → pick → band power over
/// sliding windows. The samples never come back: only each frame's filter state and the band
/// powers (windows × 4 channels × 2 bands × 4 bytes), and the powers equal the CPU chain's.
#[test]
fn eeg_chain_computes_band_power_on_the_device_and_reads_back_only_the_powers() {
    if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |name: &str, [filter, map, power]: [&str; 3], picked_sink: bool| {
        let sub = d.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("p.toml"), eeg_pipeline(filter, map, power, picked_sink)).unwrap();
        let log = run_ok(&sub, &["run", "p.toml", "-w", "2"]);
        (sub, log)
    };
    let (cpu, _) = run("cpu", ["cpu"; 3], false);
    let (chain, chain_log) = run("chain", ["gpu"; 3], false);
    // Power is quadratic in the filtered signal: twice the filter's relative tolerance.
    assert_close(&chain.join("power.parquet"), &cpu.join("power.parquet"), 4e-3);
    // The filter alone on the GPU reads back all 16 filtered channels and its state.
    let (_, split_log) = run("split", ["gpu", "cpu", "cpu"], false);
    // The chain with the picked channels also written reads those back too.
    let (picked, picked_log) = run("picked", ["gpu"; 3], true);
    assert_close(&picked.join("power.parquet"), &cpu.join("power.parquet"), 4e-3);
    let samples = EEG_RATE * EEG_SECONDS;
    let (_, chain_down) = gpu_bytes(&chain_log);
    let (_, split_down) = gpu_bytes(&split_log);
    let (_, picked_down) = gpu_bytes(&picked_log);
    let state = split_down - (samples * EEG_CHANNELS * 4) as u64;
    let windows = (samples - EEG_RATE) / (EEG_RATE / 2) + 1;
    let powers = (windows * PICKED.len() * 2 * 4) as u64;
    assert_eq!(
        chain_down,
        state + powers,
        "the chain reads back the filter state ({state} B) and the powers ({powers} B) only:\n{chain_log}"
    );
    assert_eq!(picked_down, chain_down + (samples * PICKED.len() * 4) as u64, "{picked_log}");
}

/// The decoder's chain on the device: band-pass (GPU) → CSP projection + LDA (`decode`, GPU)
/// over the bundled motor-imagery recording (8 channels, 15,000 samples). The band-passed
/// samples stay on the device; only the 4 CSP sources per sample come back (and the filter
/// state), where a CPU decoder needs all 8 filtered channels back. Decisions equal the CPU
/// chain's; features and probabilities within the filter's tolerance.
#[test]
fn bci_chain_projects_the_csp_sources_on_the_device() {
    if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        return;
    }
    const SAMPLES: usize = 15_000;
    const CHANNELS: usize = 8;
    const SOURCES: usize = 4;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, filter: &str, decoder: &str| {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let toml = format!(
            r#"
[pipeline]
allow_software_gpu = true

[sources.amp]
kind = "edf"
path = "{edf}"
chunk = 25

[operators.band]
kind = "butterworth"
input = "amp"
btype = "bandpass"
order = 4
cutoff = [8.0, 30.0]
device = "{filter}"

[operators.decoder]
kind = "decode"
input = "band"
model = "{model}"
window_s = 2.0
step_s = 0.1
device = "{decoder}"

[sinks.decisions]
kind = "parquet"
input = "decoder"
path = "decisions.parquet"
"#,
            edf = root.join("eeg/mi_test.edf").display(),
            model = root.join("bci/mi_model.json").display(),
        );
        std::fs::write(sub.join("p.toml"), toml).unwrap();
        let log = run_ok(&sub, &["run", "p.toml"]);
        (sub, log)
    };
    let (cpu, _) = run("cpu", "cpu", "cpu");
    let (chain, chain_log) = run("chain", "gpu", "gpu");
    let (_, split_log) = run("split", "gpu", "cpu");
    let (want, got) = (
        common::rows(&cpu.join("decisions.parquet")),
        common::rows(&chain.join("decisions.parquet")),
    );
    assert_eq!(got.len(), want.len(), "windows");
    assert!(want.len() > 1000, "{} windows", want.len());
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "window end samples");
        // Columns: 4 log-power features, p:left, p:right, class.
        assert_eq!(g.1[SOURCES + 2], w.1[SOURCES + 2], "decision at sample {}", w.0);
        for (a, b) in g.1[..SOURCES + 2].iter().zip(&w.1) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst <= 5e-3, "features and probabilities: max error {worst}");
    let (_, chain_down) = gpu_bytes(&chain_log);
    let (_, split_down) = gpu_bytes(&split_log);
    assert_eq!(
        split_down - chain_down,
        (SAMPLES * (CHANNELS - SOURCES) * 4) as u64,
        "the chain reads back 4 sources per sample where the CPU decoder needs 8 channels:\nchain:\n{chain_log}\nsplit:\n{split_log}"
    );
}
