// BatchTopK activations: h where h > 0 and h ≥ the batch's cut, 0 elsewhere.
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> sel: array<u32>;
@group(0) @binding(3) var<storage, read_write> a: array<f32>;

@compute @workgroup_size(256)
fn batch_activate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= P.rows * P.m) {
        return;
    }
    var cut = bitcast<f32>(sel[256]);
    if (sel[259] == 1u) {
        cut = bitcast<f32>(0x00800000u); // f32::MIN_POSITIVE: every positive value is kept
    }
    let v = h[i];
    a[i] = select(0.0, v, v > 0.0 && v >= cut);
}
