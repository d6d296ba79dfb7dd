//! Signal operators for EEG/MEG streams: IIR filter design ([`design`]), the section-cascade
//! kernels on the CPU and wgpu ([`sos`], [`gpu`]), the `butterworth` / `notch` operators
//! ([`filter`]), spatial maps ([`spatial`]), the `pick` / `reref` operators ([`montage`]), windows and
//! epochs ([`windows`]), Welch PSD ([`welch`]) and `bandpower` ([`bandpower`]).

pub mod bandpower;
pub mod design;
pub mod filter;
pub mod fir;
pub mod gpu;
pub mod montage;
pub mod resample;
pub mod sos;
pub mod spatial;
pub mod welch;
pub mod windows;

pub use bandpower::{BandpowerConfig, BandpowerKind};
pub use design::{butter, notch, sosfilt_zi, BandType, Section};
pub use filter::{ButterworthConfig, ButterworthKind, NotchConfig, NotchKind};
pub use fir::{FirConfig, FirKind};
pub use montage::{PickConfig, PickKind, RerefConfig, RerefKind};
pub use resample::{ResampleConfig, ResampleKind};
pub use sos::{sosfiltfilt, CpuSos, SosKernels};
