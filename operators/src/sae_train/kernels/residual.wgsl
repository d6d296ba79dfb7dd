// err = x̂ − x; gx = ∂L/∂x̂ = 2·err / rows; e = err (AuxK's residual starts from it).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x_hat: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;
@group(0) @binding(4) var<storage, read_write> e: array<f32>;

@compute @workgroup_size(256)
fn residual(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= P.rows * P.d) {
        return;
    }
    let err = x_hat[i] - x[i];
    gx[i] = 2.0 * err * P.inv_b;
    e[i] = err;
}
