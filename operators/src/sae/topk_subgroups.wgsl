// `topk` with each round's arg-max by subgroup operations, for adapters with subgroups
// (appended to `topk.wgsl` only then). Each subgroup's best (its largest value, then the lowest
// column holding it) goes to workgroup memory, and every invocation reduces those few entries
// itself: two barriers per round instead of nine.
@compute @workgroup_size(256)
fn topk_subgroups(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) group: u32,
    @builtin(num_subgroups) groups: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    let valid = row < tparams.rows;
    let n = tparams.d_sae;
    let base = row * n;
    var mine = first_best(valid, base, n, lid.x);
    for (var round = 0u; round < tparams.k; round = round + 1u) {
        let top = subgroupMax(mine.v);
        let at = subgroupMin(select(0xffffffffu, mine.i, mine.v == top));
        if (lane == 0u) {
            best_v[group] = top;
            best_i[group] = at;
        }
        workgroupBarrier();
        var win = Best(best_v[0], best_i[0]);
        for (var g = 1u; g < groups; g = g + 1u) {
            let v = best_v[g];
            if (v > win.v || (v == win.v && best_i[g] < win.i)) {
                win = Best(v, best_i[g]);
            }
        }
        take_winner(row, round, valid, win, lid.x, &mine);
        workgroupBarrier();
    }
}
