// ReLU's L1 term of ∂L/∂W_dec: λ/rows · (Σ_b a_bj) / ‖W_dec[j]‖ · W_dec[j].
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> dec_norm: array<f32>;
@group(0) @binding(3) var<storage, read> w_dec: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_w_dec: array<f32>;

@compute @workgroup_size(256)
fn l1_dec(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= P.m * P.d) {
        return;
    }
    let j = i / P.d;
    let n = dec_norm[j];
    if (n > 0.0) {
        g_w_dec[i] = g_w_dec[i] + P.lam * P.inv_b * stats[P.m + j] / n * w_dec[i];
    }
}
