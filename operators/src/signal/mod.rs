//! Signal operators for EEG/MEG streams: IIR filter design ([`design`]), the section-cascade
//! kernels on the CPU and wgpu ([`sos`], [`gpu`]), and the `butterworth` / `notch` operators
//! ([`filter`]).

pub mod design;
pub mod filter;
pub mod gpu;
pub mod sos;

pub use design::{butter, notch, sosfilt_zi, BandType, Section};
pub use filter::{ButterworthConfig, ButterworthKind, NotchConfig, NotchKind};
pub use sos::{sosfiltfilt, CpuSos, SosKernels};
