//! "Did you mean …?" for names a user mistyped: kinds, keys, sections.

/// The candidate closest to `name` by edit distance, when it is close enough to be a typo
/// (at most one edit for short names, a third of the length for longer ones).
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `; did you mean `x`?` for a message, or nothing.
pub fn hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, candidates).map_or(String::new(), |c| format!("; did you mean `{c}`?"))
}

/// Levenshtein distance (insertions, deletions, substitutions), by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_strangers_find_none() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(did_you_mean("normalise", ["normalize", "notch", "pick"]), Some("normalize"));
        assert_eq!(did_you_mean("chanels", ["channels", "seconds"]), Some("channels"));
        assert_eq!(
            did_you_mean("source", ["pipeline", "sources", "operators", "sinks"]),
            Some("sources")
        );
        assert_eq!(did_you_mean("bandpass_magic", ["normalize", "butterworth"]), None);
        assert_eq!(hint("ordr", ["order", "cutoff"]), "; did you mean `order`?");
    }
}
