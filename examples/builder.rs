//! Builds the EEG half of the quickstart in code instead of TOML and runs it on two workers.
//!
//! `cargo run --release --example builder` writes `examples/out/builder_z.parquet`.

use neurostream::operators::normalize::NormalizeConfig;
use neurostream::sinks::{ConsoleSinkConfig, ParquetSinkConfig};
use neurostream::sources::SyntheticEegConfig;
use neurostream::{registry, run, PipelineBuilder, RunOptions};

fn main() -> anyhow::Result<()> {
    let spec = PipelineBuilder::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .source(
            "eeg",
            &SyntheticEegConfig {
                channels: 16,
                seconds: 30.0,
                marker_interval: 4.0,
                ..Default::default()
            },
        )?
        .operator("z", "eeg", &NormalizeConfig::running_zscore(512))?
        .sink("file", "z", &ParquetSinkConfig::new("out/builder_z.parquet"))?
        .sink(
            "summary",
            "z",
            &ConsoleSinkConfig {
                max_channels: 4,
                ..Default::default()
            },
        )?
        .build();
    let pipeline = spec.compile(&registry())?;
    for line in pipeline.describe() {
        println!("{line}");
    }
    let report = run(
        pipeline,
        RunOptions {
            workers: 2,
            ..Default::default()
        },
    )?;
    for line in report.sink_lines {
        println!("{line}");
    }
    Ok(())
}
