//! Writing files so that readers and crashes never see them half-written: the one place the
//! engine and its nodes do it.
//!
//! [`replace_atomic`] writes under a hidden temporary name beside the target (`.NAME.tmp`),
//! fsyncs it, renames it over the target and fsyncs the directory, so after a crash the target
//! holds either the old or the new contents, never a mixture; on error the temporary is removed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Fsyncs a directory, so a rename or a new file in it survives a crash (best effort: some
/// file systems cannot sync directories).
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The hidden temporary name [`replace_atomic`] writes `path` under: `.NAME.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` atomically with what `write` puts in the temporary file it is given
/// (see the module docs).
pub fn replace_atomic(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    let temp = temp_path(path);
    let result = write(&temp)
        .and_then(|()| File::open(&temp)?.sync_all())
        .and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    result
}

/// Replaces `path` atomically with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_atomic(path, |temp| File::create(temp)?.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_or_not_at_all() {
        let dir = tempfile_dir();
        let target = dir.join("a.json");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let failed = replace_atomic(&target, |temp| {
            std::fs::write(temp, b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"two",
            "a failed write keeps the old contents"
        );
        assert!(!temp_path(&target).exists(), "the temporary is removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("neurostream-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
