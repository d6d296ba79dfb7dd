//! Alert rules evaluated when a window closes, and the `alerts` table they write.
//!
//! Rules are written in the pipeline file as `[[operators.<name>.alerts]]` tables with a `rule`
//! key. Feature rules (`feature_stats`): `density_ratio`, `dead_fraction_jump`, `feature_fires`.
//! Scalar rules (`token_stats`): `fvu_above`, `mean_above`, `mean_below`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// Where a `density_ratio` rule's expected densities come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    /// The window before the current one (the default).
    PreviousWindow,
    /// The first complete window of the run.
    FirstWindow,
    /// A `features.parquet` table written by an earlier `feature_stats` run: its latest
    /// `all_time` rows (or its latest window when it has no all-time rows).
    File(String),
    /// An SAE's `sparsity.safetensors` (SAELens): the training-time log10 firing density of
    /// every latent, tensor `sparsity` (or `log_feature_sparsity`).
    Sparsity(String),
}

/// Reads expected densities from a SAELens `sparsity.safetensors` (log10 densities).
pub fn read_sparsity_densities(path: &Path, n_features: usize) -> Result<Vec<f64>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: not a safetensors file: {e}", path.display()))?;
    let t = st
        .tensor("sparsity")
        .or_else(|_| st.tensor("log_feature_sparsity"))
        .map_err(|_| format!("{}: no tensor `sparsity` or `log_feature_sparsity`", path.display()))?;
    let dtype = neurostream_engine::tensor::DType::from_safetensors(t.dtype())
        .ok_or_else(|| format!("{}: sparsity has dtype {:?}", path.display(), t.dtype()))?;
    let mut log10 = Vec::new();
    neurostream_engine::tensor::decode_le(dtype, t.data(), &mut log10);
    if log10.len() != n_features {
        return Err(format!(
            "{}: {} sparsity values for an input of {n_features} features",
            path.display(),
            log10.len()
        ));
    }
    Ok(log10.iter().map(|&l| 10f64.powf(l as f64)).collect())
}

/// A rule on the feature statistics of each window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureRule {
    /// A feature's density in the window is above `above` × or below `below` × its reference density.
    DensityRatio {
        /// Name in the alert table (default `density_ratio`).
        name: Option<String>,
        /// Upper ratio bound.
        above: Option<f64>,
        /// Lower ratio bound.
        below: Option<f64>,
        /// `previous_window` (default), `first_window`, `{ file = "ref/features.parquet" }`, or
        /// `{ sparsity = "sae/sparsity.safetensors" }` (the SAE's training-time densities).
        #[serde(default = "previous_window")]
        reference: Reference,
        /// Features to watch (default: all).
        features: Option<Vec<u32>>,
        /// Ignore a feature unless the larger of its observed and expected counts in the window
        /// reaches this many firings (default 5): filters noise on rare features.
        #[serde(default = "default_min_count")]
        min_count: f64,
    },
    /// The fraction of dead features rose by more than `above` (absolute) since the previous window.
    DeadFractionJump {
        /// Name in the alert table (default `dead_fraction_jump`).
        name: Option<String>,
        /// Bound on the increase, e.g. 0.05 for five percentage points.
        above: f64,
    },
    /// One of the listed features fired at least `min_count` times (default 1) in the window.
    FeatureFires {
        /// Name in the alert table (default `feature_fires`).
        name: Option<String>,
        /// The features.
        features: Vec<u32>,
        /// Firings needed (default 1).
        #[serde(default = "one")]
        min_count: u64,
    },
}

fn previous_window() -> Reference {
    Reference::PreviousWindow
}
fn default_min_count() -> f64 {
    5.0
}
fn one() -> u64 {
    1
}

/// A rule on the windowed means of token scalars (e.g. reconstruction metrics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScalarRule {
    /// Fraction of variance unexplained, `1 − mean(explained_variance)`, above `above`.
    FvuAbove {
        /// Name in the alert table (default `fvu_above`).
        name: Option<String>,
        /// Bound.
        above: f64,
    },
    /// The window mean of `column` above `above`.
    MeanAbove {
        /// Name in the alert table (default `mean_above`).
        name: Option<String>,
        /// The token-scalar column.
        column: String,
        /// Bound.
        above: f64,
    },
    /// The window mean of `column` below `below`.
    MeanBelow {
        /// Name in the alert table (default `mean_below`).
        name: Option<String>,
        /// The token-scalar column.
        column: String,
        /// Bound.
        below: f64,
    },
}

/// One fired alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// The rule's kind (`density_ratio`, ...).
    pub kind: &'static str,
    /// The feature concerned, for per-feature rules.
    pub feature: Option<u32>,
    /// What was observed in the window.
    pub observed: f64,
    /// What was expected (reference value).
    pub expected: f64,
    /// The bound that was crossed (in the rule's units: a ratio, a fraction, a count).
    pub threshold: f64,
    /// One sentence for people.
    pub message: String,
}

/// Reads expected densities for `n_features` features from a `features` table written by
/// `feature_stats`.
pub fn read_reference_densities(path: &Path, n_features: usize) -> Result<Vec<f64>, String> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, UInt32Type, UInt64Type};
    let reader = neurostream_engine::parquet_read::batches(path).map_err(|m| format!("{}: reference: {m}", path.display()))?;
    // (scope rank, window_end) of the best rows seen so far, and their densities.
    let mut best: Option<((u8, u64), Vec<f64>)> = None;
    for batch in reader {
        let batch = batch.map_err(|e| format!("{}: {e}", path.display()))?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("{}: no column `{name}`: not a feature_stats `features` table", path.display()))
        };
        let (scope, end, feature, density) = (col("scope")?, col("window_end")?, col("feature")?, col("density")?);
        let scope = scope.as_string_opt::<i32>().ok_or("`scope` is not a string column")?;
        let end = end.as_primitive_opt::<UInt64Type>().ok_or("`window_end` is not uint64")?;
        let feature = feature.as_primitive_opt::<UInt32Type>().ok_or("`feature` is not uint32")?;
        let density = density.as_primitive_opt::<Float64Type>().ok_or("`density` is not float64")?;
        for r in 0..batch.num_rows() {
            if scope.is_null(r) {
                continue;
            }
            let key = (u8::from(scope.value(r) == "all_time"), end.value(r));
            let f = feature.value(r) as usize;
            if f >= n_features {
                return Err(format!(
                    "{}: row {r}: feature {f} >= the SAE's {n_features} features",
                    path.display()
                ));
            }
            match &mut best {
                Some((k, d)) if *k == key => d[f] = density.value(r),
                Some((k, _)) if *k > key => {}
                _ => {
                    let mut d = vec![0.0; n_features];
                    d[f] = density.value(r);
                    best = Some((key, d));
                }
            }
        }
    }
    best.map(|(_, d)| d)
        .ok_or_else(|| format!("{}: the reference table has no rows", path.display()))
}

/// The `alerts` table: `stream, window_start, window_end, [window_start_time, window_end_time,]
/// rule, kind, feature, observed, expected, threshold, message`.
pub fn alerts_table(stream: &str, start: u64, end: u64, time: Option<(i64, i64)>, alerts: &[Alert]) -> RecordBatch {
    let n = alerts.len();
    let times = time.map(|t| super::tables::time_columns(t, n)).unwrap_or_default();
    let mut fields = vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("window_start", DataType::UInt64, false),
        Field::new("window_end", DataType::UInt64, false),
    ];
    fields.extend(times.iter().map(|(f, _)| f.clone()));
    fields.extend([
        Field::new("rule", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("feature", DataType::UInt32, true),
        Field::new("observed", DataType::Float64, false),
        Field::new("expected", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, false),
        Field::new("message", DataType::Utf8, false),
    ]);
    let schema = Arc::new(ArrowSchema::new(fields));
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![stream; n])),
        Arc::new(UInt64Array::from(vec![start; n])),
        Arc::new(UInt64Array::from(vec![end; n])),
    ];
    cols.extend(times.into_iter().map(|(_, c)| c));
    cols.extend::<[ArrayRef; 7]>([
        Arc::new(StringArray::from_iter_values(alerts.iter().map(|a| a.rule.as_str()))),
        Arc::new(StringArray::from_iter_values(alerts.iter().map(|a| a.kind))),
        Arc::new(UInt32Array::from(alerts.iter().map(|a| a.feature).collect::<Vec<_>>())),
        Arc::new(Float64Array::from_iter_values(alerts.iter().map(|a| a.observed))),
        Arc::new(Float64Array::from_iter_values(alerts.iter().map(|a| a.expected))),
        Arc::new(Float64Array::from_iter_values(alerts.iter().map(|a| a.threshold))),
        Arc::new(StringArray::from_iter_values(alerts.iter().map(|a| a.message.as_str()))),
    ]);
    RecordBatch::try_new(schema, cols).expect("alerts columns agree")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_toml_and_reject_unknown_keys() {
        #[derive(Deserialize)]
        struct T {
            alerts: Vec<FeatureRule>,
        }
        let t: T = toml::from_str(
            r#"
            [[alerts]]
            rule = "density_ratio"
            above = 4.0
            [[alerts]]
            rule = "density_ratio"
            below = 0.25
            reference = { file = "ref.parquet" }
            [[alerts]]
            rule = "feature_fires"
            features = [3, 9]
            "#,
        )
        .unwrap();
        assert_eq!(t.alerts.len(), 3);
        assert!(
            matches!(&t.alerts[0], FeatureRule::DensityRatio { reference: Reference::PreviousWindow, min_count, .. } if *min_count == 5.0)
        );
        assert!(matches!(&t.alerts[1], FeatureRule::DensityRatio { reference: Reference::File(f), .. } if f == "ref.parquet"));
        let s: T = toml::from_str(
            "[[alerts]]\nrule = \"density_ratio\"\nabove = 3.0\nreference = { sparsity = \"sae/sparsity.safetensors\" }\n",
        )
        .unwrap();
        assert!(
            matches!(&s.alerts[0], FeatureRule::DensityRatio { reference: Reference::Sparsity(p), .. } if p == "sae/sparsity.safetensors")
        );
        let bad = toml::from_str::<T>("[[alerts]]\nrule = \"feature_fires\"\nfeatures = [1]\nabove = 2.0\n");
        assert!(bad.is_err());
    }
}

#[cfg(test)]
mod sparsity_tests {
    use super::*;

    #[test]
    fn sparsity_file_gives_densities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparsity.safetensors");
        let log10: Vec<f32> = vec![-1.0, -3.0, -10.0];
        let bytes: Vec<u8> = log10.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &bytes).unwrap();
        safetensors::serialize_to_file(vec![("sparsity", view)], None, &path).unwrap();
        let d = read_sparsity_densities(&path, 3).unwrap();
        assert!((d[0] - 0.1).abs() < 1e-9 && (d[1] - 1e-3).abs() < 1e-12 && d[2] < 1e-9);
        assert!(read_sparsity_densities(&path, 4)
            .unwrap_err()
            .contains("3 sparsity values for an input of 4 features"));
    }
}
