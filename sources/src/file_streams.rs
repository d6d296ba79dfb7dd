//! Streams of sources whose files are recordings of their own: each file's stream name (its
//! path below the files' deepest common directory, without its extension: `sub-01`,
//! `ses-1/sub-01`; a `.gz` goes with it), and the worker each stream is read on whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The stream name of each of `files`.
pub fn file_stream_names(files: &[PathBuf]) -> Vec<Arc<str>> {
    let common = common_dir(files);
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&common).unwrap_or(f);
            // `x_raw.fif.gz` is `x_raw`, as `x_raw.fif` is.
            let rel = match rel.extension() {
                Some(e) if e.eq_ignore_ascii_case("gz") => rel.with_extension(""),
                _ => rel.to_path_buf(),
            }
            .with_extension("");
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            Arc::from(parts.join("/"))
        })
        .collect()
}

/// The worker of `peers` each of the streams of `sizes` rows is read on: the largest first,
/// each to the worker with the fewest rows so far (ties: the lower index, then the earlier
/// stream), so the workers get about as many rows each.
pub fn place_largest_first(sizes: &[u64], peers: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let mut load = vec![0u64; peers.max(1)];
    let mut placed = vec![0; sizes.len()];
    for i in order {
        let w = (0..load.len()).min_by_key(|&w| (load[w], w)).expect("a worker");
        load[w] += sizes[i];
        placed[i] = w;
    }
    placed
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
        assert_eq!(names(&["/d/a_raw.fif.gz", "/d/b.xdfz"]), ["a_raw", "b"]);
    }
}
