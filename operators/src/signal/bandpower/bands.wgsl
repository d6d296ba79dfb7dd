// Band power from the segments' DFT (the shared GEMM's segments · [cos | sin]), on the device
// (see device.rs): one invocation per (window, channel) sums (re² + im²) · weight over the
// segments and each band's bins, / segments; with `relative`, each band over the total range.
// Loops run segments × bins iterations.

struct BandParams { items: u32, segs: u32, nfreq: u32, nbands: u32, relative: u32, total_lo: u32, total_hi: u32, _p0: u32 };
@group(0) @binding(0) var<uniform> B: BandParams;
@group(0) @binding(1) var<storage, read> dft: array<f32>;
@group(0) @binding(2) var<storage, read> ranges: array<u32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> band_out: array<f32>;

// Σ over the item's segments and bins lo..hi of |DFT|² · weight.
fn band_sum(item: u32, lo: u32, hi: u32) -> f32 {
    var acc = 0.0;
    for (var s = 0u; s < B.segs; s = s + 1u) {
        let row = (item * B.segs + s) * 2u * B.nfreq;
        for (var k = lo; k < hi; k = k + 1u) {
            let re = dft[row + k];
            let im = dft[row + B.nfreq + k];
            acc = acc + (re * re + im * im) * weights[k];
        }
    }
    return acc / f32(B.segs);
}

@compute @workgroup_size(64)
fn bands(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let item = gid.x + gid.y * nwg.x * 64u;
    if (item >= B.items) {
        return;
    }
    let width = B.nbands * (1u + B.relative);
    var total = 0.0;
    if (B.relative == 1u) {
        total = band_sum(item, B.total_lo, B.total_hi);
    }
    for (var b = 0u; b < B.nbands; b = b + 1u) {
        let v = band_sum(item, ranges[2u * b], ranges[2u * b + 1u]);
        band_out[item * width + b] = v;
        if (B.relative == 1u) {
            band_out[item * width + B.nbands + b] = select(0.0, v / total, total > 0.0);
        }
    }
}
