//! Clustering and structure: streaming k-means, feature co-occurrence and its clusters,
//! comparison scores for clusterings.
//!
//! One folder per operator: [`kmeans`] (the `kmeans` operator; its [`kmeans::model`]: k-means++
//! seeding, Lloyd's batch algorithm as scikit-learn's `KMeans`, Sculley's mini-batch updates, and
//! the assignment kernels, CPU GEMM and wgpu GEMM + arg-min) and [`cooccurrence`] (the
//! `cooccurrence` operator; its [`pair_counts`]: co-occurrence counts kept in sorted runs as
//! windows slide, and connected components of the affinity graph by union-find at each report). Shared by them and the geometry report:
//! - [`affinity`]: co-occurrence measures.
//! - [`spectral`]: spectral clustering of an affinity matrix (as scikit-learn's
//!   `SpectralClustering(affinity="precomputed")`).
//! - [`metrics`]: adjusted Rand index, adjusted mutual information, entropy.

pub mod affinity;
pub mod cooccurrence;
pub mod geometry;
pub mod kmeans;
pub mod metrics;
pub mod spectral;

pub use cooccurrence::pair_counts;
pub use cooccurrence::{CooccurrenceConfig, CooccurrenceKind, COOCCURRENCE_TABLES};
pub use kmeans::{KmeansConfig, KmeansKind, KMEANS_TABLES};
