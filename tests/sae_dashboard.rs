//! `neurostream sae dashboard`: the self-contained HTML report of an SAE's features, built from
//! statistics and co-occurrence tables of a run on the bundled SmolLM2 sample, opened from
//! `file://` in headless Chromium with no network: every card renders, the numbers equal the
//! tables, the decoder neighbours equal a float64 computation, the index sorts.

mod common;

use std::path::Path;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, UInt32Type, UInt64Type};
use common::browser::Browser;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// `(feature, density)` of the all-time report of a `features.parquet` (its newest window).
fn all_time_densities(path: &Path) -> Vec<(u32, u64, f64)> {
    let batches = common::read_parquet(path);
    let mut rows = Vec::new();
    let mut newest = 0;
    for b in &batches {
        let scope = b.column_by_name("scope").unwrap().as_string::<i32>();
        let end = b.column_by_name("window_end").unwrap().as_primitive::<UInt64Type>();
        for r in 0..b.num_rows() {
            if scope.value(r) == "all_time" {
                newest = newest.max(end.value(r));
            }
        }
    }
    for b in &batches {
        let scope = b.column_by_name("scope").unwrap().as_string::<i32>();
        let end = b.column_by_name("window_end").unwrap().as_primitive::<UInt64Type>();
        let f = b.column_by_name("feature").unwrap().as_primitive::<UInt32Type>();
        let count = b.column_by_name("count").unwrap().as_primitive::<UInt64Type>();
        let density = b.column_by_name("density").unwrap().as_primitive::<Float64Type>();
        for r in 0..b.num_rows() {
            if scope.value(r) == "all_time" && end.value(r) == newest {
                rows.push((f.value(r), count.value(r), density.value(r)));
            }
        }
    }
    rows
}

#[test]
fn dashboard_of_the_bundled_sae_shows_a_card_per_feature_with_the_tables_values() {
    let dir = tempfile::tempdir().unwrap();
    let data = examples().join("data");
    let pipeline = format!(
        r#"
[sources.acts]
kind = "parquet"
path = "{acts}"

[operators.sae]
kind = "sae_encode"
input = "acts"
sae = "{sae}"

[operators.stats]
kind = "feature_stats"
input = "sae"
window = 256
top_k = 4
context = 5

[operators.cooc]
kind = "cooccurrence"
input = "sae"
window = "token"
min_count = 2
top_n = 5

[sinks.stats_out]
kind = "parquet"
input = "stats"
path = "stats"

[sinks.cooc_out]
kind = "parquet"
input = "cooc"
path = "cooc"
"#,
        acts = data.join("smollm2_l15_sample.parquet").display(),
        sae = data.join("smollm2_sae").display()
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    common::run_ok(dir.path(), &["run", "p.toml", "--quiet"]);
    let sae = data.join("smollm2_sae");
    let out = common::run_ok(
        dir.path(),
        &[
            "sae",
            "dashboard",
            "--sae",
            sae.to_str().unwrap(),
            "--stats",
            "stats",
            "--cooccurrence",
            "cooc",
            "--out",
            "report/features.html",
            "--features",
            "60",
            "--neighbours",
            "5",
        ],
    );
    assert!(out.contains("60 cards"), "{out}");
    let html = dir.path().join("report/features.html");
    let text = std::fs::read_to_string(&html).unwrap();
    // Self-contained: no script, style sheet or image is fetched (token texts may hold URLs).
    assert!(!text.contains("<script src") && !text.contains("stylesheet") && !text.contains("<img"));

    let densities = all_time_densities(&dir.path().join("stats/features.parquet"));
    let mut alive: Vec<&(u32, u64, f64)> = densities.iter().filter(|r| r.1 > 0).collect();
    alive.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    let mut b = Browser::start();
    b.goto(&format!("file://{}", html.display()));
    b.wait_for(
        "document.querySelectorAll('#cards .card').length === 60",
        Duration::from_secs(30),
    );
    assert_eq!(b.eval("document.querySelectorAll('#index tbody tr').length"), 60);
    // The index starts with the densest feature; its card shows the table's density.
    let first = b.eval("+document.querySelector('#index tbody tr').dataset.feature");
    assert_eq!(first.as_u64(), Some(alive[0].0 as u64));
    let shown: f64 = b
        .eval(&format!("DATA.cards.find(c => c.feature === {}).density", alive[0].0))
        .as_f64()
        .unwrap();
    assert!(
        (shown - alive[0].2).abs() <= 1e-12 * alive[0].2.max(1.0),
        "{shown} vs {}",
        alive[0].2
    );
    for (f, count, _) in alive.iter().take(60) {
        let c = b.eval(&format!("DATA.cards.find(c => c.feature === {f}).count"));
        assert_eq!(c.as_u64(), Some(*count), "feature {f}");
    }
    // Sorting by feature id.
    b.click("#index th[data-key=feature]");
    let ids: Vec<u64> =
        serde_json::from_value(b.eval("[...document.querySelectorAll('#index tbody tr')].map(r => +r.dataset.feature)")).unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Examples with the firing token highlighted; partners from the co-occurrence table.
    assert!(
        b.eval("document.querySelectorAll('#cards .examples .hit').length")
            .as_u64()
            .unwrap()
            >= 60
    );
    assert!(
        b.eval("document.querySelectorAll('#cards .partners tbody tr').length")
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        b.eval("performance.getEntriesByType('resource').length"),
        0,
        "no network requests"
    );

    // Decoder neighbours of the densest feature against float64 cosines of the SAE's W_dec.
    let weights = std::fs::read(sae.join("sae_weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let w = st.tensor("W_dec").unwrap();
    let (n, d) = (w.shape()[0], w.shape()[1]);
    let w: Vec<f64> = match w.dtype() {
        safetensors::Dtype::F32 => w
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        safetensors::Dtype::F16 => w
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        other => panic!("W_dec dtype {other:?}"),
    };
    let unit = |i: usize| {
        let r = &w[i * d..(i + 1) * d];
        let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        r.iter().map(|v| v / norm).collect::<Vec<f64>>()
    };
    let f = alive[0].0 as usize;
    let uf = unit(f);
    let mut cos: Vec<(usize, f64)> = (0..n)
        .filter(|&g| g != f)
        .map(|g| (g, unit(g).iter().zip(&uf).map(|(a, b)| a * b).sum()))
        .collect();
    cos.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<(u64, f64)> = serde_json::from_value(b.eval(&format!(
        "DATA.cards.find(c => c.feature === {f}).neighbours.map(n => [n.feature, n.cosine])"
    )))
    .unwrap();
    assert_eq!(shown.len(), 5);
    let cos_of = |g: usize| unit(g).iter().zip(&uf).map(|(a, b)| a * b).sum::<f64>();
    for ((g, c), (eg, ec)) in shown.iter().zip(&cos) {
        // Each neighbour's cosine is right, and it holds its rank (ties within the tolerance
        // may swap features, never values).
        assert!(
            (c - cos_of(*g as usize)).abs() < 1e-5,
            "neighbour {g}: cosine {c} vs float64 {}",
            cos_of(*g as usize)
        );
        assert!((c - ec).abs() < 1e-5, "neighbour {g} at the rank of {eg}: {c} vs {ec}");
    }
    b.screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("sae_dashboard.png"));
    assert!(b.errors.is_empty(), "JavaScript errors: {:?}", b.errors);

    // Statistics of another SAE are refused, naming the file.
    let other = data.join("sample_sae");
    let err = common::run_err(
        dir.path(),
        &[
            "sae",
            "dashboard",
            "--sae",
            other.to_str().unwrap(),
            "--stats",
            "stats",
            "--out",
            "x.html",
        ],
    );
    assert!(err.contains("features.parquet") && err.contains("another SAE"), "{err}");
}
