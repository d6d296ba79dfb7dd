// C = alpha · op(A) · op(B) [+ bias over columns] [+ C], the shared GEMM. op(A) is M×K: A
// row-major M×K (ta = 0) or K×M (ta = 1), read from element a_off. op(B) is K×N: B row-major
// K×N (tb = 0) or N×K (tb = 1). The register-tiled core of `gemm_tile.wgsl` (prepended, with
// `const BM`) computes BM × 128 tiles; operands are read element by element, consecutive
// invocations at consecutive addresses of whichever layout A and B have.

struct Gemm {
    m: u32,
    n: u32,
    k: u32,
    ta: u32,
    tb: u32,
    accumulate: u32,
    use_bias: u32,
    a_off: u32,
    alpha: f32,
    _pad0: f32,
    _pad1: f32,
    _pad2: f32,
};

@group(0) @binding(0) var<uniform> G: Gemm;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

alias TileB = vec4<f32>;

// op(A)[i, kk], zero outside.
fn a_at(i: u32, kk: u32) -> f32 {
    if (i >= G.m || kk >= G.k) {
        return 0.0;
    }
    if (G.ta == 0u) {
        return a[G.a_off + i * G.k + kk];
    }
    return a[G.a_off + kk * G.m + i];
}

// op(B)[kk, j], zero outside.
fn b_at(kk: u32, j: u32) -> f32 {
    if (kk >= G.k || j >= G.n) {
        return 0.0;
    }
    if (G.tb == 0u) {
        return b[kk * G.n + j];
    }
    return b[j * G.k + kk];
}

// (row, depth) of element e of the A tile: along the depth when A is stored M×K, along rows
// when it is stored K×M.
fn a_coords(e: u32) -> vec2<u32> {
    if (G.ta == 0u) {
        return vec2<u32>(e / BK, e % BK);
    }
    return vec2<u32>(e % BM, e / BM);
}

// (depth, column) of element e (0 .. 1024) of the B tile, likewise.
fn b_coords(e: u32) -> vec2<u32> {
    if (G.tb == 0u) {
        return vec2<u32>(e / BN, e % BN);
    }
    return vec2<u32>(e % BK, e / BK);
}

// Element e of the A tile at (row0, k0).
fn a_value(e: u32, row0: u32, k0: u32) -> f32 {
    let rc = a_coords(e);
    return a_at(row0 + rc.x, k0 + rc.y);
}

fn put_a_value(e: u32, stage: u32, v: f32) {
    let rc = a_coords(e);
    store_a(stage, rc.x, rc.y, v);
}

// Element e (0 .. 1024) of the B tile at (k0, col0).
fn b_value(e: u32, k0: u32, col0: u32) -> f32 {
    let kc = b_coords(e);
    return b_at(k0 + kc.x, col0 + kc.y);
}

fn put_b_value(e: u32, stage: u32, v: f32) {
    let kc = b_coords(e);
    store_b(stage, kc.x, kc.y, v);
}

// Elements t, t + 256, t + 512, t + 768 of the B tile.
fn fetch_b(t: u32, k0: u32, col0: u32) -> vec4<f32> {
    return vec4<f32>(b_value(t, k0, col0), b_value(t + 256u, k0, col0), b_value(t + 512u, k0, col0), b_value(t + 768u, k0, col0));
}

fn put_b(t: u32, stage: u32, v: vec4<f32>) {
    put_b_value(t, stage, v.x);
    put_b_value(t + 256u, stage, v.y);
    put_b_value(t + 512u, stage, v.z);
    put_b_value(t + 768u, stage, v.w);
}

// c[r, col] from the product's sum (scale, bias, accumulation).
fn put_out(r: u32, col: u32, sum: f32) {
    if (r >= G.m || col >= G.n) {
        return;
    }
    var v = G.alpha * sum;
    if (G.use_bias == 1u) {
        v = v + bias[col];
    }
    let at = r * G.n + col;
    if (G.accumulate == 1u) {
        v = v + c[at];
    }
    c[at] = v;
}

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    product_tile(wid, lid, G.k);
}
