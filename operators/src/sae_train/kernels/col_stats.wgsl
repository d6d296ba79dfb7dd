// Per latent j, over the batch's rows: firings, Σ a, Σ ∂L/∂h (= ∂L/∂b_enc) and, for
// JumpReLU, ∂L/∂log θ through the rectangle-kernel straight-through estimator.
// out: [0, m) firings, [m, 2m) Σ a, [2m, 3m) ∂L/∂b_enc, [3m, 4m) ∂L/∂log θ.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> gh: array<f32>;
@group(0) @binding(3) var<storage, read> h: array<f32>;
@group(0) @binding(4) var<storage, read> ga: array<f32>;
@group(0) @binding(5) var<storage, read> log_threshold: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn col_stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    let m = P.m;
    if (j >= m) {
        return;
    }
    var fires = 0.0;
    var sum_a = 0.0;
    var g_b = 0.0;
    var g_t = 0.0;
    var theta = 0.0;
    if (P.arch == 3u) {
        theta = exp(log_threshold[j]);
    }
    for (var b = 0u; b < P.rows; b = b + 1u) {
        let at = b * m + j;
        let av = a[at];
        if (av > 0.0) {
            fires = fires + 1.0;
            sum_a = sum_a + av;
        }
        g_b = g_b + gh[at];
        if (P.arch == 3u && abs(h[at] - theta) < P.eps / 2.0) {
            g_t = g_t + ga[at] * (-theta / P.eps) + P.lam * P.inv_b * (-1.0 / P.eps);
        }
    }
    out[j] = fires;
    out[m + j] = sum_a;
    out[2u * m + j] = g_b;
    out[3u * m + j] = g_t * theta;
}
