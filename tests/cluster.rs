//! Clustering against scikit-learn on real data, CPU and wgpu:
//! - Lloyd's k-means from the same initial centroids as `KMeans(init=..., n_init=1)` on the
//!   bundled SmolLM2 residual activations: labels identical, inertia within 1e-5;
//! - the streaming `kmeans` operator (one pass of mini-batches) on the same activations:
//!   inertia within 5% of `MiniBatchKMeans` from the same centroids;
//! - ARI / AMI of clusters against marker labels (motor-imagery epochs' band power) equal
//!   scikit-learn's within 1e-9.

mod common;

use common::{devices, python, run_ok, run_python, write_npy_f64};
use neurostream_engine::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy};
use neurostream_operators::cluster::kmeans::{kmeans_plusplus, lloyd, AssignKernels, CpuAssign, GpuAssign};

const ACTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/smollm2_l15_sample.parquet");
const EEG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/eeg");

fn kernels(device: &str) -> Box<dyn AssignKernels> {
    if device == "cpu" {
        return Box::new(CpuAssign::new(2));
    }
    let mut manager = DeviceManager::new(DevicePolicy {
        allow_software_gpu: true,
        fallback_to_cpu: false,
    });
    match manager.resolve(DeviceChoice::Gpu) {
        Ok(ComputeDevice::Gpu(ctx)) => Box::new(GpuAssign::new(ctx).unwrap()),
        Ok(ComputeDevice::Cpu) => unreachable!(),
        Err(e) => panic!("no wgpu adapter (install mesa-vulkan-drivers or set NEUROSTREAM_SKIP_GPU_TESTS=1): {e}"),
    }
}

fn activations() -> (Vec<f32>, usize) {
    let rows = common::rows(std::path::Path::new(ACTS));
    let d = rows[0].1.len();
    (rows.into_iter().flat_map(|(_, v)| v).collect(), d)
}

#[test]
fn lloyd_equals_scikit_learn_kmeans_from_the_same_centroids() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (x, d) = activations();
    let n = x.len() / d;
    let k = 8;
    let init = kmeans_plusplus(&x, d, k, 3).unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    write_npy_f64(&dir.path().join("x.npy"), &x64, &[n, d]);
    write_npy_f64(&dir.path().join("init.npy"), &init, &[k, d]);
    for device in devices() {
        let r = lloyd(&x, d, &init, 300, 1e-4, kernels(device).as_mut()).unwrap();
        let result = serde_json::json!({"labels": r.labels, "inertia": r.inertia, "iterations": r.iterations});
        let path = dir.path().join(format!("{device}.json"));
        std::fs::write(&path, result.to_string()).unwrap();
        let s = |n: &str| dir.path().join(n).to_string_lossy().to_string();
        eprintln!("[{device}]");
        run_python(
            &py,
            "check_cluster.py",
            &["lloyd", &s("x.npy"), &s("init.npy"), &path.to_string_lossy()],
        );
    }
}

#[test]
fn streaming_minibatch_inertia_is_close_to_scikit_learn_minibatch() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (x, d) = activations();
    let k = 8;
    let init = kmeans_plusplus(&x, d, k, 5).unwrap();
    write_npy_f64(&dir.path().join("init.npy"), &init, &[k, d]);
    let rows: Vec<Vec<f64>> = init.chunks(d).map(|c| c.to_vec()).collect();
    std::fs::write(dir.path().join("init.json"), serde_json::to_string(&rows).unwrap()).unwrap();
    for device in devices() {
        let toml = format!(
            r#"
[sources.acts]
kind = "parquet"
path = "{ACTS}"
batch_rows = 100

[operators.km]
kind = "kmeans"
input = "acts"
device = "{device}"
k = {k}
init = "init.json"
batch_size = 64
window = 300

[sinks.out]
kind = "parquet"
input = "km"
path = "{device}"
"#
        );
        std::fs::write(dir.path().join("p.toml"), &toml).unwrap();
        run_ok(dir.path(), &["run", "p.toml", "--quiet"]);
        let s = |n: &str| dir.path().join(n).to_string_lossy().to_string();
        eprintln!("[{device}]");
        run_python(
            &py,
            "check_cluster.py",
            &["minibatch", ACTS, &s("init.npy"), &s(device), "64", "1.05"],
        );
        let cosine = toml
            .replace("window = 300", "window = 300\nmetric = \"cosine\"")
            .replace(&format!("path = \"{device}\""), &format!("path = \"{device}_cos\""));
        std::fs::write(dir.path().join("p.toml"), cosine).unwrap();
        run_ok(dir.path(), &["run", "p.toml", "--quiet"]);
        run_python(
            &py,
            "check_cluster.py",
            &["cosine", ACTS, &s("init.npy"), &s(&format!("{device}_cos")), "64", "1.05"],
        );
    }
}

#[test]
fn fewer_rows_than_clusters_and_bad_init_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = |keys: &str| {
        format!(
            r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 4
sample_rate = 100.0
seconds = 0.05

[operators.km]
kind = "kmeans"
input = "eeg"
{keys}

[sinks.out]
kind = "parquet"
input = "km"
path = "out"
"#
        )
    };
    std::fs::write(d.join("p.toml"), toml("k = 8")).unwrap();
    let err = common::run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(err.contains("ended after 5 rows, fewer than the k = 8 clusters"), "{err}");
    std::fs::write(d.join("c.json"), "[[1, 2, 3], [4, 5, 6]]").unwrap();
    std::fs::write(d.join("p.toml"), toml("k = 2\ninit = \"c.json\"")).unwrap();
    let err = common::run_err(d, &["validate", "p.toml"]);
    assert!(err.contains("holds 2 × 3 centroids") && err.contains("4 channels"), "{err}");
}

#[test]
fn cluster_label_agreement_equals_scikit_learn_scores() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for device in devices() {
        let toml = format!(
            r#"
[sources.mi]
kind = "edf"
path = "{EEG}/mi_train.edf"

[operators.bp]
kind = "bandpower"
input = "mi"
epochs = ["left", "right"]
tmin = 0.5
tmax = 3.5
bands = [["mu", 8.0, 13.0], ["beta", 13.0, 30.0]]
relative = true

[operators.km]
kind = "kmeans"
input = "bp"
device = "{device}"
k = 3
init_rows = 12

[sinks.out]
kind = "parquet"
input = "km"
path = "{device}"
"#
        );
        std::fs::write(dir.path().join("p.toml"), toml).unwrap();
        run_ok(dir.path(), &["run", "p.toml", "--quiet"]);
        eprintln!("[{device}]");
        run_python(
            &py,
            "check_cluster.py",
            &["agreement", &dir.path().join(device).to_string_lossy()],
        );
    }
}

#[test]
fn the_sleep_kmeans_example_scores_clusters_against_the_hypnogram() {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, UInt64Type};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("data/eeg")).unwrap();
    for f in ["short_psg.edf", "SC4001EC-Hypnogram.edf"] {
        std::fs::copy(root.join("examples/data/eeg").join(f), d.join("data/eeg").join(f)).unwrap();
    }
    std::fs::copy(root.join("examples/sleep_kmeans.toml"), d.join("sleep_kmeans.toml")).unwrap();
    run_ok(d, &["run", "sleep_kmeans.toml", "--quiet"]);
    assert_eq!(common::row_count(&d.join("out/sleep_kmeans/assignments.parquet")), 55);
    let b = &common::read_parquet(&d.join("out/sleep_kmeans/label_agreement.parquet"))[0];
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    assert_eq!(col("labelled_rows").as_primitive::<UInt64Type>().value(0), 55);
    // The bundled excerpt is all stage W: one label, so the ARI is 0 by construction.
    assert_eq!(col("labels").as_primitive::<UInt64Type>().value(0), 1);
    assert_eq!(col("adjusted_rand_index").as_primitive::<Float64Type>().value(0), 0.0);
}
