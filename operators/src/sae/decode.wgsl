// wgpu decode of `sae_reconstruct`: x_hat[r, c] = b_dec[c] + sum over row r's active latents e of
// vals[e] * w_dec[ids[e], c]. One workgroup per row, threads strided over the columns.

struct DecodeParams {
    rows: u32,
    d_in: u32,
    _pad0: u32,
    _pad1: u32,
};

@group(0) @binding(0) var<uniform> dp: DecodeParams;
@group(0) @binding(1) var<storage, read> offsets: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> vals: array<f32>;
@group(0) @binding(4) var<storage, read> w_dec: array<f32>;
@group(0) @binding(5) var<storage, read> b_dec: array<f32>;
@group(0) @binding(6) var<storage, read_write> x_hat: array<f32>;

@compute @workgroup_size(64)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= dp.rows) {
        return;
    }
    let start = offsets[row];
    let end = offsets[row + 1u];
    for (var c = lid.x; c < dp.d_in; c = c + 64u) {
        var acc = b_dec[c];
        for (var e = start; e < end; e = e + 1u) {
            acc = acc + vals[e] * w_dec[ids[e] * dp.d_in + c];
        }
        x_hat[row * dp.d_in + c] = acc;
    }
}
