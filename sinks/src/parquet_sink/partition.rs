//! Hive-style partitions of rolling Parquet output (`partition_by`): directories
//! `name=value/…` from the rows' event time (`year`, `month`, `day`, `date`, `hour`, `minute`,
//! UTC), from a column's values, or from the rows' stream (`stream`, where the written table has
//! no `stream` column), escaped as Hive escapes them.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use arrow::util::display::ArrayFormatter;
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

/// The partition level of the rows' stream, where the table has no column of that name.
const STREAM: &str = "stream";

/// The value Hive, Spark and DuckDB read as null: rows without event time or a null column value.
pub(super) const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// One level of the partition path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Year,
    Month,
    Day,
    /// `YYYY-MM-DD`.
    Date,
    Hour,
    Minute,
    /// A column of the written table.
    Column(String),
}

impl Level {
    fn name(&self) -> &str {
        match self {
            Level::Year => "year",
            Level::Month => "month",
            Level::Day => "day",
            Level::Date => "date",
            Level::Hour => "hour",
            Level::Minute => "minute",
            Level::Column(c) => c,
        }
    }
    /// Rank of a time level, coarse to fine.
    fn fineness(&self) -> Option<u8> {
        match self {
            Level::Year => Some(0),
            Level::Month => Some(1),
            Level::Day | Level::Date => Some(2),
            Level::Hour => Some(3),
            Level::Minute => Some(4),
            Level::Column(_) => None,
        }
    }
}

/// The `partition_by` levels of a sink.
#[derive(Clone, Debug, Default)]
pub(super) struct PartitionSpec {
    levels: Vec<Level>,
}

impl PartitionSpec {
    /// Parses `partition_by`: time level names, or column names.
    pub(super) fn parse(names: &[String]) -> Result<PartitionSpec, String> {
        let mut levels = Vec::new();
        for n in names {
            let level = match n.as_str() {
                "year" => Level::Year,
                "month" => Level::Month,
                "day" => Level::Day,
                "date" => Level::Date,
                "hour" => Level::Hour,
                "minute" => Level::Minute,
                "" => return Err("`partition_by`: an empty name".into()),
                c => Level::Column(c.to_string()),
            };
            if levels.contains(&level) {
                return Err(format!("`partition_by`: `{n}` is listed twice"));
            }
            levels.push(level);
        }
        Ok(PartitionSpec { levels })
    }

    /// The directory level of `stream`'s rows (`stream=<escaped name>`), where the levels
    /// include the rows' stream; `None` otherwise.
    pub(super) fn stream_level(&self, stream: &str) -> Option<String> {
        self.levels
            .contains(&Level::Column(STREAM.into()))
            .then(|| format!("{STREAM}={}", escape(stream)))
    }

    /// Checks that every partition column exists in `schema` with a type that names a directory
    /// (`stream` names the rows' stream where `schema` has no such column).
    pub(super) fn check_columns(&self, schema: &ArrowSchema, what: &str) -> Result<(), String> {
        for level in &self.levels {
            let Level::Column(c) = level else { continue };
            if c == STREAM && schema.field_with_name(c).is_err() {
                continue;
            }
            let Ok(field) = schema.field_with_name(c) else {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(format!(
                    "`partition_by`: {what} has no column `{c}` (time levels: year, month, day, date, hour, minute; `stream`; columns: {})",
                    names.join(", ")
                ));
            };
            let ok = match field.data_type() {
                DataType::Dictionary(_, v) => !v.is_nested() && !v.is_floating(),
                t => !t.is_nested() && !t.is_floating() && !matches!(t, DataType::Binary | DataType::LargeBinary),
            };
            if !ok {
                return Err(format!(
                    "`partition_by`: column `{c}` of {what} has type {}; partition by a string, integer, boolean or date column",
                    field.data_type()
                ));
            }
        }
        Ok(())
    }

    /// The partition columns of `batch`, whose rows belong to `stream`, ready to format row by
    /// row.
    pub(super) fn columns(&self, batch: &RecordBatch, stream: &str, what: &str) -> Result<Vec<ArrayRef>, String> {
        self.check_columns(batch.schema().as_ref(), what)?;
        Ok(self
            .levels
            .iter()
            .filter_map(|l| match l {
                Level::Column(c) => batch.column_by_name(c).cloned().or_else(|| {
                    (c == STREAM).then(|| {
                        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(stream, batch.num_rows()))) as ArrayRef
                    })
                }),
                _ => None,
            })
            .collect())
    }

    /// The relative directory of a row at event time `time` (ns since the Unix epoch) whose
    /// partition columns are formatted by `columns` (from [`PartitionSpec::columns`]); empty
    /// without levels.
    pub(super) fn path(&self, time: Option<i64>, columns: &[ArrayFormatter], row: usize) -> Result<String, String> {
        let at = time.map(DateTime::<Utc>::from_timestamp_nanos);
        let mut out = String::new();
        let mut column = 0;
        for level in &self.levels {
            let value = match (level, at) {
                (Level::Column(_), _) => {
                    let v = columns[column].value(row).to_string();
                    column += 1;
                    // Nulls format as "" (the default null text), as do empty strings: Hive
                    // writes both to the default partition.
                    if v.is_empty() {
                        NULL_PARTITION.to_string()
                    } else {
                        escape(&v)
                    }
                }
                (_, None) => NULL_PARTITION.to_string(),
                (Level::Year, Some(t)) => format!("{:04}", t.year()),
                (Level::Month, Some(t)) => format!("{:02}", t.month()),
                (Level::Day, Some(t)) => format!("{:02}", t.day()),
                (Level::Date, Some(t)) => t.format("%Y-%m-%d").to_string(),
                (Level::Hour, Some(t)) => format!("{:02}", t.hour()),
                (Level::Minute, Some(t)) => format!("{:02}", t.minute()),
            };
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(&escape(level.name()));
            out.push('=');
            out.push_str(&value);
        }
        Ok(out)
    }

    /// The end (ns) of the event-time interval of the partition holding a row at `time`: the
    /// start of the next year, month, day, hour or minute, after the finest time level. `None`
    /// without time levels or event time.
    pub(super) fn end(&self, time: Option<i64>) -> Option<i64> {
        let finest = self.levels.iter().filter_map(Level::fineness).max()?;
        let t = DateTime::<Utc>::from_timestamp_nanos(time?);
        let day = t.date_naive();
        let next = match finest {
            0 => NaiveDate::from_ymd_opt(t.year() + 1, 1, 1)?.and_hms_opt(0, 0, 0)?,
            1 => {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?
            }
            2 => day.succ_opt()?.and_hms_opt(0, 0, 0)?,
            3 => day.and_hms_opt(t.hour(), 0, 0)? + chrono::TimeDelta::hours(1),
            _ => day.and_hms_opt(t.hour(), t.minute(), 0)? + chrono::TimeDelta::minutes(1),
        };
        next.and_utc().timestamp_nanos_opt()
    }
}

/// Escapes a partition name or value as Hive does (`FileUtils.escapePathName`): `%XX` for
/// control characters and `"#%'*/:=?\{[]^` and DEL, so a value never adds a directory level.
pub(super) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let special = c.is_ascii_control() || "\"#%'*/:=?\\{[]^\u{7f}".contains(c);
        if special {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    const T: i64 = 1_764_781_200_000_000_000; // 2025-12-03T17:00:00Z

    #[test]
    fn time_levels_name_utc_intervals_and_their_ends() {
        let spec = PartitionSpec::parse(&["date".into(), "hour".into()]).unwrap();
        let t = T + 59 * 60 * 1_000_000_000;
        assert_eq!(spec.path(Some(t), &[], 0).unwrap(), "date=2025-12-03/hour=17");
        assert_eq!(spec.end(Some(t)), Some(T + 3_600_000_000_000));
        assert_eq!(
            spec.path(None, &[], 0).unwrap(),
            format!("date={NULL_PARTITION}/hour={NULL_PARTITION}")
        );
        let months = PartitionSpec::parse(&["year".into(), "month".into()]).unwrap();
        // 2025-12 ends at 2026-01-01T00:00Z.
        assert_eq!(months.end(Some(T)), Some(1_767_225_600_000_000_000));
        assert!(PartitionSpec::parse(&["hour".into(), "hour".into()]).is_err());
    }

    #[test]
    fn column_values_are_escaped_and_nulls_take_the_hive_default() {
        let spec = PartitionSpec::parse(&["stream".into(), "k".into()]).unwrap();
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("a/../b=c"), None, Some("")]));
        let k: ArrayRef = Arc::new(Int64Array::from(vec![7, 8, 9]));
        let opts = arrow::util::display::FormatOptions::default();
        let f = [
            ArrayFormatter::try_new(s.as_ref(), &opts).unwrap(),
            ArrayFormatter::try_new(k.as_ref(), &opts).unwrap(),
        ];
        assert_eq!(spec.path(None, &f, 0).unwrap(), "stream=a%2F..%2Fb%3Dc/k=7");
        assert_eq!(spec.path(None, &f, 1).unwrap(), format!("stream={NULL_PARTITION}/k=8"));
        assert_eq!(spec.path(None, &f, 2).unwrap(), format!("stream={NULL_PARTITION}/k=9"));
    }
}
