// Uniform parameters shared by the training kernels (prepended to each shader but the GEMM).
// arch: 0 topk, 1 batchtopk, 2 relu, 3 jumprelu. k: selection rounds of topk_rows;
// aux = 1: topk_rows selects among dead latents only. want: BatchTopK's kept count (k·rows).
// lam: L1 / L0 coefficient; eps: JumpReLU kernel width; inv_b: 1 / rows.

struct TrainParams {
    rows: u32,
    d: u32,
    m: u32,
    arch: u32,
    k: u32,
    want: u32,
    aux: u32,
    _pad0: u32,
    lam: f32,
    eps: f32,
    inv_b: f32,
    _pad1: f32,
};

@group(0) @binding(0) var<uniform> P: TrainParams;

fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}
