// Uniform parameters shared by the `sae_encode` kernels (prepended to each shader).

struct Params {
    rows: u32,
    d_in: u32,
    d_sae: u32,
    mode: u32,
    k: u32,
    // The block's first row in `x` (the product kernels read rows x_row0 .. x_row0 + rows).
    x_row0: u32,
    // 32-bit words per row of W_enc (a multiple of 4: rows start on 16-byte boundaries).
    w_stride: u32,
    _pad2: u32,
};
