//! The `neurostream` command line: run, validate and inspect.

mod inspect;
mod launch;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use neurostream::{registry, ClusterConfig, DeviceChoice, PipelineSpec, RunOptions, RunProgress};

/// Streaming dataflow engine for model activations and neural signals.
#[derive(Parser)]
#[command(name = "neurostream", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter); also RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file to completion.
    Run {
        /// The pipeline file (TOML).
        file: PathBuf,
        /// Worker threads in this process (default: the pipeline's `workers`, else 1).
        #[arg(short, long, default_value_t = 0)]
        workers: usize,
        /// Hostfile for multi-process runs: one host:port per line, one line per process.
        #[arg(long, requires = "process")]
        hostfile: Option<PathBuf>,
        /// This process's index in the hostfile (0-based).
        #[arg(long, requires = "hostfile")]
        process: Option<usize>,
        /// Number of processes: with `--hostfile`, checked against it; without, a local cluster
        /// of this many processes started from this command on loopback ports.
        #[arg(long)]
        processes: Option<usize>,
        /// Multi-process runs: seconds to wait for every peer to connect at start-up.
        #[arg(long, default_value_t = 60.0)]
        peer_timeout: f64,
        /// Multi-process runs: the secret every process must know (the same for all); required
        /// when the hostfile lists addresses beyond loopback. Default: $NEUROSTREAM_CLUSTER_TOKEN.
        /// A local cluster (`--processes N`) makes a random one.
        #[arg(long, requires = "hostfile")]
        cluster_token: Option<String>,
        /// Force every operator onto this device: auto, cpu or gpu.
        #[arg(long)]
        device: Option<DeviceChoice>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Serve Prometheus metrics on http://ADDR/metrics while the run goes (default address
        /// 127.0.0.1:9464; port 0 picks a free one, printed at start).
        #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
        metrics: Option<String>,
        /// Bearer token the metrics endpoint requires (needed to bind a non-loopback address).
        #[arg(long, requires = "metrics")]
        metrics_token: Option<String>,
        /// Serve the live view (pipeline graph and counters, signal traces, feature densities,
        /// alerts, drift) on http://ADDR/ while the run goes (default address 127.0.0.1:8765;
        /// port 0 picks a free one, printed at start).
        #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:8765")]
        ui: Option<String>,
        /// Token the live view requires (needed to bind a non-loopback address); open the page
        /// as http://ADDR/?token=TOKEN.
        #[arg(long, requires = "ui")]
        ui_token: Option<String>,
        /// Keep serving the live view this many seconds after the run ends (its final state).
        #[arg(long, default_value_t = 0.0, requires = "ui")]
        ui_linger: f64,
        /// Print a one-line status (rows and rows/s per source and sink) every this many seconds.
        #[arg(long)]
        status_every: Option<f64>,
        /// Take exactly-once checkpoints into this directory (operator state, source offsets,
        /// Parquet output committed with each checkpoint).
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
        /// Seconds between checkpoints.
        #[arg(long, default_value_t = 1.0, requires = "checkpoint_dir")]
        checkpoint_every: f64,
        /// Continue the run recorded in --checkpoint-dir from its newest checkpoint (after a
        /// crash or kill); the outputs are identical to those of an uninterrupted run.
        #[arg(long, requires = "checkpoint_dir")]
        resume: bool,
    },
    /// Check a pipeline file without running it; reports every problem with its location.
    Validate {
        /// The pipeline file (TOML).
        file: PathBuf,
    },
    /// Show a Parquet file's schema, row count, metadata and first rows, or a recording's
    /// channels, rate, length and markers (EDF/BDF, GDF, FIF, BrainVision, EEGLAB, XDF, CSV).
    Inspect {
        /// The Parquet file or recording (by extension: .edf .bdf .gdf .fif .vhdr .set .xdf .csv .tsv .txt),
        /// or a quoted glob of recordings (`"sleep/*.edf"`: each one's samples and markers), or a
        /// directory of Parquet files (a dataset: its files and rows, then the first file).
        file: PathBuf,
        /// Rows (markers of a recording) to print.
        #[arg(short = 'n', long, default_value_t = 5)]
        rows: usize,
        /// A key of the recording's source, as in a pipeline (`sample_rate=250`,
        /// `stream=EEG-amp`, `channels=["Cz","Pz"]`); repeatable.
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// List the source, operator and sink kinds a pipeline may use, or one kind's keys.
    Kinds {
        /// A kind to show the keys of (name, type, default, unit, meaning), e.g. `butterworth`.
        kind: Option<String>,
        /// Print Markdown key tables, as the README's pipeline reference shows them.
        #[arg(long)]
        markdown: bool,
    },
    /// Sparse autoencoder tools.
    #[command(subcommand)]
    Sae(SaeCommand),
    /// Brain-computer interface tools.
    #[command(subcommand)]
    Bci(BciCommand),
}

#[derive(Subcommand)]
enum BciCommand {
    /// Fit a CSP + shrinkage-LDA decoder on a recording with labelled trials (EDF+/BDF+
    /// annotations): the recording is band-passed causally (as the online pipeline will be),
    /// epochs are cut around the markers of the two classes, and the model is written as JSON
    /// for the `decode` operator.
    Train {
        /// The recording (EDF, EDF+, BDF, BDF+).
        #[arg(long)]
        input: String,
        /// A separate annotation file holding the trial markers.
        #[arg(long)]
        annotations: Option<String>,
        /// Channels (labels or glob patterns; default: every channel at the highest rate).
        #[arg(long, num_args = 1..)]
        channels: Option<Vec<String>>,
        /// Band-pass edges in Hz.
        #[arg(long, num_args = 2, default_values_t = [8.0, 30.0])]
        band: Vec<f64>,
        /// Band-pass Butterworth order.
        #[arg(long, default_value_t = 4)]
        order: usize,
        /// The two class labels (marker texts).
        #[arg(long, num_args = 2, required = true)]
        classes: Vec<String>,
        /// Epoch start after the marker, seconds.
        #[arg(long, default_value_t = 0.5)]
        tmin: f64,
        /// Epoch end after the marker, seconds.
        #[arg(long, default_value_t = 2.5)]
        tmax: f64,
        /// CSP filters kept.
        #[arg(long, default_value_t = 4)]
        components: usize,
        /// Drop epochs whose peak-to-peak amplitude exceeds this (the signal's units).
        #[arg(long)]
        reject_ptp: Option<f64>,
        /// The model file to write.
        #[arg(long)]
        out: String,
    },
}

#[derive(Subcommand)]
enum SaeCommand {
    /// Encode activations (Parquet, activation layout) into sparse features (Parquet, features
    /// layout): the `sae_encode` operator as a one-shot job.
    Encode {
        /// SAE directory (SAELens or sparsify format).
        #[arg(long)]
        sae: PathBuf,
        /// Activation Parquet file, directory or glob.
        #[arg(long)]
        input: String,
        /// Output Parquet file (`*.parquet`) or directory.
        #[arg(long)]
        output: String,
        /// auto, cpu or gpu.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Rows encoded per batch.
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Overrides k of a top-k SAE.
        #[arg(long)]
        k: Option<usize>,
        /// Worker threads.
        #[arg(short, long, default_value_t = 1)]
        workers: usize,
        /// Rows holding NaN/Inf: `error` (default) stops, `drop` drops them and counts them.
        #[arg(long, default_value = "error", value_parser = ["error", "drop"])]
        on_invalid: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Train a sparse autoencoder on activations (Parquet activation layout, .npy or
    /// .safetensors): the `sae_train` sink as a one-shot job. Writes the SAELens format to OUT
    /// (and sparsify's to OUT/sparsify/ for TopK), train_report.json and checkpoints.
    Train {
        /// Activations: a Parquet file, directory or glob, or an .npy / .safetensors array.
        #[arg(long)]
        input: String,
        /// Output directory.
        #[arg(long)]
        out: String,
        /// topk, batchtopk, relu or jumprelu.
        #[arg(long, default_value = "topk")]
        architecture: String,
        /// Latents.
        #[arg(long, default_value_t = 4096)]
        d_sae: usize,
        /// TopK / BatchTopK: active latents per token.
        #[arg(long, default_value_t = 32)]
        k: usize,
        /// ReLU: L1 coefficient.
        #[arg(long)]
        l1_coefficient: Option<f32>,
        /// JumpReLU: L0 coefficient.
        #[arg(long)]
        l0_coefficient: Option<f32>,
        /// Tokens per step.
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Peak learning rate.
        #[arg(long, default_value_t = 4e-4)]
        lr: f32,
        /// Token budget (default: every row of the input).
        #[arg(long)]
        tokens: Option<u64>,
        /// Checkpoint every this many steps (0: none).
        #[arg(long, default_value_t = 0)]
        checkpoint_every: u64,
        /// Resume from a checkpoint directory, or `latest`.
        #[arg(long)]
        resume: Option<String>,
        /// Drop tokens at positions below this (attention-sink first tokens).
        #[arg(long, default_value_t = 0)]
        skip_first: u32,
        /// Passes over the input (more than one keeps it in memory).
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Storage of the written weights: float32 or float16.
        #[arg(long, default_value = "float32")]
        dtype: String,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where the forward and backward passes run: auto (a hardware GPU when present), cpu
        /// or gpu.
        #[arg(long)]
        device: Option<DeviceChoice>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Concept geometry of an SAE's decoder directions against its features' co-occurrence:
    /// cosine k-means clusters of the W_dec rows, spectral clusters of the co-occurrence
    /// affinity, their adjusted mutual information against a shuffled baseline (spatial
    /// modularity), the eigenvalue spectrum and its power-law slope, the clustering entropy.
    /// Writes features.parquet, spectrum.parquet, summary.json, spectrum.png, embedding.png.
    Geometry {
        /// SAE directory (SAELens, sparsify, Gemma Scope or Llama Scope).
        #[arg(long)]
        sae: PathBuf,
        /// Co-occurrence statistics: a `cooccurrence` output directory or its pairs.parquet
        /// (the latest report is used).
        #[arg(long)]
        stats: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Clusters of both clusterings.
        #[arg(long, default_value_t = 8)]
        clusters: usize,
        /// Co-occurrence affinity: jaccard, dice, simple_matching or phi (negative values count as 0).
        #[arg(long, default_value = "phi")]
        measure: String,
        /// Shuffles of the null model.
        #[arg(long, default_value_t = 200)]
        shuffles: usize,
        /// Principal components the clustering entropy is estimated in.
        #[arg(long, default_value_t = 10)]
        entropy_dims: usize,
        /// Neighbours of the k-NN entropy estimator.
        #[arg(long, default_value_t = 5)]
        knn: usize,
        /// Ranks (1-based, inclusive) of the power-law fit (default: the widest range of a
        /// decade or more where a power law holds, R² >= 0.98, or none).
        #[arg(long, num_args = 2)]
        fit_range: Option<Vec<usize>>,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// A self-contained HTML dashboard of an SAE's features (opens from file://, no network):
    /// an index sortable by density, firings or max activation, and a card per feature with
    /// its density, activation histogram, top examples in context, top co-firing partners and
    /// nearest decoder directions, from the engine's own statistics tables.
    Dashboard {
        /// SAE directory (SAELens, sparsify, Gemma Scope or Llama Scope).
        #[arg(long)]
        sae: PathBuf,
        /// A `feature_stats` output directory (features.parquet, top_examples.parquet,
        /// activation_histogram.parquet; the newest all-time report is used).
        #[arg(long)]
        stats: PathBuf,
        /// A `cooccurrence` output directory (partners.parquet) for co-firing partners.
        #[arg(long)]
        cooccurrence: Option<PathBuf>,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
        /// Cards for this many features, the most active first.
        #[arg(long, default_value_t = 500)]
        features: usize,
        /// Decoder-direction neighbours per feature.
        #[arg(long, default_value_t = 8)]
        neighbours: usize,
    },
}

fn main() {
    // neurostream picks its adapter itself; Mesa's implicit device-select Vulkan layer only adds
    // "XDG_RUNTIME_DIR is invalid" errors on headless machines while probing. Set while the
    // process is still single-threaded; an explicit setting wins.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    // Batch-sized buffers stay in the heap instead of costing page faults every batch.
    neurostream_engine::allocator::tune_for_batches();
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal (never in log files, CI output or captured stderr).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    // Processes this one starts (a local cluster) log as it does.
    std::env::set_var("RUST_LOG", &filter);
    if let Err(e) = dispatch(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `neurostream kinds [KIND] [--markdown]`.
fn kinds(kind: Option<&str>, markdown: bool) -> anyhow::Result<()> {
    use neurostream::reference;
    let all = registry().reference();
    let Some(kind) = kind else {
        if markdown {
            for doc in &all {
                println!(
                    "{} `{}`: {}\n\n{}",
                    doc.section,
                    doc.kind,
                    doc.summary,
                    reference::markdown_table(doc)
                );
            }
        } else {
            for doc in &all {
                println!("{:<9} {:<22} {}", doc.section, doc.kind, doc.summary);
            }
            println!("\n`neurostream kinds KIND` shows a kind's keys.");
        }
        return Ok(());
    };
    let matching: Vec<_> = all.iter().filter(|d| d.kind == kind).collect();
    if matching.is_empty() {
        let hint = neurostream::suggest::hint(kind, all.iter().map(|d| d.kind));
        anyhow::bail!("no kind `{kind}`{hint}; `neurostream kinds` lists them");
    }
    for (i, doc) in matching.iter().enumerate() {
        if i > 0 {
            println!();
        }
        if markdown {
            print!("{}", reference::markdown_table(doc));
        } else {
            print!("{}", reference::text(doc));
        }
    }
    Ok(())
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Validate { file } => {
            let spec = PipelineSpec::from_file(&file)?;
            let pipeline = spec.compile(&registry())?;
            println!("{}: ok", file.display());
            for line in pipeline.describe() {
                println!("  {line}");
            }
            Ok(())
        }
        Command::Inspect { file, rows, set } => inspect::inspect(&file, rows, &set),
        Command::Kinds { kind, markdown } => kinds(kind.as_deref(), markdown),
        Command::Sae(SaeCommand::Encode {
            sae,
            input,
            output,
            device,
            batch,
            k,
            workers,
            on_invalid,
            quiet,
        }) => {
            use neurostream::operators::sae::SaeEncodeConfig;
            use neurostream::sinks::ParquetSinkConfig;
            use neurostream::sources::ParquetSourceConfig;
            let spec = neurostream::PipelineBuilder::new("")
                .source(
                    "activations",
                    &ParquetSourceConfig {
                        batch_rows: batch,
                        ..ParquetSourceConfig::new(&input)
                    },
                )?
                .operator_on(
                    "features",
                    "activations",
                    device,
                    &SaeEncodeConfig {
                        sae: sae.to_string_lossy().to_string(),
                        k,
                        scaling_factor: None,
                        // One worker: let its matmul use every core.
                        threads: Some(
                            std::thread::available_parallelism()
                                .map_or(1, |n| n.get())
                                .div_ceil(workers.max(1)),
                        ),
                        max_batch: 0,
                        max_delay_ms: 5.0,
                        weight_dtype: neurostream::operators::sae::half_weights::WeightDtype::F32,
                    },
                )?
                .sink(
                    "output",
                    "features",
                    // A failed encode leaves nothing partial at the output path.
                    &ParquetSinkConfig {
                        on_failure: neurostream::sinks::parquet_sink::OnFailure::Discard,
                        ..ParquetSinkConfig::new(&output)
                    },
                )?
                .build();
            let mut spec = spec;
            if on_invalid == "drop" {
                spec.settings.on_invalid = neurostream::OnInvalid::Drop;
            }
            run_compiled(spec.compile(&registry())?, workers, None, None, quiet, "sae encode")
        }
        Command::Sae(SaeCommand::Geometry {
            sae,
            stats,
            out,
            clusters,
            measure,
            shuffles,
            entropy_dims,
            knn,
            fit_range,
            seed,
        }) => {
            let measure = match measure.as_str() {
                "jaccard" => neurostream::operators::cluster::affinity::Measure::Jaccard,
                "dice" => neurostream::operators::cluster::affinity::Measure::Dice,
                "simple_matching" => neurostream::operators::cluster::affinity::Measure::SimpleMatching,
                "phi" => neurostream::operators::cluster::affinity::Measure::Phi,
                other => bail!("--measure must be jaccard, dice, simple_matching or phi, found {other}"),
            };
            let args = neurostream::geometry::GeometryArgs {
                sae,
                stats,
                out: out.clone(),
                clusters,
                measure,
                shuffles,
                entropy_dims,
                knn,
                fit_range: fit_range.map(|r| (r[0], r[1])),
                seed,
            };
            let summary = neurostream::geometry::run(&args)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            println!("report written to {}", out.display());
            Ok(())
        }
        Command::Sae(SaeCommand::Dashboard {
            sae,
            stats,
            cooccurrence,
            out,
            features,
            neighbours,
        }) => {
            let args = neurostream::dashboard::DashboardArgs {
                sae,
                stats,
                cooccurrence,
                out: out.clone(),
                features,
                neighbours,
            };
            let summary = neurostream::dashboard::run(&args)?;
            println!(
                "dashboard: {} cards of the {} features that fired, {:.1} MB, written to {}",
                summary.cards,
                summary.alive,
                summary.bytes as f64 / 1e6,
                out.display()
            );
            Ok(())
        }
        Command::Sae(SaeCommand::Train {
            input,
            out,
            architecture,
            d_sae,
            k,
            l1_coefficient,
            l0_coefficient,
            batch,
            lr,
            tokens,
            checkpoint_every,
            resume,
            skip_first,
            epochs,
            dtype,
            seed,
            device,
            quiet,
        }) => {
            use neurostream::operators::sae_train::SaeTrainConfig;
            let mut cfg = SaeTrainConfig::new(&out, d_sae);
            cfg.architecture = architecture;
            cfg.k = k;
            cfg.batch = batch;
            cfg.lr = lr;
            cfg.tokens = tokens;
            cfg.checkpoint_every = checkpoint_every;
            cfg.resume = resume;
            cfg.skip_first = skip_first;
            cfg.epochs = epochs;
            cfg.dtype = dtype;
            cfg.seed = seed;
            if let Some(v) = l1_coefficient {
                cfg.l1_coefficient = v;
            }
            if let Some(v) = l0_coefficient {
                cfg.l0_coefficient = v;
            }
            let build = |cfg: &SaeTrainConfig| -> anyhow::Result<neurostream::CompiledPipeline> {
                let builder = neurostream::PipelineBuilder::new("");
                let builder = if input.ends_with(".npy") || input.ends_with(".safetensors") {
                    builder.source("activations", &neurostream::sources::ArraySourceConfig::new(&input))?
                } else {
                    builder.source("activations", &neurostream::sources::ParquetSourceConfig::new(&input))?
                };
                Ok(builder.sink("train", "activations", cfg)?.build().compile(&registry())?)
            };
            let mut pipeline = build(&cfg)?;
            if cfg.tokens.is_none() {
                // The schedule's horizon: every row of the input the sink keeps, once per epoch.
                let kept = if skip_first > 0 && !(input.ends_with(".npy") || input.ends_with(".safetensors")) {
                    neurostream::sources::parquet_source::count_rows_from_position(std::path::Path::new(&input), skip_first)
                } else {
                    None
                };
                if let Some(rows) = kept.or_else(|| pipeline.total_source_rows()) {
                    cfg.tokens = Some(rows * epochs as u64);
                    pipeline = build(&cfg)?;
                }
            }
            run_compiled(pipeline, 1, None, device, quiet, "sae train")
        }
        Command::Bci(BciCommand::Train {
            input,
            annotations,
            channels,
            band,
            order,
            classes,
            tmin,
            tmax,
            components,
            reject_ptp,
            out,
        }) => {
            use neurostream::operators::decode::CspLdaTrainConfig;
            use neurostream::operators::signal::{BandType, ButterworthConfig};
            let mut source = neurostream::sources::EdfSourceConfig::new(&input);
            source.channels = channels;
            source.annotations = annotations;
            let band = ButterworthConfig {
                btype: BandType::Bandpass,
                order,
                cutoff: band,
                zero_phase: false,
                threads: 1,
            };
            let train = CspLdaTrainConfig {
                out,
                epochs: classes,
                tmin,
                tmax,
                reject_ptp,
                n_components: components,
            };
            let pipeline = neurostream::PipelineBuilder::new("")
                .source("recording", &source)?
                .operator("band", "recording", &band)?
                .sink("train", "band", &train)?
                .build()
                .compile(&registry())?;
            run_compiled(pipeline, 1, None, Some(DeviceChoice::Cpu), true, "bci train")
        }
        Command::Run {
            file,
            workers,
            hostfile,
            process,
            processes,
            peer_timeout,
            cluster_token,
            device,
            quiet,
            metrics,
            metrics_token,
            ui,
            ui_token,
            ui_linger,
            status_every,
            checkpoint_dir,
            checkpoint_every,
            resume,
        } => {
            if !(checkpoint_every > 0.0 && checkpoint_every.is_finite()) {
                bail!("--checkpoint-every must be a positive number of seconds, found {checkpoint_every}");
            }
            if let (Some(n), None) = (processes, &hostfile) {
                // A local cluster: this process launches and watches the others.
                PipelineSpec::from_file(&file)?.compile(&registry())?;
                let mut shared = vec!["--peer-timeout".to_string(), peer_timeout.to_string()];
                if workers > 0 {
                    shared.extend(["-w".to_string(), workers.to_string()]);
                }
                if let Some(d) = device {
                    shared.extend(["--device".to_string(), d.to_string()]);
                }
                if quiet {
                    shared.push("--quiet".into());
                }
                if let Some(s) = status_every {
                    shared.extend(["--status-every".to_string(), s.to_string()]);
                }
                if let Some(dir) = &checkpoint_dir {
                    shared.extend([
                        "--checkpoint-dir".to_string(),
                        dir.display().to_string(),
                        "--checkpoint-every".to_string(),
                        checkpoint_every.to_string(),
                    ]);
                    if resume {
                        shared.push("--resume".into());
                    }
                }
                let mut first_only = Vec::new();
                if let Some(m) = &metrics {
                    first_only.extend(["--metrics".to_string(), m.clone()]);
                    if let Some(t) = &metrics_token {
                        first_only.extend(["--metrics-token".to_string(), t.clone()]);
                    }
                }
                if let Some(u) = &ui {
                    first_only.extend(["--ui".to_string(), u.clone()]);
                    if let Some(t) = &ui_token {
                        first_only.extend(["--ui-token".to_string(), t.clone()]);
                    }
                    first_only.extend(["--ui-linger".to_string(), ui_linger.to_string()]);
                }
                return launch::run(launch::Launch {
                    file: &file,
                    processes: n,
                    shared,
                    first_only,
                });
            }
            let checkpoint = checkpoint_dir.map(|dir| neurostream::CheckpointOptions {
                dir,
                every: Duration::from_secs_f64(checkpoint_every),
                resume,
            });
            let spec = PipelineSpec::from_file(&file)?;
            let pipeline = spec.compile(&registry())?;
            let metrics =
                (metrics.is_some() || status_every.is_some() || ui.is_some()).then(|| (metrics, neurostream::Metrics::new()));
            let view = match (&ui, &metrics) {
                (Some(addr), Some((_, m))) => {
                    if !(ui_linger >= 0.0 && ui_linger.is_finite()) {
                        bail!("--ui-linger must be a number of seconds >= 0, found {ui_linger}");
                    }
                    let state = neurostream::ui::UiState::new(&spec, m.clone());
                    Some((state, addr.clone(), ui_token, Duration::from_secs_f64(ui_linger)))
                }
                _ => None,
            };
            let cluster = match (hostfile, process) {
                (Some(h), Some(p)) => {
                    if !(peer_timeout > 0.0 && peer_timeout.is_finite()) {
                        bail!("--peer-timeout must be a positive number of seconds, found {peer_timeout}");
                    }
                    let mut c = ClusterConfig::from_hostfile(&h, p)?;
                    c.peer_timeout = Duration::from_secs_f64(peer_timeout);
                    c.token = cluster_token.or_else(|| std::env::var(neurostream_engine::cluster::TOKEN_ENV).ok());
                    if let Some(n) = processes {
                        if n != c.addresses.len() {
                            bail!("--processes {n} but {} lists {} processes", h.display(), c.addresses.len());
                        }
                    }
                    Some(c)
                }
                _ => None,
            };
            // A process other than 0 gathers its picture for process 0's live view, if that
            // one has a view (the engine learns it when the processes connect).
            let follower = match (&cluster, &view) {
                (Some(c), None) if c.process > 0 => {
                    let spec = spec.clone();
                    Some(neurostream::ObserverFactory(Arc::new(move |m| {
                        neurostream::ui::UiState::new(&spec, m) as Arc<dyn neurostream::BatchObserver>
                    })))
                }
                _ => None,
            };
            let live = Live {
                metrics,
                metrics_token,
                status_every,
                checkpoint,
                view,
                follower,
            };
            run_compiled_live(
                pipeline,
                workers,
                cluster,
                device,
                quiet,
                &format!("pipeline {}", file.display()),
                live,
            )
        }
    }
}

/// Live observation of a run: the metrics endpoint (its address, if asked for, and the run's
/// counters), the periodic status line and the live view (its state, address and token).
#[derive(Default)]
struct Live {
    metrics: Option<(Option<String>, Arc<neurostream::Metrics>)>,
    metrics_token: Option<String>,
    status_every: Option<f64>,
    checkpoint: Option<neurostream::CheckpointOptions>,
    view: Option<(Arc<neurostream::ui::UiState>, String, Option<String>, Duration)>,
    /// A process other than 0 of a cluster: makes its observer when process 0 has a view.
    follower: Option<neurostream::ObserverFactory>,
}

/// Runs a compiled pipeline with a progress bar, then prints its report.
fn run_compiled(
    pipeline: neurostream::CompiledPipeline,
    workers: usize,
    cluster: Option<ClusterConfig>,
    device: Option<DeviceChoice>,
    quiet: bool,
    what: &str,
) -> anyhow::Result<()> {
    run_compiled_live(pipeline, workers, cluster, device, quiet, what, Live::default())
}

/// [`run_compiled`] with live metrics and status lines.
fn run_compiled_live(
    pipeline: neurostream::CompiledPipeline,
    workers: usize,
    cluster: Option<ClusterConfig>,
    device: Option<DeviceChoice>,
    quiet: bool,
    what: &str,
    live: Live,
) -> anyhow::Result<()> {
    let total = pipeline.total_source_rows();
    let progress = Arc::new(RunProgress::default());
    let (metrics_addr, metrics) = match live.metrics {
        Some((addr, m)) => (addr, Some(m)),
        None => (None, None),
    };
    let _server = match (&metrics_addr, &metrics) {
        (Some(addr), Some(m)) => {
            let server = neurostream::metrics::serve(m.clone(), addr, live.metrics_token.clone())?;
            eprintln!("metrics: http://{}/metrics", server.addr);
            Some(server)
        }
        _ => None,
    };
    let view = match live.view {
        Some((state, addr, token, linger)) => {
            let server = neurostream::ui::serve(state.clone(), &addr, token)?;
            eprintln!("live view: http://{}/", server.addr);
            Some((state, server, linger))
        }
        None => None,
    };
    let status = match (live.status_every, &metrics) {
        (Some(secs), Some(m)) => {
            if !(secs > 0.0 && secs.is_finite()) {
                bail!("--status-every must be a positive number of seconds, found {secs}");
            }
            let (m, stop) = (m.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
            let s = stop.clone();
            let handle = std::thread::spawn(move || {
                let period = Duration::from_secs_f64(secs);
                let mut next = std::time::Instant::now() + period;
                while !s.load(Ordering::SeqCst) {
                    if std::time::Instant::now() >= next {
                        eprintln!("{}", m.status_line());
                        next += period;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            Some((stop, handle))
        }
        _ => None,
    };
    // A status line replaces the progress bar (both would fight over the terminal).
    let bar = (!quiet && status.is_none()).then(|| spawn_progress(progress.clone(), total));
    let options = RunOptions {
        workers,
        cluster,
        device,
        progress: Some(progress),
        metrics,
        checkpoint: live.checkpoint,
        stop: Some(interrupt_flag()),
        observer: view
            .as_ref()
            .map(|(state, _, _)| state.clone() as Arc<dyn neurostream::BatchObserver>),
        follower_observer: live.follower,
    };
    let result = neurostream::run(pipeline, options);
    if let Some((stop, handle)) = status {
        stop.store(true, Ordering::SeqCst);
        let _ = handle.join();
    }
    if let Some((bar, stop, handle)) = bar {
        stop.store(true, Ordering::SeqCst);
        let _ = handle.join();
        bar.finish_and_clear();
    }
    if let Some((state, _, _)) = &view {
        state.finish(
            match &result {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("failed: {e}"),
            }
            .as_str(),
        );
    }
    let report = result.with_context(|| format!("{what} failed"))?;
    print_report(&report);
    if let Some((_, _, linger)) = view.as_ref().filter(|v| !v.2.is_zero()) {
        eprintln!("live view: showing the final state for {:.0} s", linger.as_secs_f64());
        std::thread::sleep(*linger);
    }
    if report.stopped {
        eprintln!("stopped by Ctrl-C: the sources ended early; everything read was processed and written");
        std::process::exit(130);
    }
    Ok(())
}

/// Set by the first Ctrl-C (SIGINT): runs stop their sources and finish their outputs
/// (with checkpoints: stop as after a crash, resumable). A second Ctrl-C exits at once.
fn interrupt_flag() -> Arc<std::sync::atomic::AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        let installed = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("Ctrl-C: stopping (the sources end now, outputs are finished); Ctrl-C again to quit at once");
        });
        if let Err(e) = installed {
            tracing::warn!("Ctrl-C will end the process without finishing outputs: {e}");
        }
        flag
    })
    .clone()
}

type ProgressHandle = (
    indicatif::ProgressBar,
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
);

fn spawn_progress(progress: Arc<RunProgress>, total: Option<u64>) -> ProgressHandle {
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b, s) = (bar.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            b.set_position(progress.rows_read.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (bar, stop, handle)
}

fn print_report(report: &neurostream::RunReport) {
    let secs = report.elapsed.as_secs_f64();
    eprintln!(
        "done in {secs:.2} s with {} worker(s) here, {} in all",
        report.workers.0, report.workers.1
    );
    for (name, s) in &report.nodes {
        let rate = if secs > 0.0 {
            s.rows_in.max(s.rows_out) as f64 / secs
        } else {
            0.0
        };
        eprintln!(
            "  {name:<16} in {:>10} rows  out {:>10} rows  {:>8.1} MB  busy {:>7.3} s  {:>12.0} rows/s",
            s.rows_in,
            s.rows_out,
            s.bytes_in as f64 / 1e6,
            s.busy.as_secs_f64(),
            rate
        );
    }
    if report.workers.0 > 1 {
        for (name, s) in &report.nodes {
            if s.busy_by_worker.len() < 2 && s.busy.as_secs_f64() < 0.01 {
                continue;
            }
            let per: Vec<String> = (0..report.workers.1)
                .filter_map(|w| {
                    let here = s.busy_by_worker.get(&w)?;
                    Some(format!("{w}: {:.3} s", here.as_secs_f64()))
                })
                .collect();
            eprintln!("  busy per worker {name}: {}", per.join("  "));
        }
    }
    for (name, s) in &report.nodes {
        if let Some([p50, p95, p99, max]) = s.latencies.percentiles_ms() {
            eprintln!(
                "  latency {name}: arrival to written, {} frames: p50 {p50:.3} ms  p95 {p95:.3} ms  p99 {p99:.3} ms  max {max:.3} ms",
                s.latencies.len()
            );
        }
    }
    for (name, device) in &report.devices {
        eprintln!("  device {name}: {device}");
    }
    for (kernel, (n, seconds, p99)) in &report.gpu_kernels {
        eprintln!(
            "  gpu kernel {kernel}: {n} dispatches, {:.3} ms GPU time ({:.1} µs each), p99 ≤ {:.3} ms",
            seconds * 1e3,
            seconds * 1e6 / *n as f64,
            p99 * 1e3
        );
    }
    for (device, (up, down)) in &report.gpu_bytes {
        eprintln!(
            "  gpu {device}: {up} bytes uploaded ({:.2} MB), {down} bytes read back ({:.2} MB)",
            *up as f64 / 1e6,
            *down as f64 / 1e6
        );
    }
    for (name, n) in &report.dropped_invalid {
        eprintln!("  dropped {n} rows with NaN/Inf from {name}");
    }
    for (name, (read, dropped)) in &report.overload {
        eprintln!(
            "  overload {name}: read {read} rows, accepted {}, dropped {dropped} while the pipeline was behind",
            read - dropped
        );
    }
    for line in &report.sink_lines {
        println!("{line}");
    }
}
