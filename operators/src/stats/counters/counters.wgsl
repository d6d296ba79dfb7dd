// feature_stats counters on the device: one workgroup per token adds the token's firing
// features (activation > 0) to a stream's unsettled counts.
//
// `acc` holds, for n = n_features: firing counts [0, n), activation sums as f32 bits [n, 2n),
// maxima as f32 bits [2n, 3n) (positive floats order as their bits), the last firing token
// (index + 1 among the unsettled tokens) [3n, 4n), then the activation histogram: per feature
// ceil(bins / 2) words, bin b in the low (even b) or high (odd b) 16 bits of word b / 2; a count
// never passes 16 bits, since at most 16384 tokens are added between settles.
// `l0` gets each unsettled token's number of firing features.
//
// The entries are `u32` words (engine `PairsPart`): row r's slots are
// offsets[row0 + r] .. offsets[row0 + r + 1], or (row0 + r) * fixed_k .. + fixed_k when
// fixed_k > 0 (TopK's k slots per row, padding included); slot i holds an id at ids_at + i and
// an activation's f32 bits at values_at + i.

struct Params {
    rows: u32,
    n_features: u32,
    bins: u32,
    // Index among the unsettled tokens of this dispatch's first row.
    first: u32,
    row0: u32,
    fixed_k: u32,
    ids_at: u32,
    values_at: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> offsets: array<u32>;
@group(0) @binding(2) var<storage, read> pairs: array<u32>;
// bins - 1 thresholds: a value's bin is the number at or below it (LogBins::f32_thresholds).
@group(0) @binding(3) var<storage, read> thresholds: array<f32>;
@group(0) @binding(4) var<storage, read_write> acc: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> l0: array<u32>;

const WG: u32 = 64u;

var<workgroup> fired: atomic<u32>;

fn bin_of(a: f32) -> u32 {
    // Upper bound: the first threshold above `a`.
    var lo = 0u;
    var hi = p.bins - 1u;
    while lo < hi {
        let mid = (lo + hi) / 2u;
        if thresholds[mid] <= a {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

fn add_sum(i: u32, a: f32) {
    var old = atomicLoad(&acc[i]);
    loop {
        let r = atomicCompareExchangeWeak(&acc[i], old, bitcast<u32>(bitcast<f32>(old) + a));
        if r.exchanged {
            break;
        }
        old = r.old_value;
    }
}

@compute @workgroup_size(64)
fn accumulate(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if lid == 0u {
        atomicStore(&fired, 0u);
    }
    workgroupBarrier();
    let n = p.n_features;
    if row < p.rows {
        let r = p.row0 + row;
        var start = r * p.fixed_k;
        var end = start + p.fixed_k;
        if p.fixed_k == 0u {
            start = offsets[r];
            end = offsets[r + 1u];
        }
        // Each invocation takes every 64th entry: a row of n entries loops n / 64 times.
        for (var i = start + lid; i < end; i += WG) {
            let a = bitcast<f32>(pairs[p.values_at + i]);
            let f = pairs[p.ids_at + i];
            if a > 0.0 && f < n {
                atomicAdd(&fired, 1u);
                atomicAdd(&acc[f], 1u);
                add_sum(n + f, a);
                atomicMax(&acc[2u * n + f], bitcast<u32>(a));
                atomicMax(&acc[3u * n + f], p.first + row + 1u);
                if p.bins > 0u {
                    let b = bin_of(a);
                    let words = (p.bins + 1u) / 2u;
                    atomicAdd(&acc[4u * n + f * words + b / 2u], select(1u, 65536u, (b & 1u) == 1u));
                }
            }
        }
    }
    workgroupBarrier();
    if lid == 0u && row < p.rows {
        l0[p.first + row] = atomicLoad(&fired);
    }
}
