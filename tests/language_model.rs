//! The `language_model` source: SmolLM2 over the bundled abstracts, through a pipeline into
//! Parquet. Token texts reassemble the documents, results do not depend on the worker count or
//! on reading the texts from stdin, and configuration mistakes are clear errors; every block's
//! residual stream and the logits match a float64 numpy forward pass. Needs the
//! weights: `scripts/fetch_models.sh` (or NEUROSTREAM_SKIP_MODEL_TESTS=1 to skip).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{bin, run_err, run_ok};

const TEXTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/text/abstracts.txt");

fn pipeline(texts: &str, extra: &str) -> String {
    format!(
        "[sources.lm]\nkind = \"language_model\"\nmodel = \"smollm2\"\ntexts = \"{texts}\"\nlayer = 15\nmax_tokens = 12\ndocuments = 3\n{extra}\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"lm\"\npath = \"acts.parquet\"\ntokens = true\n"
    )
}

/// (seq_id, pos, token, act) rows sorted by (seq_id, pos).
fn read(path: &std::path::Path) -> Vec<(u64, u32, String, Vec<f32>)> {
    use arrow::array::AsArray;
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let seq = b
            .column_by_name("seq_id")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .clone();
        let pos = b
            .column_by_name("pos")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt32Type>()
            .clone();
        let tok = b.column_by_name("token").unwrap().as_string::<i32>().clone();
        let act = b.column_by_name("act").unwrap().as_fixed_size_list().clone();
        for r in 0..b.num_rows() {
            let v = act.value(r);
            let v = v.as_primitive::<arrow::datatypes::Float32Type>().values().to_vec();
            rows.push((seq.value(r), pos.value(r), tok.value(r).to_string(), v));
        }
    }
    rows.sort_by_key(|r| (r.0, r.1));
    rows
}

#[test]
fn smollm2_residuals_stream_with_token_text() {
    if neurostream::models::test_weights("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), pipeline(TEXTS, "")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet", "-w", "1"]);
    let one = read(&d.join("acts.parquet"));
    assert_eq!(one.len(), 36, "3 documents x 12 tokens");
    let docs: Vec<&str> = std::fs::read_to_string(TEXTS).unwrap().leak().lines().take(3).collect();
    for (s, doc) in docs.iter().enumerate() {
        let text: String = one.iter().filter(|r| r.0 == s as u64).map(|r| r.2.as_str()).collect();
        assert!(doc.starts_with(&text), "tokens of document {s} reassemble it: {text:?}");
    }
    for (_, _, _, v) in &one {
        assert_eq!(v.len(), 576);
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // The residual stream grows through the blocks: layer 15 of SmolLM2 has norms well above 1.
    let mean_norm: f64 = one
        .iter()
        .map(|r| r.3.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / 36.0;
    assert!(mean_norm > 1.0, "{mean_norm}");

    run_ok(d, &["run", "p.toml", "--quiet", "-w", "2"]);
    assert_eq!(read(&d.join("acts.parquet")), one, "two workers give the same rows");

    // Texts from stdin.
    std::fs::write(d.join("p.toml"), pipeline("-", "")).unwrap();
    let mut child = Command::new(bin())
        .args(["run", "p.toml", "--quiet"])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(std::fs::read(TEXTS).unwrap().as_slice())
        .unwrap();
    common::wait_ok(child);
    assert_eq!(read(&d.join("acts.parquet")), one, "stdin gives the same rows");
}

/// Every block's residual stream and the last position's logits against a float64 numpy forward
/// pass (tests/python/llama_reference.py; the weights read by llama.cpp's `gguf` package), and the
/// source's layer-15 rows, to the bit, against the full model's residual after block 15.
#[test]
fn smollm2_matches_a_float64_numpy_forward_pass() {
    let Some(weights) = neurostream::models::test_weights("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let Some(py) = common::python() else { return };
    let model = neurostream::models::llama::Llama::load(&weights).unwrap();
    let first = std::fs::read_to_string(TEXTS).unwrap().lines().next().unwrap().to_string();
    let (mut ids, _) = model.tokenizer.encode_with_text(&first).unwrap();
    ids.truncate(32);
    let blocks: Vec<usize> = (0..model.n_layers()).collect();
    let out = model.forward(&ids, &blocks).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(
        d.join("ids.u32"),
        ids.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let residuals: Vec<f32> = out.residuals.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    std::fs::write(d.join("residuals.f32"), le(&residuals)).unwrap();
    std::fs::write(d.join("logits.f32"), le(&out.last_logits)).unwrap();
    common::run_python(&py, "llama_reference.py", &[weights.to_str().unwrap(), d.to_str().unwrap()]);

    let one_document = pipeline(TEXTS, "")
        .replace("max_tokens = 12", "max_tokens = 32")
        .replace("documents = 3", "documents = 1");
    std::fs::write(d.join("p.toml"), one_document).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let rows = read(&d.join("acts.parquet"));
    assert_eq!(rows.len(), ids.len());
    let block_15 = &out.residuals[15].1;
    for (r, (_, pos, _, act)) in rows.iter().enumerate() {
        assert_eq!(*pos as usize, r);
        assert!(
            act[..] == block_15[r * 576..(r + 1) * 576],
            "token {r} differs from the full model's block 15"
        );
    }
}

#[test]
fn language_model_config_mistakes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), pipeline(TEXTS, "weights = \"nowhere.gguf\"")).unwrap();
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(
        err.contains("weights not found at") && err.contains("scripts/fetch_models.sh"),
        "{err}"
    );
    if neurostream::models::test_weights("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").is_none() {
        return;
    }
    std::fs::write(d.join("p.toml"), pipeline(TEXTS, "").replace("layer = 15", "layer = 30")).unwrap();
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(err.contains("`layer` 30 out of range: the model has blocks 0..30"), "{err}");
}

#[test]
fn minilm_hidden_states_stream_with_wordpiece_tokens() {
    if neurostream::models::test_weights("minilm/model.safetensors").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = pipeline(TEXTS, "")
        .replace("smollm2", "minilm")
        .replace("layer = 15", "layer = 5");
    std::fs::write(d.join("p.toml"), toml).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet", "-w", "2"]);
    let rows = read(&d.join("acts.parquet"));
    assert_eq!(rows.len(), 36);
    assert!(rows.iter().all(|r| r.3.len() == 384));
    // Every document starts with [CLS]; the rows equal the model's own last-layer output.
    assert!(rows.iter().filter(|r| r.1 == 0).all(|r| r.2 == "[CLS]"));
    let m = neurostream::models::bert::Bert::load(&neurostream::models::model_path("minilm")).unwrap();
    let first_doc = std::fs::read_to_string(TEXTS).unwrap().lines().next().unwrap().to_string();
    let mut ids = m.encode(&first_doc).unwrap();
    ids.truncate(12);
    let want = &m.forward(&ids).unwrap().layers[5];
    let got: Vec<f32> = rows.iter().filter(|r| r.0 == 0).flat_map(|r| r.3.clone()).collect();
    assert_eq!(&got, want);
}

#[test]
fn smollm2_monitor_example_runs_with_the_bundled_sae() {
    if neurostream::models::test_weights("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::create_dir_all(d.join("data/text")).unwrap();
    std::fs::create_dir_all(d.join("data/smollm2_sae")).unwrap();
    std::fs::copy(root.join("data/text/abstracts.txt"), d.join("data/text/abstracts.txt")).unwrap();
    for f in ["cfg.json", "sae_weights.safetensors"] {
        std::fs::copy(root.join("data/smollm2_sae").join(f), d.join("data/smollm2_sae").join(f)).unwrap();
    }
    // Four documents keep the debug-build test short; the windows shrink with them.
    let toml = std::fs::read_to_string(root.join("llm_monitor_smollm2.toml"))
        .unwrap()
        .replace("documents = 48", "documents = 4")
        .replace("window = 1024\nstep = 512", "window = 128\nstep = 64");
    std::fs::write(d.join("m.toml"), toml).unwrap();
    run_ok(d, &["run", "m.toml", "--quiet", "-w", "2"]);
    let examples = d.join("out/smollm2_monitor/top_examples.parquet");
    assert!(common::row_count(&examples) > 100);
    // Token text flows through to the top examples' context.
    let file = std::fs::File::open(&examples).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut contexts = 0;
    for b in reader {
        use arrow::array::{Array, AsArray};
        let b = b.unwrap();
        let c = b.column_by_name("context").unwrap().as_string::<i32>().clone();
        contexts += (0..b.num_rows())
            .filter(|&r| c.is_valid(r) && c.value(r).contains('«'))
            .count();
    }
    assert!(contexts > 100, "{contexts}");
    // The SAE reconstructs this model's activations: mean explained variance per token > 0.8.
    let file = std::fs::File::open(d.join("out/smollm2_quality/scalars.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut all_time_ev = Vec::new();
    for b in reader {
        use arrow::array::AsArray;
        let b = b.unwrap();
        let scope = b.column_by_name("scope").unwrap().as_string::<i32>().clone();
        let column = b.column_by_name("column").unwrap().as_string::<i32>().clone();
        let mean = b
            .column_by_name("mean")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>()
            .clone();
        for r in 0..b.num_rows() {
            if scope.value(r) == "all_time" && column.value(r) == "explained_variance" {
                all_time_ev.push(mean.value(r));
            }
        }
    }
    let ev = *all_time_ev.last().expect("all-time rows");
    assert!(ev > 0.8, "mean explained variance {ev}");
}

#[test]
fn planted_shift_in_real_smollm2_activations_raises_exactly_the_expected_alerts() {
    if neurostream::models::test_weights("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").is_none() {
        return;
    }
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let at = |n: &str| d.join(n).to_string_lossy().to_string();
    let sae = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/smollm2_sae");
    // Real activations: SmolLM2 layer 15 over 12 abstracts (~1500 tokens).
    let toml = pipeline(TEXTS, "skip_first = 1").replace("max_tokens = 12\ndocuments = 3", "max_tokens = 128\ndocuments = 12");
    std::fs::write(d.join("p.toml"), toml).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet", "-w", "2"]);
    // A feature firing on ~2% of the first 256 tokens; from token 768 on, every activation moves
    // along its encoder direction.
    let feature = common::run_python(
        &py,
        "check_feature_stats.py",
        &["pick", &at("acts.parquet"), sae.to_str().unwrap(), "256"],
    );
    let feature = feature.lines().last().unwrap().trim().to_string();
    common::run_python(
        &py,
        "check_feature_stats.py",
        &[
            "shift",
            &at("acts.parquet"),
            sae.to_str().unwrap(),
            &at("shifted.parquet"),
            &feature,
            "768",
            "150",
        ],
    );
    let stats = format!(
        "[sources.acts]\nkind = \"parquet\"\npath = \"shifted.parquet\"\n\n[operators.enc]\nkind = \"sae_encode\"\ninput = \"acts\"\nsae = \"{}\"\n\n\
         [operators.stats]\nkind = \"feature_stats\"\ninput = \"enc\"\nwindow = 256\ntop_k = 0\n\n[[operators.stats.alerts]]\nrule = \"density_ratio\"\nabove = 8.0\nreference = \"first_window\"\nfeatures = [{feature}]\nmin_count = 10\n\n\
         [sinks.features]\nkind = \"parquet\"\ninput = \"enc\"\npath = \"features.parquet\"\n\n[sinks.stats]\nkind = \"parquet\"\ninput = \"stats\"\npath = \"stats\"\n",
        sae.display()
    );
    std::fs::write(d.join("s.toml"), stats).unwrap();
    run_ok(d, &["run", "s.toml", "--quiet", "-w", "2"]);
    let settings = format!(
        r#"{{"window": 256, "top_k": 0, "alerts": [{{"rule": "density_ratio", "above": 8.0, "reference": "first_window", "features": [{feature}], "min_count": 10}}]}}"#
    );
    let out = common::run_python(
        &py,
        "check_feature_stats.py",
        &[
            "features",
            &at("features.parquet"),
            &at("stats"),
            &at("shifted.parquet"),
            &settings,
        ],
    );
    let alerts: Vec<&str> = out.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())).collect();
    let rows = common::row_count(&d.join("shifted.parquet"));
    // Windows ending at 1024, 1280, ... (and the final partial one) lie after the shift.
    let mut expected: Vec<String> = (4..=rows / 256)
        .map(|w| format!("{} density_ratio {feature}", w * 256))
        .collect();
    if !rows.is_multiple_of(256) {
        expected.push(format!("{rows} density_ratio {feature}"));
    }
    assert_eq!(alerts, expected, "{out}");
}
