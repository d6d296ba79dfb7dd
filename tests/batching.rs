//! `sae_encode` batching for live traffic (`max_batch`, `max_delay_ms`): gathering many small
//! frames into one encode changes no output row, and a frame never waits much longer than its
//! latency budget, even when no more traffic comes to fill its batch.

mod common;

use common::{python, run_ok, run_python};

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    std::fs::create_dir_all(dir.path().join("sae")).unwrap();
    std::fs::copy(root.join("sample_activations.parquet"), dir.path().join("acts.parquet")).unwrap();
    for f in ["cfg.json", "sae_weights.safetensors"] {
        std::fs::copy(root.join("sample_sae").join(f), dir.path().join("sae").join(f)).unwrap();
    }
    dir
}

/// One row of a features file: seq_id, pos, (latent, activation) pairs.
type FeatureRow = (u64, u32, Vec<(u32, f32)>);

/// Every row of a features file, sorted by (seq_id, pos).
fn features(path: &std::path::Path) -> Vec<FeatureRow> {
    use arrow::array::AsArray;
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let seq = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>().clone();
        let pos = b.column(1).as_primitive::<arrow::datatypes::UInt32Type>().clone();
        let feats = b.column(2).as_list::<i32>().clone();
        for r in 0..b.num_rows() {
            let v = feats.value(r);
            let s = v.as_struct();
            let ids = s.column(0).as_primitive::<arrow::datatypes::UInt32Type>();
            let acts = s.column(1).as_primitive::<arrow::datatypes::Float32Type>();
            rows.push((
                seq.value(r),
                pos.value(r),
                ids.values().iter().copied().zip(acts.values().iter().copied()).collect(),
            ));
        }
    }
    rows.sort_by_key(|r| (r.0, r.1));
    rows
}

#[test]
fn batched_encoding_equals_frame_by_frame_encoding() {
    let dir = setup();
    let d = dir.path();
    let pipeline = |batching: &str, out: &str| {
        format!(
            "[sources.acts]\nkind = \"parquet\"\npath = \"acts.parquet\"\nbatch_rows = 3\n\n[operators.enc]\nkind = \"sae_encode\"\ninput = \"acts\"\nsae = \"sae\"\n{batching}\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"enc\"\npath = \"{out}\"\n"
        )
    };
    std::fs::write(d.join("a.toml"), pipeline("", "plain.parquet")).unwrap();
    run_ok(d, &["run", "a.toml", "--quiet", "-w", "2"]);
    std::fs::write(
        d.join("b.toml"),
        pipeline("max_batch = 300\nmax_delay_ms = 50", "batched.parquet"),
    )
    .unwrap();
    let log = run_ok(d, &["run", "b.toml", "-w", "2"]);
    let plain = features(&d.join("plain.parquet"));
    assert_eq!(plain.len(), 8192);
    // The same latents with the same values, bit for bit: a row's products do not depend on
    // the rows sharing its batch (3-row frames against batches of ~300 rows).
    let batched = features(&d.join("batched.parquet"));
    assert_eq!(batched.len(), plain.len());
    for (a, b) in batched.iter().zip(&plain) {
        assert_eq!((a.0, a.1), (b.0, b.1));
        let bits = |r: &[(u32, f32)]| r.iter().map(|e| (e.0, e.1.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&a.2), bits(&b.2), "seq {} pos {}: {:?} vs {:?}", a.0, a.1, a.2, b.2);
    }
    // 8192 rows in frames of 3 over two workers: batches of ~100 frames, not one per frame.
    let line = log
        .lines()
        .find(|l| l.contains("frames per batch"))
        .unwrap_or_else(|| panic!("{log}"));
    let per_batch: f64 = line
        .split(" frames per batch")
        .next()
        .unwrap()
        .rsplit('(')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(per_batch > 20.0, "{line}");
}

#[test]
fn a_lone_live_frame_waits_only_its_latency_budget() {
    let Some(py) = python() else { return };
    let dir = setup();
    let d = dir.path();
    std::fs::write(
        d.join("live.toml"),
        "[sources.live]\nkind = \"arrow_tcp\"\nlisten = \"127.0.0.1:0\"\nd_model = 64\nconnections = 1\naddress_file = \"address.txt\"\n\n\
         [operators.enc]\nkind = \"sae_encode\"\ninput = \"live\"\nsae = \"sae\"\nmax_batch = 4096\nmax_delay_ms = 20\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"enc\"\npath = \"out.parquet\"\n",
    )
    .unwrap();
    let (child, address) = common::spawn_live(d, "live.toml", &[]);
    // Two small frames 600 ms apart: neither fills a batch of 4096 rows.
    run_python(&py, "live_clients.py", &["slow", address.as_str(), "600"]);
    let log = common::wait_ok(child);
    let line = log
        .lines()
        .find(|l| l.contains("added latency"))
        .unwrap_or_else(|| panic!("{log}"));
    let max_ms: f64 = line.rsplit("max ").next().unwrap().trim_end_matches(" ms").parse().unwrap();
    assert!(line.contains("2 frames in 2 batches"), "{line}");
    assert!(
        max_ms < 300.0,
        "the first frame waited for the second instead of its 20 ms budget: {line}"
    );
}
