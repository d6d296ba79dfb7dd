// wgpu sparsification of `sae_encode` (ReLU, JumpReLU, gated): the activations of a block of
// rows stay on the device; `count` writes each row's number of active latents, the host turns
// the counts into offsets, and `compact` writes each row's (id, value) pairs at its offset.
// Within a row the pairs come in no particular order (the host sorts each row by value).
// One workgroup per row; each invocation scans d_sae / 256 latents (short loops, as lavapipe
// needs).

@group(0) @binding(0) var<uniform> cparams: Params;
@group(0) @binding(1) var<storage, read> act: array<f32>;       // rows x d_sae activations, 0 where inactive
@group(0) @binding(2) var<storage, read_write> index: array<u32>; // count: rows counts; compact: rows + 1 offsets
@group(0) @binding(3) var<storage, read_write> pairs: array<u32>; // total ids, then total values (f32 bits)

const CWG: u32 = 256u;
var<workgroup> slot: atomic<u32>;

@compute @workgroup_size(256)
fn count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    let valid = row < cparams.rows;
    if (lid.x == 0u) {
        atomicStore(&slot, 0u);
    }
    workgroupBarrier();
    var c = 0u;
    if (valid) {
        let base = row * cparams.d_sae;
        for (var j = lid.x; j < cparams.d_sae; j = j + CWG) {
            if (act[base + j] > 0.0) {
                c = c + 1u;
            }
        }
    }
    atomicAdd(&slot, c);
    workgroupBarrier();
    if (lid.x == 0u && valid) {
        index[row] = atomicLoad(&slot);
    }
}

@compute @workgroup_size(256)
fn compact(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    let valid = row < cparams.rows;
    if (lid.x == 0u) {
        atomicStore(&slot, 0u);
    }
    workgroupBarrier();
    if (valid) {
        let base = row * cparams.d_sae;
        let start = index[row];
        let total = index[cparams.rows];
        for (var j = lid.x; j < cparams.d_sae; j = j + CWG) {
            let v = act[base + j];
            if (v > 0.0) {
                let s = start + atomicAdd(&slot, 1u);
                pairs[s] = j;
                pairs[total + s] = bitcast<u32>(v);
            }
        }
    }
}
