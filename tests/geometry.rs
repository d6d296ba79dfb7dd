//! The feature-clusters example end to end on real data (bundled SmolLM2 activations and SAE):
//! `sae_encode` → `cooccurrence` → `neurostream sae geometry`, checked against numpy / scipy /
//! scikit-learn by tests/python/check_geometry.py (spectrum, power-law slope, modularity AMI,
//! k-NN entropy, principal components, cosine k-means quality, PNG plots).

mod common;

use common::{python, run_err, run_ok, run_python};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

#[test]
fn geometry_report_of_the_bundled_sae_equals_the_references() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let example = std::fs::read_to_string(format!("{EXAMPLES}/feature_clusters.toml"))
        .unwrap()
        .replace("\"data/", &format!("\"{EXAMPLES}/data/"))
        .replace("\"out/feature_clusters\"", "\"cooc\"");
    std::fs::write(d.join("p.toml"), example).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let sae = format!("{EXAMPLES}/data/smollm2_sae");
    let out = run_ok(
        d,
        &[
            "sae",
            "geometry",
            "--sae",
            &sae,
            "--stats",
            "cooc",
            "--out",
            "geo",
            "--shuffles",
            "50",
        ],
    );
    assert!(out.contains("modularity_ami"), "{out}");
    run_python(&py, "check_geometry.py", &[&sae, &d.join("geo").to_string_lossy()]);
    // Statistics of another SAE (feature ids beyond its width) are refused.
    let err = run_err(
        d,
        &[
            "sae",
            "geometry",
            "--sae",
            &format!("{EXAMPLES}/data/sample_sae"),
            "--stats",
            "cooc",
            "--out",
            "geo2",
        ],
    );
    assert!(err.contains("beyond the SAE's") || err.contains("--clusters"), "{err}");
}
