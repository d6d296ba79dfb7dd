// The register-tiled product core of every dense product on wgpu (`gemm.wgsl`, the shared
// GEMM; `sae/encode.wgsl`, the SAE encoder with its fused epilogues). Prepended to each.
//
// A workgroup of 16 x 16 invocations computes a BM x 128 tile of A (M x K) times B (K x N)
// (BM, 64 or 128, is a constant the including shader gets from the host). Each invocation
// holds BM / 16 x 8 sums: rows 64g + 4ly + a and columns 64h + 4lx + b (g < BM / 64; a, b < 4;
// h < 2), so each step of k reads one or two vec4 of A and two vec4 of B from workgroup memory
// for 32 or 64 fused multiply-adds. Tiles of A (BM x 8) and B (8 x 128) are double-buffered in
// workgroup memory (16 KiB at BM 128): the next tile's global loads are issued before the
// current tile's products and stored after them, with one barrier per tile. An invocation
// loops K / 8 times, once per tile, with everything in a tile written out (lavapipe
// miscomputes past ~65 536 loop iterations per invocation; K up to ~500,000 stays under it).
//
// The including shader defines how its operands are read and its outputs written:
//   alias TileB = ...;                                   what one invocation loads of a B tile
//   fn a_value(e: u32, row0: u32, k0: u32) -> f32        element e (0 .. BM * 8) of the A
//                                                        tile at (row0, k0), in an order
//                                                        that reads consecutive addresses
//   fn put_a_value(e: u32, stage: u32, v: f32)           stores it (with `store_a`)
//   fn fetch_b(t: u32, k0: u32, col0: u32) -> TileB      the B tile at (k0, col0)
//   fn put_b(t: u32, stage: u32, v: TileB)               stores it (`store_b`, `store_b4`)
//   fn put_out(row: u32, col: u32, sum: f32)             writes one output (the epilogue),
//                                                        called for rows and columns past
//                                                        the matrix too
// Values outside the matrices must be loaded as zero, and these functions must not loop
// (see the iteration limit above).

const BN: u32 = 128u;
const BK: u32 = 8u;
// Row groups of 64 per tile; vec4 per k-row of the A and B tiles; A values each invocation loads.
const RG: u32 = BM / 64u;
const AQ: u32 = BM / 4u;
const BQ: u32 = BN / 4u;
const A_VALUES: u32 = BM * BK / 256u;
const A_TILE_LEN: u32 = 2u * BK * AQ;
const B_TILE_LEN: u32 = 2u * BK * BQ;
var<workgroup> a_tile: array<vec4<f32>, A_TILE_LEN>; // [stage][k][row / 4], rows in the lanes
var<workgroup> b_tile: array<vec4<f32>, B_TILE_LEN>; // [stage][k][col / 4], columns in the lanes

// Elements t, t + 256, ... (A_VALUES of them: 2 or 4) of the A tile at (row0, k0).
fn fetch_a(t: u32, row0: u32, k0: u32) -> vec4<f32> {
    var v = vec4<f32>(a_value(t, row0, k0), a_value(t + 256u, row0, k0), 0.0, 0.0);
    if (A_VALUES > 2u) {
        v.z = a_value(t + 512u, row0, k0);
        v.w = a_value(t + 768u, row0, k0);
    }
    return v;
}

fn put_a(t: u32, stage: u32, v: vec4<f32>) {
    put_a_value(t, stage, v.x);
    put_a_value(t + 256u, stage, v.y);
    if (A_VALUES > 2u) {
        put_a_value(t + 512u, stage, v.z);
        put_a_value(t + 768u, stage, v.w);
    }
}

// A (row r, depth c) of the tile in `stage`.
fn store_a(stage: u32, r: u32, c: u32, v: f32) {
    a_tile[(stage * BK + c) * AQ + r / 4u][r & 3u] = v;
}

// B (depth kr, column c) of the tile in `stage`.
fn store_b(stage: u32, kr: u32, c: u32, v: f32) {
    b_tile[(stage * BK + kr) * BQ + c / 4u][c & 3u] = v;
}

// B (depth kr, columns 4q .. 4q + 3) of the tile in `stage`.
fn store_b4(stage: u32, kr: u32, q: u32, v: vec4<f32>) {
    b_tile[(stage * BK + kr) * BQ + q] = v;
}

// acc[8g + 2a + h] += a_col[a] * (b0, b1)[h]: one row group's rank-1 update.
fn rank1(acc: ptr<function, array<vec4<f32>, 16>>, g: u32, a_col: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    let i = 8u * g;
    (*acc)[i] = fma(vec4<f32>(a_col.x), b0, (*acc)[i]);
    (*acc)[i + 1u] = fma(vec4<f32>(a_col.x), b1, (*acc)[i + 1u]);
    (*acc)[i + 2u] = fma(vec4<f32>(a_col.y), b0, (*acc)[i + 2u]);
    (*acc)[i + 3u] = fma(vec4<f32>(a_col.y), b1, (*acc)[i + 3u]);
    (*acc)[i + 4u] = fma(vec4<f32>(a_col.z), b0, (*acc)[i + 4u]);
    (*acc)[i + 5u] = fma(vec4<f32>(a_col.z), b1, (*acc)[i + 5u]);
    (*acc)[i + 6u] = fma(vec4<f32>(a_col.w), b0, (*acc)[i + 6u]);
    (*acc)[i + 7u] = fma(vec4<f32>(a_col.w), b1, (*acc)[i + 7u]);
}

// One depth step (row `at` of both tiles, stage included) of the invocation's sums.
fn depth_step(acc: ptr<function, array<vec4<f32>, 16>>, at: u32, lid: vec3<u32>) {
    let bi = at * BQ + lid.x;
    let b0 = b_tile[bi];
    let b1 = b_tile[bi + 16u];
    let ai = at * AQ + lid.y;
    rank1(acc, 0u, a_tile[ai], b0, b1);
    if (RG > 1u) {
        rank1(acc, 1u, a_tile[ai + 16u], b0, b1);
    }
}

// The invocation's sums of the tile at (row0, col0) over `depth` (K): acc[8g + 2a + h] holds
// row row0 + 64g + 4ly + a, columns col0 + 64h + 4lx .. + 3. Call in uniform control flow.
fn tile_product(lid: vec3<u32>, row0: u32, col0: u32, depth: u32) -> array<vec4<f32>, 16> {
    let tid = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i = i + 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    let tiles = (depth + BK - 1u) / BK;
    put_b(tid, 0u, fetch_b(tid, 0u, col0));
    put_a(tid, 0u, fetch_a(tid, row0, 0u));
    workgroupBarrier();
    for (var t = 0u; t < tiles; t = t + 1u) {
        let stage = t & 1u;
        let more = t + 1u < tiles;
        // The next tile's global loads, issued before this tile's products.
        var b_next: TileB;
        var a_next = vec4<f32>(0.0);
        if (more) {
            b_next = fetch_b(tid, (t + 1u) * BK, col0);
            a_next = fetch_a(tid, row0, (t + 1u) * BK);
        }
        // Written out, not looped: lavapipe counts every loop iteration of an invocation.
        depth_step(&acc, stage * BK, lid);
        depth_step(&acc, stage * BK + 1u, lid);
        depth_step(&acc, stage * BK + 2u, lid);
        depth_step(&acc, stage * BK + 3u, lid);
        depth_step(&acc, stage * BK + 4u, lid);
        depth_step(&acc, stage * BK + 5u, lid);
        depth_step(&acc, stage * BK + 6u, lid);
        depth_step(&acc, stage * BK + 7u, lid);
        if (more) {
            put_b(tid, 1u - stage, b_next);
            put_a(tid, 1u - stage, a_next);
        }
        workgroupBarrier();
    }
    return acc;
}

// The workgroup's whole tile: its sums over `depth`, each handed to `put_out`. Call in uniform
// control flow.
fn product_tile(wid: vec3<u32>, lid: vec3<u32>, depth: u32) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let acc = tile_product(lid, row0, col0, depth);
    for (var g = 0u; g < RG; g = g + 1u) {
        for (var a = 0u; a < 4u; a = a + 1u) {
            let row = row0 + 64u * g + 4u * lid.y + a;
            for (var h = 0u; h < 2u; h = h + 1u) {
                let v = acc[8u * g + 2u * a + h];
                let col = col0 + 64u * h + 4u * lid.x;
                put_out(row, col, v.x);
                put_out(row, col + 1u, v.y);
                put_out(row, col + 2u, v.z);
                put_out(row, col + 3u, v.w);
            }
        }
    }
}
