// xc = x − b_dec, rows × d.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> b_dec: array<f32>;
@group(0) @binding(3) var<storage, read_write> xc: array<f32>;

@compute @workgroup_size(256)
fn center(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= P.rows * P.d) {
        return;
    }
    xc[i] = x[i] - b_dec[i % P.d];
}
