// ReLU (arch 2) and JumpReLU (arch 3, θ = exp(log_threshold)) activations of h.
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> log_threshold: array<f32>;
@group(0) @binding(3) var<storage, read_write> a: array<f32>;

@compute @workgroup_size(256)
fn activate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= P.rows * P.m) {
        return;
    }
    let v = h[i];
    var keep = v > 0.0;
    if (P.arch == 3u) {
        keep = keep && v > exp(log_threshold[i % P.m]);
    }
    a[i] = select(0.0, v, keep);
}
