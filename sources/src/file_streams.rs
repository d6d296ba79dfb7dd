//! Stream names for files that are recordings of their own: each file's path below the files'
//! deepest common directory, without its extension (`sub-01`, `ses-1/sub-01`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The stream name of each of `files`.
pub fn file_stream_names(files: &[PathBuf]) -> Vec<Arc<str>> {
    let common = common_dir(files);
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&common).unwrap_or(f).with_extension("");
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            Arc::from(parts.join("/"))
        })
        .collect()
}

/// The deepest directory holding every file.
fn common_dir(files: &[PathBuf]) -> PathBuf {
    let mut common: Option<PathBuf> = None;
    for f in files {
        let parent = f.parent().unwrap_or(Path::new("")).to_path_buf();
        common = Some(match common {
            None => parent,
            Some(c) => c
                .components()
                .zip(parent.components())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a.as_os_str().to_owned())
                .collect(),
        });
    }
    common.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_paths_below_the_common_directory_without_extensions() {
        let names = |files: &[&str]| -> Vec<String> {
            let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
            file_stream_names(&files).iter().map(|s| s.to_string()).collect()
        };
        assert_eq!(names(&["/d/rec/sub-01.edf"]), ["sub-01"]);
        assert_eq!(names(&["/d/a/x.edf", "/d/b/x.edf"]), ["a/x", "b/x"]);
        assert_eq!(names(&["/d/sub-01.edf", "/d/sub-02.bdf"]), ["sub-01", "sub-02"]);
        assert_eq!(names(&["/d/s=1/p.parquet", "/d/s=1/q/p.parquet"]), ["p", "q/p"]);
    }
}
