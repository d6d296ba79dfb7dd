struct FirParams { rows: u32, channels: u32, taps: u32, _pad: u32 };
@group(0) @binding(0) var<uniform> P: FirParams;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;   // (taps - 1 + rows) x channels
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn fir(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= P.rows * P.channels) {
        return;
    }
    let r = i / P.channels;
    let c = i % P.channels;
    var acc = 0.0;
    for (var k = 0u; k < P.taps; k = k + 1u) {
        acc = acc + h[k] * x[(r + P.taps - 1u - k) * P.channels + c];
    }
    y[i] = acc;
}
