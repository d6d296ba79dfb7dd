//! EDF+ annotations: the time-stamped annotation lists (TALs) stored in the `EDF Annotations`
//! signal. Each TAL is `±onset[\x15duration]\x14[text\x14]*\x00`; the first TAL of every data
//! record has no text and gives the record's start time (seconds from the file's start).

/// One annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    /// Onset in seconds from the start of the recording.
    pub onset_s: f64,
    /// Duration in seconds, when given.
    pub duration_s: Option<f64>,
    /// The annotation text (UTF-8).
    pub text: String,
}

/// What one record's annotation bytes hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordAnnotations {
    /// The record's start (the time-keeping TAL), when present.
    pub record_start_s: Option<f64>,
    /// The annotations, in file order.
    pub annotations: Vec<Annotation>,
}

/// Parses the annotation signal's bytes of one record; `record` is its index (for messages).
pub fn parse_record(bytes: &[u8], record: usize) -> Result<RecordAnnotations, String> {
    let mut out = RecordAnnotations::default();
    let mut first = true;
    for tal in bytes.split(|&b| b == 0) {
        if tal.is_empty() {
            continue; // padding between and after TALs
        }
        let mut fields = tal.split(|&b| b == 0x14);
        let head = fields.next().unwrap_or_default();
        let mut timing = head.split(|&b| b == 0x15);
        let onset_bytes = timing.next().unwrap_or_default();
        let onset = parse_time(onset_bytes).ok_or_else(|| {
            format!(
                "data record {record}: annotation onset `{}` is not ±seconds",
                lossy(onset_bytes)
            )
        })?;
        let duration = match timing.next() {
            Some(d) if !d.is_empty() => Some(
                parse_duration(d)
                    .ok_or_else(|| format!("data record {record}: annotation duration `{}` is not seconds", lossy(d)))?,
            ),
            _ => None,
        };
        let texts: Vec<String> = fields.filter(|t| !t.is_empty()).map(lossy).collect();
        if first && texts.is_empty() {
            out.record_start_s = Some(onset);
        }
        first = false;
        for text in texts {
            out.annotations.push(Annotation {
                onset_s: onset,
                duration_s: duration,
                text,
            });
        }
    }
    Ok(out)
}

fn parse_time(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if !(s.starts_with('+') || s.starts_with('-')) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn parse_duration(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_time_keeping_and_annotations_with_and_without_duration() {
        let bytes = b"+12.5\x14\x14\x00+13.25\x151.5\x14Sleep stage W\x14second\x14\x00+14\x14spike\x14\x00\x00\x00";
        let r = parse_record(bytes, 0).unwrap();
        assert_eq!(r.record_start_s, Some(12.5));
        assert_eq!(r.annotations.len(), 3);
        assert_eq!(r.annotations[0].duration_s, Some(1.5));
        assert_eq!(r.annotations[1].text, "second");
        assert_eq!(r.annotations[2].duration_s, None);
        assert_eq!(r.annotations[2].onset_s, 14.0);
    }

    #[test]
    fn a_malformed_onset_is_an_error_naming_the_record() {
        let e = parse_record(b"12\x14\x14\x00", 7).unwrap_err();
        assert!(e.contains("data record 7"), "{e}");
    }
}
