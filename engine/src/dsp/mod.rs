//! Signal processing shared by sources and operators (neither crate depends on the other).

pub mod polyphase;
mod transposition;

pub use transposition::{transpose, transpose_into};

/// The normalized sinc `sin(πx) / (πx)` (1 at 0), the kernel of windowed-sinc FIR designs.
pub fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
    }
}

/// Greatest common divisor (`gcd(a, 0) = a`).
pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gcd_and_sinc() {
        assert_eq!(super::gcd(256, 100), 4);
        assert_eq!(super::gcd(7, 0), 7);
        assert_eq!(super::sinc(0.0), 1.0);
        assert!(super::sinc(1.0).abs() < 1e-15);
    }

    #[test]
    fn transposing_moves_every_value_once_for_any_shape() {
        for (rows, cols) in [(0, 3), (1, 1), (17, 33), (64, 5), (3, 100)] {
            let m: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = super::transpose(&m, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], m[r * cols + c]);
                }
            }
            assert_eq!(super::transpose(&t, cols, rows), m);
        }
    }
}
