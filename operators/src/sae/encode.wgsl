// wgpu kernels of `sae_encode`.
//
// encode: out[r, j] = epilogue(sum_i x[r, i] * w[i, j]) for a rows x d_in block `x` and the
// d_in x d_sae encoder `w`, with the register-tiled core of `gemm_tile.wgsl` (prepended):
// BM x 128 output tiles, w read as vec4 of 32-bit words (rows padded to 16 bytes).
// epilogue modes (h = scale_j * z + shift_j):
//   0 relu:     max(h, 0)
//   1 jumprelu: h if h > param_j and h > 0, else 0
//   2 gated:    max(h, 0) if z + param_j > 0, else 0
//   3 raw:      h (for top-k selection)
//   4 raw:      h (for group-max selection)

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// W_enc as 32-bit words, `params.w_stride` (a multiple of 4) per row: f32 values, or
// (W_FORMAT, a constant the host prepends: 0 f32, 1 f16, 2 bf16) two 16-bit weights per word,
// the even column in the low half. 16-bit weights halve the bytes read per token, which bounds
// small batches.
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> aux: array<f32>; // scale(d_sae), shift(d_sae), param(d_sae)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Word `q` of row `i` of W_enc.
fn word(i: u32, q: u32) -> u32 {
    let at = i * params.w_stride + q;
    return w[at >> 2u][at & 3u];
}

// The two weights of one 16-bit word as f32 (even column, odd column).
fn unpack_pair(v: u32) -> vec2<f32> {
    if (W_FORMAT == 1u) {
        return unpack2x16float(v);
    }
    return vec2<f32>(bitcast<f32>(v << 16u), bitcast<f32>(v & 0xffff0000u));
}

// Weight (i, col) of W_enc as f32.
fn weight(i: u32, col: u32) -> f32 {
    if (W_FORMAT == 0u) {
        return bitcast<f32>(word(i, col));
    }
    return unpack_pair(word(i, col / 2u))[col & 1u];
}

// The w words invocation `t` loads of the tile at (k0, col0): f32, 4 columns (every
// invocation); 16-bit, 8 columns (the first 128 invocations). Zero outside the matrix.
alias TileB = vec4<u32>;

fn fetch_b(t: u32, k0: u32, col0: u32) -> vec4<u32> {
    var kr = t / BQ;
    var q = col0 + 4u * (t % BQ);
    if (W_FORMAT != 0u) {
        kr = t / (BQ / 2u);
        q = col0 / 2u + 4u * (t % (BQ / 2u));
        if (t >= BK * BQ / 2u) {
            return vec4<u32>(0u);
        }
    }
    let i = k0 + kr;
    if (i >= params.d_in || q >= params.w_stride) {
        return vec4<u32>(0u);
    }
    return w[(i * params.w_stride + q) >> 2u];
}

fn put_b(t: u32, stage: u32, v: vec4<u32>) {
    if (W_FORMAT == 0u) {
        store_b4(stage, t / BQ, t % BQ, bitcast<vec4<f32>>(v));
        return;
    }
    if (t >= BK * BQ / 2u) {
        return;
    }
    let kr = t / (BQ / 2u);
    let q = 2u * (t % (BQ / 2u));
    store_b4(stage, kr, q, vec4<f32>(unpack_pair(v.x), unpack_pair(v.y)));
    store_b4(stage, kr, q + 1u, vec4<f32>(unpack_pair(v.z), unpack_pair(v.w)));
}

// Element `e` (0 .. BM * 8) of the x tile at (row0, k0), read along rows of x: zero outside.
fn a_value(e: u32, row0: u32, k0: u32) -> f32 {
    let r = row0 + e / BK;
    let c = k0 + e % BK;
    if (r >= params.rows || c >= params.d_in) {
        return 0.0;
    }
    return x[(params.x_row0 + r) * params.d_in + c];
}

fn put_a_value(e: u32, stage: u32, v: f32) {
    store_a(stage, e / BK, e % BK, v);
}

// The epilogue of the product z at (row, col) (see the modes above), written to `out`.
fn put_out(row: u32, col: u32, z: f32) {
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
    product_tile(wid, lid, params.d_in);
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
    put_out(0u, col, acc.x);
    put_out(1u, col, acc.y);
    put_out(2u, col, acc.z);
    put_out(3u, col, acc.w);
}
