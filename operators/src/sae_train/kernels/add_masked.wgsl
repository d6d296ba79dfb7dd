// gh += v where mask > 0 (AuxK's gradient on the latents it chose).
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> gh: array<f32>;

@compute @workgroup_size(256)
fn add_masked(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= P.rows * P.m) {
        return;
    }
    if (mask[i] > 0.0) {
        gh[i] = gh[i] + v[i];
    }
}
