//! `neurostream sae dashboard`: one self-contained HTML file (no server, no network) with a card
//! per feature of an SAE, from the engine's own tables: density, activation histogram, top
//! examples with their context, top co-firing partners (a `cooccurrence` output) and the
//! features whose decoder directions are nearest; an index sortable by any column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use neurostream_operators::sae::Sae;
use serde_json::{json, Value};

use crate::json::finite;

use crate::stats_tables::Report;

/// Settings of the dashboard.
pub struct DashboardArgs {
    /// SAE directory (any format `sae_encode` reads).
    pub sae: PathBuf,
    /// A `feature_stats` output directory (`features.parquet`, `top_examples.parquet`, ...).
    pub stats: PathBuf,
    /// A `cooccurrence` output directory (`partners.parquet`), for co-firing partners.
    pub cooccurrence: Option<PathBuf>,
    /// The HTML file to write.
    pub out: PathBuf,
    /// Cards for this many features, the most active first.
    pub features: usize,
    /// Decoder-direction neighbours per feature.
    pub neighbours: usize,
}

/// What was written.
#[derive(Debug)]
pub struct DashboardSummary {
    /// Features with a card.
    pub cards: usize,
    /// Features that fired at least once in the statistics.
    pub alive: usize,
    /// Bytes of the HTML file.
    pub bytes: u64,
}

const PAGE: &str = include_str!("page.html");

/// One feature's all-time statistics.
#[derive(Clone, Debug)]
struct FeatureRow {
    count: u64,
    density: f64,
    mean_act: f64,
    max_act: f64,
    dense: bool,
}

/// Builds the dashboard and writes it to `args.out`.
pub fn run(args: &DashboardArgs) -> anyhow::Result<DashboardSummary> {
    if args.features == 0 {
        bail!("--features must be at least 1");
    }
    let sae = Sae::load(&args.sae, None).with_context(|| format!("loading the SAE {}", args.sae.display()))?;
    let n = sae.d_sae;
    let features = read_features(&args.stats, n)?;
    let mut alive: Vec<u32> = features.iter().filter(|(_, f)| f.count > 0).map(|(&i, _)| i).collect();
    alive.sort_by(|a, b| features[b].count.cmp(&features[a].count).then(a.cmp(b)));
    let picked: Vec<u32> = alive.iter().copied().take(args.features).collect();
    tracing::info!(
        "dashboard: {} of {} features fired; cards for {}",
        alive.len(),
        n,
        picked.len()
    );
    let histograms = read_histograms(&args.stats, n)?;
    let examples = read_examples(&args.stats, n)?;
    let partners = match &args.cooccurrence {
        Some(dir) => Some(read_partners(dir, n)?),
        None => None,
    };
    let neighbours = decoder_neighbours(&sae, &picked, args.neighbours);
    let tokens = read_tokens(&args.stats)?;
    let cards: Vec<Value> = picked
        .iter()
        .zip(&neighbours)
        .map(|(&f, near)| {
            let s = &features[&f];
            json!({
                "feature": f,
                "count": s.count,
                "density": s.density,
                "mean_act": s.mean_act,
                "max_act": s.max_act,
                "dense": s.dense,
                "histogram": histograms.get(&f).cloned().unwrap_or_default(),
                "examples": examples.get(&f).cloned().unwrap_or_default(),
                "partners": partners.as_ref().map(|p| p.get(&f).cloned().unwrap_or_default()),
                "neighbours": near.iter().map(|&(g, c)| json!({"feature": g, "cosine": c})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let data = json!({
        "sae": args.sae.display().to_string(),
        "stats": args.stats.display().to_string(),
        "d_in": sae.d_in,
        "d_sae": n,
        "tokens": tokens,
        "alive": alive.len(),
        "cooccurrence": args.cooccurrence.as_ref().map(|p| p.display().to_string()),
        "cards": cards,
    });
    // `</` cannot end the script element that holds the data.
    let html = PAGE.replace("/*DATA*/null", &data.to_string().replace("</", "<\\/"));
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    neurostream_engine::files::write_atomic(&args.out, html.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(DashboardSummary {
        cards: picked.len(),
        alive: alive.len(),
        bytes: html.len() as u64,
    })
}

fn required(dir: &Path, name: &str) -> anyhow::Result<Report> {
    Report::read(dir, name)?.with_context(|| {
        format!(
            "{}: no {name}.parquet: give the output directory of a `feature_stats` operator's parquet sink",
            dir.display()
        )
    })
}

fn check_feature(report: &Report, f: u64, n: usize) -> anyhow::Result<u32> {
    if f as usize >= n {
        bail!(
            "{}: feature {f} is beyond the SAE's {n} features: statistics of another SAE?",
            report.path.display()
        );
    }
    Ok(f as u32)
}

fn read_features(dir: &Path, n: usize) -> anyhow::Result<BTreeMap<u32, FeatureRow>> {
    let t = required(dir, "features")?;
    let (ids, count, density) = (t.u64_column("feature")?, t.u64_column("count")?, t.f64_column("density")?);
    let (mean, max, dense) = (t.f64_column("mean_act")?, t.f64_column("max_act")?, t.bool_column("dense")?);
    let mut out = BTreeMap::new();
    for i in 0..t.len() {
        let f = check_feature(&t, ids[i], n)?;
        out.insert(
            f,
            FeatureRow {
                count: count[i],
                density: density[i],
                mean_act: mean[i],
                max_act: max[i],
                dense: dense[i],
            },
        );
    }
    Ok(out)
}

fn read_tokens(dir: &Path) -> anyhow::Result<Option<u64>> {
    Ok(match Report::read(dir, "windows")? {
        Some(t) => t.u64_column("tokens")?.into_iter().max(),
        None => None,
    })
}

fn read_histograms(dir: &Path, n: usize) -> anyhow::Result<BTreeMap<u32, Vec<Value>>> {
    let mut out: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    let Some(t) = Report::read(dir, "activation_histogram")? else {
        return Ok(out);
    };
    let (ids, lo, hi, count) = (
        t.u64_column("feature")?,
        t.f64_column("log10_act_lo")?,
        t.f64_column("log10_act_hi")?,
        t.u64_column("count")?,
    );
    for i in 0..t.len() {
        let f = check_feature(&t, ids[i], n)?;
        out.entry(f)
            .or_default()
            .push(json!([finite(lo[i]), finite(hi[i]), count[i]]));
    }
    Ok(out)
}

fn read_examples(dir: &Path, n: usize) -> anyhow::Result<BTreeMap<u32, Vec<Value>>> {
    let mut out: BTreeMap<u32, Vec<(u64, Value)>> = BTreeMap::new();
    let Some(t) = Report::read(dir, "top_examples")? else {
        return Ok(BTreeMap::new());
    };
    let (ids, rank, act) = (t.u64_column("feature")?, t.u64_column("rank")?, t.f64_column("act")?);
    let (seq, pos, token, context) = (
        t.u64_column("seq_id")?,
        t.u64_column("pos")?,
        t.str_column("token")?,
        t.str_column("context")?,
    );
    for i in 0..t.len() {
        let f = check_feature(&t, ids[i], n)?;
        out.entry(f).or_default().push((
            rank[i],
            json!({"act": finite(act[i]), "seq_id": seq[i], "pos": pos[i], "token": token[i], "context": context[i]}),
        ));
    }
    Ok(by_rank(out))
}

fn read_partners(dir: &Path, n: usize) -> anyhow::Result<BTreeMap<u32, Vec<Value>>> {
    let t = Report::read(dir, "partners")?.with_context(|| {
        format!(
            "{}: no partners.parquet: give the output directory of a `cooccurrence` operator's parquet sink",
            dir.display()
        )
    })?;
    let (ids, rank, partner, count, value) = (
        t.u64_column("feature")?,
        t.u64_column("rank")?,
        t.u64_column("partner")?,
        t.u64_column("count")?,
        t.f64_column("value")?,
    );
    let measure = t.str_column("measure")?;
    let mut out: BTreeMap<u32, Vec<(u64, Value)>> = BTreeMap::new();
    for i in 0..t.len() {
        let f = check_feature(&t, ids[i], n)?;
        let p = check_feature(&t, partner[i], n)?;
        out.entry(f).or_default().push((
            rank[i],
            json!({"partner": p, "count": count[i], "value": finite(value[i]), "measure": measure[i]}),
        ));
    }
    Ok(by_rank(out))
}

/// Each feature's rows in rank order, the ranks dropped.
fn by_rank(rows: BTreeMap<u32, Vec<(u64, Value)>>) -> BTreeMap<u32, Vec<Value>> {
    rows.into_iter()
        .map(|(f, mut v)| {
            v.sort_by_key(|e| e.0);
            (f, v.into_iter().map(|e| e.1).collect())
        })
        .collect()
}

/// For each of `picked`, the `k` other features whose decoder directions have the highest
/// cosine similarity with its own: `(feature, cosine)`, highest first.
fn decoder_neighbours(sae: &Sae, picked: &[u32], k: usize) -> Vec<Vec<(u32, f64)>> {
    let (n, d) = (sae.d_sae, sae.d_out);
    // Unit directions as columns (d × n), the one copy of W_dec made; the picked ones are
    // gathered from it as rows: one product per block.
    let scales: Vec<f32> = sae
        .decoder_norms()
        .iter()
        .map(|&norm| if norm > 0.0 { 1.0 / norm } else { 0.0 })
        .collect();
    let mut columns = vec![0f32; d * n];
    for (j, row) in sae.w_dec.chunks_exact(d).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            columns[i * n + j] = v * scales[j];
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let mut out = Vec::with_capacity(picked.len());
    const BLOCK: usize = 64;
    for block in picked.chunks(BLOCK) {
        let x: Vec<f32> = block
            .iter()
            .flat_map(|&f| {
                let columns = &columns;
                (0..d).map(move |i| columns[i * n + f as usize])
            })
            .collect();
        let mut z = vec![0f32; block.len() * n];
        neurostream_operators::sae::matmul(&x, &columns, block.len(), d, n, &mut z, threads);
        for (r, &f) in block.iter().enumerate() {
            let row = &z[r * n..(r + 1) * n];
            let mut best: Vec<(u32, f64)> = (0..n as u32)
                .filter(|&g| g != f)
                .map(|g| (g, row[g as usize] as f64))
                .collect();
            let k = k.min(best.len());
            if k > 0 {
                best.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                best.truncate(k);
                best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            } else {
                best.clear();
            }
            out.push(best);
        }
    }
    out
}
