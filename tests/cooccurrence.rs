//! `cooccurrence` against numpy / scipy / scikit-learn on features with planted co-firing
//! groups: every report's pair and feature counts over the sliding span (exact), the Jaccard,
//! Dice, simple-matching and phi measures (1e-12), top partners, connected components of the
//! thresholded graph (identical partition, recomputed with scipy.sparse.csgraph) and spectral
//! clusters (ARI ≥ 0.95 against `SpectralClustering(affinity="precomputed")` on the same matrix),
//! for token, block and sequence windows.

mod common;

use common::{python, run_err, run_ok, run_python};

fn pipeline(dir: &std::path::Path, keys: &str, out: &str) {
    let toml = format!(
        r#"
[sources.feats]
kind = "parquet"
path = "features.parquet"
batch_rows = 64

[operators.co]
kind = "cooccurrence"
input = "feats"
{keys}

[sinks.out]
kind = "parquet"
input = "co"
path = "{out}"
"#
    );
    std::fs::write(dir.join(format!("{out}.toml")), toml).unwrap();
}

#[test]
fn sliding_counts_measures_components_and_clusters_equal_numpy_and_scikit_learn() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(
        &py,
        "check_cooccurrence.py",
        &["make", &s("features.parquet"), "60", "4", "40", "50", "7"],
    );
    let cases = [
        (
            "token",
            r#"span_windows = 300
report_every = 500
component_threshold = 0.2
clusters = 4
top_n = 5"#,
            r#"{"span_windows": 300, "report_every": 500, "component_threshold": 0.2, "clusters": 4, "top_n": 5}"#,
        ),
        (
            "block",
            r#"window = "block"
block_tokens = 8
rank_by = "jaccard"
min_count = 2
component_threshold = 0.3
component_measure = "dice"
clusters = 4"#,
            r#"{"window": "block", "block_tokens": 8, "rank_by": "jaccard", "min_count": 2, "component_threshold": 0.3, "component_measure": "dice", "clusters": 4}"#,
        ),
        (
            "sequence",
            r#"window = "sequence"
threshold = 1.0
span_windows = 10
report_every = 7"#,
            r#"{"window": "sequence", "threshold": 1.0, "span_windows": 10, "report_every": 7}"#,
        ),
    ];
    for (name, keys, spec) in cases {
        pipeline(d, keys, name);
        run_ok(d, &["run", &format!("{name}.toml"), "--quiet"]);
        std::fs::write(d.join(format!("{name}.json")), spec).unwrap();
        eprintln!("[{name}]");
        run_python(
            &py,
            "check_cooccurrence.py",
            &["check", &s("features.parquet"), &s(name), &s(&format!("{name}.json"))],
        );
    }
}

#[test]
fn dense_input_and_too_many_clusters_are_clear_errors() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(
        &py,
        "check_cooccurrence.py",
        &["make", &s("features.parquet"), "20", "2", "2", "5", "1"],
    );
    pipeline(d, "clusters = 50", "many");
    let err = run_err(d, &["run", "many.toml", "--quiet"]);
    assert!(err.contains("needs at least 50 features firing"), "{err}");
    let toml = format!(
        r#"
[sources.acts]
kind = "parquet"
path = "{}"

[operators.co]
kind = "cooccurrence"
input = "acts"

[sinks.out]
kind = "console"
input = "co"
"#,
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/smollm2_l15_sample.parquet")
    );
    std::fs::write(d.join("dense.toml"), toml).unwrap();
    let err = run_err(d, &["validate", "dense.toml"]);
    assert!(err.contains("cooccurrence takes sparse feature streams"), "{err}");
}
