// wgpu kernels of `sae_encode`.
//
// encode: out[r, j] = epilogue(sum_i x[r, i] * w[i, j]) for a rows x d_in block `x` and the
// d_in x d_sae encoder `w`. Register-tiled: a workgroup of 16 x 16 invocations computes a
// 64 x 64 output tile, each invocation 4 x 4 outputs (rows ly + 16a, columns lx + 16b) from
// 64 x 16 and 16 x 64 tiles of x and w in workgroup memory; loads and products are written out
// (no inner loops), so an invocation loops d_in / 16 times (lavapipe miscomputes past ~65 536
// iterations per invocation).
// epilogue modes (h = scale_j * z + shift_j):
//   0 relu:     max(h, 0)
//   1 jumprelu: h if h > param_j and h > 0, else 0
//   2 gated:    max(h, 0) if z + param_j > 0, else 0
//   3 raw:      h (for top-k selection)


@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// W_enc as 32-bit words: f32 values, or (W_FORMAT, a constant the host prepends: 0 f32, 1 f16,
// 2 bf16) two 16-bit weights per word, the even column in the low half, rows padded to an even
// number of columns. 16-bit weights halve the bytes read per token, which bounds small batches.
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>; // scale(d_sae), shift(d_sae), param(d_sae)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Weight (i, col) of W_enc as f32.
fn weight(i: u32, col: u32) -> f32 {
    if (W_FORMAT == 0u) {
        return bitcast<f32>(w[i * params.d_sae + col]);
    }
    let word = w[i * ((params.d_sae + 1u) / 2u) + col / 2u];
    if (W_FORMAT == 1u) {
        return unpack2x16float(word)[col & 1u];
    }
    if ((col & 1u) == 0u) {
        return bitcast<f32>(word << 16u);
    }
    return bitcast<f32>(word & 0xffff0000u);
}

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 64>; // [BM][BK]
var<workgroup> ws: array<array<f32, 64>, 16>; // [BK][BN]

// Element `e` (0..1024) of the x tile starting at (row0, k0): zero outside the matrix.
fn load_x(e: u32, row0: u32, k0: u32) {
    let r = e / BK;
    let c = e % BK;
    let gr = row0 + r;
    let gc = k0 + c;
    var v = 0.0;
    if (gr < params.rows && gc < params.d_in) {
        v = x[(params.x_row0 + gr) * params.d_in + gc];
    }
    xs[r][c] = v;
}

// Element `e` (0..1024) of the w tile starting at (k0, col0), read along rows of w.
fn load_w(e: u32, k0: u32, col0: u32) {
    let r = e / BN;
    let c = e % BN;
    let gr = k0 + r;
    let gc = col0 + c;
    var v = 0.0;
    if (gr < params.d_in && gc < params.d_sae) {
        v = weight(gr, gc);
    }
    ws[r][c] = v;
}

fn store(row: u32, col: u32, z: f32) {
    if (row >= params.rows || col >= params.d_sae) {
        return;
    }
    let n = params.d_sae;
    let h = aux[col] * z + aux[n + col];
    var v = 0.0;
    switch params.mode {
        case 0u: { v = max(h, 0.0); }
        case 1u: { if (h > aux[2u * n + col] && h > 0.0) { v = h; } }
        case 2u: { if (z + aux[2u * n + col] > 0.0) { v = max(h, 0.0); } }
        default: { v = h; }
    }
    out[row * n + col] = v;
}

@compute @workgroup_size(16, 16)
fn encode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let tid = lid.y * 16u + lid.x;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let tiles = (params.d_in + BK - 1u) / BK;
    for (var t = 0u; t < tiles; t = t + 1u) {
        let k0 = t * BK;
        load_x(tid, row0, k0);
        load_x(tid + 256u, row0, k0);
        load_x(tid + 512u, row0, k0);
        load_x(tid + 768u, row0, k0);
        load_w(tid, k0, col0);
        load_w(tid + 256u, k0, col0);
        load_w(tid + 512u, k0, col0);
        load_w(tid + 768u, k0, col0);
        workgroupBarrier();
        for (var k = 0u; k < BK; k = k + 1u) {
            let wr = vec4<f32>(ws[k][lid.x], ws[k][lid.x + 16u], ws[k][lid.x + 32u], ws[k][lid.x + 48u]);
            acc0 = fma(vec4<f32>(xs[lid.y][k]), wr, acc0);
            acc1 = fma(vec4<f32>(xs[lid.y + 16u][k]), wr, acc1);
            acc2 = fma(vec4<f32>(xs[lid.y + 32u][k]), wr, acc2);
            acc3 = fma(vec4<f32>(xs[lid.y + 48u][k]), wr, acc3);
        }
        workgroupBarrier();
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var a = 0u; a < 4u; a = a + 1u) {
        let row = row0 + lid.y + 16u * a;
        store(row, col0 + lid.x, accs[a].x);
        store(row, col0 + lid.x + 16u, accs[a].y);
        store(row, col0 + lid.x + 32u, accs[a].z);
        store(row, col0 + lid.x + 48u, accs[a].w);
    }
}

// Few rows (at most NARROW_ROWS, e.g. one token at a time): the products are bound by reading
// w, so one invocation per column streams its column of w once (neighbouring invocations read
// neighbouring columns) for every row of the block; a 64-row tile would mostly compute zeros.
const NARROW_ROWS: u32 = 4u;

@compute @workgroup_size(256)
fn encode_narrow(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let col = gid.x + gid.y * nwg.x * 256u;
    if (col >= params.d_sae) {
        return;
    }
    var acc = vec4<f32>(0.0);
    let d = params.d_in;
    let x0 = params.x_row0 * d;
    for (var i = 0u; i < d; i = i + 1u) {
        let wv = weight(i, col);
        var xv = vec4<f32>(0.0);
        xv.x = x[x0 + i];
        if (params.rows > 1u) { xv.y = x[x0 + d + i]; }
        if (params.rows > 2u) { xv.z = x[x0 + 2u * d + i]; }
        if (params.rows > 3u) { xv.w = x[x0 + 3u * d + i]; }
        acc = fma(xv, vec4<f32>(wv), acc);
    }
    store(0u, col, acc.x);
    store(1u, col, acc.y);
    store(2u, col, acc.z);
    store(3u, col, acc.w);
}
