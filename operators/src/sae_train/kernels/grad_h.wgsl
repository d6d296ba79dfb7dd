// ∂L/∂h on active entries: ∂L/∂a (= gx·W_decᵀ), plus λ/rows·‖W_dec[j]‖ for ReLU's L1.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> ga: array<f32>;
@group(0) @binding(3) var<storage, read> dec_norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> gh: array<f32>;

@compute @workgroup_size(256)
fn grad_h(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= P.rows * P.m) {
        return;
    }
    var g = 0.0;
    if (a[i] > 0.0) {
        g = ga[i];
        if (P.arch == 2u) {
            g = g + P.lam * P.inv_b * dec_norm[i % P.m];
        }
    }
    gh[i] = g;
}
