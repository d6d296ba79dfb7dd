// wgpu kernels of `sae_encode`.
//
// encode: out[r, j] = epilogue(sum_i x[r, i] * w[i, j]) for a rows x d_in block `x` and the
// d_in x d_sae encoder `w`, with 16x16 tiles in workgroup memory.
// epilogue modes (h = scale_j * z + shift_j):
//   0 relu:     max(h, 0)
//   1 jumprelu: h if h > param_j and h > 0, else 0
//   2 gated:    max(h, 0) if z + param_j > 0, else 0
//   3 raw:      h (for top-k selection)


@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>; // scale(d_sae), shift(d_sae), param(d_sae)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const T: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 16>;
var<workgroup> ws: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn encode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * T + lid.y;
    let col = wid.x * T + lid.x;
    var acc = 0.0;
    let tiles = (params.d_in + T - 1u) / T;
    for (var t = 0u; t < tiles; t = t + 1u) {
        let xi = t * T + lid.x;
        if (row < params.rows && xi < params.d_in) {
            xs[lid.y][lid.x] = x[row * params.d_in + xi];
        } else {
            xs[lid.y][lid.x] = 0.0;
        }
        let wi = t * T + lid.y;
        if (wi < params.d_in && col < params.d_sae) {
            ws[lid.y][lid.x] = w[wi * params.d_sae + col];
        } else {
            ws[lid.y][lid.x] = 0.0;
        }
        workgroupBarrier();
        for (var i = 0u; i < T; i = i + 1u) {
            acc = acc + xs[lid.y][i] * ws[i][lid.x];
        }
        workgroupBarrier();
    }
    if (row >= params.rows || col >= params.d_sae) {
        return;
    }
    let n = params.d_sae;
    let h = aux[col] * acc + aux[n + col];
    var v = 0.0;
    switch params.mode {
        case 0u: { v = max(h, 0.0); }
        case 1u: { if (h > aux[2u * n + col] && h > 0.0) { v = h; } }
        case 2u: { if (acc + aux[2u * n + col] > 0.0) { v = max(h, 0.0); } }
        default: { v = h; }
    }
    out[row * n + col] = v;
}

