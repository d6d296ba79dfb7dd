// Analytic signal of one block by the circulant form of scipy.signal.hilbert's FFT method:
// imag[n] = Σ_m c[(n − m) mod N] · x[m], with c = Im(ifft(h)) computed on the host in float64;
// the real part is x itself. One invocation per (row, channel); the epilogue writes the
// envelope |x + i·imag| (mode 0) or the phase atan2(imag, x) (mode 1).
struct HilbertParams { rows: u32, channels: u32, mode: u32, _pad: u32 };
@group(0) @binding(0) var<uniform> P: HilbertParams;
@group(0) @binding(1) var<storage, read> kernel: array<f32>;   // c, rows long
@group(0) @binding(2) var<storage, read> x: array<f32>;        // rows x channels
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // rows x channels

@compute @workgroup_size(64)
fn hilbert(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= P.rows * P.channels) {
        return;
    }
    let n = i / P.channels;
    let ch = i % P.channels;
    var acc = 0.0;
    // m runs over the block; (n − m) mod N without a modulo per term: two ranges.
    for (var m = 0u; m <= n; m = m + 1u) {
        acc = acc + kernel[n - m] * x[m * P.channels + ch];
    }
    for (var m = n + 1u; m < P.rows; m = m + 1u) {
        acc = acc + kernel[P.rows + n - m] * x[m * P.channels + ch];
    }
    let re = x[i];
    if (P.mode == 0u) {
        y[i] = sqrt(re * re + acc * acc);
    } else {
        y[i] = atan2(acc, re);
    }
}
