// BatchTopK's cut, step 1 of 2 (run 4 times): histogram of one 8-bit digit (most significant
// first) of the positive values of h whose higher digits equal the prefix found so far.
// sel: [0, 256) bins, 256 prefix, 257 remaining, 258 pass, 259 keep-all flag.
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read_write> sel: array<atomic<u32>>;

var<workgroup> local_bins: array<atomic<u32>, 256>;

@compute @workgroup_size(256)
fn radix_hist(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    atomicStore(&local_bins[lid.x], 0u);
    workgroupBarrier();
    let pass_index = atomicLoad(&sel[258]);
    let prefix = atomicLoad(&sel[256]);
    let shift = 24u - 8u * min(pass_index, 3u);
    let total = P.rows * P.m;
    let stride = nwg.x * nwg.y * 256u;
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid.x; i < total; i = i + stride) {
        let v = h[i];
        if (v > 0.0) {
            let bits = bitcast<u32>(v);
            var matches = true;
            if (pass_index > 0u) {
                let hs = shift + 8u;
                matches = (bits >> hs) == (prefix >> hs);
            }
            if (matches) {
                atomicAdd(&local_bins[(bits >> shift) & 255u], 1u);
            }
        }
    }
    workgroupBarrier();
    let count = atomicLoad(&local_bins[lid.x]);
    if (count > 0u) {
        atomicAdd(&sel[lid.x], count);
    }
}
