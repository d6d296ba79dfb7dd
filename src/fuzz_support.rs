//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), kept here so the corpus replay
//! test (`tests/fuzz_corpus.rs`) runs exactly the same code on stable Rust in every test run.
//! Each takes arbitrary bytes; errors are expected, panics are bugs.

use std::io::Write;
use std::sync::Arc;

use neurostream_engine::{PipelineSpec, Registry, RowIndex, Schema};
use neurostream_operators::sae::Sae;
use neurostream_sinks::{console::ConsoleSinkKind, parquet_sink::ParquetSinkKind};
use neurostream_sources::arrow_tcp::decode_ipc_stream;
use neurostream_sources::edf::file::EdfFile;
use neurostream_sources::{
    array_source::ArraySourceKind, brainvision::BrainVisionSourceKind, edf::source::EdfSourceKind,
    parquet_source::ParquetSourceKind, synthetic_activations::SyntheticActivationsKind, synthetic_eeg::SyntheticEegKind,
};

/// The live Arrow IPC ingest (`arrow_tcp` source) on any bytes a client may send: frames that
/// come out must be well-formed (width 4, one index entry per row).
pub fn arrow_ipc(data: &[u8]) {
    let schema = Arc::new(Schema::activation(4, None, None));
    let mut name: Arc<str> = "fuzz/0".into();
    let limits = neurostream_sources::arrow_tcp::ConnectionLimits {
        max_message_bytes: 1 << 20,
        ..neurostream_sources::arrow_tcp::ConnectionLimits::default_for_tests()
    };
    let _ = decode_ipc_stream(data, "fuzz/0", "fuzz", &schema, &limits, &mut name, |frame| {
        assert_eq!(frame.data.len(), frame.rows() * 4);
        if let RowIndex::Tokens { seq_id, pos, .. } = &frame.index {
            assert_eq!(seq_id.len(), pos.len());
        }
        true
    });
}

/// The EDF/EDF+/BDF reader (header checks, records, scaling, TAL annotations) on any file
/// contents, strict and with `allow_truncated`.
pub fn edf(data: &[u8]) {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(data).expect("write");
    f.flush().expect("flush");
    for allow_truncated in [false, true] {
        let Ok(mut edf) = EdfFile::open(f.path(), allow_truncated) else {
            continue;
        };
        let signals = edf.header.signals.len();
        let mut out = Vec::new();
        for r in 0..edf.records.min(64) {
            let Ok(record) = edf.read_record(r) else { break };
            for i in 0..signals {
                out.clear();
                edf.decode(&record, i, &mut out);
            }
        }
    }
}

/// The pipeline loader (TOML parsing, then every kind's config parsing and checks) on any text.
/// Kinds that open the network or load model weights are left out of the registry.
pub fn pipeline_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut registry = Registry::new();
    neurostream_operators::register(&mut registry);
    registry
        .add_source(ArraySourceKind)
        .add_source(EdfSourceKind)
        .add_source(BrainVisionSourceKind)
        .add_source(ParquetSourceKind)
        .add_source(SyntheticEegKind)
        .add_source(SyntheticActivationsKind)
        .add_sink(ParquetSinkKind)
        .add_sink(ConsoleSinkKind);
    if let Ok(spec) = PipelineSpec::from_toml_str(text, "/nonexistent-fuzz-dir") {
        let _ = spec.compile(&registry);
    }
}

/// The SAE loaders on any files. Byte 0 mod 5 picks the format (0: SAELens `cfg.json` +
/// `sae_weights.safetensors`; 1: sparsify `cfg.json` + `sae.safetensors`; 2: Gemma Scope
/// `params.npz`, no config; 3: Llama Scope `hyperparams.json` +
/// `checkpoints/final.safetensors`; 4: Gemma Scope 2 `config.json` + `params.safetensors`), bytes 1-2 the length of the config, then the config, then
/// the weights file.
pub fn sae_files(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let len = u16::from_le_bytes([data[1], data[2]]) as usize;
    let rest = &data[3..];
    let (cfg, weights) = rest.split_at(len.min(rest.len()));
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let write = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).expect("write");
    match data[0] % 5 {
        0 => {
            write("cfg.json", cfg);
            write("sae_weights.safetensors", weights);
            let _ = Sae::load_saelens(d, None);
        }
        1 => {
            write("cfg.json", cfg);
            write("sae.safetensors", weights);
            let _ = Sae::load_sparsify(d);
        }
        2 => {
            write("params.npz", weights);
            let _ = Sae::load_gemma_scope(&d.join("params.npz"));
        }
        4 => {
            write("config.json", cfg);
            write("params.safetensors", weights);
            let _ = Sae::load_gemma_scope_2(d);
        }
        _ => {
            write("hyperparams.json", cfg);
            std::fs::create_dir(d.join("checkpoints")).expect("mkdir");
            write("checkpoints/final.safetensors", weights);
            let _ = Sae::load_llama_scope(d);
        }
    }
}

/// The `/metrics` HTTP server (hyper, with the engine's limits, token and routing) on any bytes
/// a client may send: the answer is nothing or an HTTP/1.x status line, never 200 without the
/// token.
pub fn metrics_request(data: &[u8]) {
    static METRICS: std::sync::OnceLock<Arc<neurostream_engine::Metrics>> = std::sync::OnceLock::new();
    let metrics = METRICS.get_or_init(|| {
        let m = neurostream_engine::Metrics::new();
        m.node("sinks.out").batch(3, 0, 12, std::time::Duration::from_micros(5));
        m
    });
    let answer = neurostream_engine::metrics::answer(data, metrics, Some("fuzz-token"));
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1."), "malformed answer");
    let authorized = data.windows(b"fuzz-token".len()).any(|w| w == b"fuzz-token");
    assert!(
        authorized || !answer[answer.len().min(8)..].starts_with(b" 200"),
        "served without the token"
    );
}

/// The live sinks' request parsers on any bytes a client may send: the `arrow_tcp` request line
/// and the WebSocket handshake (tungstenite, then the target, token and output checks).
pub fn live_requests(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = neurostream_sinks::live::Request::parse_line(&text);
    let _ = neurostream_sinks::live::Request::parse_target(&text);
    let settings = neurostream_sinks::live::ServerSettings {
        name: "fuzz".into(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        address_file: None,
        offered: vec!["frames".into(), "alerts".into()],
        queue: 4,
        token: Some("fuzz-token".into()),
        wait_for: (0, 1.0),
    };
    let stream = MockStream {
        input: std::io::Cursor::new(data.to_vec()),
        output: Vec::new(),
    };
    if let Ok((_, request)) = neurostream_sinks::websocket_sink::accept(stream, &settings) {
        assert_eq!(request.token.as_deref(), Some("fuzz-token"), "admitted without the token");
        assert!(settings.offered.contains(&request.output));
    }
}

/// A connection that reads from fixed bytes and discards what is written.
struct MockStream {
    input: std::io::Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl std::io::Read for MockStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl std::io::Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The raw FIF reader on any file contents (one file; a split reference names a file that does
/// not exist): tags, measurement info, buffers, annotations; then through the `fif` source,
/// replayed to the end.
pub fn fif(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rec.fif"), data).expect("write");
    if let Ok(mut rec) = neurostream_sources::fif::FifRecording::open(&dir.path().join("rec.fif")) {
        let all: Vec<usize> = (0..rec.channels.len()).collect();
        for b in rec.buffers.clone().iter().take(64) {
            let mut rows = Vec::new();
            if rec.read_buffer(b, &all, &mut rows).is_ok() {
                assert_eq!(rows.len() as u64, b.samples() * all.len() as u64);
            }
        }
    }
    let mut registry = Registry::new();
    registry
        .add_source(neurostream_sources::fif::FifSourceKind)
        .add_sink(ConsoleSinkKind);
    let text = "[sources.r]\nkind = \"fif\"\npath = \"rec.fif\"\nchunk = 100\n[sinks.o]\nkind = \"console\"\ninput = \"r\"\n";
    drain_sources(PipelineSpec::from_toml_str(text, dir.path()).and_then(|s| s.compile(&registry)));
}

/// The GDF reader on any file contents: the header and event table, then the `gdf` source
/// replayed to the end.
pub fn gdf(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rec.gdf"), data).expect("write");
    let _ = neurostream_sources::gdf::Header::open(&dir.path().join("rec.gdf"));
    let mut registry = Registry::new();
    registry
        .add_source(neurostream_sources::gdf::GdfSourceKind)
        .add_sink(ConsoleSinkKind);
    let text = "[sources.r]\nkind = \"gdf\"\npath = \"rec.gdf\"\nchunk = 100\n[sinks.o]\nkind = \"console\"\ninput = \"r\"\n";
    drain_sources(PipelineSpec::from_toml_str(text, dir.path()).and_then(|s| s.compile(&registry)));
}

/// The EEGLAB reader on any `.set` contents (beside a `rec.fdt` of 5 channels × 8 samples,
/// which the seeds name): the MAT-file and the dataset's fields, then the `eeglab` source
/// replayed to the end.
pub fn eeglab(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rec.set"), data).expect("write");
    let fdt: Vec<u8> = (0..40).flat_map(|i| (i as f32 - 20.0).to_le_bytes()).collect();
    std::fs::write(dir.path().join("rec.fdt"), fdt).expect("write");
    let _ = neurostream_sources::eeglab::Dataset::open(&dir.path().join("rec.set"));
    let mut registry = Registry::new();
    registry
        .add_source(neurostream_sources::eeglab::EeglabSourceKind)
        .add_sink(ConsoleSinkKind);
    let text = "[sources.r]\nkind = \"eeglab\"\npath = \"rec.set\"\nchunk = 100\n[sinks.o]\nkind = \"console\"\ninput = \"r\"\n";
    drain_sources(PipelineSpec::from_toml_str(text, dir.path()).and_then(|s| s.compile(&registry)));
}

/// The `csv` source on any file contents: the header, the whole-table check and the replay to
/// the end, with the rate given and (when the file says none) from an OpenBCI header line, and
/// as a file without a header row.
pub fn csv(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rec.csv"), data).expect("write");
    let mut registry = Registry::new();
    registry
        .add_source(neurostream_sources::CsvSourceKind)
        .add_sink(ConsoleSinkKind);
    for extra in [
        "sample_rate = 250\nmarkers = \"Marker Channel\"\n",
        "",
        "sample_rate = 250\nheader = false\nchannels = [\"1\", \"2\"]\nmarkers = \"3\"\n",
        "sample_rate = 256\nmarkers = \"Elements\"\nskip_empty_rows = true\n",
        "skip_lines = 1\nmarkers = \"MarkerValueInt\"\n",
        "sample_rate = 100\ndecimal = \",\"\ndelimiter = \";\"\n",
    ] {
        let text = format!(
            "[sources.r]\nkind = \"csv\"\npath = \"rec.csv\"\nchunk = 100\n{extra}[sinks.o]\nkind = \"console\"\ninput = \"r\"\n"
        );
        drain_sources(PipelineSpec::from_toml_str(&text, dir.path()).and_then(|s| s.compile(&registry)));
    }
}

/// The XDF reader on any file contents: headers, then every stream's samples, time stamps and
/// clock offsets, then the values of each numeric stream's chunks; through the `xdf` source
/// too, replayed to the end.
pub fn xdf(data: &[u8]) {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(data).expect("write");
    f.flush().expect("flush");
    for allow_truncated in [false, true] {
        let Ok(mut file) = neurostream_sources::xdf::XdfFile::open(f.path(), allow_truncated) else {
            continue;
        };
        let headers = file.streams.clone();
        let ids: Vec<u32> = headers.iter().map(|h| h.id).collect();
        let Ok(data) = file.scan(&ids) else { continue };
        for (h, d) in headers.iter().zip(&data) {
            for &chunk in d.chunks.iter().take(64) {
                let mut values = Vec::new();
                if file.read_chunk_values(h, chunk, &mut values).is_ok() {
                    assert_eq!(values.len() % h.channel_count, 0);
                }
            }
        }
    }
    let dir = f.path().parent().expect("a directory").to_path_buf();
    let name = f.path().file_name().expect("a name").to_string_lossy().to_string();
    let mut registry = Registry::new();
    registry
        .add_source(neurostream_sources::xdf::XdfSourceKind)
        .add_sink(ConsoleSinkKind);
    let text =
        format!("[sources.r]\nkind = \"xdf\"\npath = \"{name}\"\nchunk = 100\n[sinks.o]\nkind = \"console\"\ninput = \"r\"\n");
    drain_sources(PipelineSpec::from_toml_str(&text, dir).and_then(|s| s.compile(&registry)));
}

/// Replays every source of a compiled pipeline to its end, checking that dense frames are
/// well-formed (width × rows values, markers on existing rows).
fn drain_sources(compiled: neurostream_engine::Result<neurostream_engine::spec::CompiledPipeline>) {
    let Ok(compiled) = compiled else { return };
    for node in &compiled.nodes {
        if let neurostream_engine::spec::Built::Source(source) = &node.built {
            let width = source.schema().width();
            let Ok(mut reader) = source.open(neurostream_engine::WorkerPos { index: 0, peers: 1 }) else {
                return;
            };
            while let Ok(Some((_, batch))) = reader.next_batch() {
                if let neurostream_engine::Batch::Dense(frame) = batch {
                    assert_eq!(frame.data.len(), frame.rows() * width);
                    assert!(frame.markers.iter().all(|m| (m.row as usize) < frame.rows()));
                }
            }
        }
    }
}

/// The `parquet` source on any file contents (activations, signals or features; any
/// compression, with or without a page index): opened, then replayed to the end.
pub fn parquet(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rec.parquet"), data).expect("write");
    let mut registry = Registry::new();
    registry
        .add_source(neurostream_sources::ParquetSourceKind)
        .add_sink(ConsoleSinkKind);
    let text = "[sources.r]\nkind = \"parquet\"\npath = \"rec.parquet\"\nbatch_rows = 7\n\
                [sinks.o]\nkind = \"console\"\ninput = \"r\"\n";
    drain_sources(PipelineSpec::from_toml_str(text, dir.path()).and_then(|s| s.compile(&registry)));
}

/// The BrainVision reader (header, marker file, data file of any size and layout) on any
/// contents: bytes up to the first NUL are `rec.vhdr`, up to the second `rec.vmrk`, the rest
/// `rec.eeg`. Whatever opens is replayed to the end; frames must be well-formed.
pub fn brainvision(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (header, markers, samples) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rec.vhdr"), header).expect("write");
    std::fs::write(dir.path().join("rec.vmrk"), markers).expect("write");
    std::fs::write(dir.path().join("rec.eeg"), samples).expect("write");
    let mut registry = Registry::new();
    registry.add_source(BrainVisionSourceKind).add_sink(ConsoleSinkKind);
    let text =
        "[sources.r]\nkind = \"brainvision\"\npath = \"rec.vhdr\"\nchunk = 100\n[sinks.o]\nkind = \"console\"\ninput = \"r\"\n";
    drain_sources(PipelineSpec::from_toml_str(text, dir.path()).and_then(|s| s.compile(&registry)));
}
