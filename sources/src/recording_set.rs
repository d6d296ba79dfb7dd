//! Several recordings as one source (`path` a glob such as `"sleep/*.edf"`): each file a
//! stream of its own, named by its path below the files' common directory without its
//! extension, read whole on one worker and ended after its last sample, so a dataset of
//! recordings runs through one pipeline with every recording's state apart and the recordings
//! split over the workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::recording::HELD_SAMPLES_BYTES;
use neurostream_engine::{
    Batch, EngineError, NodeContext, Result, Schema, Source, SourceKind, SourceReader, StreamEnd, WorkerPos,
};

/// Builds one recording file into a source (a format's `build` for the file at the path).
pub type BuildRecording = Arc<dyn Fn(&Path, &NodeContext) -> Result<Arc<dyn Source>> + Send + Sync>;

/// Whether `path` (a recording source's `path` key) names several recordings: a glob
/// (`*`, `?`, `[`) that is not the name of an existing file.
pub fn is_set(ctx: &NodeContext, path: &str) -> bool {
    path.contains(['*', '?', '[']) && !ctx.resolve(path).is_file()
}

/// For a recording kind's `build`: `Some` of a [`RecordingSet`] when `path` names several
/// recordings ([`is_set`]), each file built by `kind` from `cfg` with the file as its path
/// (`with_path`); `None` for one file, which the kind builds as usual.
pub fn glob_set<K>(
    kind: &'static K,
    cfg: &K::Config,
    path: &str,
    ctx: &NodeContext,
    with_path: fn(K::Config, String) -> K::Config,
) -> Option<Result<Arc<dyn Source>>>
where
    K: SourceKind,
    K::Config: Clone + Send + Sync,
{
    let resolved = ctx.resolve(path);
    if resolved.is_dir() {
        let ext = match <K::Config as neurostream_engine::NodeConfig>::KIND {
            "brainvision" => "vhdr",
            "eeglab" => "set",
            kind => kind,
        };
        let message = format!(
            "`path` {} is a directory: name a recording, or a glob of its recordings such as `{}/*.{ext}`",
            resolved.display(),
            path.trim_end_matches('/')
        );
        return Some(Err(EngineError::config(ctx.label, message)));
    }
    if !is_set(ctx, path) {
        return None;
    }
    let cfg = cfg.clone();
    let one: BuildRecording = Arc::new(move |file: &Path, ctx: &NodeContext| {
        kind.build(with_path(cfg.clone(), file.to_string_lossy().into_owned()), ctx)
    });
    Some(build_set(ctx, path, one))
}

/// A [`RecordingSet`] of the files `path` (a glob, see [`is_set`]) matches, each built by
/// `build_one` (given the file's absolute path). Each file is built once to check it
/// (channels, units and rate must agree with the first's) and count its samples. A file whose
/// source holds its parsed samples (a text format's) is kept as built while the set's held
/// samples fit in [`HELD_SAMPLES_BYTES`], so it is not parsed again; the others are let go and
/// built again when a worker reaches them (a dataset would not fit in memory at once).
pub fn build_set(ctx: &NodeContext, path: &str, build_one: BuildRecording) -> Result<Arc<dyn Source>> {
    build_set_holding(ctx, path, build_one, HELD_SAMPLES_BYTES as u64)
}

/// [`build_set`], keeping built recordings while their held samples fit in `budget` bytes.
fn build_set_holding(ctx: &NodeContext, path: &str, build_one: BuildRecording, budget: u64) -> Result<Arc<dyn Source>> {
    let pattern = ctx.resolve(path);
    let text = pattern.to_string_lossy();
    let mut files: Vec<PathBuf> = glob::glob(&text)
        .map_err(|e| EngineError::config(ctx.label, format!("bad glob `{text}`: {e}")))?
        .filter_map(|p| p.ok())
        .filter(|p| p.is_file())
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EngineError::config(ctx.label, format!("`path` {text} matches no files")));
    }
    let names = crate::file_streams::file_stream_names(&files);
    let mut parts = Vec::with_capacity(files.len());
    let mut schema: Option<Arc<Schema>> = None;
    let (mut kept, mut kept_bytes) = (HashMap::new(), 0u64);
    for (name, file) in names.into_iter().zip(&files) {
        ctx.record_input(file);
        let source = build_one(file, ctx)?;
        match &schema {
            None => schema = Some(source.schema()),
            Some(first) => {
                if let Some(diff) = schema_difference(first, &source.schema()) {
                    return Err(EngineError::input(
                        file,
                        format!(
                            "{diff} than {}: the recordings of one source share one schema (pick common channels with `channels`)",
                            files[0].display()
                        ),
                    ));
                }
            }
        }
        parts.push(Part {
            name,
            path: file.clone(),
            rows: source.total_rows().unwrap_or(0),
            files: source.input_files(),
            replayable: source.replayable(),
        });
        let held = source.held_bytes();
        if held > 0 && kept_bytes + held <= budget {
            kept_bytes += held;
            kept.insert(file.clone(), source);
        }
    }
    // A file another recording reads too (a FIF split file `x_raw-1.fif`, followed from
    // `x_raw.fif`) is part of that recording, not one of its own.
    let continued: std::collections::HashSet<&Path> = parts
        .iter()
        .flat_map(|p| p.files.iter().filter(move |f| **f != p.path).map(PathBuf::as_path))
        .collect();
    let (parts, left_out): (Vec<Part>, Vec<Part>) = parts.iter().cloned().partition(|p| !continued.contains(p.path.as_path()));
    if !left_out.is_empty() {
        let names: Vec<&str> = left_out.iter().map(|p| p.name.as_ref()).collect();
        tracing::info!(
            "{}: {} files continue another recording and are read as part of it: {}",
            ctx.label,
            left_out.len(),
            names.join(", ")
        );
    }
    kept.retain(|path, _| parts.iter().any(|p| p.path == *path));
    Ok(Arc::new(RecordingSet {
        parts,
        kept: Mutex::new(kept),
        schema: schema.expect("at least one file"),
        build_one,
        context: OwnedContext {
            label: ctx.label.to_string(),
            name: ctx.name.to_string(),
            base_dir: ctx.base_dir.to_path_buf(),
            settings: ctx.settings.clone(),
        },
    }))
}

/// A node's build context, kept to build the recordings again when they are read.
#[derive(Clone)]
struct OwnedContext {
    label: String,
    name: String,
    base_dir: PathBuf,
    settings: neurostream_engine::PipelineSettings,
}

/// One recording of a [`RecordingSet`].
#[derive(Clone)]
struct Part {
    /// Its stream.
    name: Arc<str>,
    path: PathBuf,
    /// Samples.
    rows: u64,
    /// The files it reads.
    files: Vec<PathBuf>,
    replayable: bool,
}

/// How schema `b` differs from `a` (`None`: it does not), for messages.
fn schema_difference(a: &Schema, b: &Schema) -> Option<String> {
    let names = |s: &Schema| s.channels.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        return Some(format!("other channels ({})", names(b).join(", ")));
    }
    if a.channels.iter().zip(&b.channels).any(|(x, y)| x.unit != y.unit) {
        return Some("other units".into());
    }
    if a.sample_rate() != b.sample_rate() {
        return Some(format!("another sampling rate ({:?} Hz)", b.sample_rate()));
    }
    (a != b).then(|| "another layout".into())
}

/// Recordings, each a stream read whole on one worker.
pub struct RecordingSet {
    /// In path order.
    parts: Vec<Part>,
    /// Recordings kept as built at start-up (their parsed samples held), by path, until a
    /// worker takes them.
    kept: Mutex<HashMap<PathBuf, Arc<dyn Source>>>,
    schema: Arc<Schema>,
    build_one: BuildRecording,
    context: OwnedContext,
}

impl RecordingSet {
    /// The worker of `peers` each recording is read on
    /// ([`crate::file_streams::place_largest_first`] by samples).
    fn placement(&self, peers: usize) -> Vec<usize> {
        let rows: Vec<u64> = self.parts.iter().map(|p| p.rows).collect();
        crate::file_streams::place_largest_first(&rows, peers)
    }
}

impl Source for RecordingSet {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        Some(self.parts.iter().map(|p| p.rows).sum())
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let placed = self.placement(worker.peers);
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = self
            .parts
            .iter()
            .zip(placed)
            .filter(|(_, w)| *w == worker.index)
            .map(|(p, _)| (p.clone(), kept.remove(&p.path)))
            .collect();
        Ok(Box::new(SetReader {
            parts: mine,
            build_one: self.build_one.clone(),
            context: self.context.clone(),
            current: None,
            offset: 0,
            at: 0,
            schema: self.schema.clone(),
        }))
    }
    fn stream_placement(&self, peers: usize) -> Vec<(Arc<str>, usize)> {
        self.parts.iter().map(|p| p.name.clone()).zip(self.placement(peers)).collect()
    }
    fn runs_on(&self, workers: std::ops::Range<usize>, peers: usize) {
        // Recordings another process reads are not kept here.
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (part, w) in self.parts.iter().zip(self.placement(peers)) {
            if !workers.contains(&w) {
                kept.remove(&part.path);
            }
        }
    }
    fn replayable(&self) -> bool {
        self.parts.iter().all(|p| p.replayable)
    }
    fn input_files(&self) -> Vec<PathBuf> {
        self.parts.iter().flat_map(|p| p.files.clone()).collect()
    }
}

/// One worker's recordings, one after another: each replayed as its own source replays it on
/// one worker, its event times moved to follow the previous recording's, its stream renamed,
/// and its end after its last sample.
struct SetReader {
    /// Recordings still to start, in order, with the source built at start-up if it was kept.
    parts: std::collections::VecDeque<(Part, Option<Arc<dyn Source>>)>,
    build_one: BuildRecording,
    context: OwnedContext,
    /// The recording being read.
    current: Option<(Arc<str>, Box<dyn SourceReader>)>,
    /// Event time of the current recording's time 0.
    offset: u64,
    /// Event time after the last row emitted.
    at: u64,
    schema: Arc<Schema>,
}

impl SetReader {
    /// Builds the next recording and starts reading it; false when none is left.
    fn start_next(&mut self) -> Result<bool> {
        let Some((part, kept)) = self.parts.pop_front() else {
            return Ok(false);
        };
        let source = match kept {
            Some(source) => source,
            None => self.build_again(&part)?,
        };
        // A recording source replays on the first of its workers.
        let reader = source.open(WorkerPos { index: 0, peers: 1 })?;
        self.offset = self.at;
        self.current = Some((part.name, reader));
        Ok(true)
    }

    /// Builds `part` again, as it was checked when the run started.
    fn build_again(&self, part: &Part) -> Result<Arc<dyn Source>> {
        let c = &self.context;
        let ctx = NodeContext {
            label: &c.label,
            name: &c.name,
            base_dir: &c.base_dir,
            settings: &c.settings,
            loaded: Default::default(),
        };
        // Its start-up messages were logged when the run started and the file was checked.
        let quiet = tracing::subscriber::NoSubscriber::default();
        let source = tracing::subscriber::with_default(quiet, || (self.build_one)(&part.path, &ctx))?;
        if source.total_rows().unwrap_or(0) != part.rows || source.schema() != self.schema {
            return Err(EngineError::input(&part.path, "it changed since the run started"));
        }
        Ok(source)
    }
}

impl SourceReader for SetReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        if self.current.is_none() && !self.start_next()? {
            return Ok(None);
        }
        let (name, reader) = self.current.as_mut().expect("started above");
        match reader.next_batch()? {
            Some((t, mut batch)) => {
                let t = self.offset + t;
                match &mut batch {
                    Batch::Dense(f) => f.stream = name.clone(),
                    Batch::Sparse(f) => f.stream = name.clone(),
                    Batch::Table(t) => t.stream = name.clone(),
                    Batch::End(e) => e.stream = name.clone(),
                }
                self.at = self.at.max(t + batch.rows() as u64);
                Ok(Some((t, batch)))
            }
            None => {
                let (name, _) = self.current.take().expect("read above");
                let end = StreamEnd {
                    stream: name,
                    schema: self.schema.clone(),
                };
                Ok(Some((self.at, Batch::End(end))))
            }
        }
    }

    fn next_time(&self) -> Option<u64> {
        match &self.current {
            Some((_, r)) => Some(r.next_time().map_or(self.at, |t| (self.offset + t).max(self.at))),
            None => (!self.parts.is_empty()).then_some(self.at),
        }
    }

    fn ready(&mut self) -> bool {
        self.current.as_mut().is_none_or(|(_, r)| r.ready())
    }

    fn location(&self) -> String {
        self.current.as_ref().map(|(_, r)| r.location()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{HeldBlocks, RecordingSource, ReplaySettings};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A one-channel recording whose file holds its length (and, after a space, its channel's
    /// name, then files it also reads): sample `s` has value `s`, held in memory.
    fn build_one() -> BuildRecording {
        build_counted(true, Arc::new(AtomicUsize::new(0)))
    }

    /// [`build_one`], counting its builds in `builds`; `held`: it reports its samples as held
    /// (as a text format's source does).
    fn build_counted(held: bool, builds: Arc<AtomicUsize>) -> BuildRecording {
        Arc::new(move |file: &Path, ctx: &NodeContext| {
            builds.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(file).unwrap();
            let mut words = text.split_whitespace();
            let n: usize = words.next().unwrap().parse().unwrap();
            let channel = words.next().unwrap_or("A").to_string();
            let mut files = vec![file.to_path_buf()];
            files.extend(words.map(|w| file.with_file_name(w)));
            let schema = Arc::new(Schema::signal(&[channel.as_str()], "uV", 100.0));
            let values: Arc<Vec<Vec<f32>>> = Arc::new(vec![(0..n).map(|s| s as f32).collect()]);
            Ok(Arc::new(RecordingSource {
                settings: ReplaySettings {
                    kind: "test",
                    name: ctx.name.into(),
                    schema,
                    rate: 100.0,
                    chunk: 16,
                    speed: 0.0,
                    factors: None,
                    events: Arc::new(Vec::new()),
                },
                files,
                rows: n as u64,
                open: Box::new(move || Ok(Box::new(HeldBlocks::new(values.clone(), 1)))),
                held_bytes: if held { 4 * n as u64 } else { 0 },
            }) as Arc<dyn Source>)
        })
    }

    /// A folder with `s1.rec`, `s2.rec` and `s3.rec` of 20, 40 and 10 samples.
    fn three_recordings() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, n) in [("s1.rec", 20), ("s2.rec", 40), ("s3.rec", 10)] {
            std::fs::write(dir.path().join(name), n.to_string()).unwrap();
        }
        dir
    }

    /// The build context of a source `eeg` whose files are in `dir`.
    fn context<'a>(dir: &'a Path, settings: &'a neurostream_engine::PipelineSettings) -> NodeContext<'a> {
        NodeContext {
            label: "[sources.eeg]",
            name: "eeg",
            base_dir: dir,
            settings,
            loaded: Default::default(),
        }
    }

    fn events(r: &mut dyn SourceReader) -> Vec<(u64, String, Option<f32>)> {
        let mut out = Vec::new();
        while let Some((t, b)) = r.next_batch().unwrap() {
            assert!(r.next_time().is_none_or(|n| n >= t));
            let first = match &b {
                Batch::Dense(f) => Some(f.data[0]),
                Batch::End(_) => None,
                other => panic!("{other:?}"),
            };
            out.push((t, b.stream().to_string(), first));
        }
        out
    }

    /// A glob of recordings: each a stream named by its file, read whole on one worker (the
    /// longest first to the least loaded), its times following the worker's previous
    /// recording, its end right after its last sample; a recording with other channels is an
    /// error naming it.
    #[test]
    fn a_glob_reads_each_recording_as_a_stream_on_one_worker() {
        let dir = three_recordings();
        let settings = neurostream_engine::PipelineSettings::default();
        let ctx = context(dir.path(), &settings);
        assert!(is_set(&ctx, "*.rec") && !is_set(&ctx, "s1.rec"));
        let set = build_set(&ctx, "*.rec", build_one()).unwrap();
        assert_eq!(set.total_rows(), Some(70));
        assert_eq!(ctx.loaded.borrow().len(), 3);
        let s = |n: &str| n.to_string();
        let one = events(set.open(WorkerPos { index: 0, peers: 1 }).unwrap().as_mut());
        assert_eq!(
            one,
            [
                (0, s("s1"), Some(0.0)),
                (16, s("s1"), Some(16.0)),
                (20, s("s1"), None),
                (20, s("s2"), Some(0.0)),
                (36, s("s2"), Some(16.0)),
                (52, s("s2"), Some(32.0)),
                (60, s("s2"), None),
                (60, s("s3"), Some(0.0)),
                (70, s("s3"), None),
            ]
        );
        let placed: Vec<(String, usize)> = set.stream_placement(2).into_iter().map(|(n, w)| (n.to_string(), w)).collect();
        assert_eq!(placed, [(s("s1"), 1), (s("s2"), 0), (s("s3"), 1)]);
        let w0 = events(set.open(WorkerPos { index: 0, peers: 2 }).unwrap().as_mut());
        let w1 = events(set.open(WorkerPos { index: 1, peers: 2 }).unwrap().as_mut());
        let rebased = |name: &str, from: u64, to: u64| -> Vec<_> {
            let mine = one.iter().filter(|e| e.1 == name);
            mine.map(|(t, n, f)| (t - from + to, n.clone(), *f)).collect()
        };
        assert_eq!(w0, rebased("s2", 20, 0));
        assert_eq!(w1, [rebased("s1", 0, 0), rebased("s3", 60, 20)].concat());

        // A file another recording also reads (as a FIF file follows its split files) is part
        // of it, not a recording of its own.
        std::fs::write(dir.path().join("s0.rec"), "5 A s3.rec").unwrap();
        let set = build_set(&ctx, "*.rec", build_one()).unwrap();
        let names: Vec<String> = set.stream_placement(1).into_iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!((names, set.total_rows()), (vec![s("s0"), s("s1"), s("s2")], Some(65)));
        std::fs::remove_file(dir.path().join("s0.rec")).unwrap();

        std::fs::write(dir.path().join("s4.rec"), "5 B").unwrap();
        let err = build_set(&ctx, "*.rec", build_one()).err().unwrap().to_string();
        assert!(
            err.contains("s4.rec") && err.contains("other channels (B)") && err.contains("s1.rec"),
            "{err}"
        );
        let err = build_set(&ctx, "none/*.rec", build_one()).err().unwrap().to_string();
        assert!(err.contains("matches no files"), "{err}");
    }

    /// Recordings whose sources hold their parsed samples are kept from the start-up check and
    /// replayed without being built again, while their samples fit in the budget; the others
    /// (and any a second reader of the set replays) are built again. The rows are the same.
    #[test]
    fn recordings_holding_their_samples_are_built_once() {
        let dir = three_recordings();
        let settings = neurostream_engine::PipelineSettings::default();
        let ctx = context(dir.path(), &settings);
        let run = |held: bool, budget: u64| {
            let builds = Arc::new(AtomicUsize::new(0));
            let set = build_set_holding(&ctx, "*.rec", build_counted(held, builds.clone()), budget).unwrap();
            assert_eq!(builds.load(Ordering::SeqCst), 3, "each file checked once at start-up");
            let workers = [0, 1].map(|w| events(set.open(WorkerPos { index: w, peers: 2 }).unwrap().as_mut()));
            let first = builds.load(Ordering::SeqCst) - 3;
            events(set.open(WorkerPos { index: 0, peers: 1 }).unwrap().as_mut());
            let again = builds.load(Ordering::SeqCst) - 3 - first;
            (workers, first, again)
        };
        let (rebuilt, first, again) = run(false, u64::MAX);
        assert_eq!((first, again), (3, 3), "sources that read as they go are built again");
        let (kept, first, again) = run(true, u64::MAX);
        assert_eq!((first, again), (0, 3), "held recordings are replayed as checked, once");
        assert_eq!(kept, rebuilt);
        // 100 bytes hold s1 (80) but neither s2 (160) nor then s3 (40 more).
        let (within, first, _) = run(true, 100);
        assert_eq!(first, 2);
        assert_eq!(within, rebuilt);
        // In a run of 2 processes x 1 worker, the process running worker 1 keeps only the
        // recordings worker 1 reads: the one worker 0 reads is let go.
        let builds = Arc::new(AtomicUsize::new(0));
        let set = build_set_holding(&ctx, "*.rec", build_counted(true, builds.clone()), u64::MAX).unwrap();
        set.runs_on(1..2, 2);
        let on_0 = set.stream_placement(2).iter().filter(|(_, w)| *w == 0).count();
        assert!(on_0 > 0);
        assert_eq!(
            events(set.open(WorkerPos { index: 1, peers: 2 }).unwrap().as_mut()),
            rebuilt[1]
        );
        assert_eq!(builds.load(Ordering::SeqCst), 3, "worker 1's recordings were kept");
        assert_eq!(
            events(set.open(WorkerPos { index: 0, peers: 2 }).unwrap().as_mut()),
            rebuilt[0]
        );
        assert_eq!(builds.load(Ordering::SeqCst), 3 + on_0, "worker 0's were let go");
    }
}
