//! Before a run: temporaries of dead runs, and the checkpoint directory (fresh or resumed).

use std::collections::HashMap;
use std::sync::Arc;

use crate::checkpoint::{
    Checkpoint, CheckpointOptions, CheckpointStore, CheckpointedNodes, Checkpointing, Coordinator, Delivery, Fingerprint, Role,
};
use crate::error::{EngineError, Result};
use crate::spec::{Built, CompiledPipeline, Overload};

use super::RunOptions;

/// Removes the temporary files that killed runs left among the sinks' outputs, and says so.
pub(super) fn remove_dead_temporaries(pipeline: &CompiledPipeline) -> Result<()> {
    for node in &pipeline.nodes {
        if let Built::Sink(sink) = &node.built {
            let removed = sink.remove_temporaries(crate::process::TempOwners::DeadRuns)?;
            if !removed.is_empty() {
                tracing::warn!(
                    "[{}]: removed {} temporary file(s) left by runs that were killed: {}",
                    node.spec.qualified_name(),
                    removed.len(),
                    removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Lets every sink prepare its output for a fresh or resumed run (see [`crate::Sink::prepare_output`]).
pub(super) fn prepare_outputs(
    pipeline: &CompiledPipeline,
    resume: bool,
    workers: std::ops::Range<usize>,
    peers: usize,
) -> Result<()> {
    for node in &pipeline.nodes {
        if let Built::Sink(sink) = &node.built {
            sink.prepare_output(resume, workers.clone(), peers)?;
        }
    }
    Ok(())
}

/// Tells every source which `workers` of `peers` this process runs ([`crate::Source::runs_on`]).
pub(super) fn prepare_sources(pipeline: &CompiledPipeline, workers: std::ops::Range<usize>, peers: usize) {
    for node in &pipeline.nodes {
        if let Built::Source(source) = &node.built {
            source.runs_on(workers.clone(), peers);
        }
    }
}

/// Removes the sinks' staged segments once the run is recorded as complete.
pub(super) fn remove_staging(pipeline: &CompiledPipeline) -> Result<()> {
    for node in &pipeline.nodes {
        if let Built::Sink(sink) = &node.built {
            sink.remove_staging()?;
        }
    }
    Ok(())
}

pub(super) enum Prepared {
    /// The directory's run already finished.
    Complete,
    /// Run with this coordinator, from this checkpoint (`None`: from the start).
    Run(Arc<Coordinator>, Option<Checkpoint>),
}

/// Every node's kind, input and configuration, keyed by its qualified name.
pub(super) fn node_fingerprints(pipeline: &CompiledPipeline) -> std::collections::BTreeMap<String, String> {
    pipeline
        .nodes
        .iter()
        .map(|n| {
            let s = &n.spec;
            let config = toml::to_string(&s.config).unwrap_or_default();
            let describe = format!(
                "kind = {:?}, input = {:?}, device = {:?}, on_invalid = {:?}, overload = {:?}\n{config}",
                s.kind, s.input, s.device, s.on_invalid, s.overload
            );
            (s.qualified_name(), describe)
        })
        .collect()
}

/// What identifies a pipeline for its checkpoints: every node's kind, input and configuration.
fn fingerprint(pipeline: &CompiledPipeline, workers: usize) -> Fingerprint {
    let nodes = node_fingerprints(pipeline);
    let inputs = pipeline
        .nodes
        .iter()
        .map(|n| {
            let mut files = n.loaded.clone();
            if let Built::Source(src) = &n.built {
                files.extend(src.input_files());
            }
            files.sort();
            files.dedup();
            (
                n.spec.qualified_name(),
                files.iter().flat_map(|f| file_identities(f)).collect::<Vec<_>>(),
            )
        })
        .filter(|(_, files)| !files.is_empty())
        .collect();
    Fingerprint {
        pipeline: pipeline.settings.name.clone(),
        nodes,
        workers,
        inputs,
    }
}

/// `path (N bytes, modified T)` for a file, or for each file under a directory (an SAE folder,
/// say), sorted: what a resumed run compares to tell that an input changed.
fn file_identities(path: &std::path::Path) -> Vec<String> {
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, 4, &mut files);
        files.sort();
        return files.iter().map(|f| file_identity(f)).collect();
    }
    vec![file_identity(path)]
}

/// Every regular file under `dir`, at most `depth` levels down.
fn collect_files(dir: &std::path::Path, depth: usize, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => collect_files(&path, depth - 1, out),
            Ok(t) if t.is_file() || t.is_symlink() => out.push(path),
            _ => {}
        }
    }
}

/// Files up to this size are identified by their content too (CRC-32), so a replacement that
/// keeps size and modification time (`cp -p`) is still noticed; larger ones by size and time.
const HASHED_INPUT_BYTES: u64 = 64 << 20;

/// `path (N bytes, modified T[, crc32 C])` of one file.
fn file_identity(path: &std::path::Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let content = match m.len() <= HASHED_INPUT_BYTES {
                true => std::fs::read(path).map_or(String::new(), |b| format!(", crc32 {:08x}", crc32fast::hash(&b))),
                false => String::new(),
            };
            format!("{} ({} bytes, modified {modified} ns{content})", path.display(), m.len())
        }
        Err(e) => format!("{} (unreadable: {e})", path.display()),
    }
}

/// Checks that every node can be checkpointed, then opens the directory: fresh, or resuming
/// from its newest checkpoint after finishing that checkpoint's commits. `workers` per process.
///
/// In a multi-process run every process reads the same directory (one machine, or a shared
/// filesystem), but only process 0 locks it, starts it afresh and writes checkpoints; the
/// others read the checkpoint they resume from and commit their own workers' files.
pub(super) fn prepare_checkpoints(
    pipeline: &CompiledPipeline,
    o: &CheckpointOptions,
    options: &RunOptions,
    workers: usize,
) -> Result<Prepared> {
    let (process, processes) = options.cluster.as_ref().map_or((0, 1), |c| (c.process, c.addresses.len()));
    let role = match (process, processes) {
        (_, 1) => Role::Single,
        (0, processes) => Role::Leader { processes },
        (process, _) => Role::Follower { process },
    };
    let local = process * workers..(process + 1) * workers;
    let total = workers * processes;
    let mut problems = Vec::new();
    let (mut sources, mut operators, mut sinks) = (Vec::new(), Vec::new(), Vec::new());
    let mut roots = HashMap::new();
    for node in &pipeline.nodes {
        let label = node.spec.qualified_name();
        let root = node.spec.input.as_deref().map(|i| format!("sources.{}", pipeline.root_of(i)));
        match &node.built {
            Built::Source(src) => {
                if !src.replayable() {
                    tracing::info!(
                        "[{label}] is live: what it reads is journaled in {}, so a resume replays what it had read after the last checkpoint",
                        o.dir.join(crate::checkpoint::JOURNAL_DIR).display()
                    );
                }
                if node.spec.overload != Overload::Block {
                    problems.push(format!(
                        "[{label}] drops rows when overloaded (`overload`), which a resumed run cannot repeat; use overload = \"block\""
                    ));
                }
                sources.push(label);
            }
            Built::Operator(op) => {
                if op.checkpointing() == Checkpointing::Unsupported {
                    problems.push(format!(
                        "[{label}] (`{}`) cannot save its state in checkpoints yet",
                        node.spec.kind.as_deref().unwrap_or("?")
                    ));
                }
                roots.insert(label.clone(), root.unwrap_or_default());
                operators.push(label);
            }
            Built::Sink(sink) => {
                match sink.delivery() {
                    Delivery::Unsupported => problems.push(format!(
                        "[{label}] (`{}`) cannot take part in checkpoints",
                        node.spec.kind.as_deref().unwrap_or("?")
                    )),
                    Delivery::AtLeastOnce => tracing::info!(
                        "[{label}] is a live consumer: after a resume it receives again what followed the last checkpoint"
                    ),
                    Delivery::ExactlyOnce => {}
                }
                roots.insert(label.clone(), root.unwrap_or_default());
                sinks.push(label);
            }
        }
    }
    if !problems.is_empty() {
        return Err(EngineError::Checkpoint(format!(
            "this pipeline cannot be checkpointed:\n{}",
            problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
        )));
    }
    let nodes = CheckpointedNodes {
        sources,
        operators,
        sinks,
        roots,
    };
    let fp = fingerprint(pipeline, total);
    if let Role::Follower { .. } = role {
        return prepare_follower(o, &fp, role, local, total, nodes, options);
    }
    let dir = o.dir.display();
    if o.resume && !o.dir.exists() {
        // Checked before opening, which would create the directory (and make a second
        // `--resume` look like a run killed at its start).
        return Err(nothing_to_resume(&dir));
    }
    let store = CheckpointStore::open(&o.dir)?;
    let existing = store.fingerprint()?;
    let mut resumed = None;
    if o.resume && existing.is_none() && store.killed_before_start() {
        tracing::info!("{dir}: the run was killed before it recorded its pipeline; starting from the beginning");
        store.start_fresh(&fp)?;
    } else if o.resume {
        let Some(existing) = existing else {
            return Err(nothing_to_resume(&dir));
        };
        if let Some(why) = fp.mismatch(&existing) {
            return Err(EngineError::Checkpoint(format!(
                "{dir} belongs to another run: {why}; refusing to resume from it"
            )));
        }
        if store.is_complete() {
            return Ok(Prepared::Complete);
        }
        resumed = store.latest()?;
        match &resumed {
            Some(ck) => crate::checkpoint::commit_staged(&ck.staged_files_of(local.clone()))?,
            None => tracing::info!("{dir}: the run stopped before its first checkpoint; starting from the beginning"),
        }
    } else {
        if existing.is_some() && !store.is_complete() {
            return Err(EngineError::Checkpoint(format!(
                "{dir} holds checkpoints of an unfinished run: pass --resume to continue it, or remove the directory to start over"
            )));
        }
        store.start_fresh(&fp)?;
    }
    Ok(run_from(o, Some(store), (role, local, total, nodes), resumed, options))
}

fn nothing_to_resume(dir: &impl std::fmt::Display) -> EngineError {
    EngineError::Checkpoint(format!(
        "{dir} holds no neurostream checkpoints (no pipeline.json): nothing to resume; run without --resume to start from the beginning"
    ))
}

/// The run's coordinator (`store`: the locked directory, on process 0), from `resumed` or the start.
fn run_from(
    o: &CheckpointOptions,
    store: Option<CheckpointStore>,
    (role, local, total, nodes): (Role, std::ops::Range<usize>, usize, CheckpointedNodes),
    resumed: Option<Checkpoint>,
    options: &RunOptions,
) -> Prepared {
    let last_id = resumed.as_ref().map_or(0, |c| c.id);
    let coordinator = Coordinator::new(
        o.dir.clone(),
        store,
        o.every,
        role,
        local,
        total,
        nodes,
        last_id,
        options.metrics.clone(),
    );
    Prepared::Run(Arc::new(coordinator), resumed)
}

/// A follower's side of [`prepare_checkpoints`]: it reads the directory process 0 owns. A
/// fresh run leaves the checks to process 0 (which refuses for all); a resumed one reads the
/// newest checkpoint and commits its own workers' files of it. Nothing writes checkpoints until
/// every process has connected, so all read the same one.
fn prepare_follower(
    o: &CheckpointOptions,
    fp: &Fingerprint,
    role: Role,
    local: std::ops::Range<usize>,
    total: usize,
    nodes: CheckpointedNodes,
    options: &RunOptions,
) -> Result<Prepared> {
    let dir = o.dir.display();
    let mut resumed = None;
    if o.resume {
        if let Some(existing) = CheckpointStore::fingerprint_in(&o.dir)? {
            if let Some(why) = fp.mismatch(&existing) {
                return Err(EngineError::Checkpoint(format!(
                    "{dir} belongs to another run: {why}; refusing to resume from it"
                )));
            }
            if CheckpointStore::complete_in(&o.dir) {
                return Ok(Prepared::Complete);
            }
            resumed = CheckpointStore::latest_in(&o.dir)?;
            if let Some(ck) = &resumed {
                crate::checkpoint::commit_staged(&ck.staged_files_of(local.clone()))?;
            }
        }
    }
    Ok(run_from(o, None, (role, local, total, nodes), resumed, options))
}
