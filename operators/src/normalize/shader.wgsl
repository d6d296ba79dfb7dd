// wgpu kernels of `normalize`. Row-major data, `rows x width` f32.
// Linear thread index: gid.x + gid.y * num_workgroups.x * WG (see engine::device::workgroups_1d).

const WG: u32 = 256u;

struct Params {
    rows: u32,
    width: u32,
    epsilon: f32,
    target_norm: f32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// affine: [mean(width), inv_std(width)]
// running: [count0, then per channel mean0(width), m2_0(width)]
@group(0) @binding(3) var<storage, read> aux: array<f32>;

// out = (x - mean) * inv_std, one thread per element.
@compute @workgroup_size(256)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let n = params.rows * params.width;
    if (i >= n) { return; }
    let c = i % params.width;
    y[i] = (x[i] - aux[c]) * aux[params.width + c];
}

// Running z-score, one thread per channel. Rows are shifted by the carried mean so the
// frame's own statistics stay small; the carried statistics (count0, mean0, m2_0) come
// from float64 on the host. After the rows, the frame's local mean (shifted) and m2 are
// written after the outputs: y[rows*width + c] and y[rows*width + width + c].
@compute @workgroup_size(256)
fn running(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x + gid.y * nwg.x * WG;
    let w = params.width;
    if (c >= w) { return; }
    let n0 = aux[0];
    let mean0 = aux[1u + c];
    let m2_0 = aux[1u + w + c];
    var nl = 0.0;
    var ml = 0.0;
    var m2l = 0.0;
    for (var r = 0u; r < params.rows; r = r + 1u) {
        let v = x[r * w + c] - mean0;
        nl = nl + 1.0;
        let d = v - ml;
        ml = ml + d / nl;
        m2l = m2l + d * (v - ml);
        let n = n0 + nl;
        let shift = ml * nl / n;
        let m2 = m2_0 + m2l + ml * ml * n0 * nl / n;
        let variance = m2 / n;
        y[r * w + c] = (v - shift) / sqrt(variance + params.epsilon);
    }
    y[params.rows * w + c] = ml;
    y[params.rows * w + w + c] = m2l;
}

var<workgroup> partial: array<f32, 256>;

// Each row scaled to L2 norm `target`, one workgroup per row.
@compute @workgroup_size(256)
fn l2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    // Every invocation of the workgroup reaches the barriers; out-of-range rows only skip the writes.
    let valid = row < params.rows;
    let w = params.width;
    let base = row * w;
    var s = 0.0;
    if (valid) {
        for (var c = lid.x; c < w; c = c + WG) {
            let v = x[base + c];
            s = s + v * v;
        }
    }
    partial[lid.x] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid.x < stride) {
            partial[lid.x] = partial[lid.x] + partial[lid.x + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    var scale = 0.0;
    if (total > 0.0) {
        scale = params.target_norm / sqrt(total);
    }
    if (valid) {
        for (var c = lid.x; c < w; c = c + WG) {
            y[base + c] = x[base + c] * scale;
        }
    }
}
