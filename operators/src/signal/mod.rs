//! Signal operators for EEG/MEG streams, one folder per operator (its node, its CPU kernel, its
//! `.wgsl` shaders, its unit tests): [`iir`] (`butterworth`, `notch`: design, section cascades
//! on the CPU and wgpu), [`fir`], [`resample`], [`bandpower`] (with its Welch kernels),
//! [`montage`] (`pick`, `reref`) and [`hilbert`]. Shared by several operators: spatial maps
//! ([`spatial`], also used by `decode` and `mahalanobis`) and windows/epochs ([`windows`]).

pub mod bandpower;
pub mod fir;
pub mod hilbert;
pub mod iir;
pub mod montage;
pub mod resample;
pub mod spatial;
pub mod windows;

pub use bandpower::{BandpowerConfig, BandpowerKind};
pub use fir::{FirConfig, FirKind};
pub use hilbert::{HilbertConfig, HilbertKind, HilbertOutput};
pub use iir::cpu::{sosfiltfilt, CpuSos, SosKernels};
pub use iir::design::{butter, notch, sosfilt_zi, BandType, Section};
pub use iir::{ButterworthConfig, ButterworthKind, NotchConfig, NotchKind};
pub use montage::{PickConfig, PickKind, RerefConfig, RerefKind};
pub use resample::{ResampleConfig, ResampleKind};

/// The sample rate (Hz) of a node's input, or the node's error when the input is not a signal
/// stream; `kind` names the node kind in the message.
pub fn signal_rate(
    kind: &str,
    input: &neurostream_engine::Schema,
    ctx: &neurostream_engine::NodeContext,
) -> neurostream_engine::Result<f64> {
    match input.kind {
        neurostream_engine::StreamKind::Signal { sample_rate, .. } => Ok(sample_rate),
        _ => Err(neurostream_engine::EngineError::config(
            ctx.label,
            format!("{kind} takes signal streams; the input is {}", input.describe()),
        )),
    }
}
