//! JSON helpers shared by the live view and the dashboard.

use serde_json::Value;

/// `v` as a JSON number, or null for NaN and infinities (JSON has neither). Keeps `v`'s own
/// precision (an `f32` is written with the digits an `f32` needs).
pub(crate) fn finite<T: Into<f64> + serde::Serialize + Copy>(v: T) -> Value {
    if v.into().is_finite() {
        serde_json::json!(v)
    } else {
        Value::Null
    }
}
