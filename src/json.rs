//! JSON helpers shared by the live view and the dashboard.

use serde_json::Value;

/// `v` as a JSON number with the shortest digits that give back `v` in its own type (an `f32`
/// is written as `0.1`, not as the `f64` it widens to, `0.10000000149011612`), or null for NaN
/// and infinities (JSON has neither).
pub(crate) fn finite<T: Into<f64> + std::fmt::Display + Copy>(v: T) -> Value {
    if !v.into().is_finite() {
        return Value::Null;
    }
    // Rust prints floats with the shortest round-trip digits of their own type; the f64 those
    // digits parse to prints the same digits.
    v.to_string().parse::<f64>().map_or(Value::Null, Value::from)
}

/// `v` rounded to `digits` significant digits as a JSON number (null if not finite): for
/// values drawn at pixel resolution, where more digits only make the message longer.
pub(crate) fn significant(v: f32, digits: i32) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    if v == 0.0 {
        return Value::from(0.0);
    }
    let v = f64::from(v);
    // Decimal places to keep; dividing by an exact power of ten gives the f64 nearest the
    // rounded decimal, which prints with just those digits.
    let places = digits - 1 - v.abs().log10().floor() as i32;
    let rounded = if places >= 0 {
        let p = 10f64.powi(places);
        (v * p).round() / p
    } else {
        let p = 10f64.powi(-places);
        (v / p).round() * p
    };
    Value::from(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_with_their_own_shortest_digits() {
        assert_eq!(finite(0.1f32).to_string(), "0.1");
        assert_eq!(finite(13.37f32).to_string(), "13.37");
        assert_eq!(finite(0.1f64).to_string(), "0.1");
        assert_eq!(finite(f32::NAN), Value::Null);
        assert_eq!(finite(f64::NEG_INFINITY), Value::Null);
        assert_eq!(finite(1e-30f32).as_f64().unwrap() as f32, 1e-30f32);
    }

    #[test]
    fn significant_digits_round_to_the_nearest_and_stay_short() {
        for (v, want) in [
            (1.234_567f32, "1.235"),
            (-0.000_012_345_67, "-0.00001235"),
            (98_765.43, "98770.0"),
            (0.0, "0.0"),
            (9.999_9, "10.0"),
        ] {
            assert_eq!(significant(v, 4).to_string(), want, "{v}");
        }
        assert_eq!(significant(f32::INFINITY, 4), Value::Null);
        // Relative error at most half a unit in the 4th digit, over many magnitudes.
        let mut x = 1.7e-20f64;
        while x < 1e20 {
            for s in [1.0, -1.0] {
                let v = (s * x) as f32;
                let r = significant(v, 4).as_f64().unwrap();
                assert!((r - f64::from(v)).abs() <= 5.0001e-4 * f64::from(v).abs(), "{v} -> {r}");
            }
            x *= 3.7;
        }
    }
}
