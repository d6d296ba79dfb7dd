//! The top-k activating examples of every feature, with the text around each one.
//!
//! Left context comes from the rows that preceded the example in the stream (same sequence,
//! positions `pos − context .. pos`); right context is filled in as the following rows of the
//! same sequence arrive. Context is only kept when the stream carries token text.

use std::collections::VecDeque;

/// One activating example of a feature.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// Activation.
    pub act: f32,
    /// Sequence id of the token.
    pub seq_id: u64,
    /// Token position in its sequence.
    pub pos: u32,
    /// Token text, when known.
    pub token: Option<String>,
    /// Tokens before it (oldest first), when known.
    pub left: Vec<String>,
    /// Tokens after it, filled in as they arrive.
    pub right: Vec<String>,
}

impl Example {
    /// The context as one string, the example's token marked `«token»`; `None` without token text.
    pub fn context(&self) -> Option<String> {
        let token = self.token.as_ref()?;
        Some(format!("{}«{}»{}", self.left.concat(), token, self.right.concat()))
    }
}

/// The ranking of a feature's examples: highest activation first, then earlier sequence, then
/// earlier position.
fn rank_order(a: &Example, b: &Example) -> std::cmp::Ordering {
    b.act.total_cmp(&a.act).then(a.seq_id.cmp(&b.seq_id)).then(a.pos.cmp(&b.pos))
}

/// Whether `a` ranks at or before `b`.
fn ranks_before(a: &Example, b: &Example) -> bool {
    rank_order(a, b) != std::cmp::Ordering::Greater
}

/// A recently seen token (for left context).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Recent {
    seq_id: u64,
    pos: u32,
    token: String,
}

/// Top-k examples of every feature of one stream.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct TopExamples {
    k: usize,
    context: usize,
    /// Per feature: up to `k` examples, highest first (see [`rank_order`]).
    slots: Vec<Vec<Example>>,
    /// Per feature: the smallest kept activation once `k` are kept (else 0), for a quick reject.
    floor: Vec<f32>,
    recent: VecDeque<Recent>,
    /// Examples still waiting for right context: (feature, seq_id, pos).
    pending: Vec<(u32, u64, u32)>,
}

impl TopExamples {
    /// Keeps `k` examples per feature of `n_features`, with `context` tokens each side.
    pub fn new(n_features: usize, k: usize, context: usize) -> TopExamples {
        TopExamples {
            k,
            context,
            slots: vec![Vec::new(); n_features],
            floor: vec![0.0; n_features],
            recent: VecDeque::new(),
            pending: Vec::new(),
        }
    }

    /// Feeds one token: fills right context of pending examples, then offers the token's firing
    /// features (`ids`, `acts`, act > 0) as examples.
    pub fn add_token(&mut self, seq_id: u64, pos: u32, token: Option<&str>, ids: &[u32], acts: &[f32]) {
        if self.k == 0 {
            return;
        }
        if let Some(text) = token {
            let context = self.context;
            let slots = &mut self.slots;
            self.pending.retain(|&(f, s, p)| {
                if s != seq_id || pos <= p || pos > p + context as u32 {
                    return false; // the sequence moved on: this example's right context is final
                }
                if let Some(e) = slots[f as usize].iter_mut().find(|e| e.seq_id == s && e.pos == p) {
                    e.right.push(text.to_string());
                    return e.right.len() < context;
                }
                false // evicted meanwhile
            });
        }
        for (&f, &a) in ids.iter().zip(acts) {
            let fu = f as usize;
            let slot = &mut self.slots[fu];
            if slot.len() == self.k && a <= self.floor[fu] {
                continue;
            }
            let example = Example {
                act: a,
                seq_id,
                pos,
                token: token.map(str::to_string),
                left: match token {
                    Some(_) => self
                        .recent
                        .iter()
                        .filter(|r| r.seq_id == seq_id && r.pos < pos && r.pos + self.context as u32 >= pos)
                        .map(|r| r.token.clone())
                        .collect(),
                    None => Vec::new(),
                },
                right: Vec::new(),
            };
            if slot.len() == self.k {
                slot.pop(); // the lowest ranked
            }
            let at = slot.partition_point(|e| ranks_before(e, &example));
            slot.insert(at, example);
            if slot.len() == self.k {
                self.floor[fu] = slot.iter().map(|e| e.act).fold(f32::INFINITY, f32::min);
            }
            if token.is_some() && self.context > 0 {
                self.pending.push((f, seq_id, pos));
            }
        }
        if let Some(text) = token {
            if self.context > 0 {
                self.recent.push_back(Recent {
                    seq_id,
                    pos,
                    token: text.to_string(),
                });
                if self.recent.len() > self.context {
                    self.recent.pop_front();
                }
            }
        }
    }

    /// The examples of feature `f`, highest activation first (ties: earlier sequence, position).
    pub fn ranked(&self, f: usize) -> &[Example] {
        &self.slots[f]
    }

    /// Puts every feature's examples in rank order: for a state saved before they were kept in
    /// order (call after restoring one).
    pub fn put_in_order(&mut self) {
        for slot in &mut self.slots {
            if !slot.is_sorted_by(ranks_before) {
                slot.sort_by(rank_order);
            }
        }
    }

    /// Number of features tracked.
    pub fn n_features(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_largest_with_context_on_both_sides() {
        let mut t = TopExamples::new(2, 2, 2);
        let words = ["The", " cat", " sat", " on", " the", " mat"];
        let acts = [0.0, 3.0, 1.0, 5.0, 0.0, 2.0];
        for (p, (w, a)) in words.iter().zip(acts).enumerate() {
            let (ids, vals): (Vec<u32>, Vec<f32>) = if a > 0.0 { (vec![1], vec![a]) } else { (vec![], vec![]) };
            t.add_token(7, p as u32, Some(w), &ids, &vals);
        }
        let r = t.ranked(1);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].act, r[0].pos), (5.0, 3));
        assert_eq!(r[0].context().unwrap(), " cat sat« on» the mat");
        assert_eq!((r[1].act, r[1].pos), (3.0, 1));
        assert_eq!(r[1].context().unwrap(), "The« cat» sat on");
        assert!(t.ranked(0).is_empty());
    }

    #[test]
    fn ties_keep_the_earlier_token_and_a_restored_unordered_state_is_ordered() {
        let mut t = TopExamples::new(1, 3, 0);
        for (pos, a) in [(0, 2.0), (1, 1.0), (2, 2.0), (3, 1.0), (4, 4.0), (5, 2.0), (6, 3.0)] {
            t.add_token(0, pos, None, &[0], &[a]);
        }
        let ranked: Vec<(f32, u32)> = t.ranked(0).iter().map(|e| (e.act, e.pos)).collect();
        // Sorting every token by (-act, pos) and keeping 3 gives the same.
        assert_eq!(ranked, [(4.0, 4), (3.0, 6), (2.0, 0)]);
        t.slots[0].reverse();
        t.put_in_order();
        let again: Vec<(f32, u32)> = t.ranked(0).iter().map(|e| (e.act, e.pos)).collect();
        assert_eq!(again, ranked);
    }

    #[test]
    fn right_context_stops_at_a_new_sequence() {
        let mut t = TopExamples::new(1, 1, 3);
        t.add_token(1, 0, Some("a"), &[0], &[1.0]);
        t.add_token(1, 1, Some("b"), &[], &[]);
        t.add_token(2, 0, Some("x"), &[], &[]);
        t.add_token(1, 2, Some("c"), &[], &[]);
        assert_eq!(t.ranked(0)[0].context().unwrap(), "«a»b");
    }
}
