// Welch segments of sliding windows on the device (see device.rs): one workgroup per (window,
// channel, segment) computes the segment's mean (a workgroup reduction), then writes
// (x − mean) · hann as one row of `seg_out`. Loops run nperseg / 64 iterations (lavapipe
// miscomputes past ~65,536 per invocation).

struct SegParams { items: u32, channels: u32, n: u32, step: u32, segs: u32, _p0: u32, _p1: u32, _p2: u32 };
@group(0) @binding(0) var<uniform> S: SegParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> starts: array<u32>;
@group(0) @binding(3) var<storage, read> hann: array<f32>;
@group(0) @binding(4) var<storage, read_write> seg_out: array<f32>;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn segments(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let item = wid.x + wid.y * nwg.x;
    if (item >= S.items) {
        return;
    }
    let s = item % S.segs;
    let wc = item / S.segs;
    let c = wc % S.channels;
    let w = wc / S.channels;
    let first = starts[w] + s * S.step;
    var acc = 0.0;
    for (var t = lid; t < S.n; t = t + 64u) {
        acc = acc + x[(first + t) * S.channels + c];
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k = k >> 1u) {
        if (lid < k) {
            partial[lid] = partial[lid] + partial[lid + k];
        }
        workgroupBarrier();
    }
    let mean = partial[0] / f32(S.n);
    for (var t = lid; t < S.n; t = t + 64u) {
        seg_out[item * S.n + t] = (x[(first + t) * S.channels + c] - mean) * hann[t];
    }
}
