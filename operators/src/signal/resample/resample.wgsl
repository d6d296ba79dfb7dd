struct RsParams { outputs: u32, channels: u32, rows: u32, taps: u32, up: i32, down: i32, base: i32, _pad: u32 };
@group(0) @binding(0) var<uniform> P: RsParams;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> ms: array<i32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn resample(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= P.outputs * P.channels) {
        return;
    }
    let o = idx / P.channels;
    let c = idx % P.channels;
    let t = ms[o] * P.down;
    var acc = 0.0;
    // Inputs i with 0 <= t - i·up < taps, i.e. the taps of one polyphase branch.
    for (var k = ((t % P.up) + P.up) % P.up; k < i32(P.taps); k = k + P.up) {
        let i = (t - k) / P.up;
        let r = i - P.base;
        if (r >= 0 && r < i32(P.rows)) {
            acc = acc + h[k] * x[u32(r) * P.channels + c];
        }
    }
    y[idx] = acc;
}
