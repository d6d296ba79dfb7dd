//! When panes close: every `step` tokens, or at multiples of `step` in event time.
//!
//! Event-time panes are aligned to the Unix epoch (a 60 s step closes at every whole minute,
//! UTC). A pane closes when the stream's first token at or past its end arrives (or when the
//! input ends); a token older than the open pane (late) is counted in the open pane, and the
//! number of such tokens is reported. A gap in traffic closes the panes it spans; windows that
//! would only repeat an all-empty window are not emitted.

use serde::{Deserialize, Serialize};

/// The unit of `window` and `step`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowUnit {
    /// Tokens of the stream (the default).
    #[default]
    Tokens,
    /// Milliseconds of event time.
    Ms,
    /// Seconds of event time.
    S,
}

impl WindowUnit {
    /// Nanoseconds per unit, for event-time units.
    pub fn ns(self) -> Option<i64> {
        match self {
            WindowUnit::Tokens => None,
            WindowUnit::Ms => Some(1_000_000),
            WindowUnit::S => Some(1_000_000_000),
        }
    }
}

/// Per-stream pane bookkeeping.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaneClock {
    /// Pane length in tokens (token unit) or ns (time units).
    step: u64,
    /// Window length in the same unit.
    window: u64,
    /// Panes per window.
    capacity: u64,
    timed: bool,
    tokens_in_pane: u64,
    /// Index of the open pane (time units): it spans `[p * step, (p + 1) * step)` ns.
    open: Option<i64>,
    /// The pane the token that triggered the pending closes falls in, and closes still pending.
    target: i64,
    pending: u64,
    /// Tokens that arrived with a time before the open pane.
    pub late: u64,
    /// Event time of the stream's first token (time units).
    pub first_time: Option<i64>,
}

impl PaneClock {
    /// A clock for windows of `window` closing every `step` (both in `unit`; `window` a
    /// multiple of `step`, `window = 0` for none).
    pub fn new(unit: WindowUnit, window: u64, step: u64) -> PaneClock {
        let scale = unit.ns().unwrap_or(1) as u64;
        PaneClock {
            step: step * scale,
            window: window * scale,
            capacity: window.checked_div(step).unwrap_or(0),
            timed: unit != WindowUnit::Tokens,
            tokens_in_pane: 0,
            open: None,
            target: 0,
            pending: 0,
            late: 0,
            first_time: None,
        }
    }

    /// Called before a token is added: how many panes close first (event-time units only;
    /// `time` is the token's event time, required then). The open pane then holds `time`.
    pub fn before(&mut self, time: Option<i64>) -> Result<u64, &'static str> {
        if !self.timed || self.step == 0 {
            return Ok(0);
        }
        let t = time.ok_or("windows in event time need rows with event times (a `time` column, or a live source)")?;
        self.first_time.get_or_insert(t);
        let p = t.div_euclid(self.step as i64);
        let Some(open) = self.open else {
            self.open = Some(p);
            return Ok(0);
        };
        if p < open {
            self.late += 1;
            return Ok(0);
        }
        // Beyond `capacity + 1` closes every pane of the window is empty: later closes would
        // repeat the same all-empty window.
        let closes = ((p - open) as u64).min(self.capacity + 1);
        self.target = p;
        self.pending = closes;
        Ok(closes)
    }

    /// Called after a pane closed by [`PaneClock::before`] (time units): the next pane opens.
    pub fn advance(&mut self) {
        self.tokens_in_pane = 0;
        if let Some(p) = self.open.as_mut() {
            *p += 1;
            self.pending = self.pending.saturating_sub(1);
            if self.pending == 0 {
                *p = (*p).max(self.target); // the rest of a gap is skipped
            }
        }
    }

    /// Called after a token is added: true when the pane closes now (token unit).
    pub fn after(&mut self) -> bool {
        self.tokens_in_pane += 1;
        if !self.timed && self.step > 0 && self.tokens_in_pane == self.step {
            self.tokens_in_pane = 0;
            return true;
        }
        false
    }

    /// The event-time span `[start, end)` in ns of the window ending with the open pane (time
    /// units, once a token arrived).
    pub fn window_span(&self) -> Option<(i64, i64)> {
        let end = (self.open? + 1) * self.step as i64;
        Some((end - self.window as i64, end))
    }

    /// Whether windows are in event time.
    pub fn timed(&self) -> bool {
        self.timed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_panes_close_every_step() {
        let mut c = PaneClock::new(WindowUnit::Tokens, 6, 3);
        let closes: Vec<bool> = (0..7).map(|_| c.after()).collect();
        assert_eq!(closes, [false, false, true, false, false, true, false]);
        assert_eq!(c.before(None), Ok(0));
    }

    #[test]
    fn time_panes_close_on_the_first_later_token_and_cap_gaps() {
        let s = 1_000_000_000;
        let mut c = PaneClock::new(WindowUnit::S, 2, 1);
        assert_eq!(c.before(Some(5 * s + 10)), Ok(0));
        assert_eq!(c.window_span(), Some((4 * s, 6 * s)));
        assert_eq!(c.before(Some(5 * s + 900_000_000)), Ok(0));
        assert_eq!(c.before(Some(6 * s)), Ok(1)); // pane 5 closes
        assert_eq!(c.window_span(), Some((4 * s, 6 * s)));
        c.advance();
        assert_eq!(c.window_span(), Some((5 * s, 7 * s)));
        assert_eq!(c.before(Some(5 * s)), Ok(0)); // late
        assert_eq!(c.late, 1);
        // A 100 s gap: 3 closes (pane 6, then two empty panes), then the open pane is 106.
        assert_eq!(c.before(Some(106 * s)), Ok(3));
        let mut ends = Vec::new();
        for _ in 0..3 {
            ends.push(c.window_span().unwrap().1 / s);
            c.advance();
        }
        assert_eq!(ends, [7, 8, 9]);
        assert_eq!(c.window_span(), Some((105 * s, 107 * s)));
        assert_eq!(
            c.before(None),
            Err("windows in event time need rows with event times (a `time` column, or a live source)")
        );
    }
}
