// Per row of h (rows × m): keep the k largest values that are > 0 (ties: lower latent first),
// among dead latents only when P.aux = 1; write them into out (zeros elsewhere).
// One workgroup per row runs k rounds of a parallel arg-max, each over the entries ordered
// after the previous round's winner, so h is never modified; the last winner then bounds the set.
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> dead: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

const NONE_V: f32 = -3.0e38;
const NONE_I: u32 = 0xffffffffu;

fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(256)
fn topk_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    let valid = row < P.rows;
    let n = P.m;
    let base = row * n;
    // Each invocation owns the strided columns `lid, lid + 256, ...` and keeps the best of them
    // ordered after the last winner. Every other invocation's best ranks below a round's winner
    // (it lost to it), so only the winner's owner looks again: a row is read about once, not
    // once per round.
    var pv = NONE_V;
    var pi = NONE_I;
    var cv = NONE_V;
    var ci = NONE_I;
    if (valid) {
        for (var j = lid.x; j < n; j = j + 256u) {
            if (P.aux == 1u && dead[j] == 0u) {
                continue;
            }
            let v = h[base + j];
            if (better(v, j, cv, ci)) {
                cv = v;
                ci = j;
            }
        }
    }
    for (var round = 0u; round < P.k; round = round + 1u) {
        best_v[lid.x] = cv;
        best_i[lid.x] = ci;
        workgroupBarrier();
        for (var s = 128u; s > 0u; s = s / 2u) {
            if (lid.x < s && better(best_v[lid.x + s], best_i[lid.x + s], best_v[lid.x], best_i[lid.x])) {
                best_v[lid.x] = best_v[lid.x + s];
                best_i[lid.x] = best_i[lid.x + s];
            }
            workgroupBarrier();
        }
        pv = best_v[0];
        pi = best_i[0];
        if (valid && pi < n && pi % 256u == lid.x) {
            cv = NONE_V;
            ci = NONE_I;
            for (var j = lid.x; j < n; j = j + 256u) {
                if (P.aux == 1u && dead[j] == 0u) {
                    continue;
                }
                let v = h[base + j];
                let after = v < pv || (v == pv && j > pi);
                if (after && better(v, j, cv, ci)) {
                    cv = v;
                    ci = j;
                }
            }
        }
        workgroupBarrier();
    }
    if (!valid) {
        return;
    }
    for (var j = lid.x; j < n; j = j + 256u) {
        let v = h[base + j];
        let eligible = P.aux == 0u || dead[j] != 0u;
        let kept = P.k > 0u && eligible && v > 0.0 && (v > pv || (v == pv && j <= pi));
        out[base + j] = select(0.0, v, kept);
    }
}
