//! The checkpoint directory: one file per checkpoint, written atomically and checksummed.
//!
//! ```text
//! DIR/pipeline.json        which pipeline the directory belongs to (written when the run starts)
//! DIR/ckpt-00000007.nsck   a checkpoint: magic, CRC-32 and length, then the lz4 body
//! DIR/COMPLETE             the run finished and its outputs are final
//! DIR/LOCK                 the pid of the run using the directory, locked (flock) while it runs
//! ```
//!
//! The lock is an OS file lock held for the life of the [`CheckpointStore`]: it dies with the
//! process (kill -9 included), and a second run on the same directory is refused while it is held.
//!
//! A checkpoint is written to a hidden temporary file, fsynced, renamed and the directory
//! fsynced, so a crash or a full disk leaves the previous checkpoint as the latest valid one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;

use crate::files::{sync_dir, write_atomic};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

use super::{Checkpoint, StagedFile};

/// Magic bytes and format version (2: postcard bodies; 1 was bincode).
const MAGIC: &[u8; 8] = b"NSCKPT\0\x02";
const HEADER: usize = 8 + 4 + 8;
/// Checkpoints kept besides the newest (a fallback for manual recovery).
const KEEP_OLDER: usize = 1;

/// Which pipeline a checkpoint directory belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The pipeline's name.
    pub pipeline: String,
    /// Each node (`sources.NAME`, ...) with its kind, input and configuration as TOML.
    pub nodes: BTreeMap<String, String>,
    /// Worker threads of the run (state is partitioned by worker).
    pub workers: usize,
    /// Each source's input files: path, size in bytes and modification time.
    #[serde(default)]
    pub inputs: BTreeMap<String, Vec<String>>,
}

impl Fingerprint {
    /// Why `other` (from the directory) does not match this pipeline; `None` when it does.
    pub fn mismatch(&self, other: &Fingerprint) -> Option<String> {
        if self.pipeline != other.pipeline {
            return Some(format!(
                "it belongs to pipeline `{}`, not `{}`",
                other.pipeline, self.pipeline
            ));
        }
        for (node, config) in &self.nodes {
            match other.nodes.get(node) {
                None => return Some(format!("its pipeline has no node `{node}`")),
                Some(c) if c != config => return Some(format!("node `{node}` is configured differently")),
                _ => {}
            }
        }
        if let Some(extra) = other.nodes.keys().find(|n| !self.nodes.contains_key(*n)) {
            return Some(format!("its pipeline has a node `{extra}` this one lacks"));
        }
        for (node, files) in &self.inputs {
            if let Some(then) = other.inputs.get(node).filter(|then| *then != files) {
                return Some(format!(
                    "the input files of `{node}` changed since the checkpoint (then: {}; now: {})",
                    then.join(", "),
                    files.join(", ")
                ));
            }
        }
        if self.workers != other.workers {
            return Some(format!(
                "it was taken with {} workers; resume with `-w {}`",
                other.workers, other.workers
            ));
        }
        None
    }
}

/// A checkpoint directory, locked for this run.
pub struct CheckpointStore {
    dir: PathBuf,
    /// The locked `LOCK` file; the lock goes when it is closed (or the process dies).
    _lock: File,
    /// `LOCK` was there before this run opened the directory: a run has started here before.
    started_before: bool,
}

fn ck_err(message: String) -> EngineError {
    EngineError::Checkpoint(message)
}

impl CheckpointStore {
    /// Opens (creating) the directory and locks it for this run. Refused, naming the holder's
    /// pid, while another run holds the lock.
    pub fn open(dir: &Path) -> Result<CheckpointStore> {
        // An existing, empty directory: a run killed between creating it and locking it.
        let existed_empty = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
        std::fs::create_dir_all(dir).map_err(|e| ck_err(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("LOCK");
        let started_before = existed_empty || path.exists();
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ck_err(format!("cannot open {}: {e}", path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(ck_err(format!(
                    "{} is in use by another run (pid {}); wait for it to end or use another --checkpoint-dir",
                    dir.display(),
                    if holder.is_empty() { "unknown" } else { holder }
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(ck_err(format!("cannot lock {}: {e}", path.display())));
            }
        }
        let recorded = (|| {
            use std::io::Seek;
            lock.set_len(0)?;
            lock.seek(std::io::SeekFrom::Start(0))?;
            writeln!(lock, "{}", std::process::id())?;
            lock.sync_all()
        })();
        recorded.map_err(|e| ck_err(format!("cannot write {}: {e}", path.display())))?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            _lock: lock,
            started_before,
        })
    }

    /// True when a run started here but was killed before recording its pipeline (it had
    /// created or locked the directory, or begun writing `.pipeline.json.tmp`, but no
    /// `pipeline.json` exists): resuming it means starting from the beginning.
    pub fn killed_before_start(&self) -> bool {
        !self.fingerprint_path().exists() && (self.started_before || self.dir.join(".pipeline.json.tmp").exists())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn fingerprint_path(&self) -> PathBuf {
        self.dir.join("pipeline.json")
    }

    fn complete_path(&self) -> PathBuf {
        self.dir.join("COMPLETE")
    }

    /// The fingerprint recorded in the directory, if any.
    pub fn fingerprint(&self) -> Result<Option<Fingerprint>> {
        CheckpointStore::fingerprint_in(&self.dir)
    }

    /// The fingerprint recorded in `dir`, if any, read without locking it (a follower process
    /// reads the directory process 0 holds).
    pub fn fingerprint_in(dir: &Path) -> Result<Option<Fingerprint>> {
        let path = dir.join("pipeline.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ck_err(format!("{} is corrupt ({e}); refusing to resume from it", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ck_err(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Starts a fresh run in the directory: removes old checkpoints and records `fingerprint`.
    pub fn start_fresh(&self, fingerprint: &Fingerprint) -> Result<()> {
        for (_, path) in self.checkpoint_files()? {
            std::fs::remove_file(&path).map_err(|e| ck_err(format!("cannot remove {}: {e}", path.display())))?;
        }
        let _ = std::fs::remove_file(self.complete_path());
        let journal = self.dir.join(super::JOURNAL_DIR);
        if journal.exists() {
            std::fs::remove_dir_all(&journal).map_err(|e| ck_err(format!("cannot remove {}: {e}", journal.display())))?;
        }
        let json = serde_json::to_vec_pretty(fingerprint).expect("fingerprints serialize");
        write_atomic(&self.fingerprint_path(), &json)
            .map_err(|e| ck_err(format!("cannot write {}: {e}", self.fingerprint_path().display())))
    }

    /// Whether the run that used this directory finished.
    pub fn is_complete(&self) -> bool {
        CheckpointStore::complete_in(&self.dir)
    }

    /// Whether the run that used `dir` finished, read without locking it.
    pub fn complete_in(dir: &Path) -> bool {
        dir.join("COMPLETE").exists()
    }

    /// Records that the run finished and its outputs are final.
    pub fn mark_complete(&self) -> Result<()> {
        write_atomic(&self.complete_path(), b"complete\n")
            .map_err(|e| ck_err(format!("cannot write {}: {e}", self.complete_path().display())))
    }

    /// Committed checkpoint files, oldest first, with their ids.
    fn checkpoint_files(&self) -> Result<Vec<(u64, PathBuf)>> {
        checkpoint_files_in(&self.dir)
    }

    /// The newest checkpoint in `dir`, read without locking it (see [`CheckpointStore::latest`]).
    pub fn latest_in(dir: &Path) -> Result<Option<Checkpoint>> {
        match checkpoint_files_in(dir)?.pop() {
            None => Ok(None),
            Some((_, path)) => read_checkpoint(&path).map(Some),
        }
    }

    /// Reads the newest checkpoint. A newest file that is corrupt is an error (never silently
    /// skipped: it was committed, so damage means something outside the engine changed it).
    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        CheckpointStore::latest_in(&self.dir)
    }

    /// Writes `checkpoint` atomically and removes all but the newest older ones. Returns its size
    /// in bytes.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<u64> {
        let path = self.dir.join(format!("ckpt-{:08}.nsck", checkpoint.id));
        let body = postcard::to_stdvec(checkpoint).map_err(|e| ck_err(format!("cannot encode checkpoint: {e}")))?;
        let body = lz4_flex::compress_prepend_size(&body);
        let mut bytes = Vec::with_capacity(HEADER + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&body);
        write_atomic(&path, &bytes).map_err(|e| {
            ck_err(format!(
                "checkpoint {} could not be written to {} ({e}); the previous checkpoint stays valid",
                checkpoint.id,
                self.dir.display()
            ))
        })?;
        let files = self.checkpoint_files()?;
        for (_, old) in files.iter().rev().skip(1 + KEEP_OLDER) {
            let _ = std::fs::remove_file(old);
        }
        Ok(bytes.len() as u64)
    }
}

/// Committed checkpoint files in `dir`, oldest first, with their ids.
fn checkpoint_files_in(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ck_err(format!("cannot list {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(id) = name
            .strip_prefix("ckpt-")
            .and_then(|r| r.strip_suffix(".nsck"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            files.push((id, e.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and verifies one checkpoint file.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bad = |why: String| ck_err(format!("{} is corrupt ({why}); refusing to resume from it", path.display()));
    let bytes = std::fs::read(path).map_err(|e| ck_err(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() >= HEADER && bytes[..7] == MAGIC[..7] && bytes[7] != MAGIC[7] {
        return Err(ck_err(format!(
            "{} was written by another neurostream version (checkpoint format {}, this one reads {}): \
             checkpoints resume only with the version that wrote them; remove the directory to start over",
            path.display(),
            bytes[7],
            MAGIC[7]
        )));
    }
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("not a neurostream checkpoint: wrong magic bytes".into()));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(bad(format!("{} body bytes, the header says {len}", body.len())));
    }
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    let raw = lz4_flex::decompress_size_prepended(body).map_err(|e| bad(format!("lz4: {e}")))?;
    postcard::from_bytes(&raw).map_err(|e| bad(format!("decoding: {e}")))
}

/// Fsyncs each staged file that is still staged, and their directories, so a checkpoint that
/// lists them never points at data a power cut could take back.
pub fn sync_staged(files: &[StagedFile]) -> Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        if let Ok(file) = std::fs::File::open(&f.staged) {
            file.sync_all().map_err(|e| EngineError::Output {
                path: f.staged.clone(),
                message: format!("cannot sync a staged file for the checkpoint: {e}"),
            })?;
            if let Some(d) = f.staged.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
    }
    for d in dirs {
        sync_dir(&d);
    }
    Ok(())
}

/// Moves each staged output file to its committed name (when it is still staged), then
/// fsyncs the directories. Idempotent: resuming repeats it for the checkpoint it resumes from.
pub fn commit_staged(files: &[StagedFile]) -> Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        if f.staged == f.committed {
            continue; // only synced (see `StagedFile`)
        }
        if f.staged.exists() {
            std::fs::rename(&f.staged, &f.committed).map_err(|e| EngineError::Output {
                path: f.committed.clone(),
                message: format!("cannot commit staged file {}: {e}", f.staged.display()),
            })?;
        } else if !f.committed.exists() {
            return Err(ck_err(format!(
                "output {} of the checkpoint is missing (neither it nor {} exists)",
                f.committed.display(),
                f.staged.display()
            )));
        }
        if let Some(d) = f.committed.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs {
        sync_dir(&d);
    }
    Ok(())
}
