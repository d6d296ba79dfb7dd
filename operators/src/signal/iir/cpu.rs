//! Cascades of second-order sections over many channels: the streaming kernel (state carried
//! across chunks, so any chunking gives the output of one pass over the whole signal) and the
//! zero-phase forward-backward pass of `scipy.signal.sosfiltfilt`.
//!
//! Each section runs in transposed direct form II, as `scipy.signal.sosfilt` does:
//! `y = b0·x + z0; z0 = b1·x − a1·y + z1; z1 = b2·x − a2·y`.

use neurostream_engine::{Frame, Result, Rows};

use crate::parallel::SharedMut;

use super::design::{sosfilt_zi, Section};

/// Filters rows of a multi-channel signal through a cascade, carrying state.
pub trait SosKernels: Send {
    /// Filters `data` (`rows × channels`, row-major) in place through `sections`; `state` is
    /// `sections × 2 × channels` (`z0` of every channel, then `z1`, per section) and is updated.
    fn filter(&mut self, sections: &[Section], state: &mut [f64], data: &mut [f32], channels: usize) -> Result<()>;

    /// Filters the rows of `frame` (host or device) continuing `state`. This filters a host
    /// copy; GPU kernels filter on the device and leave the result there when `keep_on_device`.
    fn filter_frame(&mut self, sections: &[Section], state: &mut [f64], frame: &Frame, keep_on_device: bool) -> Result<Rows> {
        let _ = keep_on_device;
        let mut data = frame.values()?.into_owned();
        self.filter(sections, state, &mut data, frame.width())?;
        Ok(Rows::Host(data))
    }
}

/// The CPU kernel: float64 arithmetic and state, channels in the inner loop (vectorized), one
/// section at a time over blocks of rows that stay in cache. With `threads > 1`, large chunks
/// are split by channel into shares on the shared pool ([`crate::parallel`]), each filtering its
/// own columns and state.
pub struct CpuSos {
    block: Vec<f64>,
    threads: usize,
}

impl CpuSos {
    /// A single-threaded kernel.
    pub fn new() -> CpuSos {
        CpuSos::with_threads(1)
    }

    /// A kernel splitting chunks of at least 64k values over `threads` threads by channel.
    pub fn with_threads(threads: usize) -> CpuSos {
        CpuSos {
            block: Vec::new(),
            threads: threads.max(1),
        }
    }
}

impl Default for CpuSos {
    fn default() -> Self {
        CpuSos::new()
    }
}

/// Rows per block: the block (`rows × channels` float64) stays within ~64 KiB.
fn block_rows(channels: usize) -> usize {
    (8192 / channels.max(1)).clamp(1, 1024)
}

impl SosKernels for CpuSos {
    fn filter(&mut self, sections: &[Section], state: &mut [f64], data: &mut [f32], channels: usize) -> Result<()> {
        let threads = self.threads.min(channels / 8).max(1);
        if threads > 1 && data.len() >= 65536 {
            return filter_split(sections, state, data, channels, threads);
        }
        filter_block(&mut self.block, sections, state, data, channels);
        Ok(())
    }
}

/// Splits the channels into `threads` column ranges and filters each on its own thread, in
/// place, block by block, with its own slice of the state.
fn filter_split(sections: &[Section], state: &mut [f64], data: &mut [f32], channels: usize, threads: usize) -> Result<()> {
    let per = channels.div_ceil(threads);
    let rows = data.len() / channels;
    let n = sections.len();
    // Each share reads and writes only its own column range of each row.
    let ptr = SharedMut(data.as_mut_ptr());
    let ranges: Vec<(usize, usize)> = (0..threads)
        .map(|t| ((t * per).min(channels), ((t + 1) * per).min(channels)))
        .filter(|(lo, hi)| hi > lo)
        .collect();
    let state_in = &*state;
    let states = crate::parallel::map_shares(ranges.len(), |t| {
        let (lo, hi) = ranges[t];
        let w = hi - lo;
        let mut st = vec![0f64; n * 2 * w];
        for sec in 0..n * 2 {
            st[sec * w..(sec + 1) * w].copy_from_slice(&state_in[sec * channels + lo..sec * channels + hi]);
        }
        let step = block_rows(w);
        let mut block = Vec::with_capacity(step * w);
        for start in (0..rows).step_by(step) {
            let m = step.min(rows - start);
            block.clear();
            for r in start..start + m {
                // SAFETY: row r's columns lo..hi lie inside `data` and belong to
                // this share alone.
                let row = unsafe { std::slice::from_raw_parts(ptr.get().add(r * channels + lo), w) };
                block.extend(row.iter().map(|&v| v as f64));
            }
            for (k, sec) in sections.iter().enumerate() {
                let (z0, z1) = st[k * 2 * w..(k + 1) * 2 * w].split_at_mut(w);
                section(sec, &mut block, z0, z1, w);
            }
            for (i, r) in (start..start + m).enumerate() {
                // SAFETY: as above.
                let row = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(r * channels + lo), w) };
                for (d, v) in row.iter_mut().zip(&block[i * w..(i + 1) * w]) {
                    *d = *v as f32;
                }
            }
        }
        st
    });
    for ((lo, hi), st) in ranges.iter().zip(states) {
        let w = hi - lo;
        for sec in 0..n * 2 {
            state[sec * channels + lo..sec * channels + hi].copy_from_slice(&st[sec * w..(sec + 1) * w]);
        }
    }
    Ok(())
}

/// The single-threaded cascade over `data`, block by block.
fn filter_block(block: &mut Vec<f64>, sections: &[Section], state: &mut [f64], data: &mut [f32], channels: usize) {
    {
        let rows = data.len() / channels.max(1);
        let step = block_rows(channels);
        for start in (0..rows).step_by(step) {
            let n = step.min(rows - start);
            let chunk = &mut data[start * channels..(start + n) * channels];
            block.clear();
            block.extend(chunk.iter().map(|&v| v as f64));
            for (s, sec) in sections.iter().enumerate() {
                let (z0, z1) = state[s * 2 * channels..(s + 1) * 2 * channels].split_at_mut(channels);
                section(sec, block, z0, z1, channels);
            }
            for (d, v) in chunk.iter_mut().zip(block.iter()) {
                *d = *v as f32;
            }
        }
    }
}

/// One section over a block of rows, in place.
#[inline]
fn section(s: &Section, block: &mut [f64], z0: &mut [f64], z1: &mut [f64], channels: usize) {
    let [b0, b1, b2, _, a1, a2] = *s;
    for row in block.chunks_exact_mut(channels) {
        for ((x, z0), z1) in row.iter_mut().zip(z0.iter_mut()).zip(z1.iter_mut()) {
            let xi = *x;
            let y = b0 * xi + *z0;
            *z0 = b1 * xi - a1 * y + *z1;
            *z1 = b2 * xi - a2 * y;
            *x = y;
        }
    }
}

/// The pad length `scipy.signal.sosfiltfilt` uses by default (odd extension).
pub fn filtfilt_padlen(sections: &[Section]) -> usize {
    let zeros_b = sections.iter().filter(|s| s[2] == 0.0).count();
    let zeros_a = sections.iter().filter(|s| s[5] == 0.0).count();
    3 * (2 * sections.len() + 1 - zeros_b.min(zeros_a))
}

/// `scipy.signal.sosfiltfilt(sections, x, axis=0)` of a whole signal (`rows × channels`), in
/// place: odd extension by [`filtfilt_padlen`] samples at both ends, a forward pass from the
/// steady state of the first sample, a backward pass from that of the last, trimmed.
pub fn sosfiltfilt(kernels: &mut dyn SosKernels, sections: &[Section], data: &mut [f32], channels: usize) -> Result<()> {
    let rows = data.len() / channels.max(1);
    let pad = filtfilt_padlen(sections);
    if rows <= pad {
        return Err(neurostream_engine::EngineError::Shape(format!(
            "zero-phase filtering needs more than {pad} samples per channel (the padding), the stream has {rows}"
        )));
    }
    let zi = sosfilt_zi(sections);
    let ext_rows = rows + 2 * pad;
    let mut ext = vec![0f32; ext_rows * channels];
    let at = |r: usize, c: usize| data[r * channels + c] as f64;
    for c in 0..channels {
        for i in 0..pad {
            // 2·x[0] − x[pad − i], then the signal, then 2·x[n−1] − x[n−2−i].
            ext[i * channels + c] = (2.0 * at(0, c) - at(pad - i, c)) as f32;
            ext[(pad + rows + i) * channels + c] = (2.0 * at(rows - 1, c) - at(rows - 2 - i, c)) as f32;
        }
    }
    ext[pad * channels..(pad + rows) * channels].copy_from_slice(data);
    let mut state = vec![0f64; sections.len() * 2 * channels];
    let init = |state: &mut [f64], first: &[f32]| {
        for (s, z) in zi.iter().enumerate() {
            for c in 0..channels {
                state[s * 2 * channels + c] = z[0] * first[c] as f64;
                state[s * 2 * channels + channels + c] = z[1] * first[c] as f64;
            }
        }
    };
    let first: Vec<f32> = ext[..channels].to_vec();
    init(&mut state, &first);
    kernels.filter(sections, &mut state, &mut ext, channels)?;
    reverse_rows(&mut ext, channels);
    let first: Vec<f32> = ext[..channels].to_vec();
    init(&mut state, &first);
    kernels.filter(sections, &mut state, &mut ext, channels)?;
    reverse_rows(&mut ext, channels);
    data.copy_from_slice(&ext[pad * channels..(pad + rows) * channels]);
    Ok(())
}

fn reverse_rows(data: &mut [f32], channels: usize) {
    let rows = data.len() / channels;
    for r in 0..rows / 2 {
        for c in 0..channels {
            data.swap(r * channels + c, (rows - 1 - r) * channels + c);
        }
    }
}
