//! # neurostream-operators
//!
//! Numeric operators. Each has a CPU kernel and a wgpu (WGSL) kernel behind one trait, and the
//! same tests run on both against a float64 reference.
//!
//! | kind | what it computes |
//! | --- | --- |
//! | `normalize` | per-channel running z-score (Welford), fixed mean/std from a file, or L2 row scaling |
//! | `sae_encode` | sparse autoencoder encoding (SAELens, sparsify formats) to sparse features |
//! | `sae_reconstruct` | SAE encode + decode: per-token reconstruction metrics or the reconstruction |
//! | `feature_stats` | windowed and all-time feature statistics, top examples and alerts |
//! | `butterworth` | Butterworth low/high/band-pass/band-stop (second-order sections), causal with carried state or zero-phase |
//! | `notch` | IIR notch at the line frequency and harmonics, causal or zero-phase |
//! | `fir` | linear-phase FIR band/low/high-pass (MNE's firwin design), causal, delay stated |
//! | `hilbert` | envelope or instantaneous phase from the analytic signal (`scipy.signal.hilbert`), per block or whole stream |
//! | `resample` | polyphase rational resampling equal to scipy.signal.resample_poly, streamed |
//! | `pick` | keeps the signal channels named (labels or glob patterns), in order |
//! | `reref` | common average, reference-channel or bipolar re-referencing |
//! | `bandpower` | Welch band power (absolute, relative) per channel over sliding windows or epochs |
//! | `decode` | CSP + shrinkage-LDA model applied to windows: CSP log-power features and class probabilities |
//! | `token_stats` | windowed and all-time means of token scalars (reconstruction metrics) and alerts |
//! | `kmeans` | streaming mini-batch k-means (Euclidean or cosine) with assignments and centroid tables |
//! | `cooccurrence` | feature co-occurrence over sliding windows (incremental counts): affinities, partners, components, spectral clusters |
//! | `mahalanobis` | per-row Mahalanobis distance to a Ledoit-Wolf reference |
//! | `riemann_potato` | Riemannian distance of EEG window covariances to a reference mean, z-scored (artifacts) |
//!
//! And two sinks that train: `sae_train` trains an SAE on the activations streamed into it (CPU
//! or wgpu; see [`sae_train`]); `csp_lda_train` fits a CSP + LDA decoder on labelled epochs
//! (see [`decode`]).

#![warn(missing_docs)]

pub mod cluster;
pub mod decode;
pub mod drift;
pub mod gpu_gemm;
pub mod normalize;
pub mod parallel;
pub mod sae;
pub mod sae_train;
pub mod signal;
pub mod stats;

use neurostream_engine::Registry;

/// Registers every operator kind of this crate.
pub fn register(registry: &mut Registry) {
    registry
        .add_operator(normalize::NormalizeKind)
        .add_operator(sae::SaeEncodeKind)
        .add_operator(sae::SaeReconstructKind)
        .add_operator(signal::ButterworthKind)
        .add_operator(signal::NotchKind)
        .add_operator(signal::FirKind)
        .add_operator(signal::HilbertKind)
        .add_operator(signal::ResampleKind)
        .add_operator(signal::PickKind)
        .add_operator(signal::RerefKind)
        .add_operator(signal::BandpowerKind)
        .add_operator(decode::DecodeKind)
        .add_operator(cluster::KmeansKind)
        .add_operator(cluster::CooccurrenceKind)
        .add_operator(drift::MahalanobisKind)
        .add_operator(drift::PotatoKind)
        .add_operator(stats::FeatureStatsKind)
        .add_operator(stats::TokenStatsKind)
        .add_sink(sae_train::SaeTrainKind)
        .add_sink(decode::CspLdaTrainKind);
}
