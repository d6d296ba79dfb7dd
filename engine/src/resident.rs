//! Rows that stay on a GPU between operators: a GPU operator leaves its dense output in a device
//! buffer ([`DeviceRows`]) and the next GPU operator on the same worker binds that buffer as its
//! input, so a chain of GPU operators crosses the bus once in and once out. The runtime decides
//! where rows may stay on the device (see [`crate::node::Operator::takes_device_rows`]) and
//! copies them back to the host everywhere else: before a CPU operator, a sink, an exchange
//! between processes, or a checkpoint.

use std::fmt;
use std::sync::Arc;

use crate::device::{GpuContext, PooledBuffer};
use crate::error::Result;

/// The values of a dense frame (`rows × width` `f32`, row-major) held in a GPU buffer.
pub struct DeviceRows {
    ctx: Arc<GpuContext>,
    buffer: PooledBuffer,
    values: usize,
}

impl DeviceRows {
    /// Wraps `buffer`, whose first `values` `f32` values are the rows (it may be longer).
    pub fn new(ctx: Arc<GpuContext>, buffer: PooledBuffer, values: usize) -> DeviceRows {
        debug_assert!(buffer.size() >= values as u64 * 4);
        DeviceRows { ctx, buffer, values }
    }

    /// The device the buffer lives on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The buffer (bind it as `array<f32>`; values past [`DeviceRows::values`] are unspecified).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The number of `f32` values the rows hold.
    pub fn values(&self) -> usize {
        self.values
    }

    /// Copies the values back to the host (waits for the work that writes them).
    pub fn download(&self) -> Result<Vec<f32>> {
        if self.values == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.ctx.run(&[], Some((&self.buffer, self.values as u64 * 4)))?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }
}

impl fmt::Debug for DeviceRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceRows({} values on {})", self.values, self.ctx.info.name)
    }
}

/// Two frames' device rows are equal only when they are the same buffer.
impl PartialEq for DeviceRows {
    fn eq(&self, other: &DeviceRows) -> bool {
        std::ptr::eq(self, other)
    }
}

/// The values a kernel computed: on the host, or left on its device for the next GPU operator.
pub enum Rows {
    /// Values in host memory.
    Host(Vec<f32>),
    /// Values in a device buffer.
    Device(Arc<DeviceRows>),
}

impl Rows {
    /// The `values` f32 values a kernel wrote into `buffer` on `ctx`: the bytes it read back in
    /// the same submission (`read_back`, when the output must reach the host), else the buffer,
    /// left on the device.
    pub fn from_kernel(ctx: &Arc<GpuContext>, buffer: PooledBuffer, values: usize, read_back: Option<Vec<u8>>) -> Rows {
        match read_back {
            Some(bytes) => Rows::Host(bytemuck::cast_slice(&bytes).to_vec()),
            None => Rows::Device(Arc::new(DeviceRows::new(ctx.clone(), buffer, values))),
        }
    }

    /// The values on the host (copied back when they live on a GPU).
    pub fn into_host(self) -> Result<Vec<f32>> {
        match self {
            Rows::Host(values) => Ok(values),
            Rows::Device(rows) => rows.download(),
        }
    }
}

/// A kernel's input buffer on its device: a frame's rows already there, or an upload of them.
pub enum DeviceInput {
    /// Rows another GPU operator left on this device.
    Resident(Arc<DeviceRows>),
    /// Host rows uploaded for this call.
    Uploaded(PooledBuffer),
}

impl std::ops::Deref for DeviceInput {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        match self {
            DeviceInput::Resident(rows) => rows.buffer(),
            DeviceInput::Uploaded(buffer) => buffer,
        }
    }
}

impl GpuContext {
    /// `frame`'s values as a buffer on this device: its own device rows when they live here
    /// (nothing moves), else an upload of its host values (rows on another device are copied
    /// back first).
    pub fn input_rows(self: &Arc<Self>, label: &str, frame: &crate::Frame) -> Result<DeviceInput> {
        match &frame.device {
            Some(rows) if Arc::ptr_eq(rows.context(), self) => Ok(DeviceInput::Resident(rows.clone())),
            _ => Ok(DeviceInput::Uploaded(
                self.storage_init(label, bytemuck::cast_slice(&frame.values()?)),
            )),
        }
    }

    /// A buffer of this device holding a copy of `frame`'s values that the caller may write in
    /// place: copied on the device when the rows live here (another consumer of the same frame
    /// may still read them), else uploaded.
    pub fn owned_rows(self: &Arc<Self>, label: &str, frame: &crate::Frame) -> Result<PooledBuffer> {
        match self.input_rows(label, frame)? {
            DeviceInput::Uploaded(buffer) => Ok(buffer),
            DeviceInput::Resident(rows) => {
                let bytes = (rows.values() as u64 * 4).max(4);
                let copy = self.storage_output(label, bytes);
                self.copy_buffers(&[(rows.buffer(), 0, &copy, 0, bytes)]);
                Ok(copy)
            }
        }
    }
}

/// Where a run of a sparse frame's rows lies in a GPU buffer (see [`DevicePairs`]). The buffer
/// holds `u32` words: row `r`'s entries are the slots `offsets[row0 + r] .. offsets[row0 + r + 1]`
/// (or `(row0 + r) × fixed_k ..` `+ fixed_k` without offsets), each an id at `ids_at + slot`
/// and an activation's `f32` bits at `values_at + slot`. Slots may hold entries the host's
/// frame drops (activations ≤ 0, padding ids ≥ the feature count): consumers skip those.
#[derive(Clone)]
pub struct PairsPart {
    /// Rows of the frame this part holds; the parts cover the frame's rows in order.
    pub rows: usize,
    /// The words.
    pub pairs: Arc<PooledBuffer>,
    /// Slot offsets per buffer row (`None`: `fixed_k` slots per row).
    pub offsets: Option<Arc<PooledBuffer>>,
    /// Slots per row without offsets.
    pub fixed_k: u32,
    /// The buffer row of the part's first row.
    pub row0: u32,
    /// Word index of the first id.
    pub ids_at: u32,
    /// Word index of the first activation.
    pub values_at: u32,
}

/// A sparse frame's entries as they also lie on a GPU, where the operator that computed them
/// left them for a consumer on the same device ([`crate::SparseFrame::device`]); the host's
/// ids and values stay the frame's contents.
#[derive(Clone)]
pub struct DevicePairs {
    ctx: Arc<GpuContext>,
    /// The runs of rows, in order.
    pub parts: Vec<PairsPart>,
}

impl DevicePairs {
    /// Pairs on `ctx`, in `parts`.
    pub fn new(ctx: Arc<GpuContext>, parts: Vec<PairsPart>) -> DevicePairs {
        DevicePairs { ctx, parts }
    }

    /// The device the buffers live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Rows the parts hold.
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// The parts holding rows `rows` (a range of this one's rows).
    pub fn slice(&self, rows: std::ops::Range<usize>) -> DevicePairs {
        let mut parts = Vec::new();
        let mut first = 0;
        for p in &self.parts {
            let (a, b) = (rows.start.max(first), rows.end.min(first + p.rows));
            if a < b {
                parts.push(PairsPart {
                    rows: b - a,
                    row0: p.row0 + (a - first) as u32,
                    ..p.clone()
                });
            }
            first += p.rows;
        }
        DevicePairs {
            ctx: self.ctx.clone(),
            parts,
        }
    }

    /// Appends `other`'s rows (on the same device).
    pub fn append(&mut self, other: DevicePairs) {
        debug_assert!(Arc::ptr_eq(&self.ctx, &other.ctx));
        self.parts.extend(other.parts);
    }
}

impl fmt::Debug for DevicePairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DevicePairs({} rows in {} parts on {})",
            self.rows(),
            self.parts.len(),
            self.ctx.info.name
        )
    }
}

/// Two frames' device pairs are equal only when they are the same.
impl PartialEq for DevicePairs {
    fn eq(&self, other: &DevicePairs) -> bool {
        std::ptr::eq(self, other)
    }
}
