//! Counters: every submitted event is stored or counted under one reason.

use serde::Serialize;
use time::OffsetDateTime;

use crate::contract::config::AnonymizationMode;
use crate::contract::event::{EventKind, OutcomeStatus};
use crate::contract::key::KeyOrigin;
use crate::storage::store::{Meta, Removal, TaskEnd};

/// Slots of the task tallies: the four outcome statuses, then abandoned.
const TASK_SLOTS: usize = 5;

fn task_slot(end: TaskEnd) -> usize {
    match end {
        TaskEnd::Completed(status) => status as usize,
        TaskEnd::Abandoned => TASK_SLOTS - 1,
    }
}

/// Incremental per-kind and per-outcome tallies over a set of records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    kinds: [u64; EventKind::COUNT],
    ends: [u64; TASK_SLOTS],
    duration_us: [u128; TASK_SLOTS],
}

impl Tally {
    pub(crate) fn add(&mut self, e: &Meta) {
        self.kinds[e.kind.index()] += 1;
        if let Some(task) = e.task {
            let slot = task_slot(task.end);
            self.ends[slot] += 1;
            self.duration_us[slot] += u128::from(task.duration_us);
        }
    }

    pub(crate) fn remove(&mut self, e: &Meta) {
        self.kinds[e.kind.index()] -= 1;
        if let Some(task) = e.task {
            let slot = task_slot(task.end);
            self.ends[slot] -= 1;
            self.duration_us[slot] =
                self.duration_us[slot].saturating_sub(u128::from(task.duration_us));
        }
    }

    pub(crate) fn kind(&self, kind: EventKind) -> u64 {
        self.kinds[kind.index()]
    }

    fn window(&self) -> TaskWindow {
        let [succeeded, failed, timed_out, cancelled, abandoned] = self.ends;
        let completed = succeeded + failed + timed_out + cancelled;
        // u128: a sum of u64 microseconds cannot overflow it.
        let completed_us: u128 = self.duration_us[..TASK_SLOTS - 1].iter().sum();
        TaskWindow {
            succeeded,
            failed,
            timed_out,
            cancelled,
            abandoned,
            completed,
            success_rate: (completed > 0).then(|| succeeded as f64 / completed as f64),
            mean_duration_ms: (completed > 0)
                .then(|| completed_us as f64 / completed as f64 / 1000.0),
        }
    }
}

/// Records removed from the store, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Older than the retention period.
    pub age: u64,
    /// Over `max_events` or `max_bytes`.
    pub capacity: u64,
    /// Removed by [`Collector::clear`](crate::Collector::clear).
    pub cleared: u64,
}

impl Pruned {
    /// All removed records.
    pub fn total(&self) -> u64 {
        self.age + self.capacity + self.cleared
    }

    pub(crate) fn count(&mut self, why: Removal) {
        match why {
            Removal::Age => self.age += 1,
            Removal::Capacity => self.capacity += 1,
            Removal::Cleared => self.cleared += 1,
        }
    }
}

/// Events submitted and never stored, by reason (besides `rejected`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// The queue was full (after any blocking the overflow policy allows).
    pub queue_full: u64,
    /// The collector was paused.
    pub paused: u64,
    /// The collector was disabled by config.
    pub disabled: u64,
    /// The collector was shutting down or shut down.
    pub shutdown: u64,
}

impl Dropped {
    /// All dropped events.
    pub fn total(&self) -> u64 {
        self.queue_full + self.paused + self.disabled + self.shutdown
    }
}

/// How many records of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KindCount {
    /// The kind.
    pub kind: EventKind,
    /// Stored since the collector started.
    pub stored: u64,
    /// Retained now.
    pub retained: u64,
}

/// Executions by how they ended, over some window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TaskWindow {
    /// Completed with `succeeded`.
    pub succeeded: u64,
    /// Completed with `failed`.
    pub failed: u64,
    /// Completed with `timed_out`.
    pub timed_out: u64,
    /// Completed with `cancelled`.
    pub cancelled: u64,
    /// Abandoned (dropped without completion).
    pub abandoned: u64,
    /// Completed with any status.
    pub completed: u64,
    /// `succeeded / completed`, when anything completed.
    pub success_rate: Option<f64>,
    /// Mean `duration_ms` of completed executions, when anything completed.
    pub mean_duration_ms: Option<f64>,
}

/// Task outcomes over the retained records and since the collector started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TaskStats {
    /// Over the retained records.
    pub retained: TaskWindow,
    /// Since the collector started.
    pub lifetime: TaskWindow,
}

/// Whether the collector takes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum State {
    /// Recording.
    Active,
    /// Paused by [`Collector::pause`](crate::Collector::pause).
    Paused,
    /// Disabled by `enabled = false`.
    Disabled,
    /// Shut down.
    ShutDown,
}

/// A snapshot of the collector's counters, taken in O(1).
///
/// The accounting identity holds in every snapshot:
/// `submitted + generated = stored + dropped.total() + rejected + in_flight` and
/// `stored + recovered = retained + pruned.total()`. Each term is its own counter (none is
/// derived from the others), read until they balance, so an event lost without being
/// counted shows as an imbalance even while producers run. After a
/// [`flush`](crate::Collector::flush) with no concurrent producers, `in_flight` is 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Events passed to `record`, `try_record` or an execution.
    pub submitted: u64,
    /// Records the collector made itself: one `AnomalyDetected` per alert fired. They
    /// are stored, dropped and in flight like submitted events, so they count on the
    /// left of the identity beside `submitted`.
    pub generated: u64,
    /// Events assigned a `seq` and stored by this collector.
    pub stored: u64,
    /// Records loaded from the data directory when the collector was built (0 without
    /// one): they are retained or pruned like stored ones.
    pub recovered: u64,
    /// Events rejected by validation.
    pub rejected: u64,
    /// Events dropped, by reason.
    pub dropped: Dropped,
    /// Events submitted and not yet stored, dropped or rejected: counted directly, so at
    /// every instant at most the queue's capacity, plus the batches the worker (and, with
    /// a data directory, the commit thread) holds, plus one per producer mid-call.
    pub in_flight: u64,
    /// Records retained now.
    pub retained: u64,
    /// Encoded bytes of the retained records.
    pub retained_bytes: u64,
    /// Records removed from the store, by reason.
    pub pruned: Pruned,
    /// The seq of the oldest retained record.
    pub first_retained_seq: Option<u64>,
    /// The last seq assigned.
    pub last_seq: Option<u64>,
    /// Events waiting in the queue.
    pub queue_depth: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Counts per event kind, in [`EventKind::ALL`] order.
    pub kinds: Vec<KindCount>,
    /// Task outcomes.
    pub tasks: TaskStats,
    /// When the collector was built.
    #[serde(with = "time::serde::rfc3339")]
    pub collection_started_at: OffsetDateTime,
    /// The time of the last stored record.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_updated_at: Option<OffsetDateTime>,
    /// Whether the collector takes events.
    pub state: State,
    /// Whether identifiers are pseudonymized.
    pub anonymization: AnonymizationMode,
    /// The fingerprint of the key, when pseudonymizing.
    pub key_id: Option<String>,
    /// Where the key came from, when pseudonymizing.
    pub key_origin: Option<KeyOrigin>,
    /// The data directory, when there is one.
    pub storage: Option<crate::storage::log::StorageStats>,
}

impl Stats {
    /// The counts for one kind.
    pub fn kind(&self, kind: EventKind) -> KindCount {
        self.kinds.get(kind.index()).copied().unwrap_or(KindCount {
            kind,
            stored: 0,
            retained: 0,
        })
    }
}

/// What the store contributes to a snapshot.
pub(crate) struct StoreView<'a> {
    pub(crate) retained: &'a Tally,
    pub(crate) lifetime: &'a Tally,
}

impl StoreView<'_> {
    pub(crate) fn kinds(&self) -> Vec<KindCount> {
        EventKind::ALL
            .iter()
            .map(|&kind| KindCount {
                kind,
                stored: self.lifetime.kind(kind),
                retained: self.retained.kind(kind),
            })
            .collect()
    }

    pub(crate) fn tasks(&self) -> TaskStats {
        TaskStats {
            retained: self.retained.window(),
            lifetime: self.lifetime.window(),
        }
    }
}

impl From<OutcomeStatus> for TaskEnd {
    fn from(status: OutcomeStatus) -> TaskEnd {
        TaskEnd::Completed(status)
    }
}
