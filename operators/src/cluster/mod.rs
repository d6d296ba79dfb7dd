//! Clustering and structure: streaming k-means, feature co-occurrence and its clusters,
//! comparison scores for clusterings.
//!
//! - [`kmeans`]: k-means++ seeding, Lloyd's batch algorithm (as scikit-learn's `KMeans`),
//!   Sculley's mini-batch updates, and the assignment kernels (CPU GEMM, wgpu GEMM + arg-min).
//! - [`pair_counts`]: co-occurrence counts maintained by differential dataflow as windows slide,
//!   and connected components of the affinity graph by differential `iterate`.
//! - [`spectral`]: spectral clustering of an affinity matrix (as scikit-learn's
//!   `SpectralClustering(affinity="precomputed")`).
//! - [`metrics`]: adjusted Rand index, adjusted mutual information, entropy.

pub mod geometry;
pub mod kmeans;
pub mod kmeans_op;
pub mod metrics;
pub mod pair_counts;
pub mod spectral;

pub use kmeans_op::{KmeansConfig, KmeansKind, KMEANS_TABLES};
pub mod affinity;
pub mod cooccurrence_op;

pub use cooccurrence_op::{CooccurrenceConfig, CooccurrenceKind, COOCCURRENCE_TABLES};
