//! Helpers shared by the operator tests.

use neurostream_engine::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy};

/// The wgpu device (a software adapter such as lavapipe is accepted), or `None` when there is
/// no adapter and NEUROSTREAM_SKIP_GPU_TESTS=1 says to skip the GPU half; without that it is a
/// failure naming what to install.
pub fn gpu() -> Option<ComputeDevice> {
    let mut manager = DeviceManager::new(DevicePolicy {
        allow_software_gpu: true,
        fallback_to_cpu: false,
    });
    match manager.resolve(DeviceChoice::Gpu) {
        Ok(d) => Some(d),
        Err(e) if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") => {
            eprintln!("skipping the wgpu backend (NEUROSTREAM_SKIP_GPU_TESTS=1): {e}");
            None
        }
        Err(e) => panic!("no wgpu adapter for the GPU half of the tests: {e}\n(install mesa-vulkan-drivers, or set NEUROSTREAM_SKIP_GPU_TESTS=1)"),
    }
}
