//! A bounded log of removed seq ranges and why they went, so gaps can be explained.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::storage::export::GapReason;

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
    /// Notes that `from..=to` went for `reason` (usually after every range noted so far;
    /// only adjacent ranges coalesce).
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

    /// Why the seqs `from..=to`, missing from the data directory, are gone: as
    /// [`RemovalLog::reason`], but `damaged` when no range explains any of them (a
    /// segment or the log itself was lost).
    pub(crate) fn explain(&self, from: u64, to: u64) -> GapReason {
        if self
            .ranges
            .iter()
            .any(|r| r.to_seq >= from && r.from_seq <= to)
        {
            self.reason(from, to)
        } else {
            GapReason::Damaged
        }
    }

    /// The last seq any range covers (0 when none). Ranges may be noted out of order
    /// (a failed write noted before an older prune), so this is the largest end.
    pub(crate) fn last_seq(&self) -> u64 {
        self.ranges.iter().map(|r| r.to_seq).max().unwrap_or(0)
    }

    /// Whether the ranges together cover every seq of `from..=to`, in whatever order
    /// they were noted.
    pub(crate) fn covers(&self, from: u64, to: u64) -> bool {
        let mut ranges: Vec<(u64, u64)> =
            self.ranges.iter().map(|r| (r.from_seq, r.to_seq)).collect();
        ranges.sort_unstable();
        let mut next = from;
        for (start, end) in ranges {
            if start <= next && end >= next {
                next = end.saturating_add(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_noted_out_of_order_still_bound_and_cover() {
        let mut log = RemovalLog::default();
        // A failed write noted before an older prune.
        log.note(26, 26, GapReason::Unpersisted);
        log.note(1, 25, GapReason::Cleared);
        assert_eq!(log.last_seq(), 26);
        assert!(log.covers(1, 26));
        assert!(!log.covers(1, 27));
        assert_eq!(log.reason(1, 25), GapReason::Cleared);
        assert_eq!(log.reason(20, 26), GapReason::Mixed);
    }

    #[test]
    fn adjacent_ranges_coalesce_and_the_log_stays_bounded() {
        let mut log = RemovalLog::default();
        log.note(1, 5, GapReason::Age);
        log.note(6, 9, GapReason::Age);
        assert_eq!(log.len(), 1);
        for seq in (20..20 + 4 * MAX_RANGES as u64).step_by(2) {
            log.note(seq, seq, GapReason::Capacity);
        }
        assert!(log.len() <= MAX_RANGES);
        assert!(log.covers(1, 9));
    }
}
