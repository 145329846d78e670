//! The retained records: a pure data structure (no I/O, no threads).
//!
//! Records sit in `seq` order in a ring; every removal is from the front, so pruning is
//! amortized O(1) per record. Sizes and tallies are kept incrementally, so reading them
//! is O(1) whatever the number of records.
//!
//! Encoded bytes live in 64 KiB chunks rather than one allocation per record: appending
//! is a copy into the tail chunk, and a chunk is released (or kept as the one spare)
//! when its last record is pruned. A tail chunk is shrunk to its contents when the
//! next chunk starts, so memory is the retained bytes plus one partly used chunk and the
//! spare (64 KiB each).

use std::collections::VecDeque;

use crate::contract::event::{EventKind, OutcomeStatus};
use crate::storage::export::GapReason;
use crate::storage::removal::RemovalLog;
use crate::storage::stats::{Pruned, Tally};

/// How an execution ended, for the task tallies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskEnd {
    Completed(OutcomeStatus),
    Abandoned,
}

/// Task facts kept beside a record so its tallies can be taken back when it is pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskMeta {
    pub(crate) end: TaskEnd,
    pub(crate) duration_us: u64,
}

/// What reads and tallies need of a record without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) seq: u64,
    pub(crate) time: i64,
    pub(crate) kind: EventKind,
    pub(crate) task: Option<TaskMeta>,
}

/// One retained record: its meta and where its encoded bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) meta: Meta,
    chunk: u64,
    offset: u32,
    len: u32,
}

/// Bytes per chunk of encoded records (a larger record gets a chunk of its own size).
const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    live: u32,
}

/// Why records left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Age,
    Capacity,
    Cleared,
}

impl From<Removal> for GapReason {
    fn from(r: Removal) -> GapReason {
        match r {
            Removal::Age => GapReason::Age,
            Removal::Capacity => GapReason::Capacity,
            Removal::Cleared => GapReason::Cleared,
        }
    }
}

/// The store's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) max_age_nanos: i64,
    pub(crate) max_events: u64,
    pub(crate) max_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Store {
    entries: VecDeque<Entry>,
    chunks: VecDeque<Chunk>,
    /// The id of `chunks[0]`; ids grow by one per chunk.
    first_chunk: u64,
    spare: Option<Vec<u8>>,
    bytes: u64,
    next_seq: u64,
    bounds: Bounds,
    retained: Tally,
    lifetime: Tally,
    pruned: Pruned,
    removed: RemovalLog,
    last_time: Option<i64>,
    /// Records loaded by [`Store::push_recovered`] rather than stored by this collector.
    recovered: u64,
    /// The seq of the first record this collector stores (after any recovered ones).
    base_seq: u64,
}

impl Store {
    pub(crate) fn new(bounds: Bounds) -> Store {
        Store {
            entries: VecDeque::new(),
            chunks: VecDeque::new(),
            first_chunk: 0,
            spare: None,
            bytes: 0,
            next_seq: 1,
            bounds,
            retained: Tally::default(),
            lifetime: Tally::default(),
            pruned: Pruned::default(),
            removed: RemovalLog::default(),
            last_time: None,
            recovered: 0,
            base_seq: 1,
        }
    }

    /// Appends a record (its `seq` must be the next one), then enforces the count and
    /// byte bounds.
    pub(crate) fn push(&mut self, meta: Meta, bytes: &[u8]) {
        debug_assert_eq!(meta.seq, self.next_seq, "seqs are assigned contiguously");
        debug_assert!(
            self.last_time.is_none_or(|t| t <= meta.time),
            "time never decreases"
        );
        let (chunk, offset) = self.append_bytes(bytes);
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let entry = Entry {
            meta,
            chunk,
            offset,
            len,
        };
        self.next_seq = meta.seq + 1;
        self.last_time = Some(meta.time);
        self.bytes += u64::from(len);
        self.retained.add(&meta);
        self.lifetime.add(&meta);
        self.entries.push_back(entry);
        self.enforce_capacity();
    }

    /// Loads a record kept elsewhere (the data directory) into the window. The window
    /// holds a run of consecutive seqs, so a jump in seqs starts it afresh.
    pub(crate) fn push_recovered(&mut self, meta: Meta, bytes: &[u8]) {
        if meta.seq != self.next_seq {
            self.clear();
            self.next_seq = meta.seq;
        }
        self.push(meta, bytes);
    }

    /// Ends loading: what was loaded counts as recovered (not stored, not pruned), and
    /// numbering goes on at `next_seq` (at least one past the last record loaded).
    pub(crate) fn finish_recovery(&mut self, next_seq: u64) {
        if next_seq > self.next_seq {
            self.clear();
            self.next_seq = next_seq;
        }
        self.pruned = Pruned::default();
        self.removed.clear();
        self.lifetime = Tally::default();
        self.recovered = self.len();
        self.base_seq = self.next_seq;
    }

    /// Removes every record older than the retention period at `now`.
    pub(crate) fn prune_expired(&mut self, now: i64) {
        let cutoff = self.cutoff(now);
        while self.entries.front().is_some_and(|e| e.meta.time < cutoff) {
            self.pop_front(Removal::Age);
        }
    }

    /// Records with a time before this are expired at `now`.
    pub(crate) fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(self.bounds.max_age_nanos)
    }

    /// Removes every record; returns how many.
    pub(crate) fn clear(&mut self) -> u64 {
        let n = self.entries.len() as u64;
        while !self.entries.is_empty() {
            self.pop_front(Removal::Cleared);
        }
        n
    }

    /// Changes the bounds, pruning at once to meet the count and byte bounds.
    pub(crate) fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = bounds;
        self.enforce_capacity();
    }

    fn enforce_capacity(&mut self) {
        while self.entries.len() as u64 > self.bounds.max_events
            || self.bytes > self.bounds.max_bytes
        {
            self.pop_front(Removal::Capacity);
        }
    }

    /// Copies `bytes` into the tail chunk (or a new one); returns the chunk id and offset.
    fn append_bytes(&mut self, bytes: &[u8]) -> (u64, u32) {
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.bytes.capacity() - c.bytes.len() >= bytes.len());
        if !fits {
            // The room left in the old tail would never be used: give it back.
            if let Some(tail) = self.chunks.back_mut() {
                tail.bytes.shrink_to_fit();
            }
            let mut buf = match self.spare.take() {
                Some(spare) if spare.capacity() >= bytes.len() => spare,
                _ => Vec::with_capacity(CHUNK_BYTES.max(bytes.len())),
            };
            buf.clear();
            self.chunks.push_back(Chunk {
                bytes: buf,
                live: 0,
            });
        }
        let id = self.first_chunk + self.chunks.len() as u64 - 1;
        let Some(chunk) = self.chunks.back_mut() else {
            return (id, 0);
        };
        let offset = u32::try_from(chunk.bytes.len()).unwrap_or(u32::MAX);
        chunk.bytes.extend_from_slice(bytes);
        chunk.live += 1;
        (id, offset)
    }

    /// The encoded bytes of a retained record.
    pub(crate) fn bytes_of(&self, entry: &Entry) -> &[u8] {
        let index = usize::try_from(entry.chunk - self.first_chunk).unwrap_or(usize::MAX);
        let start = entry.offset as usize;
        self.chunks
            .get(index)
            .and_then(|c| c.bytes.get(start..start + entry.len as usize))
            .unwrap_or(&[])
    }

    fn pop_front(&mut self, why: Removal) {
        let Some(entry) = self.entries.pop_front() else {
            return;
        };
        self.bytes -= u64::from(entry.len);
        debug_assert_eq!(
            entry.chunk, self.first_chunk,
            "records leave in chunk order"
        );
        if let Some(front) = self.chunks.front_mut() {
            front.live -= 1;
            if front.live == 0
                && let Some(done) = self.chunks.pop_front()
            {
                self.first_chunk += 1;
                if done.bytes.capacity() >= CHUNK_BYTES {
                    self.spare.get_or_insert(done.bytes);
                }
            }
        }
        self.retained.remove(&entry.meta);
        self.pruned.count(why);
        self.removed
            .note(entry.meta.seq, entry.meta.seq, why.into());
    }

    /// Why the seqs `from..=to` (all removed) are gone.
    pub(crate) fn removal_reason(&self, from: u64, to: u64) -> GapReason {
        self.removed.reason(from, to)
    }

    /// The seq of the oldest retained record, or the next seq when none is retained.
    pub(crate) fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.meta.seq)
    }

    /// Records this collector stored (not counting recovered ones).
    pub(crate) fn stored(&self) -> u64 {
        self.next_seq - self.base_seq
    }

    /// Records loaded from the data directory when the collector was built.
    pub(crate) fn recovered(&self) -> u64 {
        self.recovered
    }

    /// The seq the next record will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The retained records from the first with `seq >= seq` on.
    pub(crate) fn starting_at(&self, seq: u64) -> std::collections::vec_deque::Iter<'_, Entry> {
        let skip = usize::try_from(seq.saturating_sub(self.first_seq())).unwrap_or(usize::MAX);
        self.entries.range(skip.min(self.entries.len())..)
    }

    /// The seq of the first retained record with `time >= time` (binary search: times
    /// never decrease in seq order), or the next seq when there is none.
    pub(crate) fn first_seq_at(&self, time: i64) -> u64 {
        let i = self.entries.partition_point(|e| e.meta.time < time);
        self.entries.get(i).map_or(self.next_seq, |e| e.meta.seq)
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn retained(&self) -> &Tally {
        &self.retained
    }

    pub(crate) fn lifetime(&self) -> &Tally {
        &self.lifetime
    }

    pub(crate) fn pruned(&self) -> Pruned {
        self.pruned
    }

    pub(crate) fn last_time(&self) -> Option<i64> {
        self.last_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(s: &mut Store, seq: u64, time: i64, len: usize) {
        let meta = Meta {
            seq,
            time,
            kind: EventKind::Custom,
            task: None,
        };
        s.push(meta, &vec![seq as u8; len]);
    }

    fn bounds(max_events: u64, max_bytes: u64) -> Bounds {
        Bounds {
            max_age_nanos: 100,
            max_events,
            max_bytes,
        }
    }

    #[test]
    fn smoke() {
        let mut s = Store::new(bounds(10, 1000));
        push(&mut s, 1, 0, 10);
        assert_eq!(
            (s.len(), s.bytes(), s.first_seq(), s.next_seq()),
            (1, 10, 1, 2)
        );
    }

    #[test]
    fn capacity_prunes_oldest_first_and_keeps_order() {
        let mut s = Store::new(bounds(3, 1000));
        for seq in 1..=5 {
            push(&mut s, seq, seq as i64, 10);
        }
        let seqs: Vec<u64> = s.starting_at(0).map(|e| e.meta.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(s.pruned().capacity, 2);
        assert_eq!(s.removal_reason(1, 2), GapReason::Capacity);
    }

    #[test]
    fn bytes_bound_is_tracked_incrementally() {
        let mut s = Store::new(bounds(100, 25));
        for seq in 1..=4 {
            push(&mut s, seq, 0, 10);
        }
        assert_eq!(s.bytes(), 20);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn age_and_clear_reasons_are_remembered() {
        let mut s = Store::new(bounds(100, 10_000));
        for seq in 1..=6 {
            push(&mut s, seq, seq as i64 * 10, 1);
        }
        s.prune_expired(130); // cutoff 30: seqs 1, 2 go
        assert_eq!(s.first_seq(), 3);
        assert_eq!(s.clear(), 4);
        assert_eq!(s.removal_reason(1, 2), GapReason::Age);
        assert_eq!(s.removal_reason(3, 6), GapReason::Cleared);
        assert_eq!(s.removal_reason(1, 6), GapReason::Mixed);
        assert_eq!(s.first_seq(), 7);
    }

    #[test]
    fn time_search_and_seq_ranges() {
        let mut s = Store::new(bounds(100, 10_000));
        for seq in 1..=5 {
            push(&mut s, seq, (seq as i64 / 2) * 10, 1);
        }
        assert_eq!(s.first_seq_at(10), 2);
        assert_eq!(s.first_seq_at(11), 4);
        assert_eq!(s.first_seq_at(1000), 6);
        assert_eq!(s.starting_at(4).count(), 2);
        assert_eq!(s.starting_at(99).count(), 0);
    }

    #[test]
    fn bytes_survive_chunk_boundaries_and_pruning() {
        let mut s = Store::new(bounds(1000, 1 << 30));
        let sizes = [10, CHUNK_BYTES - 5, 7, 3 * CHUNK_BYTES, 1, CHUNK_BYTES, 5];
        for (i, len) in sizes[..6].iter().enumerate() {
            push(&mut s, i as u64 + 1, 0, *len);
        }
        let check = |s: &Store| {
            for e in s.starting_at(0) {
                assert_eq!(
                    s.bytes_of(e),
                    vec![e.meta.seq as u8; sizes[e.meta.seq as usize - 1]].as_slice()
                );
            }
        };
        check(&s);
        s.set_bounds(bounds(3, 1 << 30));
        assert_eq!(s.first_seq(), 4);
        check(&s);
        assert!(s.chunks.len() <= 3, "emptied chunks are released");
        s.clear();
        assert!(s.chunks.is_empty());
        push(&mut s, 7, 0, 5);
        check(&s);
    }

    #[test]
    fn removal_log_stays_bounded() {
        let mut s = Store::new(bounds(1, 10_000));
        for seq in 1..=2000 {
            push(&mut s, seq, 0, 1);
            if seq % 2 == 0 {
                s.clear();
            }
        }
        assert!(s.removed.len() <= crate::storage::removal::MAX_RANGES);
    }
}
