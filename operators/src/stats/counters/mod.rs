//! Where `feature_stats` counts firing features: each stream's firing counts, activation sums,
//! maxima, activation histograms, L0 distribution and last firings, for its open pane and for
//! all time. The CPU adds a token's features at once; a GPU ([`GpuCounters`]) adds batches on the
//! device and brings the counts in when the operator needs them (a pane closes, the input
//! ends, a checkpoint), so the host never touches a firing feature.

mod gpu;

use std::ops::Range;

use neurostream_engine::{Result, SparseFrame};

pub use gpu::{GpuCounters, MAX_UNSETTLED_TOKENS};

use super::accum::{firing, Accum, LogBins};
use super::panes::Span;

/// A stream's counters that firing tokens add to.
pub struct Sums<'a> {
    /// The open pane's span.
    pub pane: &'a mut Accum,
    /// The all-time span.
    pub all: &'a mut Accum,
    /// Per feature, the stream's token index + 1 of its last firing (0: never).
    pub last_fired: &'a mut [u64],
}

impl Sums<'_> {
    /// The same counters, borrowed again.
    pub fn reborrow(&mut self) -> Sums<'_> {
        Sums {
            pane: &mut *self.pane,
            all: &mut *self.all,
            last_fired: &mut *self.last_fired,
        }
    }
}

/// Counts added on a device but not yet in a stream's [`Sums`].
pub struct Unsettled {
    /// The counts of the tokens added since the last settle.
    pub span: Accum,
    /// The stream's index of the first of those tokens.
    pub first_token: u64,
    /// Per feature, the index + 1 of its last firing among those tokens (0: none).
    pub last: Vec<u32>,
}

impl Unsettled {
    /// Adds these counts into `sums`.
    pub fn apply(&self, sums: Sums<'_>) {
        sums.pane.merge(&self.span);
        sums.all.merge(&self.span);
        for (l, &v) in sums.last_fired.iter_mut().zip(&self.last) {
            if v > 0 {
                *l = self.first_token + v as u64;
            }
        }
    }
}

/// The counting kernels of one `feature_stats` instance.
pub trait FeatureCounters: Send {
    /// Adds rows `rows` of `frame` (its entries with activation > 0; the first row is the
    /// stream's token `first_token`, counted from 0) to the stream's counts.
    fn add_rows(&mut self, frame: &SparseFrame, rows: Range<usize>, first_token: u64, sums: Sums<'_>) -> Result<()>;

    /// Brings every count added for `stream` into `sums`, so they hold every token added.
    fn settle(&mut self, stream: &str, sums: Sums<'_>) -> Result<()>;

    /// The counts added for `stream` and not settled yet (`None` when there are none), read
    /// without changing anything: a snapshot adds them to a copy of the stream's state.
    fn unsettled(&self, stream: &str) -> Result<Option<Unsettled>>;
}

/// The CPU kernels: every token is added at once, so nothing is ever unsettled.
pub struct CpuCounters {
    /// Activation histogram bins (`None`: off).
    pub bins: Option<LogBins>,
    ids: Vec<u32>,
    acts: Vec<f32>,
}

impl CpuCounters {
    /// Counters with `bins` activation bins.
    pub fn new(bins: Option<LogBins>) -> CpuCounters {
        CpuCounters {
            bins,
            ids: Vec::new(),
            acts: Vec::new(),
        }
    }
}

impl FeatureCounters for CpuCounters {
    fn add_rows(&mut self, frame: &SparseFrame, rows: Range<usize>, first_token: u64, sums: Sums<'_>) -> Result<()> {
        for (token, r) in (first_token..).zip(rows) {
            firing(frame.row(r), &mut self.ids, &mut self.acts);
            sums.pane.add_token(&self.ids, &self.acts, self.bins.as_ref());
            sums.all.add_token(&self.ids, &self.acts, self.bins.as_ref());
            for &f in &self.ids {
                sums.last_fired[f as usize] = token + 1;
            }
        }
        Ok(())
    }

    fn settle(&mut self, _stream: &str, _sums: Sums<'_>) -> Result<()> {
        Ok(())
    }

    fn unsettled(&self, _stream: &str) -> Result<Option<Unsettled>> {
        Ok(None)
    }
}
