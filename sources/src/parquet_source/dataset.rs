//! The files a `parquet` source reads, and the streams they form (`stream_by`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the files of a source divide into streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StreamBy {
    /// Every file one stream, named by the node.
    One,
    /// Each file its own stream, named by its path below the files' common directory, without
    /// `.parquet`.
    File,
    /// The files under one value of a Hive partition key (`key=value/`) form the stream named
    /// by the value.
    Key(String),
}

impl StreamBy {
    /// Parses the `stream_by` key.
    pub(super) fn parse(value: Option<&str>) -> Result<StreamBy, String> {
        match value {
            None => Ok(StreamBy::One),
            Some("file") => Ok(StreamBy::File),
            Some(k) if !k.is_empty() && !k.contains(['/', '=', '\\']) && !k.starts_with(['.', '_']) => {
                Ok(StreamBy::Key(k.to_string()))
            }
            Some(k) => Err(format!(
                "`stream_by = \"{k}\"`: give \"file\" or the name of a Hive partition key (the `key` of `key=value/` directories)"
            )),
        }
    }
}
/// Expands a file, directory or glob into the files it names, sorted by path. A directory is
/// read as a dataset, the way pyarrow, Spark and DuckDB's Hive partitioning lay one out: its
/// `*.parquet` files at any depth (`date=2026-12-03/hour=17/part-….parquet`), leaving out
/// every file and directory whose name begins with `.` or `_` (temporary parts, `_SUCCESS`,
/// `_manifest/`, Spark's `_temporary/`).
pub fn resolve_files(path: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let text = path.to_string_lossy();
    let mut files: Vec<PathBuf> = if text.contains(['*', '?', '[']) {
        glob::glob(&text)
            .map_err(|e| format!("bad glob `{text}`: {e}"))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect()
    } else if path.is_dir() {
        let mut files = Vec::new();
        dataset_files(path, 0, &mut files)?;
        files
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(format!("`path` {} does not exist", path.display()));
    };
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "`path` {} matches no Parquet files (a directory is searched at every depth for `*.parquet`, \
             leaving out names that begin with `.` or `_`)",
            path.display()
        ));
    }
    Ok(files)
}

/// Directory levels a dataset may nest (partition levels); deeper ones, such as a symbolic
/// link that loops, are an error.
const MAX_DATASET_DEPTH: usize = 32;

/// The `*.parquet` files under `dir`, at every depth, leaving out names that begin with `.`
/// or `_`.
fn dataset_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::result::Result<(), String> {
    if depth > MAX_DATASET_DEPTH {
        return Err(format!(
            "{}: more than {MAX_DATASET_DEPTH} directory levels (a symbolic link that loops?)",
            dir.display()
        ));
    }
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        let p = entry.path();
        if p.is_dir() {
            dataset_files(&p, depth + 1, out)?;
        } else if p.is_file() && p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// The stream of each file (in `files`' order), for `by`; `node` names the one stream of
/// [`StreamBy::One`].
pub(super) fn stream_names(files: &[PathBuf], by: &StreamBy, node: &str) -> Result<Vec<Arc<str>>, String> {
    match by {
        StreamBy::One => Ok(vec![Arc::from(node); files.len()]),
        StreamBy::File => Ok(crate::file_streams::file_stream_names(files)),
        StreamBy::Key(key) => files
            .iter()
            .map(|f| {
                let dirs = f.parent().map(|p| p.components().collect::<Vec<_>>()).unwrap_or_default();
                dirs.iter()
                    .rev()
                    .find_map(|c| {
                        let c = c.as_os_str().to_string_lossy();
                        let (k, v) = c.split_once('=')?;
                        (unescape(k) == *key).then(|| Arc::from(unescape(v)))
                    })
                    .ok_or_else(|| {
                        format!(
                            "{}: no `{key}=…` directory in its path (`stream_by = \"{key}\"` reads the files of each value of this Hive partition key as one stream)",
                            f.display()
                        )
                    })
            })
            .collect(),
    }
}

/// Undoes Hive's escaping of partition names and values (`%XX`); a `%` without two hex digits
/// after it stays as it is.
pub(super) fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn a_directory_is_a_dataset_at_every_depth_without_hidden_or_underscored_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for rel in [
            "date=2026-12-03/hour=17/part-00000-000001.parquet",
            "date=2026-12-03/hour=09/part-00001-000000.parquet",
            "date=2026-12-03/hour=09/.part-00000-000002.parquet.12-0.tmp",
            "date=2026-12-03/hour=09/.part-00000-000003.staged",
            "date=2026-12-03/_SUCCESS",
            "_manifest/worker-00000.json",
            "_temporary/0/part-0.parquet",
            ".hidden/x.parquet",
            "top.parquet",
            "notes.txt",
        ] {
            touch(root, rel);
        }
        let files = resolve_files(root).unwrap();
        let rel: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            rel,
            [
                "date=2026-12-03/hour=09/part-00001-000000.parquet",
                "date=2026-12-03/hour=17/part-00000-000001.parquet",
                "top.parquet"
            ]
        );
        let empty = tempfile::tempdir().unwrap();
        touch(empty.path(), "_temporary/part-0.parquet");
        let err = resolve_files(empty.path()).unwrap_err();
        assert!(err.contains("matches no Parquet files") && err.contains("`_`"), "{err}");
    }

    #[test]
    fn streams_by_file_and_by_partition_key() {
        let files: Vec<PathBuf> = [
            "/d/subject=01/session=a/part-0.parquet",
            "/d/subject=01/session=b/part-0.parquet",
            "/d/subject=a%2Fb/session=a/part-0.parquet",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let names = |by: &StreamBy| -> Vec<String> {
            stream_names(&files, by, "eeg")
                .unwrap()
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(names(&StreamBy::One), ["eeg", "eeg", "eeg"]);
        assert_eq!(
            names(&StreamBy::File),
            [
                "subject=01/session=a/part-0",
                "subject=01/session=b/part-0",
                "subject=a%2Fb/session=a/part-0"
            ]
        );
        assert_eq!(names(&StreamBy::Key("subject".into())), ["01", "01", "a/b"]);
        assert_eq!(names(&StreamBy::Key("session".into())), ["a", "b", "a"]);
        let err = stream_names(&files, &StreamBy::Key("run".into()), "eeg").unwrap_err();
        assert!(
            err.contains("subject=01/session=a/part-0.parquet: no `run=…` directory"),
            "{err}"
        );
        let one = [PathBuf::from("/d/rec/sub-01.parquet")];
        assert_eq!(stream_names(&one, &StreamBy::File, "eeg").unwrap()[0].as_ref(), "sub-01");
    }

    #[test]
    fn stream_by_values_and_hive_unescaping() {
        assert_eq!(StreamBy::parse(None).unwrap(), StreamBy::One);
        assert_eq!(StreamBy::parse(Some("file")).unwrap(), StreamBy::File);
        assert_eq!(StreamBy::parse(Some("subject")).unwrap(), StreamBy::Key("subject".into()));
        for bad in ["", "a/b", "k=v", "_x", ".x"] {
            assert!(StreamBy::parse(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(unescape("a%2Fb%3Dc"), "a/b=c");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz%4"), "%zz%4");
    }
}
