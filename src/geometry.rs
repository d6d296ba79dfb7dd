//! `neurostream sae geometry`: the concept-geometry report of an SAE's decoder directions
//! against the co-occurrence of its features.
//!
//! Writes to the output directory:
//! - `features.parquet`: `feature`, `geometric_cluster` (cosine k-means of the `W_dec` rows),
//!   `cooccurrence_cluster` (spectral clustering of the co-occurrence affinity; null for
//!   features absent from the statistics), `pc1`, `pc2` (principal-component coordinates),
//!   `decoder_norm`;
//! - `spectrum.parquet`: `rank`, `eigenvalue` of the point cloud's covariance;
//! - `summary.json`: the spatial-modularity AMI and its shuffled baseline, the spectrum's
//!   power-law slope, the clustering entropy, and the settings;
//! - `spectrum.png` (log-log spectrum with the fitted power law) and `embedding.png` (the
//!   features on the first two principal components, coloured by geometric cluster).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::stats_tables::Report;
use anyhow::{bail, Context};
use arrow::array::{Float64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use neurostream_operators::cluster::affinity::Measure;
use neurostream_operators::cluster::geometry::{
    gaussian_entropy, knn_entropy, modularity, power_law_fit, power_law_range, principal, PowerLaw, MIN_POWER_LAW_R2,
};
use neurostream_operators::cluster::kmeans::{cosine_kmeans, CpuAssign};
use neurostream_operators::cluster::metrics::entropy;
use neurostream_operators::cluster::spectral::{spectral_clustering, Affinity};
use neurostream_operators::sae::Sae;
use plotters::prelude::*;

/// Settings of the report.
pub struct GeometryArgs {
    /// SAE directory (any format `sae_encode` reads).
    pub sae: PathBuf,
    /// A `cooccurrence` output directory or its `pairs.parquet`.
    pub stats: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Clusters of both clusterings.
    pub clusters: usize,
    /// Co-occurrence affinity used for the spectral clustering.
    pub measure: Measure,
    /// Shuffles of the null model.
    pub shuffles: usize,
    /// Principal components the clustering entropy is estimated in.
    pub entropy_dims: usize,
    /// Neighbours of the k-NN entropy estimator.
    pub knn: usize,
    /// Ranks (1-based, inclusive) of the power-law fit; `None`: the widest range, at least a
    /// decade, where a power law holds (R² ≥ [`MIN_POWER_LAW_R2`]), if any.
    pub fit_range: Option<(usize, usize)>,
    /// Seed of the k-means runs and shuffles.
    pub seed: u64,
}

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The newest report of a `cooccurrence` pairs table: `path` is the table (a file, or a
/// rolling output's directory) or the directory holding it (`pairs.parquet` or `pairs/`).
fn read_pairs(path: &Path, measure: Measure) -> anyhow::Result<Vec<(u32, u32, f64)>> {
    let report = if path.is_file() {
        Report::read_files(path.to_path_buf(), &[path.to_path_buf()])?
    } else if path.join("pairs").is_dir() || path.join("pairs.parquet").is_file() {
        Report::read(path, "pairs")?.context("the pairs table vanished while being read")?
    } else if path.is_dir() {
        Report::read_files(path.to_path_buf(), &crate::stats_tables::rolling_parts(path)?)?
    } else {
        bail!(
            "{}: cannot open the co-occurrence table (no such file or directory)",
            path.display()
        );
    };
    let not_pairs = |e: anyhow::Error| e.context("not a `cooccurrence` pairs table");
    let a = report.u64_column("feature_a").map_err(not_pairs)?;
    let b = report.u64_column("feature_b").map_err(not_pairs)?;
    let w = report.f64_column(measure.name()).map_err(not_pairs)?;
    if a.is_empty() {
        bail!("{}: the pairs table is empty (no features co-fired)", report.path.display());
    }
    let feature = |v: u64, name: &str| {
        u32::try_from(v).with_context(|| format!("{}: `{name}` {v} is not a feature id", report.path.display()))
    };
    let mut pairs = Vec::with_capacity(a.len());
    for r in 0..a.len() {
        if !w[r].is_finite() {
            bail!(
                "{}: row {r} of the newest report: {} is not a finite number",
                report.path.display(),
                measure.name()
            );
        }
        pairs.push((feature(a[r], "feature_a")?, feature(b[r], "feature_b")?, w[r].max(0.0)));
    }
    Ok(pairs)
}

/// Computes and writes the report; returns the summary as JSON.
pub fn run(args: &GeometryArgs) -> anyhow::Result<serde_json::Value> {
    let sae = Sae::load(&args.sae, None).with_context(|| format!("loading the SAE {}", args.sae.display()))?;
    let (n, d) = (sae.d_sae, sae.d_out);
    let k = args.clusters;
    if k < 2 || k > n {
        bail!("--clusters must be between 2 and the SAE's {n} features, found {k}");
    }
    if let Some(i) = sae.w_dec.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: W_dec holds a non-finite value at feature {}, dim {}",
            args.sae.display(),
            i / d,
            i % d
        );
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    tracing::info!("geometric clusters: cosine k-means of {n} decoder directions (d = {d}) into {k}");
    let geo = cosine_kmeans(&sae.w_dec, d, k, 10, args.seed, &mut CpuAssign::new(2))?;

    // Co-occurrence clusters over the features the statistics saw.
    let pairs = read_pairs(&args.stats, args.measure)?;
    let mut nodes: Vec<u32> = pairs.iter().flat_map(|p| [p.0, p.1]).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if let Some(&bad) = nodes.iter().find(|&&f| f as usize >= n) {
        bail!(
            "{}: feature {bad} is beyond the SAE's {n} features: statistics of another SAE?",
            args.stats.display()
        );
    }
    let mut local = vec![u32::MAX; n];
    for (i, &f) in nodes.iter().enumerate() {
        local[f as usize] = i as u32;
    }
    let edges = pairs
        .iter()
        .filter(|p| p.2 > 0.0)
        .map(|p| (local[p.0 as usize], local[p.1 as usize], p.2))
        .collect();
    tracing::info!(
        "co-occurrence clusters: spectral clustering of {} features by {}",
        nodes.len(),
        args.measure.name()
    );
    let cooc = spectral_clustering(&Affinity { n: nodes.len(), edges }, k, 10, args.seed)?;
    let geo_of_nodes: Vec<u32> = nodes.iter().map(|&f| geo.labels[f as usize]).collect();
    let (ami, null_mean, null_std) = modularity(&cooc, &geo_of_nodes, args.shuffles, args.seed);

    // Point-cloud shape.
    let pc = principal(&sae.w_dec, d);
    let power_law = match args.fit_range {
        Some((lo, hi)) => power_law_fit(&pc.eigenvalues, lo, hi),
        None => power_law_range(&pc.eigenvalues, MIN_POWER_LAW_R2),
    };
    let power_law_note = match (&power_law, args.fit_range) {
        (None, None) => format!("no power law fits: R² < {MIN_POWER_LAW_R2} over every range of a decade or more"),
        (None, Some((lo, hi))) => format!("ranks {lo}-{hi} hold fewer than two positive eigenvalues"),
        (Some(f), _) if f.r2 < MIN_POWER_LAW_R2 => {
            format!("poor fit over the given ranks: R² {:.3} < {MIN_POWER_LAW_R2}", f.r2)
        }
        (Some(f), None) => format!("the widest range where a power law holds: ranks {}-{}", f.ranks.0, f.ranks.1),
        (Some(f), Some(_)) => format!("fitted over the given ranks {}-{}", f.ranks.0, f.ranks.1),
    };
    let p = args.entropy_dims.min(d).max(1);
    let proj = pc.project(&sae.w_dec, p.max(2));
    let proj_p: Vec<f64> = proj.chunks_exact(p.max(2)).flat_map(|r| r[..p].to_vec()).collect();
    let h_knn = knn_entropy(&proj_p, p, args.knn);
    let h_gauss = gaussian_entropy(&pc.eigenvalues[..p]);
    let clustering_entropy = h_knn.map(|h| h_gauss - h);

    // Tables.
    let mut cooc_of = vec![None; n];
    for (i, &f) in nodes.iter().enumerate() {
        cooc_of[f as usize] = Some(cooc[i]);
    }
    let norms = sae.decoder_norms();
    let q = p.max(2);
    let schema = Arc::new(Schema::new(vec![
        Field::new("feature", DataType::UInt32, false),
        Field::new("geometric_cluster", DataType::UInt32, false),
        Field::new("cooccurrence_cluster", DataType::UInt32, true),
        Field::new("pc1", DataType::Float64, false),
        Field::new("pc2", DataType::Float64, false),
        Field::new("decoder_norm", DataType::Float64, false),
    ]));
    let features = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt32Array::from_iter_values(0..n as u32)),
            Arc::new(UInt32Array::from(geo.labels.clone())),
            Arc::new(UInt32Array::from(cooc_of.clone())),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| proj[i * q]))),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| proj[i * q + 1]))),
            Arc::new(Float64Array::from_iter_values(norms.iter().map(|&v| v as f64))),
        ],
    )?;
    write_parquet(&args.out.join("features.parquet"), &features)?;
    let spectrum = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("rank", DataType::UInt64, false),
            Field::new("eigenvalue", DataType::Float64, false),
        ])),
        vec![
            Arc::new(UInt64Array::from_iter_values(1..=d as u64)),
            Arc::new(Float64Array::from(pc.eigenvalues.clone())),
        ],
    )?;
    write_parquet(&args.out.join("spectrum.parquet"), &spectrum)?;

    let summary = serde_json::json!({
        "sae": args.sae.display().to_string(),
        "stats": args.stats.display().to_string(),
        "features": n,
        "d_in": d,
        "clusters": k,
        "cooccurrence_measure": args.measure.name(),
        "cooccurrence_features": nodes.len(),
        "modularity_ami": ami,
        "shuffled_ami_mean": null_mean,
        "shuffled_ami_std": null_std,
        "shuffles": args.shuffles,
        "modularity_z": if null_std > 0.0 { Some((ami - null_mean) / null_std) } else { None },
        "geometric_inertia": geo.inertia,
        "geometric_cluster_entropy": entropy(&geo.labels),
        "power_law_slope": power_law.map(|f| f.slope),
        "power_law_fit_ranks": power_law.map(|f| [f.ranks.0, f.ranks.1]),
        "power_law_r2": power_law.map(|f| f.r2),
        "power_law_note": power_law_note,
        "entropy_dims": p,
        "knn": args.knn,
        "knn_entropy": h_knn,
        "gaussian_entropy": h_gauss,
        "clustering_entropy": clustering_entropy,
        "seed": args.seed,
    });
    std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", args.out.join("summary.json").display()))?;
    register_font()?;
    plot_spectrum(&args.out.join("spectrum.png"), &pc.eigenvalues, power_law.as_ref())?;
    let total: f64 = pc.eigenvalues.iter().filter(|&&l| l > 0.0).sum();
    let explained = [
        pc.eigenvalues[0] / total,
        pc.eigenvalues.get(1).copied().unwrap_or(0.0) / total,
    ];
    plot_embedding(
        &args.out.join("embedding.png"),
        &Embedding {
            proj: &proj,
            stride: q,
            explained,
            geometric: &geo.labels,
            cooccurrence: &cooc_of,
            k,
            measure: args.measure.name(),
        },
    )?;
    Ok(summary)
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    w.write(batch).with_context(|| format!("writing {}", path.display()))?;
    w.close().with_context(|| format!("closing {}", path.display()))?;
    Ok(())
}

fn register_font() -> anyhow::Result<()> {
    static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the bundled font could not be loaded"))
}

fn plot_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("drawing {}: {e:?}", path.display())
}

fn plot_spectrum(path: &Path, eig: &[f64], fit: Option<&PowerLaw>) -> anyhow::Result<()> {
    let pts: Vec<(f64, f64)> = eig
        .iter()
        .enumerate()
        .filter(|(_, &l)| l > 0.0)
        .map(|(i, &l)| (((i + 1) as f64).log10(), l.log10()))
        .collect();
    if pts.is_empty() {
        bail!("the decoder's covariance has no positive eigenvalue");
    }
    let e = plot_err(path);
    let root = BitMapBackend::new(path, (900, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (ymin, ymax) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let xmax = pts.last().map_or(1.0, |p| p.0).max(0.1);
    let title = match fit {
        Some(f) => format!(
            "Decoder spectrum: power law, slope {:.3} over ranks {}-{} (R² {:.3})",
            f.slope, f.ranks.0, f.ranks.1, f.r2
        ),
        None => format!("Decoder spectrum: no power law fits (R² < {MIN_POWER_LAW_R2} over every decade)"),
    };
    let (y0, y1) = (ymin - 0.2, ymax + 0.2);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 19))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax * 1.02, y0..y1)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("log10 rank")
        .y_desc("log10 eigenvalue")
        .draw()
        .map_err(&e)?;
    if let Some(f) = fit {
        // The fitted range, shaded, and the line over it only.
        let (x0, x1) = ((f.ranks.0 as f64).log10(), (f.ranks.1 as f64).log10());
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, y0), (x1, y1)],
                PALETTE[3].mix(0.12).filled(),
            )))
            .map_err(&e)?
            .label(format!("fitted ranks {}-{}", f.ranks.0, f.ranks.1))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], PALETTE[3].mix(0.3).filled()));
        let line = |x: f64| (f.intercept + f.slope * x * std::f64::consts::LN_10) / std::f64::consts::LN_10;
        chart
            .draw_series(LineSeries::new([(x0, line(x0)), (x1, line(x1))], PALETTE[3].stroke_width(2)))
            .map_err(&e)?
            .label(format!("power law, slope {:.3}", f.slope))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[3]));
    }
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), &PALETTE[0]))
        .map_err(&e)?
        .label("eigenvalues")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[0]));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// What the embedding plot shows: the features on the first two principal components, once
/// coloured by their geometric cluster and once by their co-occurrence cluster.
struct Embedding<'a> {
    proj: &'a [f64],
    stride: usize,
    /// Fractions of the variance on PC 1 and PC 2.
    explained: [f64; 2],
    geometric: &'a [u32],
    /// Per feature: its co-occurrence cluster, `None` outside the co-occurrence graph.
    cooccurrence: &'a [Option<u32>],
    k: usize,
    measure: &'a str,
}

/// Legend entries shown per panel (the rest are drawn, not listed).
const LEGEND_ENTRIES: usize = 12;

fn plot_embedding(path: &Path, emb: &Embedding) -> anyhow::Result<()> {
    let e = plot_err(path);
    let root = BitMapBackend::new(path, (1500, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let xs: Vec<(f64, f64)> = emb.proj.chunks_exact(emb.stride).map(|r| (r[0], r[1])).collect();
    let (x0, x1) = xs.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = xs.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let pad = |a: f64, b: f64| ((b - a) * 0.05).max(1e-9);
    let panels = root.split_evenly((1, 2));
    let geometric: Vec<Option<u32>> = emb.geometric.iter().map(|&l| Some(l)).collect();
    let in_graph = emb.cooccurrence.iter().filter(|c| c.is_some()).count();
    let views = [
        (
            format!("{} geometric clusters (cosine k-means of decoder directions)", emb.k),
            &geometric[..],
        ),
        (
            format!(
                "{} co-occurrence clusters ({}; {in_graph} features in the graph)",
                emb.k, emb.measure
            ),
            emb.cooccurrence,
        ),
    ];
    for (panel, (title, labels)) in panels.iter().zip(views) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - pad(x0, x1))..(x1 + pad(x0, x1)), (y0 - pad(y0, y1))..(y1 + pad(y0, y1)))
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc(format!("PC 1 ({:.1} % of variance)", 100.0 * emb.explained[0]))
            .y_desc(format!("PC 2 ({:.1} % of variance)", 100.0 * emb.explained[1]))
            .draw()
            .map_err(&e)?;
        let outside = xs
            .iter()
            .zip(labels)
            .filter(|(_, l)| l.is_none())
            .map(|(&p, _)| p)
            .collect::<Vec<_>>();
        if !outside.is_empty() {
            let grey = RGBColor(200, 200, 200);
            chart
                .draw_series(outside.iter().map(|&p| Circle::new(p, 2, grey.filled())))
                .map_err(&e)?
                .label(format!("not in the co-occurrence graph ({})", outside.len()))
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, grey.filled()));
        }
        for c in 0..emb.k {
            let color = PALETTE[c % PALETTE.len()];
            let members: Vec<(f64, f64)> = xs
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == Some(c as u32))
                .map(|(&p, _)| p)
                .collect();
            let series = chart
                .draw_series(members.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(&e)?;
            if c < LEGEND_ENTRIES {
                series
                    .label(format!("cluster {c} ({})", members.len()))
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}
