//! The README's pipeline reference is generated from the config types: every kind has one
//! `<!-- keys: SECTION KIND -->` block whose table equals what `neurostream kinds KIND --markdown`
//! prints. `NEUROSTREAM_UPDATE_README=1 cargo test --test reference` rewrites the blocks.

use std::collections::BTreeMap;
use std::path::Path;

use neurostream::reference::{markdown_table, KindDoc};

const OPEN: &str = "<!-- keys: ";
const CLOSE: &str = "<!-- /keys -->";

/// A generated block in the README: where its table starts and ends (line indices).
struct Block {
    table: std::ops::Range<usize>,
}

fn blocks(lines: &[&str]) -> Result<BTreeMap<(String, String), Block>, String> {
    let mut found = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(rest) = lines[i].strip_prefix(OPEN) {
            let mut words = rest.split_whitespace();
            let (Some(section), Some(kind)) = (words.next(), words.next()) else {
                return Err(format!("README.md:{}: a keys block names no section and kind", i + 1));
            };
            let end = (i + 1..lines.len())
                .find(|&j| lines[j] == CLOSE)
                .ok_or_else(|| format!("README.md:{}: keys block of `{kind}` is not closed", i + 1))?;
            let key = (section.to_string(), kind.to_string());
            if found.insert(key, Block { table: i + 1..end }).is_some() {
                return Err(format!("README.md:{}: a second keys block for {section} `{kind}`", i + 1));
            }
            i = end;
        }
        i += 1;
    }
    Ok(found)
}

#[test]
fn readme_reference_matches_the_config_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let found = blocks(&lines).unwrap();
    let docs: Vec<KindDoc> = neurostream::registry().reference();
    let wanted: BTreeMap<(String, String), String> = docs
        .iter()
        .map(|d| ((d.section.to_string(), d.kind.to_string()), markdown_table(d)))
        .collect();

    let missing: Vec<_> = wanted.keys().filter(|k| !found.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "README.md has no keys block for {missing:?}: add `{OPEN}SECTION KIND -->` / `{CLOSE}` after the kind's description"
    );
    let unknown: Vec<_> = found.keys().filter(|k| !wanted.contains_key(*k)).collect();
    assert!(
        unknown.is_empty(),
        "README.md has keys blocks for kinds that are not registered: {unknown:?}"
    );

    let stale: Vec<&(String, String)> = found
        .iter()
        .filter(|(k, b)| lines[b.table.clone()].join("\n") + "\n" != wanted[*k])
        .map(|(k, _)| k)
        .collect();
    if stale.is_empty() {
        return;
    }
    if std::env::var_os("NEUROSTREAM_UPDATE_README").is_some() {
        let by_start: BTreeMap<usize, &(String, String)> = found.iter().map(|(k, b)| (b.table.start, k)).collect();
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            out.push(lines[i].to_string());
            match by_start.get(&(i + 1)).filter(|_| lines[i].starts_with(OPEN)) {
                Some(k) => {
                    out.extend(wanted[*k].lines().map(str::to_string));
                    i = found[*k].table.end; // the closing line, copied next
                }
                None => i += 1,
            }
        }
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
        eprintln!("rewrote the keys blocks of {stale:?} in README.md");
        return;
    }
    panic!(
        "README.md's key tables of {stale:?} differ from the config types (doc comments, defaults, units): \
         run `NEUROSTREAM_UPDATE_README=1 cargo test --test reference` and commit README.md"
    );
}

#[test]
fn every_kind_documents_every_key() {
    for doc in neurostream::registry().reference() {
        for key in &doc.keys {
            assert!(
                !key.meaning.is_empty(),
                "{} `{}`: key `{}` has no doc comment on its config field",
                doc.section,
                doc.kind,
                key.name
            );
        }
    }
}

/// The README's benchmark results are copied from the recorded tables in `bench/` by
/// `bench/readme.py`; a table rewritten without the README (or the README edited by hand) fails.
#[test]
fn readme_benchmark_results_match_the_recorded_tables() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("NEUROSTREAM_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = std::process::Command::new(&python)
        .arg(root.join("bench/readme.py"))
        .arg("--check")
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("running {python} bench/readme.py --check: {e}"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
