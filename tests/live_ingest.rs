//! The `arrow_tcp` source with the repo's Python client: good clients' rows arrive exactly;
//! malformed, truncated and wrong-width clients are dropped with a logged reason, and what they
//! sent before stays accepted.

mod common;

use common::{python, run_python};

#[test]
fn live_clients_stream_into_parquet_and_bad_clients_are_dropped() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("live.toml"),
        r#"
[pipeline]
workers = 2

[sources.live]
kind = "arrow_tcp"
listen = "127.0.0.1:0"
d_model = 16
connections = 5
address_file = "address.txt"

[sinks.out]
kind = "parquet"
input = "live"
path = "out.parquet"
tokens = true
"#,
    )
    .unwrap();
    let (child, address) = common::spawn_live(d, "live.toml", &["--quiet"]);
    let at = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(&py, "live_clients.py", &["send", address.as_str(), &at("expected.parquet")]);
    let log = common::wait_ok(child);
    run_python(
        &py,
        "live_clients.py",
        &["check", &at("out.parquet"), &at("expected.parquet")],
    );
    let dropped: Vec<&str> = log.lines().filter(|l| l.contains("dropped stream")).collect();
    assert_eq!(dropped.len(), 3, "three clients dropped:\n{log}");
    assert!(log.contains("sends d_model 8, this source takes 16"), "{log}");
    assert!(
        dropped
            .iter()
            .any(|l| l.contains("live/2") && l.contains("message 2 after 6 rows")),
        "{log}"
    );
    assert!(
        dropped
            .iter()
            .any(|l| l.contains("live/3") && l.contains("message 2 after 4 rows: truncated")),
        "{log}"
    );
}

#[test]
fn live_subscribers_receive_the_alerts_and_windows_the_parquet_sink_writes() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sample_activations.parquet");
    run_python(
        &py,
        "sae_reference.py",
        &[
            "make",
            &d.join("sae").to_string_lossy(),
            "saelens",
            "topk",
            "64",
            "192",
            "7",
            "k=8",
        ],
    );
    std::fs::write(
        d.join("live.toml"),
        format!(
            r#"
[sources.acts]
kind = "parquet"
path = "{sample}"
batch_rows = 256

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "sae"

[operators.stats]
kind = "feature_stats"
input = "enc"
window = 1024
top_k = 0

[[operators.stats.alerts]]
rule = "density_ratio"
above = 1.3
below = 0.7
min_count = 20

[sinks.stats]
kind = "parquet"
input = "stats"
path = "stats"

[sinks.live]
kind = "arrow_tcp"
input = "stats"
listen = "127.0.0.1:0"
address_file = "address.txt"
wait_for_subscribers = 3
"#
        ),
    )
    .unwrap();
    let (child, address) = common::spawn_live(d, "live.toml", &["--quiet", "-w", "2"]);
    std::fs::create_dir(d.join("live")).unwrap();
    let at = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(&py, "live_clients.py", &["subscribe", address.as_str(), &at("live")]);
    let log = common::wait_ok(child);
    assert!(log.contains("3 subscriber(s) served"), "{log}");
    for table in ["alerts", "windows"] {
        run_python(
            &py,
            "live_clients.py",
            &[
                "same",
                &at(&format!("live/{table}.parquet")),
                &at(&format!("stats/{table}.parquet")),
            ],
        );
    }
}

#[test]
fn a_forward_hook_streams_a_modules_output() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("hook.toml"),
        r#"
[sources.live]
kind = "arrow_tcp"
listen = "127.0.0.1:0"
d_model = 16
connections = 1
address_file = "address.txt"

[sinks.out]
kind = "parquet"
input = "live"
path = "out.parquet"
"#,
    )
    .unwrap();
    let (child, address) = common::spawn_live(d, "hook.toml", &["--quiet"]);
    let at = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(&py, "live_clients.py", &["hook", address.as_str(), &at("expected.parquet")]);
    common::wait_ok(child);
    run_python(
        &py,
        "live_clients.py",
        &["check", &at("out.parquet"), &at("expected.parquet")],
    );
}
