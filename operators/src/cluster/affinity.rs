//! Co-occurrence affinity measures of two binary features over `n` windows (the measures the
//! "Geometry of Concepts" paper compares), from the 2 × 2 table of counts.

use serde::{Deserialize, Serialize};

/// An affinity between two features' firing patterns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// `n11 / (n11 + n10 + n01)`.
    Jaccard,
    /// `2 n11 / (2 n11 + n10 + n01)`.
    Dice,
    /// `(n11 + n00) / n`.
    SimpleMatching,
    /// Phi coefficient (Pearson correlation of the two indicators):
    /// `(n11 n00 − n10 n01) / √(n1· n0· n·1 n·0)`; 0 when a feature fires always or never.
    #[default]
    Phi,
}

impl Measure {
    /// All measures, in table column order.
    pub const ALL: [Measure; 4] = [Measure::Jaccard, Measure::Dice, Measure::SimpleMatching, Measure::Phi];

    /// The column / config name.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Jaccard => "jaccard",
            Measure::Dice => "dice",
            Measure::SimpleMatching => "simple_matching",
            Measure::Phi => "phi",
        }
    }

    /// The measure for `n11` windows where both fire, `na` and `nb` where each fires, out of `n`.
    pub fn value(self, n11: u64, na: u64, nb: u64, n: u64) -> f64 {
        let (n11, na, nb, n) = (n11 as f64, na as f64, nb as f64, n as f64);
        let (n10, n01) = (na - n11, nb - n11);
        let n00 = n - na - nb + n11;
        match self {
            Measure::Jaccard => ratio(n11, n11 + n10 + n01),
            Measure::Dice => ratio(2.0 * n11, 2.0 * n11 + n10 + n01),
            Measure::SimpleMatching => ratio(n11 + n00, n),
            Measure::Phi => {
                let den = (na * (n - na) * nb * (n - nb)).sqrt();
                ratio(n11 * n00 - n10 * n01, den)
            }
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_of_a_known_table() {
        // n = 10 windows: a fires in 4, b in 5, both in 3 → n10 = 1, n01 = 2, n00 = 4.
        let v = |m: Measure| m.value(3, 4, 5, 10);
        assert!((v(Measure::Jaccard) - 3.0 / 6.0).abs() < 1e-15);
        assert!((v(Measure::Dice) - 6.0 / 9.0).abs() < 1e-15);
        assert!((v(Measure::SimpleMatching) - 7.0 / 10.0).abs() < 1e-15);
        let phi = (3.0 * 4.0 - 1.0 * 2.0) / (4.0f64 * 6.0 * 5.0 * 5.0).sqrt();
        assert!((v(Measure::Phi) - phi).abs() < 1e-15);
        assert_eq!(Measure::Phi.value(2, 10, 2, 10), 0.0);
    }
}
