// Cascades of second-order sections, one invocation per channel, rows in order, transposed
// direct form II (as scipy.signal.sosfilt). state: sections × 2 × channels (z0 row, z1 row).
// One dispatch covers rows first_row .. first_row + rows; long chunks take several dispatches
// (Mesa's lavapipe miscomputes loops past ~65536 iterations per invocation).

struct SosParams {
    rows: u32,
    channels: u32,
    sections: u32,
    first_row: u32,
};

@group(0) @binding(0) var<uniform> P: SosParams;
@group(0) @binding(1) var<storage, read> coeffs: array<f32>; // sections × 6
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read_write> data: array<f32>;

@compute @workgroup_size(64)
fn sosfilt(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let n = P.channels;
    if (c >= n) {
        return;
    }
    for (var t = P.first_row; t < P.first_row + P.rows; t = t + 1u) {
        var x = data[t * n + c];
        for (var s = 0u; s < P.sections; s = s + 1u) {
            let k = s * 6u;
            let i0 = s * 2u * n + c;
            let i1 = i0 + n;
            let y = coeffs[k] * x + state[i0];
            state[i0] = coeffs[k + 1u] * x - coeffs[k + 4u] * y + state[i1];
            state[i1] = coeffs[k + 2u] * x - coeffs[k + 5u] * y;
            x = y;
        }
        data[t * n + c] = x;
    }
}
