//! A sliding window of token counts kept as panes: `window / step` closed panes of `step` tokens
//! each, plus the pane being filled. Closing a pane evicts the oldest, so whatever it counted
//! leaves the window exactly then.

use std::collections::VecDeque;

/// Sums over a span of tokens that can be added together.
pub trait Span {
    /// Adds every sum of `other` into `self`.
    fn merge(&mut self, other: &Self);
}

/// The closed panes of one stream's window.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Panes<A> {
    capacity: usize,
    closed: VecDeque<A>,
}

impl<A: Span> Panes<A> {
    /// Panes of a window of `window` tokens closed every `step` tokens (`window` a multiple of `step`;
    /// `window = 0` keeps none).
    pub fn new(window: u64, step: u64) -> Panes<A> {
        Panes {
            capacity: if window == 0 { 0 } else { (window / step.max(1)) as usize },
            closed: VecDeque::new(),
        }
    }

    /// Adds a closed pane; returns the pane it evicted, if any (for reuse).
    pub fn push(&mut self, pane: A) -> Option<A> {
        if self.capacity == 0 {
            return Some(pane);
        }
        self.closed.push_back(pane);
        (self.closed.len() > self.capacity).then(|| self.closed.pop_front()).flatten()
    }

    /// Merges the window into `into` (an empty span): every closed pane, or for a final window
    /// ending with the `partial` pane, the newest `capacity − 1` closed panes and that one.
    pub fn merge_window(&self, partial: Option<&A>, into: &mut A) {
        let skip = usize::from(partial.is_some() && self.closed.len() == self.capacity);
        for p in self.closed.iter().skip(skip) {
            into.merge(p);
        }
        if let Some(p) = partial {
            into.merge(p);
        }
    }
}
