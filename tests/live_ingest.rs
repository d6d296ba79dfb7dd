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
    let out = child.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
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
