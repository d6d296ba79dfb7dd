//! The compute device: wgpu (Vulkan, Metal, DX12) or the CPU kernels.
//!
//! `auto` takes a hardware GPU when one is present and the CPU otherwise; a software Vulkan
//! driver (Mesa lavapipe) never counts as a GPU for `auto`, but `gpu` accepts it when
//! `allow_software_gpu` is set (or `NEUROSTREAM_ALLOW_SOFTWARE_GPU=1`), which is how CI runs
//! the wgpu kernels. `gpu` with no usable adapter is an error unless `gpu_fallback = "cpu"`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Subgroups narrower than this many invocations are not used by the kernels: a round of the
/// TopK selection then reduces more than 8 subgroup winners per invocation, and on lavapipe
/// (8 lanes) the workgroup-memory tree measured faster (4.3–4.6 against 5.1–5.9 ms per token
/// at 576 → 16384, batch 256).
pub const SUBGROUP_MIN_LANES: u32 = 32;

/// The device a pipeline or operator asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A hardware GPU when present, else the CPU.
    #[default]
    Auto,
    /// The CPU kernels.
    Cpu,
    /// A GPU through wgpu; an error when none can be used.
    Gpu,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "gpu" => Ok(DeviceChoice::Gpu),
            other => Err(format!("device must be \"auto\", \"cpu\" or \"gpu\", found \"{other}\"")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Gpu => "gpu",
        })
    }
}

/// Where an operator instance computes.
#[derive(Clone)]
pub enum ComputeDevice {
    /// CPU kernels.
    Cpu,
    /// wgpu kernels on this GPU.
    Gpu(Arc<GpuContext>),
}

impl ComputeDevice {
    /// `cpu` or `gpu (NAME, BACKEND)`.
    pub fn describe(&self) -> String {
        match self {
            ComputeDevice::Cpu => "cpu".into(),
            ComputeDevice::Gpu(g) => format!("gpu ({})", g.describe()),
        }
    }
}

/// Rules for turning a [`DeviceChoice`] into a [`ComputeDevice`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DevicePolicy {
    /// Accept a software (CPU) Vulkan adapter for `gpu`.
    pub allow_software_gpu: bool,
    /// On failure to get the GPU asked for, warn and use the CPU instead of failing.
    pub fallback_to_cpu: bool,
}

/// Resolves device choices for a process, creating at most one GPU context and sharing it.
#[derive(Default)]
pub struct DeviceManager {
    policy: DevicePolicy,
    hardware: Option<std::result::Result<Arc<GpuContext>, String>>,
    software: Option<std::result::Result<Arc<GpuContext>, String>>,
    /// `auto` found no GPU device node and said so (see [`hardware_gpu_possible`]).
    auto_skipped: bool,
}

/// Device nodes of GPU drivers without a DRM render node: NVIDIA's, WSL's, Jetson's, Arm Mali's
/// and Qualcomm Adreno's.
const GPU_NODES: [&str; 6] = [
    "/dev/nvidiactl",
    "/dev/dxg",
    "/dev/nvhost-ctrl",
    "/dev/nvmap",
    "/dev/mali0",
    "/dev/kgsl-3d0",
];

/// Whether this machine may have a hardware GPU. On Linux every hardware GPU driver shows a
/// device node (a DRM render node or one of `GPU_NODES`); without one, asking wgpu would only
/// load the software Vulkan driver (LLVM: 40 ms and ~55 MB of resident memory measured) for a
/// CPU run. `NEUROSTREAM_PROBE_GPU=1` asks wgpu anyway. Elsewhere wgpu has to be asked.
pub fn hardware_gpu_possible() -> bool {
    #[cfg(target_os = "linux")]
    {
        let render_node = std::fs::read_dir("/dev/dri")
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("renderD")))
            .unwrap_or(false);
        render_node
            || GPU_NODES.iter().any(|n| std::path::Path::new(n).exists())
            || std::env::var("NEUROSTREAM_PROBE_GPU").is_ok_and(|v| v == "1")
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

impl DeviceManager {
    /// A manager applying `policy`. The env var `NEUROSTREAM_ALLOW_SOFTWARE_GPU=1` also allows software adapters.
    pub fn new(mut policy: DevicePolicy) -> DeviceManager {
        if std::env::var("NEUROSTREAM_ALLOW_SOFTWARE_GPU").is_ok_and(|v| v == "1" || v == "true") {
            policy.allow_software_gpu = true;
        }
        DeviceManager {
            policy,
            hardware: None,
            software: None,
            auto_skipped: false,
        }
    }

    fn context(&mut self, software: bool) -> std::result::Result<Arc<GpuContext>, String> {
        let slot = if software { &mut self.software } else { &mut self.hardware };
        let ctx = slot.get_or_insert_with(|| GpuContext::create(software).map(Arc::new)).clone();
        if let Ok(c) = &ctx {
            c.set_fallback_to_cpu(self.policy.fallback_to_cpu);
        }
        ctx
    }

    /// The device for `choice`, following the policy. Logs which adapter and backend will run.
    pub fn resolve(&mut self, choice: DeviceChoice) -> Result<ComputeDevice> {
        match choice {
            DeviceChoice::Cpu => Ok(ComputeDevice::Cpu),
            DeviceChoice::Auto => {
                // Looked for once per run (every operator node resolves its device).
                if self.hardware.is_none() && (self.auto_skipped || !hardware_gpu_possible()) {
                    if !std::mem::replace(&mut self.auto_skipped, true) {
                        tracing::info!(
                            "device auto: no GPU device node (/dev/dri/renderD*, {}); using the CPU kernels (NEUROSTREAM_PROBE_GPU=1 asks wgpu anyway)",
                            GPU_NODES.join(", ")
                        );
                    }
                    return Ok(ComputeDevice::Cpu);
                }
                let first = self.hardware.is_none();
                match self.context(false) {
                    Ok(g) => Ok(ComputeDevice::Gpu(g)),
                    Err(why) => {
                        if first {
                            tracing::info!("device auto: {why}; using the CPU kernels");
                        }
                        Ok(ComputeDevice::Cpu)
                    }
                }
            }
            DeviceChoice::Gpu => {
                let hw = self.context(false);
                let got = match hw {
                    Ok(g) => Ok(g),
                    Err(why) if self.policy.allow_software_gpu => self.context(true).map_err(|w2| format!("{why}; {w2}")),
                    Err(why) => Err(format!(
                        "{why} (a software Vulkan driver such as lavapipe is only used when allow_software_gpu = true or NEUROSTREAM_ALLOW_SOFTWARE_GPU=1)"
                    )),
                };
                match got {
                    Ok(g) => Ok(ComputeDevice::Gpu(g)),
                    Err(why) if self.policy.fallback_to_cpu => {
                        tracing::warn!("device gpu unavailable: {why}; gpu_fallback = \"cpu\", so using the CPU kernels");
                        Ok(ComputeDevice::Cpu)
                    }
                    Err(why) => Err(EngineError::Device(format!(
                        "device = \"gpu\" but no GPU can be used: {why}. Set device = \"cpu\", or gpu_fallback = \"cpu\" to fall back"
                    ))),
                }
            }
        }
    }
}

/// A wgpu device and queue with the helpers the kernels share: buffers, cached pipelines,
/// dispatch with error capture, and read-back.
pub struct GpuContext {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter it runs on.
    pub info: wgpu::AdapterInfo,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// Every buffer the kernels use, reused across calls.
    pool: Arc<BufferPool>,
    /// Kernel names by pipeline address, for timings.
    pipeline_names: Mutex<HashMap<usize, Arc<str>>>,
    /// GPU time per kernel (timestamp queries), when the adapter has them.
    timing: Option<KernelTiming>,
    /// The run's `gpu_fallback = "cpu"`: kernels that fail on this device may retry on the CPU
    /// (see [`crate::kernels::Kernels`]).
    fallback_to_cpu: std::sync::atomic::AtomicBool,
    /// The device has subgroup operations (the adapter's `SUBGROUP` feature).
    has_subgroups: bool,
    /// Kernels may use subgroup operations (see [`GpuContext::subgroups`]).
    subgroups: std::sync::atomic::AtomicBool,
    /// Bytes copied from the host to the device (buffer contents and writes) so far.
    bytes_up: std::sync::atomic::AtomicU64,
    /// Bytes read back from the device to the host so far (results; not timestamps).
    bytes_down: std::sync::atomic::AtomicU64,
    /// See [`GpuContext::pass_bytes`].
    pass_bytes: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuContext({} via {:?})", self.info.name, self.info.backend)
    }
}

/// Backends asked for explicitly, so wgpu never silently falls back to OpenGL.
pub const GPU_BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN
    .union(wgpu::Backends::METAL)
    .union(wgpu::Backends::DX12);

impl GpuContext {
    /// Opens the best adapter: a hardware one, or (when `software`) a CPU/software one.
    pub fn create(software: bool) -> std::result::Result<GpuContext, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = GPU_BACKENDS;
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(GPU_BACKENDS));
        let rank = |t: wgpu::DeviceType| match t {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        let mut seen: Vec<String> = Vec::new();
        let mut best: Option<(wgpu::Adapter, wgpu::AdapterInfo)> = None;
        for a in adapters {
            let info = a.get_info();
            seen.push(format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type));
            let is_software = info.device_type == wgpu::DeviceType::Cpu;
            if is_software != software {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(_, b)| rank(info.device_type) < rank(b.device_type))
            {
                best = Some((a, info));
            }
        }
        let Some((adapter, info)) = best else {
            let what = if software { "software" } else { "hardware GPU" };
            return Err(if seen.is_empty() {
                format!("no {what} adapter: no Vulkan/Metal/DX12 adapter found")
            } else {
                format!("no {what} adapter (found: {})", seen.join("; "))
            });
        };
        let limits = adapter.limits();
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let has_subgroups = adapter.features().contains(wgpu::Features::SUBGROUP);
        // Kernels use subgroups of at least SUBGROUP_MIN_LANES invocations only; and
        // `NEUROSTREAM_GPU_SUBGROUPS=0` keeps them off subgroup operations (a driver that
        // miscomputes them, or an A/B of the two variants).
        let subgroups = has_subgroups
            && info.subgroup_min_size >= SUBGROUP_MIN_LANES
            && !std::env::var("NEUROSTREAM_GPU_SUBGROUPS").is_ok_and(|v| v == "0" || v == "false");
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("neurostream"),
            required_features: adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("adapter {} refused a device: {e}", info.name))?;
        tracing::info!(
            "compute device: {} via {:?} ({:?}, driver {} {}); kernel timestamps: {}; subgroups: {}",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info,
            if timestamps { "yes" } else { "not supported by the adapter" },
            match (has_subgroups, subgroups) {
                (true, true) => format!("{} to {} lanes, used", info.subgroup_min_size, info.subgroup_max_size),
                (true, false) => format!(
                    "{} to {} lanes, not used (under {SUBGROUP_MIN_LANES}, or NEUROSTREAM_GPU_SUBGROUPS=0)",
                    info.subgroup_min_size, info.subgroup_max_size
                ),
                _ => "not supported by the adapter".to_string(),
            }
        );
        let timing = timestamps.then(|| KernelTiming {
            period_ns: queue.get_timestamp_period() as f64,
            query_sets: Mutex::new(Vec::new()),
            kernels: Mutex::new(BTreeMap::new()),
        });
        Ok(GpuContext {
            device,
            queue,
            info,
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(BufferPool::default()),
            pipeline_names: Mutex::new(HashMap::new()),
            timing,
            fallback_to_cpu: std::sync::atomic::AtomicBool::new(false),
            has_subgroups,
            subgroups: std::sync::atomic::AtomicBool::new(subgroups),
            bytes_up: std::sync::atomic::AtomicU64::new(0),
            bytes_down: std::sync::atomic::AtomicU64::new(0),
            pass_bytes: std::sync::atomic::AtomicU64::new(
                DEFAULT_PASS_BYTES
                    .min(limits.max_storage_buffer_binding_size)
                    .min(limits.max_buffer_size),
            ),
        })
    }

    /// Bytes one dispatch's working buffers may hold: kernels whose work grows with their input
    /// (window count, rows of a frame) split it into passes that stay under this, so no input
    /// size reaches the adapter's binding limit. The smaller of [`DEFAULT_PASS_BYTES`] and the
    /// adapter's storage binding and buffer size limits.
    pub fn pass_bytes(&self) -> u64 {
        self.pass_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lowers [`GpuContext::pass_bytes`] (at least 4 KiB; never above the adapter's limits):
    /// tests use it to make small inputs take the split path.
    pub fn limit_pass_bytes(&self, bytes: u64) {
        self.pass_bytes
            .fetch_min(bytes.max(4096), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether kernels use subgroup operations: by default where the adapter has them in
    /// subgroups of at least [`SUBGROUP_MIN_LANES`] invocations. Read when an operator compiles
    /// its kernels.
    pub fn subgroups(&self) -> bool {
        self.subgroups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Kernels compiled from now on use subgroup operations (`on`, where the device has them at
    /// all) or do without; returns what they will do. Tests run both variants with it.
    pub fn set_subgroups(&self, on: bool) -> bool {
        let on = on && self.has_subgroups;
        self.subgroups.store(on, std::sync::atomic::Ordering::Relaxed);
        on
    }

    /// Whether kernels that fail on this device may retry on the CPU (`gpu_fallback = "cpu"`).
    pub fn falls_back_to_cpu(&self) -> bool {
        self.fallback_to_cpu.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the run's GPU→CPU fallback policy for kernels on this device.
    pub fn set_fallback_to_cpu(&self, allowed: bool) {
        self.fallback_to_cpu.store(allowed, std::sync::atomic::Ordering::Relaxed);
    }

    /// `NAME via BACKEND (TYPE)`.
    pub fn describe(&self) -> String {
        format!("{} via {:?}, {:?}", self.info.name, self.info.backend, self.info.device_type)
    }

    /// A compute pipeline for `entry` in `wgsl`, compiled once per `key` and cached.
    /// Shader compilation errors are returned, not panicked on.
    pub fn pipeline(&self, key: &str, wgsl: &str, entry: &str) -> Result<Arc<wgpu::ComputePipeline>> {
        let cache_key = format!("{key}::{entry}");
        if let Some(p) = self.pipelines.lock().unwrap().get(&cache_key) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(wgsl.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&cache_key),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(EngineError::Device(format!("compiling kernel {cache_key}: {err}")));
        }
        let p = Arc::new(pipeline);
        self.pipeline_names
            .lock()
            .unwrap()
            .insert(Arc::as_ptr(&p) as usize, Arc::from(cache_key.as_str()));
        self.pipelines.lock().unwrap().insert(cache_key, p.clone());
        Ok(p)
    }

    /// GPU buffers (storage, uniform and read-back) created on this device so far. All come
    /// from a pool keyed by size and usage and go back to it when dropped, so in steady state
    /// (batches of one shape) a kernel creates none per batch.
    pub fn buffers_created(&self) -> u64 {
        self.pool.created.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes moved so far between the host and this device: (uploaded, read back). Kernels
    /// that keep data on the device show it here as fewer bytes per row.
    pub fn bytes_moved(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.bytes_up.load(Relaxed), self.bytes_down.load(Relaxed))
    }

    /// A buffer of `size` bytes and `usage` from the pool (`true`: reused, its contents are
    /// whatever its last user left), or a new one (zeroed, as wgpu creates them).
    fn pooled(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> (PooledBuffer, bool) {
        let key = (size, usage.bits());
        let (buffer, reused) = match self.pool.take(key) {
            Some(b) => (b, true),
            None => {
                self.pool.created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                });
                (b, false)
            }
        };
        let pooled = PooledBuffer {
            buffer: Some(buffer),
            key,
            pool: Arc::downgrade(&self.pool),
        };
        (pooled, reused)
    }

    /// A read-back buffer of at least `size` bytes: sized in powers of two, so reads of
    /// varying length (sparse results) reuse a few buffers.
    fn staging(&self, size: u64) -> PooledBuffer {
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        self.pooled("readback", size.max(4).next_power_of_two(), usage).0
    }

    /// A storage buffer holding `data` (readable, writable, copyable), at least 4 bytes.
    pub fn storage_init(&self, label: &str, data: &[u8]) -> PooledBuffer {
        let size = (data.len() as u64).max(4).next_multiple_of(4);
        let (buffer, _) = self.pooled(label, size, Self::STORAGE);
        self.write_padded(&buffer, data, size);
        buffer
    }

    /// A storage buffer holding `data` (a multiple of 4 bytes) at its start, sized in powers of
    /// two so uploads of varying length (sparse batches) reuse a few buffers; the rest of it is
    /// unspecified, so kernels read only the length they are told.
    pub fn storage_upload(&self, label: &str, data: &[u8]) -> PooledBuffer {
        let buffer = self.storage_output(label, (data.len() as u64).max(4).next_power_of_two());
        self.write(&buffer, 0, data);
        buffer
    }

    /// A zeroed storage buffer of `bytes` bytes (at least 4).
    pub fn storage_zeroed(&self, label: &str, bytes: u64) -> PooledBuffer {
        let (buffer, reused) = self.pooled(label, bytes.max(4).next_multiple_of(4), Self::STORAGE);
        if reused {
            // Cleared on the queue, so after any earlier work that used it and before any later.
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("clear") });
            encoder.clear_buffer(&buffer, 0, None);
            self.queue.submit([encoder.finish()]);
        }
        buffer
    }

    /// A storage buffer of `bytes` bytes (at least 4) whose contents are unspecified: for the
    /// outputs a kernel writes in full before anything reads them, which then skip the clear
    /// a reused [`GpuContext::storage_zeroed`] buffer costs on every call.
    pub fn storage_output(&self, label: &str, bytes: u64) -> PooledBuffer {
        self.pooled(label, bytes.max(4).next_multiple_of(4), Self::STORAGE).0
    }

    /// Copies on the device, in order, queued after any work submitted before: each
    /// `(from, from_offset, to, to_offset, bytes)` (offsets and sizes multiples of 4; empty
    /// copies are skipped).
    pub fn copy_buffers(&self, copies: &[(&wgpu::Buffer, u64, &wgpu::Buffer, u64, u64)]) {
        if copies.iter().all(|c| c.4 == 0) {
            return;
        }
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("copy") });
        for &(from, from_offset, to, to_offset, bytes) in copies.iter().filter(|c| c.4 > 0) {
            encoder.copy_buffer_to_buffer(from, from_offset, to, to_offset, bytes);
        }
        self.queue.submit([encoder.finish()]);
    }

    /// A uniform buffer holding `data` (padded to 16 bytes).
    pub fn uniform(&self, label: &str, data: &[u8]) -> PooledBuffer {
        let size = (data.len() as u64).next_multiple_of(16).max(16);
        let (buffer, _) = self.pooled(label, size, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
        self.write_padded(&buffer, data, size);
        buffer
    }

    const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
        .union(wgpu::BufferUsages::COPY_SRC)
        .union(wgpu::BufferUsages::COPY_DST);

    /// Writes `data` at offset 0 of `buffer`, zero-padded to `size` bytes (queue writes take
    /// multiples of 4 bytes; a reused buffer must not keep its last user's tail).
    fn write_padded(&self, buffer: &wgpu::Buffer, data: &[u8], size: u64) {
        self.bytes_up.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        if data.len() as u64 == size {
            self.queue.write_buffer(buffer, 0, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(size as usize, 0);
            self.queue.write_buffer(buffer, 0, &padded);
        }
    }

    /// Runs `passes` in order in one submission (each: pipeline, buffers bound at group 0
    /// bindings 0.., workgroup counts), then copies `read_bytes` bytes of `read` back.
    /// Validation errors and device loss come back as [`EngineError::Device`].
    pub fn run(&self, passes: &[GpuPass<'_>], read: Option<(&wgpu::Buffer, u64)>) -> Result<Vec<u8>> {
        let reads: Vec<(&wgpu::Buffer, u64)> = read.into_iter().collect();
        Ok(self.run_reads(passes, &reads)?.pop().unwrap_or_default())
    }

    /// Like [`GpuContext::run`], reading back several buffers (the first `bytes` of each) after
    /// the passes, in the order given.
    pub fn run_reads(&self, passes: &[GpuPass<'_>], reads: &[(&wgpu::Buffer, u64)]) -> Result<Vec<Vec<u8>>> {
        let pending = self.submit_reads(passes, reads)?;
        self.wait(pending)
    }

    /// Submits `passes` and the copies of `reads` (as [`GpuContext::run_reads`]) without waiting
    /// for them: the caller may prepare or submit more work, then take the results with
    /// [`GpuContext::wait`]. Validation errors are returned here. Buffers the passes use may be
    /// dropped (and reused) meanwhile: the queue runs later work after this.
    pub fn submit_reads(&self, passes: &[GpuPass<'_>], reads: &[(&wgpu::Buffer, u64)]) -> Result<PendingReads> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let mut groups = Vec::with_capacity(passes.len());
        for pass in passes {
            let layout = pass.pipeline.get_bind_group_layout(0);
            let entries: Vec<wgpu::BindGroupEntry> = pass
                .buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: b.as_entire_binding(),
                })
                .collect();
            groups.push(self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &entries,
            }));
        }
        // Timed when the adapter has timestamps and the call waits for its results anyway:
        // one compute pass per dispatch, its start and end written to a query set.
        let timed = match &self.timing {
            Some(t) if !reads.is_empty() && !passes.is_empty() && passes.len() <= MAX_TIMED_PASSES => {
                let set = t.query_sets.lock().unwrap().pop().unwrap_or_else(|| {
                    self.device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("kernel timestamps"),
                        ty: wgpu::QueryType::Timestamp,
                        count: 2 * MAX_TIMED_PASSES as u32,
                    })
                });
                let bytes = 16 * passes.len() as u64;
                let resolved = self
                    .pooled(
                        "kernel timestamps",
                        bytes,
                        wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    )
                    .0;
                Some((set, resolved, bytes))
            }
            _ => None,
        };
        let dispatch = |cpass: &mut wgpu::ComputePass, pass: &GpuPass, group: &wgpu::BindGroup| {
            cpass.set_pipeline(pass.pipeline);
            cpass.set_bind_group(0, group, &[]);
            let [x, y, z] = pass.workgroups;
            cpass.dispatch_workgroups(x, y, z);
        };
        if let Some((set, _, _)) = &timed {
            for (i, (pass, group)) in passes.iter().zip(&groups).enumerate() {
                let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                dispatch(&mut cpass, pass, group);
            }
        } else {
            let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for (pass, group) in passes.iter().zip(&groups) {
                dispatch(&mut cpass, pass, group);
            }
        }
        if let Some((set, resolved, _)) = &timed {
            encoder.resolve_query_set(set, 0..2 * passes.len() as u32, resolved, 0);
        }
        let read_bytes: u64 = reads.iter().map(|&(_, bytes)| bytes).sum();
        self.bytes_down.fetch_add(read_bytes, std::sync::atomic::Ordering::Relaxed);
        let timestamp_read = timed.as_ref().map(|(_, resolved, bytes)| (&**resolved, *bytes));
        let staging: Vec<(PooledBuffer, u64)> = reads
            .iter()
            .copied()
            .chain(timestamp_read)
            .map(|(buf, bytes)| {
                let staging = self.staging(bytes.max(4));
                encoder.copy_buffer_to_buffer(buf, 0, &staging, 0, bytes.max(4));
                (staging, bytes)
            })
            .collect();
        let submission = self.queue.submit([encoder.finish()]);
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(EngineError::Device(format!("kernel dispatch failed: {err}")));
        }
        // Mapping is requested now; the callbacks run once the GPU is done and the device is
        // polled (in `wait`).
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, (buf, _)) in staging.iter().enumerate() {
            let tx = tx.clone();
            buf.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send((i, r));
            });
        }
        let kernels = timed.map(|(set, _, _)| {
            let names = self.pipeline_names.lock().unwrap();
            let names = passes
                .iter()
                .map(|pass| {
                    names
                        .get(&(pass.pipeline as *const wgpu::ComputePipeline as usize))
                        .cloned()
                        .unwrap_or_else(|| Arc::from("unnamed"))
                })
                .collect();
            (set, names)
        });
        Ok(PendingReads {
            device: self.device.clone(),
            submission,
            staging,
            mapped: rx,
            arrived: Vec::new(),
            kernels,
        })
    }

    /// Whether the work of `pending` is done, so [`GpuContext::wait`] returns at once; never
    /// blocks (it lets the device run its finished work's callbacks).
    pub fn ready(&self, pending: &mut PendingReads) -> bool {
        if pending.arrived.len() < pending.staging.len() {
            let _ = self.device.poll(wgpu::PollType::Poll);
            while let Ok(message) = pending.mapped.try_recv() {
                pending.arrived.push(message.1);
            }
        }
        pending.arrived.len() >= pending.staging.len()
    }

    /// Waits for the work of `pending` (not for anything submitted after it) and returns what
    /// it read back, in the order of its reads.
    pub fn wait(&self, mut pending: PendingReads) -> Result<Vec<Vec<u8>>> {
        let staging = std::mem::take(&mut pending.staging);
        if staging.is_empty() {
            return Ok(Vec::new());
        }
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(pending.submission.clone()),
                timeout: None,
            })
            .map_err(|e| EngineError::Device(format!("waiting for the GPU: {e}")))?;
        while pending.arrived.len() < staging.len() {
            let message = pending
                .mapped
                .recv()
                .map_err(|_| EngineError::Device("read-back callback never ran".into()))?;
            pending.arrived.push(message.1);
        }
        for mapped in std::mem::take(&mut pending.arrived) {
            mapped.map_err(|e| EngineError::Device(format!("mapping read-back buffer: {e}")))?;
        }
        let mut out = Vec::with_capacity(staging.len());
        for (buf, bytes) in &staging {
            let view = buf
                .get_mapped_range(..)
                .map_err(|e| EngineError::Device(format!("reading back: {e}")))?;
            out.push(view[..*bytes as usize].to_vec());
            drop(view);
            buf.unmap();
        }
        if let (Some((set, names)), Some(timing)) = (pending.kernels.take(), &self.timing) {
            let stamps = out.pop().expect("the timestamps were read back last");
            self.record_kernel_times(timing, &names, bytemuck::cast_slice(&stamps));
            timing.query_sets.lock().unwrap().push(set);
        }
        Ok(out)
    }

    /// Adds each pass's GPU time (`stamps`: start and end ticks per pass) to its kernel's
    /// histogram, and logs it at debug level.
    fn record_kernel_times(&self, timing: &KernelTiming, names: &[Arc<str>], stamps: &[u64]) {
        let mut kernels = timing.kernels.lock().unwrap();
        for (name, t) in names.iter().zip(stamps.chunks_exact(2)) {
            let ns = (t[1].saturating_sub(t[0]) as f64 * timing.period_ns) as i64;
            let name = name.clone();
            tracing::debug!("gpu kernel {name}: {:.1} µs", ns as f64 / 1e3);
            kernels.entry(name).or_default().observe_ns(ns);
        }
    }

    /// GPU time per kernel so far (by pipeline name, e.g. `sae_encode_f32_128::encode`), from timestamp
    /// queries; empty when the adapter has none. Each histogram holds one value per dispatch.
    pub fn kernel_times(&self) -> BTreeMap<Arc<str>, Arc<crate::metrics::Histogram>> {
        self.timing
            .as_ref()
            .map(|t| t.kernels.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Whether kernel times are measured on this device (the adapter has timestamp queries).
    pub fn times_kernels(&self) -> bool {
        self.timing.is_some()
    }

    /// Copies `data` into `buffer` from byte `offset` on (both multiples of 4), queued after
    /// any work submitted before.
    pub fn write(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) {
        self.bytes_up
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if !data.is_empty() {
            self.queue.write_buffer(buffer, offset, data);
        }
    }
}

/// Work submitted by [`GpuContext::submit_reads`] whose read-backs are not taken yet: hand it to
/// [`GpuContext::wait`].
pub struct PendingReads {
    device: wgpu::Device,
    submission: wgpu::SubmissionIndex,
    /// Read-back buffers (mapping requested) and the bytes wanted from each; the timestamps last.
    staging: Vec<(PooledBuffer, u64)>,
    /// One message per read-back buffer once it is mapped.
    mapped: std::sync::mpsc::Receiver<(usize, std::result::Result<(), wgpu::BufferAsyncError>)>,
    /// The messages taken so far (by [`GpuContext::ready`]).
    arrived: Vec<std::result::Result<(), wgpu::BufferAsyncError>>,
    /// The timed passes' query set and kernel names.
    kernels: Option<(wgpu::QuerySet, Vec<Arc<str>>)>,
}

/// Results not taken (the caller failed before `wait`): the read-back buffers go back to the pool
/// only once their mapping has completed and they are unmapped, so no later user finds them
/// mapped.
impl Drop for PendingReads {
    fn drop(&mut self) {
        if self.staging.is_empty() {
            return;
        }
        let _ = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(self.submission.clone()),
            timeout: None,
        });
        for _ in self.arrived.len()..self.staging.len() {
            let _ = self.mapped.recv();
        }
        for (buf, _) in &self.staging {
            buf.unmap();
        }
    }
}

/// The most bytes one dispatch's working buffers hold by default (see
/// [`GpuContext::pass_bytes`]): large enough to keep a data-centre GPU busy, small enough
/// for any adapter's binding limit and for a frame's work not to take the whole card.
pub const DEFAULT_PASS_BYTES: u64 = 64 << 20;

/// Passes one call may time; calls with more run untimed.
const MAX_TIMED_PASSES: usize = 64;

/// Kernel timings of a device.
struct KernelTiming {
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
    /// Query sets of `2 * MAX_TIMED_PASSES` timestamps, reused across calls.
    query_sets: Mutex<Vec<wgpu::QuerySet>>,
    /// GPU time per dispatch, by kernel.
    kernels: Mutex<BTreeMap<Arc<str>, Arc<crate::metrics::Histogram>>>,
}

/// A GPU buffer from the [`GpuContext`]'s pool: used like a `wgpu::Buffer` (it derefs to one),
/// and given back to the pool when dropped, so the next call of the same shape reuses it
/// instead of allocating.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    key: (u64, u32),
    pool: std::sync::Weak<BufferPool>,
}

impl std::ops::Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("a pooled buffer holds its buffer until dropped")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let (Some(buffer), Some(pool)) = (self.buffer.take(), self.pool.upgrade()) {
            pool.give_back(self.key, buffer);
        }
    }
}

/// Buffers given back, by exact size and usage (kernels bind whole buffers, so a buffer is
/// reused only for a request of its own size), at most [`POOL_BYTES`] in all.
#[derive(Default)]
struct BufferPool {
    free: Mutex<FreeBuffers>,
    created: std::sync::atomic::AtomicU64,
}

/// Free buffers by (size, usage bits), and their total bytes.
type FreeBuffers = (HashMap<(u64, u32), Vec<wgpu::Buffer>>, u64);

/// Bytes of free buffers a context keeps for reuse; beyond it, buffers given back are released.
pub const POOL_BYTES: u64 = 1 << 30;

impl BufferPool {
    fn take(&self, key: (u64, u32)) -> Option<wgpu::Buffer> {
        let mut free = self.free.lock().unwrap();
        let buffer = free.0.get_mut(&key)?.pop()?;
        free.1 -= key.0;
        Some(buffer)
    }

    fn give_back(&self, key: (u64, u32), buffer: wgpu::Buffer) {
        let mut free = self.free.lock().unwrap();
        if free.1 + key.0 <= POOL_BYTES {
            free.1 += key.0;
            free.0.entry(key).or_default().push(buffer);
        }
    }
}

/// One compute dispatch for [`GpuContext::run`].
pub struct GpuPass<'a> {
    /// The pipeline.
    pub pipeline: &'a wgpu::ComputePipeline,
    /// Buffers bound at `@group(0) @binding(i)`.
    pub buffers: &'a [&'a wgpu::Buffer],
    /// Workgroup counts (x, y, z).
    pub workgroups: [u32; 3],
}

/// Workgroup counts covering `threads` invocations of `workgroup_size`, split over x and y so
/// no dimension exceeds 65535. Kernels compute their linear index as
/// `gid.x + gid.y * num_workgroups.x * workgroup_size` and bound-check it.
pub fn workgroups_1d(threads: usize, workgroup_size: u32) -> [u32; 3] {
    workgroups_per_item(threads.div_ceil(workgroup_size as usize))
}

/// One workgroup per item (a row, say), split over x and y so no dimension exceeds 65535.
/// Kernels compute the item as `wid.x + wid.y * num_workgroups.x` and bound-check it.
pub fn workgroups_per_item(items: usize) -> [u32; 3] {
    let groups = items.max(1) as u64;
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        [65535, groups.div_ceil(65535) as u32, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD_TWICE: &str = r#"
struct Params { n: u32, scale: f32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < p.n { y[gid.x] = y[gid.x] + p.scale * x[gid.x]; }
}
"#;

    /// Without a GPU device node `auto` picks the CPU without asking wgpu (no driver loaded, no
    /// context made); `gpu` still asks, and finds the software adapter when it is allowed.
    #[test]
    fn auto_without_a_gpu_device_node_does_not_load_a_driver() {
        if hardware_gpu_possible() {
            return; // a machine with a GPU: `auto` must ask wgpu
        }
        let mut m = DeviceManager::new(DevicePolicy::default());
        assert!(matches!(m.resolve(DeviceChoice::Auto).unwrap(), ComputeDevice::Cpu));
        assert!(matches!(m.resolve(DeviceChoice::Auto).unwrap(), ComputeDevice::Cpu));
        assert!(m.hardware.is_none() && m.software.is_none(), "no wgpu instance was made");
        if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
            return;
        }
        let mut m = DeviceManager::new(DevicePolicy {
            allow_software_gpu: true,
            fallback_to_cpu: false,
        });
        assert!(
            matches!(m.resolve(DeviceChoice::Gpu).unwrap(), ComputeDevice::Gpu(_)),
            "lavapipe"
        );
    }

    fn gpu() -> Option<GpuContext> {
        if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
            return None;
        }
        let ctx = GpuContext::create(false).or_else(|_| GpuContext::create(true));
        Some(ctx.expect("a Vulkan adapter (lavapipe in CI); NEUROSTREAM_SKIP_GPU_TESTS=1 skips"))
    }

    /// Batches of one shape reuse the buffers of the first (none is created per batch after
    /// it: uniform, storage or read-back), and what they read back is each batch's own result.
    #[test]
    fn batches_of_one_shape_create_no_buffers_after_the_first() {
        let Some(ctx) = gpu() else { return };
        let pipeline = ctx.pipeline("pool-test", ADD_TWICE, "main").unwrap();
        let n = 1000usize;
        let mut created_after_first = None;
        for batch in 0..6 {
            let x: Vec<f32> = (0..n).map(|i| (i + batch * n) as f32).collect();
            let params = [n as u32, 2f32.to_bits(), 0, 0];
            let u = ctx.uniform("params", bytemuck::cast_slice(&params));
            let xb = ctx.storage_init("x", bytemuck::cast_slice(&x));
            let yb = ctx.storage_zeroed("y", (n * 4) as u64);
            let pass = GpuPass {
                pipeline: &pipeline,
                buffers: &[&u, &xb, &yb],
                workgroups: workgroups_1d(n, 64),
            };
            let out = ctx.run(&[pass], Some((&yb, (n * 4) as u64))).unwrap();
            let y: &[f32] = bytemuck::cast_slice(&out);
            assert!(y.iter().zip(&x).all(|(a, b)| *a == 2.0 * b), "batch {batch}: wrong values");
            match created_after_first {
                None => created_after_first = Some(ctx.buffers_created()),
                Some(c) => assert_eq!(ctx.buffers_created(), c, "batch {batch} created buffers"),
            }
        }
        // A zeroed buffer taken from the pool (the last batch's `x` or `y`) is zeroed again.
        let before = ctx.buffers_created();
        let z = ctx.storage_zeroed("z", (n * 4) as u64);
        assert_eq!(ctx.buffers_created(), before, "reused");
        let out = ctx.run(&[], Some((&z, (n * 4) as u64))).unwrap();
        assert!(out.iter().all(|&b| b == 0), "a reused zeroed buffer kept old values");
        // A buffer of a shorter payload padded to the same size does not keep the old tail.
        drop(ctx.storage_init("long", &[9; 8]));
        let before = ctx.buffers_created();
        let short = ctx.storage_init("short", &[1, 2, 3, 4, 5, 6]);
        assert_eq!(ctx.buffers_created(), before, "reused");
        let out = ctx.run(&[], Some((&short, 8))).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 0, 0]);
        // Another size gets buffers of its own: storage and read-back.
        let before = ctx.buffers_created();
        let other = ctx.storage_zeroed("other", 12345 * 4);
        assert_eq!(ctx.run(&[], Some((&other, 12345 * 4))).unwrap().len(), 12345 * 4);
        assert_eq!(ctx.buffers_created(), before + 2);
    }

    /// Reads submitted without waiting return what each buffer held when its own submission
    /// ran, in whatever order they are waited for, and one never taken leaves the pool usable.
    #[test]
    fn submitted_reads_are_waited_for_in_any_order() {
        let Some(ctx) = gpu() else { return };
        let words = |v: &[u32]| bytemuck::cast_slice::<u32, u8>(v).to_vec();
        let a = ctx.storage_init("a", &words(&[1, 2, 3, 4]));
        let b = ctx.storage_init("b", &words(&[5, 6, 7, 8]));
        let first = ctx.submit_reads(&[], &[(&a, 16)]).unwrap();
        // Queued after the first submission: only the second sees it.
        ctx.write(&a, 0, &words(&[9, 9, 9, 9]));
        let second = ctx.submit_reads(&[], &[(&b, 16), (&a, 16)]).unwrap();
        assert_eq!(ctx.wait(second).unwrap(), vec![words(&[5, 6, 7, 8]), words(&[9, 9, 9, 9])]);
        assert_eq!(ctx.wait(first).unwrap(), vec![words(&[1, 2, 3, 4])]);
        drop(ctx.submit_reads(&[], &[(&b, 16)]).unwrap());
        let created = ctx.buffers_created();
        assert_eq!(ctx.run(&[], Some((&b, 16))).unwrap(), words(&[5, 6, 7, 8]));
        assert_eq!(
            ctx.buffers_created(),
            created,
            "the dropped read's buffer was reused, unmapped"
        );
    }

    /// Every dispatch of a call that reads back is timed on the GPU (timestamp queries) under
    /// its pipeline's name, when the adapter has them (lavapipe does).
    #[test]
    fn kernels_are_timed_by_name() {
        let Some(ctx) = gpu() else { return };
        if !ctx.times_kernels() {
            eprintln!("{}: no timestamp queries; kernel times are not measured", ctx.info.name);
            assert!(ctx.kernel_times().is_empty());
            return;
        }
        let pipeline = ctx.pipeline("timing-test", ADD_TWICE, "main").unwrap();
        let n = 1 << 16;
        let params = [n as u32, 2f32.to_bits(), 0, 0];
        let u = ctx.uniform("params", bytemuck::cast_slice(&params));
        let x = ctx.storage_init("x", bytemuck::cast_slice(&vec![1f32; n]));
        let y = ctx.storage_zeroed("y", (n * 4) as u64);
        let bound: [&wgpu::Buffer; 3] = [&u, &x, &y];
        let pass = || GpuPass {
            pipeline: &pipeline,
            buffers: &bound,
            workgroups: workgroups_1d(n, 64),
        };
        // Two dispatches in one call (each pass timed on its own, still in order: y += 2x
        // twice), then one more call: three timings.
        let out = ctx.run(&[pass(), pass()], Some((&y, 16))).unwrap();
        assert_eq!(bytemuck::cast_slice::<u8, f32>(&out), &[4.0; 4]);
        ctx.run(&[pass()], Some((&y, 16))).unwrap();
        let times = ctx.kernel_times();
        let h = &times["timing-test::main"];
        assert_eq!(h.count(), 3);
        assert!(h.sum_s() > 0.0 && h.sum_s() < 10.0, "{} s", h.sum_s());
        // A call without a read-back is not timed (it does not wait for the GPU).
        ctx.run(&[pass()], None).unwrap();
        assert_eq!(ctx.kernel_times()["timing-test::main"].count(), 3);
    }
}
