//! Matrix transposition: time-major samples to channel-major series and back. Each window of a
//! Welch band power is made channel-major, so every sample goes through here several times.

/// Writes the `rows × cols` row-major matrix `m` transposed (`cols × rows`, row-major) into
/// `out`. Goes in 8 × 8 blocks (neither side is walked with a large stride, which thrashes the
/// cache when it is a multiple of 4 KiB), each moved with eight AVX loads, a shuffle network and
/// eight stores where the CPU has AVX; the edges and other CPUs go value by value.
pub fn transpose_into(m: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    assert_eq!(m.len(), rows * cols, "transpose: {} values are not {rows} x {cols}", m.len());
    assert_eq!(
        out.len(),
        m.len(),
        "transpose: output of {} values for {}",
        out.len(),
        m.len()
    );
    let (full_rows, full_cols) = (rows / 8 * 8, cols / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: AVX is present; every 8 × 8 block lies inside both matrices (rows and columns
        // below `full_rows` / `full_cols`), whose lengths were checked above.
        unsafe {
            for r0 in (0..full_rows).step_by(8) {
                for c0 in (0..full_cols).step_by(8) {
                    block_avx(
                        m.as_ptr().add(r0 * cols + c0),
                        cols,
                        out.as_mut_ptr().add(c0 * rows + r0),
                        rows,
                    );
                }
            }
        }
        scalar(m, rows, cols, out, full_rows..rows, 0..cols);
        scalar(m, rows, cols, out, 0..full_rows, full_cols..cols);
        return;
    }
    scalar(m, rows, cols, out, 0..rows, 0..cols);
}

/// The `rows × cols` row-major matrix `m` transposed (see [`transpose_into`]).
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; m.len()];
    transpose_into(m, rows, cols, &mut out);
    out
}

/// Transposes the part `rs × cs` of `m` into `out`, in 8 × 8 blocks.
fn scalar(m: &[f32], rows: usize, cols: usize, out: &mut [f32], rs: std::ops::Range<usize>, cs: std::ops::Range<usize>) {
    for r0 in rs.clone().step_by(8) {
        for c0 in cs.clone().step_by(8) {
            for r in r0..(r0 + 8).min(rs.end) {
                for c in c0..(c0 + 8).min(cs.end) {
                    out[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
}

/// Transposes the 8 × 8 block at `src` (rows `src_stride` apart) into `dst` (rows `dst_stride`
/// apart): unpack pairs of rows, shuffle pairs of pairs, then swap 128-bit halves.
///
/// # Safety
/// AVX must be present, and the eight rows of eight values at `src` and at `dst` in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block_avx(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride)));
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for i in 0..4 {
        _mm256_storeu_ps(dst.add(i * dst_stride), _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]));
        _mm256_storeu_ps(dst.add((i + 4) * dst_stride), _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape around the 8 × 8 blocks (empty, thin, edges on either side, square) equals
    /// the definition `out[c][r] = m[r][c]`, and transposing twice gives the matrix back.
    #[test]
    fn transposes_every_shape_like_the_definition() {
        for rows in [0usize, 1, 3, 7, 8, 9, 16, 17, 64, 501] {
            for cols in [0usize, 1, 5, 8, 12, 64, 67] {
                let m: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
                let got = transpose(&m, rows, cols);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(got[c * rows + r], m[r * cols + c], "{rows} x {cols} at ({r}, {c})");
                    }
                }
                assert_eq!(transpose(&got, cols, rows), m, "{rows} x {cols} back");
            }
        }
    }
}
