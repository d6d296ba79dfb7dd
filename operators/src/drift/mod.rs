//! Drift and out-of-distribution scores.
//!
//! One folder per operator:
//! - [`mahalanobis`]: per-row Mahalanobis distance to a reference mean and Ledoit-Wolf-shrunk
//!   covariance ([`mahalanobis::reference`]), from a reference window or a Parquet file.
//! - [`riemann_potato`]: EEG artifact detection by the Riemannian distance of window covariances
//!   to a reference mean ([`riemann_potato::riemann`]), pyRiemann's Potato.
//!
//! Both emit per-row scores (token scalars, or a signal stream for signals), so a `token_stats`
//! operator downstream gives windowed summaries
//! and alerts in the same `alerts` table as the feature monitors.

pub mod mahalanobis;
pub mod riemann_potato;

pub use mahalanobis::{MahalanobisConfig, MahalanobisKind};
pub use riemann_potato::{PotatoConfig, PotatoKind};
