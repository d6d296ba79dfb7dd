//! `sae_encode` on the CPU and on wgpu against a numpy transcription of each library's formula,
//! for SAEs written in the SAELens and sparsify formats by `tests/python/sae_reference.py`.

mod common;

use common::{devices, python, run_err, run_ok, run_python};

const D_IN: usize = 48;
const D_SAE: usize = 160;

/// The pipeline under test; on the CPU a second encoder splits its matmul and selection over 3
/// threads (columns per thread, rows merged), checked against the same reference.
fn pipeline(device: &str) -> String {
    let threaded = if device == "cpu" {
        "\n[operators.enc_threads]\nkind = \"sae_encode\"\ninput = \"acts\"\nsae = \"sae\"\ndevice = \"cpu\"\nthreads = 3\n\
         \n[sinks.features_threads]\nkind = \"parquet\"\ninput = \"enc_threads\"\npath = \"features_threads.parquet\"\n"
    } else {
        ""
    };
    format!(
        r#"
[sources.acts]
kind = "synthetic_activations"
d_model = {D_IN}
features = 96
active = 6
noise = 0.1
tokens = 700
chunk = 128
seed = 21

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "sae"
device = "{device}"

[sinks.raw]
kind = "parquet"
input = "acts"
path = "acts.parquet"

[sinks.features]
kind = "parquet"
input = "enc"
path = "features.parquet"
{threaded}"#
    )
}

/// The devices the backend-parity tests run on: the CPU, and wgpu unless NEUROSTREAM_SKIP_GPU_TESTS=1.
/// Writes a random SAE with `sae_reference.py make` into `dir/sae`; returns its path.
fn make_sae(py: &std::path::Path, dir: &std::path::Path, format: &str, arch: &str, seed: &str, opts: &[&str]) -> String {
    let sae = dir.join("sae").to_string_lossy().to_string();
    let (di, ds) = (D_IN.to_string(), D_SAE.to_string());
    let mut args = vec!["make", sae.as_str(), format, arch, di.as_str(), ds.as_str(), seed];
    args.extend(opts);
    run_python(py, "sae_reference.py", &args);
    sae
}

/// Encodes with a random SAE on every device and checks every row against the reference;
/// returns the reference's report of the last run (rows, errors, the model and layer the
/// features' metadata names).
fn check(format: &str, arch: &str, opts: &[&str]) -> String {
    let Some(py) = python() else { return String::new() };
    let mut report = String::new();
    for device in devices() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sae = make_sae(&py, d, format, arch, "7", opts);
        std::fs::write(d.join("p.toml"), pipeline(device)).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet", "-w", "2"]);
        let p = |f: &str| d.join(f).to_string_lossy().to_string();
        let out = run_python(
            &py,
            "sae_reference.py",
            &["check", &sae, &p("acts.parquet"), &p("features.parquet")],
        );
        eprintln!("{format} {arch} {opts:?} on {device}: {out}");
        report = out;
        if device == "cpu" {
            let out = run_python(
                &py,
                "sae_reference.py",
                &["check", &sae, &p("acts.parquet"), &p("features_threads.parquet")],
            );
            eprintln!("{format} {arch} {opts:?} on 3 CPU threads: {out}");
        }
    }
    report
}

#[test]
fn saelens_standard_relu() {
    check("saelens", "standard", &[]);
}

#[test]
fn saelens_topk_with_decoder_norm_rescaling_and_constant_norm_input() {
    check(
        "saelens",
        "topk",
        &[
            "k=12",
            "rescale_acts_by_decoder_norm=true",
            "normalize_activations=constant_norm_rescale",
        ],
    );
}

#[test]
fn saelens_jumprelu_with_layer_norm_input_in_float16() {
    check("saelens", "jumprelu", &["normalize_activations=layer_norm", "dtype=float16"]);
}

#[test]
fn saelens_batchtopk_global_threshold_with_dataset_scaling() {
    check(
        "saelens",
        "batchtopk",
        &[
            "scalar_threshold=true",
            "normalize_activations=expected_average_only_in",
            "norm_scaling_factor=1.7",
            "apply_b_dec_to_input=false",
        ],
    );
}

#[test]
fn saelens_gated() {
    check("saelens", "gated", &[]);
}

#[test]
fn sparsify_topk_and_transcoder() {
    check("sparsify", "topk", &["k=16"]);
    check("sparsify", "topk", &["k=5", "transcode=true"]);
}

#[test]
fn saelens_transcoders_encode_without_subtracting_their_output_bias() {
    // W_dec [d_sae, d_out] and b_dec [d_out] with d_out != d_in; cfg.json says
    // apply_b_dec_to_input = true, which SAELens's transcoders ignore.
    check("saelens", "transcoder", &["d_out=41"]);
    check("saelens", "skip_transcoder", &[]);
    check("saelens", "jumprelu_transcoder", &["dtype=float16"]);
}

#[test]
fn sparsify_group_max_with_groups_split_across_tiles_and_threads() {
    // d_sae 160: groups of 10, 32 and 160 latents; the 3-thread encoder's column shares cut
    // through groups, so their bests are merged across threads.
    check("sparsify", "topk", &["k=16", "activation=groupmax"]);
    check("sparsify", "topk", &["k=5", "activation=groupmax", "skip_connection=true"]);
    check("sparsify", "topk", &["k=1", "activation=groupmax", "dtype=float16"]);
}

#[test]
fn saelens_training_checkpoints_matryoshka_jumprelu_skip_transcoders_and_v6_metadata() {
    // A BatchTopK training checkpoint: the running `topk_threshold`, in units of
    // h · ‖W_dec[j]‖ when the decoder norms rescale the pre-activations.
    check(
        "saelens",
        "batchtopk",
        &[
            "scalar_threshold=true",
            "threshold_tensor=topk_threshold",
            "rescale_acts_by_decoder_norm=true",
        ],
    );
    check("saelens", "matryoshka_batchtopk", &["threshold_range=0.0,0.2"]);
    // An older JumpReLU checkpoint (`log_threshold`), with SAELens 6's `metadata` nesting.
    let report = check("saelens", "jumprelu", &["threshold_tensor=log_threshold", "metadata=true"]);
    assert!(
        report.is_empty()
            || (report.contains("\"model\": \"test-model\"") && report.contains("\"layer\": \"blocks.3.hook_resid_post\"")),
        "{report}"
    );
    check("saelens", "jumprelu_skip_transcoder", &["d_out=41"]);
}

#[test]
fn saes_that_cannot_be_encoded_row_by_row_are_refused_with_the_reason() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), pipeline("cpu")).unwrap();
    let cfg = d.join("sae/cfg.json");
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "abstopk",
            &[],
            "unsupported architecture `abstopk`: its latents fire with either sign",
        ),
        (
            "matching_pursuit",
            &[],
            "unsupported architecture `matching_pursuit`: its encoder is an iterative pursuit",
        ),
        (
            "temporal",
            &[],
            "unsupported architecture `temporal`: its encoder attends over the preceding tokens",
        ),
        (
            "standard",
            &["normalize_activations=covariance_whitening"],
            "the whitening has not been folded into the weights",
        ),
    ];
    for (architecture, opts, message) in cases {
        let _ = std::fs::remove_dir_all(d.join("sae"));
        make_sae(&py, d, "saelens", "standard", "3", opts);
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, text.replace("\"standard\"", &format!("\"{architecture}\""))).unwrap();
        let err = run_err(d, &["validate", "p.toml"]);
        assert!(
            err.contains(message) && err.contains("cfg.json"),
            "{architecture} {opts:?}: {err}"
        );
    }
    // sparsify's skip connection adds x @ W_skipᵀ to the output: encoding ignores it, and
    // sae_reconstruct, which would need it, refuses the SAE.
    let _ = std::fs::remove_dir_all(d.join("sae"));
    make_sae(&py, d, "sparsify", "topk", "3", &["skip_connection=true"]);
    run_ok(d, &["validate", "p.toml"]);
    let toml = pipeline("cpu").replace("kind = \"sae_encode\"", "kind = \"sae_reconstruct\"");
    std::fs::write(d.join("p.toml"), toml).unwrap();
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(
        err.contains("adds a skip term (W_skip) that sae_reconstruct does not compute"),
        "{err}"
    );
}

#[test]
fn a_transcoder_is_refused_by_sae_reconstruct() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = pipeline("cpu").replace("kind = \"sae_encode\"", "kind = \"sae_reconstruct\"");
    std::fs::write(d.join("p.toml"), toml).unwrap();
    let cases: [(&str, &str, &[&str]); 3] = [
        ("saelens", "transcoder", &[]),
        ("gemmascope2", "transcoder", &[]),
        ("llamascope", "jumprelu", &["hook_point_out=blocks.3.hook_mlp_out"]),
    ];
    for (format, arch, opts) in cases {
        let _ = std::fs::remove_dir_all(d.join("sae"));
        make_sae(&py, d, format, arch, "3", opts);
        let err = run_err(d, &["validate", "p.toml"]);
        assert!(
            err.contains("a transcoder reconstructs another activation than its input"),
            "{format}: {err}"
        );
    }
}

#[test]
fn gemma_scope_npz_plain_and_compressed() {
    check("gemmascope", "jumprelu", &[]);
    check("gemmascope", "jumprelu", &["compressed=true", "dtype=float16"]);
}

#[test]
fn gemma_scope_2_saes_and_transcoders() {
    check("gemmascope2", "jumprelu", &[]);
    check("gemmascope2", "jumprelu", &["config=false", "dtype=float16"]);
    check("gemmascope2", "transcoder", &["d_out=41", "affine=true"]);
}

#[test]
fn llama_scope_scalar_and_per_latent_thresholds() {
    check("llamascope", "jumprelu", &[]);
    check("llamascope", "jumprelu", &["per_latent_threshold=true", "dtype=float16"]);
    check("llamascope", "jumprelu", &["per_latent_threshold=true", "layout=r1"]);
}

#[test]
fn wrong_d_in_and_missing_tensors_are_clear_errors() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sae = d.join("sae").to_string_lossy().to_string();
    run_python(&py, "sae_reference.py", &["make", &sae, "saelens", "topk", "32", "64", "1"]);
    std::fs::write(d.join("p.toml"), pipeline("cpu")).unwrap();
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(
        err.contains("[operators.enc] shape mismatch: the SAE at")
            && err.contains("has d_in = 32 but its input has d_model = 48"),
        "{err}"
    );
    std::fs::remove_file(d.join("sae/sae_weights.safetensors")).unwrap();
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(err.contains("not an SAE directory"), "{err}");
}

#[test]
fn sae_encode_command_matches_the_reference() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sae = d.join("sae").to_string_lossy().to_string();
    run_python(
        &py,
        "sae_reference.py",
        &[
            "make",
            &sae,
            "saelens",
            "topk",
            &D_IN.to_string(),
            &D_SAE.to_string(),
            "3",
            "k=10",
        ],
    );
    std::fs::write(d.join("p.toml"), pipeline("cpu")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let log = run_ok(
        d,
        &[
            "sae",
            "encode",
            "--sae",
            "sae",
            "--input",
            "acts.parquet",
            "--output",
            "cli.parquet",
            "--device",
            "cpu",
            "--batch",
            "100",
            "--quiet",
        ],
    );
    assert!(log.contains("wrote 700 rows to cli.parquet"), "{log}");
    let p = |f: &str| d.join(f).to_string_lossy().to_string();
    run_python(
        &py,
        "sae_reference.py",
        &["check", &sae, &p("acts.parquet"), &p("cli.parquet")],
    );
    // Batches of at most 8 rows take the memory-bound multi-row AXPY path, split over threads by columns.
    run_ok(
        d,
        &[
            "sae",
            "encode",
            "--sae",
            "sae",
            "--input",
            "acts.parquet",
            "--output",
            "small.parquet",
            "--device",
            "cpu",
            "--batch",
            "5",
            "--quiet",
        ],
    );
    run_python(
        &py,
        "sae_reference.py",
        &["check", &sae, &p("acts.parquet"), &p("small.parquet")],
    );
    let inspect = run_ok(d, &["inspect", "cli.parquet", "-n", "1"]);
    assert!(
        inspect.contains("neurostream.layout = features") && inspect.contains("neurostream.n_features = 160"),
        "{inspect}"
    );
}

fn check_reconstruct(arch: &str, opts: &[&str]) {
    let Some(py) = python() else { return };
    for device in devices() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sae = make_sae(&py, d, "saelens", arch, "9", opts);
        let toml = format!(
            "{}\n[operators.metrics]\nkind = \"sae_reconstruct\"\ninput = \"acts\"\nsae = \"sae\"\ndevice = \"{device}\"\n\
             [operators.recon]\nkind = \"sae_reconstruct\"\ninput = \"acts\"\nsae = \"sae\"\noutput = \"reconstruction\"\ndevice = \"{device}\"\n\
             [sinks.metrics]\nkind = \"parquet\"\ninput = \"metrics\"\npath = \"metrics.parquet\"\n\
             [sinks.recon]\nkind = \"parquet\"\ninput = \"recon\"\npath = \"recon.parquet\"\n",
            pipeline(device)
        );
        std::fs::write(d.join("p.toml"), toml).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet", "-w", "2"]);
        let p = |f: &str| d.join(f).to_string_lossy().to_string();
        let out = run_python(
            &py,
            "sae_reference.py",
            &[
                "metrics",
                &sae,
                &p("acts.parquet"),
                &p("features.parquet"),
                &p("metrics.parquet"),
                &p("recon.parquet"),
            ],
        );
        eprintln!("reconstruct {arch} {opts:?} on {device}: {out}");
    }
}

#[test]
fn reconstruction_metrics_match_numpy_decode() {
    check_reconstruct("standard", &["normalize_activations=constant_norm_rescale"]);
    check_reconstruct(
        "topk",
        &[
            "k=12",
            "rescale_acts_by_decoder_norm=true",
            "normalize_activations=layer_norm",
        ],
    );
    check_reconstruct(
        "gated",
        &["normalize_activations=expected_average_only_in", "norm_scaling_factor=0.8"],
    );
}

#[test]
fn f16_weight_storage_on_the_cpu_matches_the_reference_for_f16_saes() {
    // The SAE is stored in f16, so keeping W_enc in f16 loses nothing: the encoding must match
    // the float64 reference as tightly as the f32 path does.
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sae = make_sae(&py, d, "saelens", "topk", "11", &["k=12", "dtype=float16"]);
    let toml = pipeline("cpu").replace("device = \"cpu\"", "device = \"cpu\"\nweight_dtype = \"f16\"");
    std::fs::write(d.join("p.toml"), toml).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet", "-w", "2"]);
    let p = |f: &str| d.join(f).to_string_lossy().to_string();
    run_python(
        &py,
        "sae_reference.py",
        &["check", &sae, &p("acts.parquet"), &p("features.parquet")],
    );
}
