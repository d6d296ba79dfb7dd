// Per row of a row-major matrix (P.rows = rows, P.d = width): the sum of squares, or its
// square root when P.aux = 1 (decoder row norms).
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn row_sq(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg);
    if (r >= P.rows) {
        return;
    }
    var s = 0.0;
    for (var i = 0u; i < P.d; i = i + 1u) {
        let x = v[r * P.d + i];
        s = s + x * x;
    }
    out[r] = select(s, sqrt(s), P.aux == 1u);
}
