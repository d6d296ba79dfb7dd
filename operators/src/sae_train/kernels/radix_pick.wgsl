// BatchTopK's cut, step 2 of 2: one thread picks the digit holding the remaining-th largest
// value, extends the prefix, clears the bins. After 4 passes the prefix is the bit pattern of
// the want-th largest positive value (keep-all flag set when there are at most `want`).
@group(0) @binding(1) var<storage, read_write> sel: array<u32>;

@compute @workgroup_size(1)
fn radix_pick() {
    let pass_index = sel[258];
    let shift = 24u - 8u * min(pass_index, 3u);
    if (pass_index == 0u) {
        var total = 0u;
        for (var i = 0u; i < 256u; i = i + 1u) {
            total = total + sel[i];
        }
        sel[257] = P.want;
        if (total <= P.want) {
            sel[259] = 1u;
        }
    }
    if (sel[259] == 0u && pass_index < 4u) {
        let remaining = sel[257];
        var above = 0u;
        for (var digit = 255i; digit >= 0i; digit = digit - 1i) {
            let c = sel[u32(digit)];
            if (above + c >= remaining) {
                sel[256] = sel[256] | (u32(digit) << shift);
                sel[257] = remaining - above;
                break;
            }
            above = above + c;
        }
    }
    for (var i = 0u; i < 256u; i = i + 1u) {
        sel[i] = 0u;
    }
    sel[258] = pass_index + 1u;
}
