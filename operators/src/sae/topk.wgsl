// wgpu top-k selection of `sae_encode`: for each row of a block of raw pre-activations, the k
// largest values and their ids, largest first (ties: lower id first).


@group(0) @binding(0) var<uniform> tparams: Params;
@group(0) @binding(1) var<storage, read_write> pre: array<f32>;
@group(0) @binding(2) var<storage, read_write> picked: array<f32>; // rows x k values, then rows x k ids (as f32 bits)

const WG: u32 = 256u;
var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

// A value and its column; the empty best is (-3e38, 0xffffffff).
struct Best {
    v: f32,
    i: u32,
};

// The best of columns `lane, lane + WG, ...` of the row at `base` (ties: the lower column).
fn best_of_columns(base: u32, n: u32, lane: u32) -> Best {
    var b = Best(-3.0e38, 0xffffffffu);
    for (var j = lane; j < n; j = j + WG) {
        let v = pre[base + j];
        if (v > b.v || (v == b.v && j < b.i)) {
            b = Best(v, j);
        }
    }
    return b;
}

// An invocation's best before the first round (nothing for rows past the block).
fn first_best(valid: bool, base: u32, n: u32, lane: u32) -> Best {
    if (!valid) {
        return Best(-3.0e38, 0xffffffffu);
    }
    return best_of_columns(base, n, lane);
}

// Round `round`'s winner: invocation 0 writes it to `picked`, and the winner's owner takes it
// out of the row and finds its own next best (into `mine`).
fn take_winner(row: u32, round: u32, valid: bool, win: Best, lane: u32, mine: ptr<function, Best>) {
    let n = tparams.d_sae;
    let base = row * n;
    if (lane == 0u && valid) {
        picked[row * tparams.k + round] = win.v;
        picked[tparams.rows * tparams.k + row * tparams.k + round] = bitcast<f32>(win.i);
    }
    if (valid && win.i < n && win.i % WG == lane) {
        pre[base + win.i] = -3.0e38;
        *mine = best_of_columns(base, n, lane);
    }
}

// One workgroup per row: k rounds of a parallel arg-max; each winner is taken out of the row.
// Each invocation owns the strided columns `lid, lid + WG, ...` and keeps the best of them, so
// the row is read once, and in a round only the winner's owner reads its columns again (the
// k full scans per row this replaced read the row k times).
@compute @workgroup_size(256)
fn topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    let valid = row < tparams.rows;
    let n = tparams.d_sae;
    let base = row * n;
    var mine = first_best(valid, base, n, lid.x);
    for (var round = 0u; round < tparams.k; round = round + 1u) {
        take_winner(row, round, valid, workgroup_best(mine, lid.x), lid.x, &mine);
        workgroupBarrier();
    }
}

// The best of every invocation's `mine` (ties: the lower column), by a tree in workgroup memory.
fn workgroup_best(mine: Best, lane: u32) -> Best {
    best_v[lane] = mine.v;
    best_i[lane] = mine.i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            let ov = best_v[lane + s];
            let oi = best_i[lane + s];
            if (ov > best_v[lane] || (ov == best_v[lane] && oi < best_i[lane])) {
                best_v[lane] = ov;
                best_i[lane] = oi;
            }
        }
        workgroupBarrier();
    }
    return Best(best_v[0], best_i[0]);
}

// Group max (sparsify `groupmax`): one workgroup per row, whose `k` groups of d_sae / k
// consecutive columns each give their best (value, column; ties: the lower column) to `picked`,
// in group order (`take_block` drops the non-positive ones). Groups of at most SMALL_GROUP
// columns are scanned whole by one invocation each (no barriers); larger ones, of which there
// are few, are reduced by the workgroup one after another. Either way an invocation's loops run
// about d_sae / 256 times.
const SMALL_GROUP: u32 = 64u;

@compute @workgroup_size(256)
fn groupmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    let valid = row < tparams.rows;
    let k = tparams.k;
    let group = tparams.d_sae / k;
    let base = row * tparams.d_sae;
    if (group <= SMALL_GROUP) {
        if (!valid) {
            return;
        }
        for (var g = lid.x; g < k; g = g + WG) {
            var mine = Best(-3.0e38, 0xffffffffu);
            for (var j = g * group; j < (g + 1u) * group; j = j + 1u) {
                let v = pre[base + j];
                if (v > mine.v) {
                    mine = Best(v, j);
                }
            }
            picked[row * k + g] = mine.v;
            picked[tparams.rows * k + row * k + g] = bitcast<f32>(mine.i);
        }
        return;
    }
    for (var g = 0u; g < k; g = g + 1u) {
        var mine = Best(-3.0e38, 0xffffffffu);
        if (valid) {
            let end = (g + 1u) * group;
            for (var j = g * group + lid.x; j < end; j = j + WG) {
                let v = pre[base + j];
                if (v > mine.v) {
                    mine = Best(v, j);
                }
            }
        }
        let win = workgroup_best(mine, lid.x);
        if (lid.x == 0u && valid) {
            picked[row * k + g] = win.v;
            picked[tparams.rows * k + row * k + g] = bitcast<f32>(win.i);
        }
        workgroupBarrier();
    }
}
