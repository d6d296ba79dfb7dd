// C = alpha · op(A) · op(B) [+ bias over columns] [+ C], the training kernels' only dense
// product. op(A) is M×K: A row-major M×K (ta = 0) or K×M (ta = 1), read from element a_off.
// op(B) is K×N: B row-major K×N (tb = 0) or N×K (tb = 1). 64×64 tiles, 16×16 threads each
// computing 4×4 outputs, K in steps of 16 through workgroup memory.

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

var<workgroup> a_tile: array<f32, 1024>; // [kk * 64 + row]
var<workgroup> b_tile: array<f32, 1024>; // [kk * 64 + col]

fn load_a(i: u32, kk: u32) -> f32 {
    if (i >= G.m || kk >= G.k) {
        return 0.0;
    }
    if (G.ta == 0u) {
        return a[G.a_off + i * G.k + kk];
    }
    return a[G.a_off + kk * G.m + i];
}

fn load_b(kk: u32, j: u32) -> f32 {
    if (kk >= G.k || j >= G.n) {
        return 0.0;
    }
    if (G.tb == 0u) {
        return b[kk * G.n + j];
    }
    return b[j * G.k + kk];
}

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    let tid = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    let tiles = (G.k + 15u) / 16u;
    for (var t = 0u; t < tiles; t = t + 1u) {
        let k0 = t * 16u;
        for (var e = 0u; e < 4u; e = e + 1u) {
            let idx = tid + e * 256u;
            // Consecutive threads read consecutive addresses of whichever layout A and B have.
            var r = idx / 16u;
            var kk = idx % 16u;
            if (G.ta == 1u) {
                r = idx % 64u;
                kk = idx / 64u;
            }
            a_tile[kk * 64u + r] = load_a(row0 + r, k0 + kk);
            var cc = idx % 64u;
            var kb = idx / 64u;
            if (G.tb == 1u) {
                cc = idx / 16u;
                kb = idx % 16u;
            }
            b_tile[kb * 64u + cc] = load_b(k0 + kb, col0 + cc);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            let ab = kk * 64u + lid.y * 4u;
            let bb = kk * 64u + lid.x * 4u;
            let bv = vec4<f32>(b_tile[bb], b_tile[bb + 1u], b_tile[bb + 2u], b_tile[bb + 3u]);
            acc[0] = acc[0] + a_tile[ab] * bv;
            acc[1] = acc[1] + a_tile[ab + 1u] * bv;
            acc[2] = acc[2] + a_tile[ab + 2u] * bv;
            acc[3] = acc[3] + a_tile[ab + 3u] * bv;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = row0 + lid.y * 4u + i;
        if (r >= G.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j = j + 1u) {
            let col = col0 + lid.x * 4u + j;
            if (col >= G.n) {
                continue;
            }
            var v = G.alpha * acc[i][j];
            if (G.use_bias == 1u) {
                v = v + bias[col];
            }
            let at = r * G.n + col;
            if (G.accumulate == 1u) {
                v = v + c[at];
            }
            c[at] = v;
        }
    }
}
