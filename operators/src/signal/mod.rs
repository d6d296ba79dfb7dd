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

/// [`signal_rate`] for kinds that work across samples (filters, windows, resampling): the input
/// must also hold one row per sample, not one per window (band power, decisions).
pub fn sampled_rate(
    kind: &str,
    input: &neurostream_engine::Schema,
    ctx: &neurostream_engine::NodeContext,
) -> neurostream_engine::Result<f64> {
    let rate = signal_rate(kind, input, ctx)?;
    if let neurostream_engine::StreamKind::Signal { row_rate: Some(_), .. } = input.kind {
        return Err(neurostream_engine::EngineError::config(
            ctx.label,
            format!(
                "{kind} works across consecutive samples; the input has one row per window ({}), not per sample",
                input.describe()
            ),
        ));
    }
    Ok(rate)
}
