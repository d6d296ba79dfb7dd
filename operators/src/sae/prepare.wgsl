// prepare: the SAE's input preparation (`Sae::prepare_input`) on the device, for rows another
// GPU operator left there: per-row normalization (none, a fixed scale, constant-norm rescale,
// layer norm), then `b_dec` subtracted when the SAE applies it to its input. One workgroup per
// row; rows src_row0.. of `x` go to rows dst_row0.. of `out`.

struct PrepareParams {
    rows: u32,
    d_in: u32,
    // 0 none, 1 scale, 2 constant-norm rescale, 3 layer norm.
    norm: u32,
    src_row0: u32,
    dst_row0: u32,
    scale: f32,
    subtract_b_dec: u32,
    _pad: u32,
};

@group(0) @binding(0) var<uniform> pp: PrepareParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> b_dec: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

// The sum of `v` over the workgroup (every invocation gets it).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn prepare(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= pp.rows) {
        return;
    }
    let d = pp.d_in;
    let src = (pp.src_row0 + row) * d;
    let dst = (pp.dst_row0 + row) * d;
    var scale = 1.0;
    var shift = 0.0;
    if (pp.norm == 1u) {
        scale = pp.scale;
    } else if (pp.norm == 2u) {
        var s = 0.0;
        for (var i = lid; i < d; i = i + WG) {
            s = s + x[src + i] * x[src + i];
        }
        let n = sqrt(workgroup_sum(lid, s));
        scale = select(0.0, sqrt(f32(d)) / n, n > 0.0);
    } else if (pp.norm == 3u) {
        var s = 0.0;
        for (var i = lid; i < d; i = i + WG) {
            s = s + x[src + i];
        }
        let mean = workgroup_sum(lid, s) / f32(d);
        var q = 0.0;
        for (var i = lid; i < d; i = i + WG) {
            let c = x[src + i] - mean;
            q = q + c * c;
        }
        let variance = workgroup_sum(lid, q) / f32(max(d, 2u) - 1u);
        scale = 1.0 / (sqrt(variance) + 1e-5);
        shift = mean;
    }
    for (var i = lid; i < d; i = i + WG) {
        var v = (x[src + i] - shift) * scale;
        if (pp.subtract_b_dec != 0u) {
            v = v - b_dec[i];
        }
        out[dst + i] = v;
    }
}
