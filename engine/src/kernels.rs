//! Picking an operator's kernels for its device, with one meaning of `gpu_fallback` for every
//! operator: on the CPU, the CPU kernels; on a GPU, the GPU kernels, and a GPU failure (setting
//! them up, or a later `EngineError::Device`) is the run's error, unless the pipeline says
//! `gpu_fallback = "cpu"`: then it is reported once and the operator goes on with its CPU
//! kernels. Never a silent fallback.

use std::sync::Arc;

use crate::device::{ComputeDevice, GpuContext};
use crate::error::{EngineError, Result};

/// Builds the CPU kernels of an operator instance (on demand, for a fallback).
pub type CpuKernels<K> = Box<dyn Fn() -> Box<K> + Send>;

/// One operator instance's kernels.
pub struct Kernels<K: ?Sized> {
    current: Box<K>,
    cpu: CpuKernels<K>,
    /// On a GPU with `gpu_fallback = "cpu"`: a GPU error may switch to the CPU kernels.
    may_fall_back: bool,
    operator: &'static str,
}

impl<K: ?Sized> Kernels<K> {
    /// The kernels of `operator` for `device`: `gpu(ctx)` on a GPU, `cpu()` on the CPU.
    pub fn select(
        operator: &'static str,
        device: &ComputeDevice,
        gpu: impl FnOnce(Arc<GpuContext>) -> Result<Box<K>>,
        cpu: CpuKernels<K>,
    ) -> Result<Kernels<K>> {
        let allowed = matches!(device, ComputeDevice::Gpu(ctx) if ctx.falls_back_to_cpu());
        let (current, may_fall_back) = match gpu_or_cpu(operator, device, gpu)? {
            Some(k) => (k, allowed),
            None => (cpu(), false),
        };
        Ok(Kernels {
            current,
            cpu,
            may_fall_back,
            operator,
        })
    }

    /// Whether a GPU error may still switch these kernels to the CPU (callers whose kernels
    /// change their inputs in place keep a copy to retry from only then).
    pub fn may_fall_back(&self) -> bool {
        self.may_fall_back
    }

    /// The kernels in use (for reads that change nothing).
    pub fn get(&self) -> &K {
        &self.current
    }

    /// Runs `f` on the kernels. A device error is returned, or with `gpu_fallback = "cpu"`
    /// reported, and `f` runs again on the CPU kernels, which stay from then on. `f` must be
    /// safe to run twice: restore anything the failed attempt changed before running.
    pub fn run<T>(&mut self, mut f: impl FnMut(&mut K) -> Result<T>) -> Result<T> {
        match f(self.current.as_mut()) {
            Err(e @ EngineError::Device(_)) if self.may_fall_back => {
                report(self.operator, &e);
                self.current = (self.cpu)();
                self.may_fall_back = false;
                f(self.current.as_mut())
            }
            other => other,
        }
    }
}

/// The GPU kernels of `operator` on a GPU device, or `None` for the CPU: on the CPU, and on a
/// GPU whose kernels failed to set up when the pipeline says `gpu_fallback = "cpu"` (reported).
/// For kernels that cannot switch mid-run (a trainer whose optimizer state lives on the device),
/// this is the whole fallback; [`Kernels`] builds on it for the rest.
pub fn gpu_or_cpu<T>(
    operator: &'static str,
    device: &ComputeDevice,
    gpu: impl FnOnce(Arc<GpuContext>) -> Result<T>,
) -> Result<Option<T>> {
    match device {
        ComputeDevice::Cpu => Ok(None),
        ComputeDevice::Gpu(ctx) => match gpu(ctx.clone()) {
            Ok(k) => Ok(Some(k)),
            Err(e) if ctx.falls_back_to_cpu() => {
                report(operator, &e);
                Ok(None)
            }
            Err(e) => Err(e),
        },
    }
}

fn report(operator: &str, e: &EngineError) {
    tracing::warn!("{operator}: GPU kernel failed ({e}); gpu_fallback = \"cpu\", continuing on the CPU");
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Double {
        fn double(&mut self, x: f32) -> Result<f32>;
    }
    struct Cpu;
    impl Double for Cpu {
        fn double(&mut self, x: f32) -> Result<f32> {
            Ok(2.0 * x)
        }
    }

    #[test]
    fn the_cpu_runs_the_cpu_kernels_and_errors_pass_through() {
        let mut k: Kernels<dyn Double> = Kernels::select(
            "test",
            &ComputeDevice::Cpu,
            |_| Err(EngineError::Device("unused".into())),
            Box::new(|| Box::new(Cpu) as Box<dyn Double>),
        )
        .unwrap();
        assert!(!k.may_fall_back());
        assert_eq!(k.run(|d| d.double(3.0)).unwrap(), 6.0);
        let e = k.run(|_| Err::<f32, _>(EngineError::Device("lost".into()))).unwrap_err();
        assert!(e.to_string().contains("lost"), "a CPU instance never swallows an error");
    }

    struct FailingGpu;
    impl Double for FailingGpu {
        fn double(&mut self, _: f32) -> Result<f32> {
            Err(EngineError::Device("device lost".into()))
        }
    }

    fn gpu() -> Option<Arc<GpuContext>> {
        if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
            return None;
        }
        let ctx = GpuContext::create(false).or_else(|_| GpuContext::create(true));
        Some(Arc::new(ctx.expect(
            "a Vulkan adapter (lavapipe in CI); NEUROSTREAM_SKIP_GPU_TESTS=1 skips",
        )))
    }

    fn on_gpu(ctx: &Arc<GpuContext>, setup_fails: bool) -> Result<Kernels<dyn Double>> {
        Kernels::select(
            "test",
            &ComputeDevice::Gpu(ctx.clone()),
            move |_| match setup_fails {
                true => Err(EngineError::Device("no shader".into())),
                false => Ok(Box::new(FailingGpu) as Box<dyn Double>),
            },
            Box::new(|| Box::new(Cpu) as Box<dyn Double>),
        )
    }

    #[test]
    fn gpu_errors_fail_the_run_unless_gpu_fallback_is_cpu() {
        let Some(ctx) = gpu() else { return };
        ctx.set_fallback_to_cpu(false);
        assert!(
            on_gpu(&ctx, true).is_err(),
            "a GPU that cannot set up its kernels is an error"
        );
        let mut k = on_gpu(&ctx, false).unwrap();
        assert!(k.run(|d| d.double(1.0)).is_err(), "a GPU error is the run's error");
        ctx.set_fallback_to_cpu(true);
        let mut k = on_gpu(&ctx, true).unwrap();
        assert_eq!(k.run(|d| d.double(2.0)).unwrap(), 4.0, "set-up failure: CPU kernels");
        let mut k = on_gpu(&ctx, false).unwrap();
        assert!(k.may_fall_back());
        assert_eq!(k.run(|d| d.double(3.0)).unwrap(), 6.0, "retried on the CPU");
        assert!(!k.may_fall_back(), "and stays there");
        assert_eq!(k.run(|d| d.double(4.0)).unwrap(), 8.0);
    }
}
