//! Other processes on this machine: whether a run that left files behind is still alive.

/// Whether a process with this pid is alive. Where this cannot be told (no `/proc`), it answers
/// true, so nothing a live run may still use is ever removed.
pub fn is_alive(pid: u32) -> bool {
    let proc_root = std::path::Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

/// The pid in a temporary file name `.NAME.<pid>-<worker>.tmp`, when it has that shape.
pub fn temp_file_pid(file_name: &str) -> Option<u32> {
    let stem = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tag) = stem.rsplit_once('.')?;
    let (pid, worker) = tag.split_once('-')?;
    if worker.is_empty() || !worker.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whose temporary files (`.NAME.<pid>-<worker>.tmp`) to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TempOwners {
    /// Runs that are no longer alive (killed earlier): removed when a run starts.
    DeadRuns,
    /// This process: removed when it must stop at once (a lost cluster peer).
    ThisProcess,
}

impl TempOwners {
    /// Whether `file_name` is a temporary file of these owners.
    pub fn own(self, file_name: &str) -> bool {
        temp_file_pid(file_name).is_some_and(|pid| match self {
            TempOwners::DeadRuns => pid != std::process::id() && !is_alive(pid),
            TempOwners::ThisProcess => pid == std::process::id(),
        })
    }
}

/// True for a temporary file `.NAME.<pid>-<worker>.tmp` left by a run that is no longer alive.
pub fn is_dead_runs_temp_file(file_name: &str) -> bool {
    TempOwners::DeadRuns.own(file_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_and_liveness() {
        assert_eq!(temp_file_pid(".z.parquet.1234-0.tmp"), Some(1234));
        assert_eq!(temp_file_pid(".part-00001.parquet.77-12.tmp"), Some(77));
        assert_eq!(temp_file_pid("z.parquet.1234-0.tmp"), None);
        assert_eq!(temp_file_pid(".pipeline.json.tmp"), None);
        assert_eq!(temp_file_pid(".z.parquet.12x-0.tmp"), None);
        assert!(is_alive(std::process::id()));
        assert!(!is_dead_runs_temp_file(&format!(".z.parquet.{}-0.tmp", std::process::id())));
        // Pids above the kernel's maximum (4194304) never belong to a live process.
        assert!(is_dead_runs_temp_file(".z.parquet.4294967290-0.tmp"));
    }
}
