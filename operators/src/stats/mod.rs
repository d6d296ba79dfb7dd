//! `feature_stats`: windowed and all-time statistics of sparse feature streams (SAE latents),
//! with alerts; `token_stats`: windowed means of token scalars (reconstruction metrics), with alerts.
//!
//! Windows are counted in tokens of each stream, in stream order: every `step` tokens the
//! window of the last `window` tokens closes (tumbling when `step == window`, sliding when
//! smaller). With `window_unit = "s"` or `"ms"` they are spans of event time instead (the rows'
//! `time`), aligned to the Unix epoch; see [`clock`]. A window is kept as `window / step` panes; a closing window merges its panes, so
//! the oldest pane's counts leave the window exactly when a new pane enters. When the input
//! ends, a last partial window (`final = true`) and the all-time tables are emitted.
//!
//! Output tables (one [`TableFrame`](neurostream_engine::TableFrame) stream; see the README's
//! layout section): `windows`, `features`, `density_histogram`, `activation_histogram`, `l0`,
//! `top_examples`, `alerts`.

pub mod accum;
pub mod alerts;
pub mod clock;
pub mod counters;
pub mod examples;
mod feature_stats;
pub mod panes;
pub mod tables;
mod token_stats;

pub use feature_stats::{FeatureStatsConfig, FeatureStatsKind, FEATURE_TABLES};
pub use token_stats::{TokenStatsConfig, TokenStatsKind, TOKEN_TABLES};

/// Checks a `window`/`step` pair (in `unit`) and returns the step used.
fn window_step(window: u64, step: Option<u64>, unit: clock::WindowUnit) -> Result<u64, String> {
    let unit = match unit {
        clock::WindowUnit::Tokens => "tokens",
        clock::WindowUnit::Ms => "ms",
        clock::WindowUnit::S => "s",
    };
    let step = step.unwrap_or(window);
    if window > 0 && step == 0 {
        return Err(format!("`step` must be at least 1 ({unit})"));
    }
    if window > 0 && (step > window || !window.is_multiple_of(step)) {
        return Err(format!(
            "`window` ({window} {unit}) must be a multiple of `step` ({step} {unit})"
        ));
    }
    Ok(step)
}
