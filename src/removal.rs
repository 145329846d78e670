//! A bounded log of removed seq ranges and why they went, so gaps can be explained.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::export::GapReason;

/// The most ranges remembered; older ones merge (reason `mixed`).
pub(crate) const MAX_RANGES: usize = 256;

/// A run of removed seqs, all for one reason (or several, once merged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemovedRange {
    pub(crate) from_seq: u64,
    pub(crate) to_seq: u64,
    pub(crate) reason: GapReason,
}

/// Removed ranges in seq order, adjacent ranges with one reason coalesced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct RemovalLog {
    ranges: VecDeque<RemovedRange>,
}

impl RemovalLog {
    /// Notes that `from..=to` (after every range noted so far) went for `reason`.
    pub(crate) fn note(&mut self, from: u64, to: u64, reason: GapReason) {
        if let Some(last) = self.ranges.back_mut()
            && last.reason == reason
            && last.to_seq + 1 == from
        {
            last.to_seq = to;
            return;
        }
        self.ranges.push_back(RemovedRange {
            from_seq: from,
            to_seq: to,
            reason,
        });
        if self.ranges.len() > MAX_RANGES
            && let (Some(a), Some(b)) = (self.ranges.pop_front(), self.ranges.pop_front())
        {
            self.ranges.push_front(RemovedRange {
                from_seq: a.from_seq,
                to_seq: b.to_seq,
                reason: GapReason::Mixed,
            });
        }
    }

    /// Why the seqs `from..=to` (all removed) are gone; `mixed` when the log does not
    /// say, or says several things.
    pub(crate) fn reason(&self, from: u64, to: u64) -> GapReason {
        let mut reasons = self
            .ranges
            .iter()
            .filter(|r| r.to_seq >= from && r.from_seq <= to)
            .map(|r| r.reason);
        match reasons.next() {
            Some(first) if reasons.all(|r| r == first) => first,
            _ => GapReason::Mixed,
        }
    }

    /// The last seq any range covers (0 when none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.ranges.back().map_or(0, |r| r.to_seq)
    }

    /// Whether the ranges together cover every seq of `from..=to`.
    pub(crate) fn covers(&self, from: u64, to: u64) -> bool {
        let mut next = from;
        for r in &self.ranges {
            if r.from_seq <= next && r.to_seq >= next {
                next = r.to_seq.saturating_add(1);
            }
            if next > to {
                return true;
            }
        }
        next > to
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
    }
}
