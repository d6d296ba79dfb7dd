//! The manifest of rolling Parquet output: `_manifest/worker-NNNNN.json` per writer, listing
//! its committed parts, how far its event time has got (its watermark) and whether it has
//! finished, and the `_SUCCESS` files it implies: a partition is complete once every writer
//! has passed its end (or finished).

use std::path::{Path, PathBuf};

use neurostream_engine::files::{sync_dir, write_atomic};
use serde::{Deserialize, Serialize};

/// One committed part, as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct PartInfo {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// Its partition directory (relative; empty when unpartitioned).
    pub partition: String,
    /// Sequence number among its writer's parts.
    pub seq: u64,
    /// Rows in it.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Earliest and latest event time of its rows (ns since the Unix epoch), when known.
    pub min_time_ns: Option<i64>,
    /// See `min_time_ns`.
    pub max_time_ns: Option<i64>,
    /// End of its partition's event-time interval (ns), for time partitions.
    pub partition_end_ns: Option<i64>,
    /// The checkpoint that committed it (0 outside checkpointed runs).
    #[serde(default)]
    pub checkpoint: u64,
}

/// One writer's manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Manifest {
    /// The writer (worker index).
    pub worker: usize,
    /// How many writers share the output directory.
    pub writers: usize,
    /// The latest event time it has written (ns since the Unix epoch).
    pub watermark_ns: Option<i64>,
    /// True once it has written everything it will.
    pub finished: bool,
    /// Rows dropped as later than `late_after` behind the watermark.
    pub late_rows: u64,
    /// Its committed parts, oldest first.
    pub parts: Vec<PartInfo>,
}

/// The name of the manifest directory inside an output directory.
pub(super) const MANIFEST_DIR: &str = "_manifest";

/// The manifest directory of an output directory.
pub(super) fn manifest_dir(root: &Path) -> PathBuf {
    root.join(MANIFEST_DIR)
}

/// The path of `worker`'s manifest.
pub(super) fn manifest_path(root: &Path, worker: usize) -> PathBuf {
    manifest_dir(root).join(format!("worker-{worker:05}.json"))
}

impl Manifest {
    /// Writes it atomically.
    pub(super) fn write(&self, root: &Path) -> Result<(), String> {
        let dir = manifest_dir(root);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = manifest_path(root, self.worker);
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_atomic(&path, &json).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Reads `worker`'s manifest; `None` when it does not exist (yet) or cannot be read.
    pub(super) fn read(root: &Path, worker: usize) -> Option<Manifest> {
        let bytes = std::fs::read(manifest_path(root, worker)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether this writer is done with everything before `end` (ns).
    fn passed(&self, end: Option<i64>) -> bool {
        self.finished || end.is_some_and(|e| self.watermark_ns.is_some_and(|w| w >= e))
    }
}

/// Writes `_SUCCESS` into each of `pending` (partition, end) whose end every writer has passed,
/// reading the other writers' manifests; returns those still pending.
pub(super) fn mark_complete(
    root: &Path,
    own: &Manifest,
    pending: Vec<(String, Option<i64>)>,
) -> Result<Vec<(String, Option<i64>)>, String> {
    if pending.is_empty() {
        return Ok(pending);
    }
    let others: Vec<Option<Manifest>> = (0..own.writers)
        .map(|w| {
            if w == own.worker {
                Some(own.clone())
            } else {
                Manifest::read(root, w)
            }
        })
        .collect();
    // Once every writer has finished, every partition is complete, those of writers that
    // finished before the others included (they never look again).
    let mut pending = pending;
    if others.iter().all(|m| m.as_ref().is_some_and(|m| m.finished)) {
        let listed = others.iter().flatten().flat_map(|m| &m.parts);
        pending.extend(listed.map(|p| (p.partition.clone(), p.partition_end_ns)));
        pending.sort();
        pending.dedup();
    }
    let mut still = Vec::new();
    for (partition, end) in pending {
        let done = others.iter().all(|m| m.as_ref().is_some_and(|m| m.passed(end)));
        if !done {
            still.push((partition, end));
            continue;
        }
        let dir = root.join(&partition);
        if !dir.is_dir() {
            continue; // retention removed it
        }
        let marker = dir.join("_SUCCESS");
        if !marker.exists() {
            // Empty, so there is nothing to see half-written; several writers may create it.
            std::fs::File::create(&marker).map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
            sync_dir(&root.join(&partition));
        }
    }
    Ok(still)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: &str) -> PartInfo {
        PartInfo {
            path: format!("{partition}/part-00000-000000.parquet"),
            partition: partition.into(),
            seq: 0,
            rows: 1,
            bytes: 1,
            min_time_ns: None,
            max_time_ns: None,
            partition_end_ns: None,
            checkpoint: 0,
        }
    }

    /// A writer that finished first left its column partitions pending (the other writer had
    /// not finished); the last writer to finish marks them with its own.
    #[test]
    fn the_last_writer_to_finish_marks_every_partition() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in ["stream=a", "stream=b"] {
            std::fs::create_dir_all(root.join(p)).unwrap();
        }
        let first = Manifest {
            worker: 1,
            writers: 2,
            finished: true,
            parts: vec![part("stream=a")],
            ..Manifest::default()
        };
        first.write(root).unwrap();
        let mut last = Manifest {
            worker: 0,
            writers: 2,
            finished: false,
            parts: vec![part("stream=b")],
            ..Manifest::default()
        };
        let pending = vec![("stream=b".to_string(), None), (String::new(), None)];
        let still = mark_complete(root, &last, pending.clone()).unwrap();
        assert_eq!(still, pending, "nothing is complete before writer 0 finishes");
        assert!(!root.join("stream=a/_SUCCESS").exists());
        last.finished = true;
        assert!(mark_complete(root, &last, pending).unwrap().is_empty());
        for marker in ["_SUCCESS", "stream=a/_SUCCESS", "stream=b/_SUCCESS"] {
            assert!(root.join(marker).exists(), "{marker}");
        }
    }
}
