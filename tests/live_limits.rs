//! The `arrow_tcp` source against hostile and careless clients: a token off loopback (and when
//! set), a cap on open connections (clients over it wait their turn), a time-out for silent
//! connections, and a maximum message size, compressed or not. Every limit ends only the offending connection; what good clients sent arrives whole.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use neurostream::{registry, PipelineSpec, RunOptions, RunReport};

const D: usize = 8;

fn source(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[sources.live]
kind = "arrow_tcp"
listen = "127.0.0.1:0"
d_model = {D}
address_file = "{}"
{extra}

[sinks.out]
kind = "parquet"
input = "live"
path = "{}"
"#,
        dir.join("address.txt").display(),
        dir.join("out.parquet").display()
    )
}

fn start(toml: String) -> std::thread::JoinHandle<neurostream::Result<RunReport>> {
    let pipeline = PipelineSpec::from_toml_str(&toml, ".").unwrap().compile(&registry()).unwrap();
    std::thread::spawn(move || neurostream::run(pipeline, RunOptions::default()))
}

fn address(dir: &Path) -> String {
    let started = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("address.txt")) {
            return a.trim().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never listened");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn schema(token: Option<&str>) -> Arc<Schema> {
    let meta: Vec<(&str, &str)> = token.map(|t| ("neurostream.token", t)).into_iter().collect();
    common::activation_ipc_schema(D, &meta)
}

fn batch(schema: &Arc<Schema>, rows: usize) -> RecordBatch {
    let values: Vec<f32> = (0..rows * D).map(|i| i as f32 * 0.5).collect();
    common::activation_ipc_batch(schema, &vec![1; rows], &values)
}

/// Sends one IPC stream of `batches` batches of `rows` rows; returns whether it all went out.
fn send(addr: &str, token: Option<&str>, batches: &[usize]) -> bool {
    let s = TcpStream::connect(addr).unwrap();
    let schema = schema(token);
    let Ok(mut w) = arrow::ipc::writer::StreamWriter::try_new(s, &schema) else {
        return false;
    };
    for &rows in batches {
        if w.write(&batch(&schema, rows)).is_err() {
            return false;
        }
    }
    w.finish().is_ok()
}

fn rows_written(dir: &Path) -> usize {
    common::row_count(&dir.join("out.parquet"))
}

#[test]
fn off_loopback_needs_a_token_and_a_set_token_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = source(d, "").replace("127.0.0.1:0", "0.0.0.0:0");
    let err = PipelineSpec::from_toml_str(&bad, ".")
        .unwrap()
        .compile(&registry())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a loopback address") && err.contains("token"), "{err}");
    let run = start(source(d, "token = \"s3cret\"\nconnections = 3"));
    let addr = address(d);
    send(&addr, None, &[5]);
    send(&addr, Some("wrong"), &[5]);
    assert!(send(&addr, Some("s3cret"), &[7, 3]));
    run.join().unwrap().unwrap();
    assert_eq!(rows_written(d), 10, "only the client with the token is accepted");
}

#[test]
fn connections_beyond_the_cap_wait_their_turn_and_silent_ones_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let started = Instant::now();
    let run = start(source(
        d,
        "max_connections = 2\nconnection_timeout_s = 1.0\nidle_timeout_s = 2.0",
    ));
    let addr = address(d);
    // Two silent connections fill the cap.
    let silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // A third client sends its whole stream at once (it fits in the socket's buffers, so the
    // client cannot tell whether anyone reads it). It is not refused, which would lose it
    // unseen: it waits until a silent one is dropped after 1 s, then is read.
    assert!(send(&addr, None, &[4]));
    std::thread::sleep(Duration::from_millis(300));
    let mut probe = silent[0].try_clone().unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    let closed = matches!(probe.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "a silent connection was kept past connection_timeout_s");
    // With no connection open and no data for 2 s, the run ends (silent peers cannot hold it).
    run.join().unwrap().unwrap();
    drop(silent);
    assert_eq!(rows_written(d), 4, "the client over the cap was served once a slot freed");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[test]
fn a_message_over_the_size_limit_ends_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = start(source(d, "max_message_mb = 1.0\nconnections = 2"));
    let addr = address(d);
    // 10 rows pass, then a 2 MiB batch (65 536 rows x 8 floats) is refused before it is read.
    let big = 65_536;
    let _ = send(&addr, None, &[10, big, 10]);
    assert!(send(&addr, None, &[6]));
    run.join().unwrap().unwrap();
    assert_eq!(rows_written(d), 16, "the rows before the oversized message stay accepted");
}

/// One IPC stream (schema, then `rows` rows of zeros in one batch) with its buffers compressed
/// as `codec`, as bytes, so a test can lie in them.
fn compressed_stream(rows: usize, codec: arrow::ipc::CompressionType) -> Vec<u8> {
    let schema = schema(None);
    let options = arrow::ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(codec))
        .unwrap();
    let mut bytes = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new_with_options(&mut bytes, &schema, options).unwrap();
    let zeros = common::activation_ipc_batch(&schema, &vec![1; rows], &vec![0.0; rows * D]);
    w.write(&zeros).unwrap();
    w.finish().unwrap();
    drop(w);
    bytes
}

/// Sends raw bytes as one connection; returns whether they all went out.
fn send_bytes(addr: &str, bytes: &[u8]) -> bool {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).unwrap();
    let sent = s.write_all(bytes).is_ok();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.read(&mut [0u8; 64]);
    sent
}

#[test]
fn compressed_buffers_are_held_to_the_size_limit_once_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = start(source(d, "max_message_mb = 1.0\nconnections = 4"));
    let addr = address(d);
    // A bomb: 131 072 rows are 5.5 MiB of columns, a third of the 1 MiB limit once compressed.
    let bomb = compressed_stream(131_072, arrow::ipc::CompressionType::ZSTD);
    assert!(bomb.len() < 512 << 10, "{} bytes", bomb.len());
    send_bytes(&addr, &bomb);
    // A lie: a small LZ4 buffer whose length prefix claims 1 PiB (the allocation alone would
    // abort the process).
    let mut lie = compressed_stream(16, arrow::ipc::CompressionType::LZ4_FRAME);
    let magic = [0x04, 0x22, 0x4D, 0x18];
    let at = lie.windows(4).position(|w| w == magic).expect("an LZ4 frame") - 8;
    lie[at..at + 8].copy_from_slice(&(1i64 << 50).to_le_bytes());
    send_bytes(&addr, &lie);
    // Compressed batches within the limit are read.
    assert!(send_bytes(
        &addr,
        &compressed_stream(6, arrow::ipc::CompressionType::LZ4_FRAME)
    ));
    assert!(send_bytes(&addr, &compressed_stream(5, arrow::ipc::CompressionType::ZSTD)));
    run.join().unwrap().unwrap();
    assert_eq!(rows_written(d), 11, "only the honest compressed batches arrive");
}
