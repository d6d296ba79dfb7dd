// Nearest centroid per row from the dot products `dots = X · Cᵀ` (rows × k):
// ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖². Ties go to the lower centroid index, as in scikit-learn.

struct Params {
    rows: u32,
    k: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dots: array<f32>;
@group(0) @binding(2) var<storage, read> row_norms: array<f32>;
@group(0) @binding(3) var<storage, read> centroid_norms: array<f32>;
@group(0) @binding(4) var<storage, read_write> labels: array<u32>;
@group(0) @binding(5) var<storage, read_write> distances: array<f32>;

@compute @workgroup_size(64)
fn assign(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.k;
    var best = 0u;
    var best_d = row_norms[row] - 2.0 * dots[base] + centroid_norms[0];
    for (var c = 1u; c < params.k; c = c + 1u) {
        let d = row_norms[row] - 2.0 * dots[base + c] + centroid_norms[c];
        if (d < best_d) {
            best_d = d;
            best = c;
        }
    }
    labels[row] = best;
    distances[row] = max(best_d, 0.0);
}
