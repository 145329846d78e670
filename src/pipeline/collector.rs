//! The handle producers hold: admission, validation, the channel, and the reads.

use std::fmt;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use crossbeam_utils::CachePadded;
use time::OffsetDateTime;

use crate::codec::anonymize::Anonymizer;
use crate::contract::clock::{Clock, SystemClock, datetime, unix_nanos};
use crate::contract::config::ConfigError;
use crate::contract::config::{AnonymizationMode, Config, Durability, Overflow};
use crate::contract::event::validate::Limits;
use crate::contract::event::{Attributes, Event, TaskStarted};
use crate::contract::event::{Rule, ValidationError};
use crate::contract::key::{AnonymizationKey, IdKind, KeyError, KeyOrigin};
use crate::pipeline::error::{BuildError, FlushError, RecordError, ShutdownError, TryRecordError};
use crate::pipeline::execution::TaskExecution;
use crate::pipeline::key::resolve_key;
use crate::pipeline::live::{self, LiveAnalytics};
use crate::pipeline::worker::{self, Msg};
use crate::storage::export::ExportError;
use crate::storage::export::{self, Export, ExportContext, ExportRequest, Seal};
use crate::storage::log::{KeyRotation, LogWriter, StorageStats, dir as data_dir};
use crate::storage::stats::{Dropped, State, Stats, StoreView};
use crate::storage::store::{Bounds, Store};

/// How long dropping the last handle waits for the worker to store what is queued.
pub const DROP_FLUSH_TIMEOUT: Duration = Duration::from_millis(250);

/// The longest a dropped [`TaskExecution`] waits for room to record `TaskAbandoned`
/// under a blocking overflow policy (under `DropNewest` it never waits).
pub const ABANDON_MAX_WAIT: Duration = Duration::from_millis(10);

/// The two counters every call bumps, on one line of their own.
#[derive(Debug, Default)]
pub(crate) struct Hot {
    /// Every event passed to `record`, `try_record` or an execution (never derived).
    pub(crate) submitted: AtomicU64,
    /// Events submitted and not yet resolved (stored, dropped or rejected): raised
    /// before anything else a call does, lowered after the event's resolution is
    /// counted, so it is a true figure at every instant.
    pub(crate) in_flight: AtomicU64,
}

/// Producer-side counters, and the worker's `stored` mirror.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hot: CachePadded<Hot>,
    pub(crate) rejected: AtomicU64,
    /// Records the collector made itself (`AnomalyDetected`), counted like `submitted`.
    pub(crate) generated: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) paused: AtomicU64,
    pub(crate) disabled: AtomicU64,
    pub(crate) shutdown: AtomicU64,
}

/// How many times a snapshot re-reads the counters, spinning, to find them balanced.
const SNAPSHOT_SPINS: usize = 64;
/// How long a snapshot goes on re-reading (yielding, then sleeping, so that a producer
/// descheduled between two of its counts can run) before it returns an unbalanced
/// reading. Reached only when a producer stays descheduled that long.
const SNAPSHOT_PATIENCE: Duration = Duration::from_millis(100);

impl Counters {
    fn dropped(&self) -> Dropped {
        Dropped {
            queue_full: self.queue_full.load(SeqCst),
            paused: self.paused.load(SeqCst),
            disabled: self.disabled.load(SeqCst),
            shutdown: self.shutdown.load(SeqCst),
        }
    }

    /// Marks one event as submitted and in flight.
    pub(crate) fn enter(&self) {
        self.hot.submitted.fetch_add(1, SeqCst);
        self.hot.in_flight.fetch_add(1, SeqCst);
    }

    /// Marks `n` events as resolved; their reason was counted before.
    pub(crate) fn leave(&self, n: u64) {
        self.hot.in_flight.fetch_sub(n, SeqCst);
    }

    /// Events submitted and not yet resolved, now.
    pub(crate) fn unresolved(&self) -> u64 {
        self.hot.in_flight.load(SeqCst)
    }

    /// The submitted, drop, reject and in-flight counts, each read directly, with
    /// `stored` fixed (the caller holds the store's lock). Every counter is read
    /// independently, so a moment when one event is counted twice or not at all (a
    /// producer between two increments) shows as an imbalance; the counters are read
    /// again until they balance: [`SNAPSHOT_SPINS`] times, then yielding, for at most
    /// [`SNAPSHOT_PATIENCE`]. A lost event never balances; the last reading is returned
    /// as it is.
    fn snapshot(&self, stored: u64) -> (u64, u64, Dropped, u64, u64) {
        let mut reading = (0, 0, Dropped::default(), 0, 0);
        let mut since = None;
        for tries in 0.. {
            let submitted = self.hot.submitted.load(SeqCst);
            let generated = self.generated.load(SeqCst);
            let in_flight = self.hot.in_flight.load(SeqCst);
            let dropped = self.dropped();
            let rejected = self.rejected.load(SeqCst);
            reading = (submitted, generated, dropped, rejected, in_flight);
            if submitted + generated == stored + dropped.total() + rejected + in_flight {
                break;
            }
            if tries < SNAPSHOT_SPINS {
                std::hint::spin_loop();
                continue;
            }
            let waited = since.get_or_insert_with(Instant::now).elapsed();
            if waited >= SNAPSHOT_PATIENCE {
                break;
            } else if waited < Duration::from_millis(1) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        reading
    }

    fn count(&self, error: &RecordError) {
        let counter = match error {
            RecordError::Invalid(_) => &self.rejected,
            RecordError::QueueFull | RecordError::Timeout(_) => &self.queue_full,
            RecordError::Paused => &self.paused,
            RecordError::Disabled => &self.disabled,
            RecordError::ShutDown => &self.shutdown,
        };
        counter.fetch_add(1, SeqCst);
        self.leave(1);
    }
}

/// Settings read on every call, kept in atomics so producers never share a lock.
#[derive(Debug, Default)]
pub(crate) struct Live {
    enabled: AtomicBool,
    overflow: AtomicU8,
    block_for_nanos: AtomicU64,
    limits: [AtomicUsize; 5],
    /// `limits.max_occurred_past_secs` and `limits.max_occurred_future_secs`.
    skew_secs: [AtomicU64; 2],
    batch_size: AtomicUsize,
    tick_ms: AtomicU64,
}

impl Live {
    fn set(&self, config: &Config) {
        let (mode, wait) = match config.queue.overflow {
            Overflow::DropNewest => (0, Duration::ZERO),
            Overflow::Block => (1, Duration::ZERO),
            Overflow::BlockFor(d) => (2, d),
        };
        self.block_for_nanos
            .store(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.overflow.store(mode, Relaxed);
        let l = config.event_limits();
        let values = [
            l.max_id_bytes,
            l.max_string_bytes,
            l.max_collection_len,
            l.max_attribute_depth,
            l.max_attribute_entries,
        ];
        for (slot, value) in self.limits.iter().zip(values) {
            slot.store(value, Relaxed);
        }
        self.skew_secs[0].store(config.limits.max_occurred_past_secs, Relaxed);
        self.skew_secs[1].store(config.limits.max_occurred_future_secs, Relaxed);
        self.batch_size.store(config.worker.batch_size, Relaxed);
        self.tick_ms.store(config.worker.tick_ms, Relaxed);
        self.enabled.store(config.enabled, SeqCst);
    }

    fn overflow(&self) -> Overflow {
        match self.overflow.load(Relaxed) {
            0 => Overflow::DropNewest,
            1 => Overflow::Block,
            _ => Overflow::BlockFor(Duration::from_nanos(self.block_for_nanos.load(Relaxed))),
        }
    }

    fn limits(&self) -> Limits {
        let [id, string, collection, depth, entries] = &self.limits;
        Limits {
            max_id_bytes: id.load(Relaxed),
            max_string_bytes: string.load(Relaxed),
            max_collection_len: collection.load(Relaxed),
            max_attribute_depth: depth.load(Relaxed),
            max_attribute_entries: entries.load(Relaxed),
        }
    }

    /// Checks a caller's `occurred_at` against the skew window around `now`.
    fn check_occurred(&self, event: &Event, occurred_at: i64, now: i64) -> Result<(), RecordError> {
        let [past, future] = &self.skew_secs;
        let max_past = Duration::from_secs(past.load(Relaxed));
        let max_future = Duration::from_secs(future.load(Relaxed));
        let skew = i128::from(occurred_at) - i128::from(now);
        let limit = if skew < 0 { max_past } else { max_future };
        if skew.unsigned_abs() > limit.as_nanos() {
            return Err(RecordError::Invalid(ValidationError::occurred_at(
                event.kind(),
                Rule::OutsideSkewWindow {
                    skew_nanos: skew,
                    max_past,
                    max_future,
                },
            )));
        }
        Ok(())
    }

    pub(crate) fn batch_size(&self) -> usize {
        self.batch_size.load(Relaxed)
    }

    pub(crate) fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.load(Relaxed))
    }
}

/// State shared by the handles and the worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    pub(crate) live: Live,
    pub(crate) clock: Arc<dyn Clock>,
    paused: AtomicBool,
    closed: AtomicBool,
    pub(crate) store: Mutex<Store>,
    /// The data directory's writer; locked before the store when both are.
    log: Mutex<Option<LogWriter>>,
    /// The writer's counters as of its last change, so `stats()` never waits for a
    /// write or sync in progress.
    storage: Mutex<Option<StorageStats>>,
    pub(crate) data_dir: Option<std::path::PathBuf>,
    /// How often the idle worker must tick for interval syncs (fixed at build).
    pub(crate) sync_interval: Option<Duration>,
    config: Mutex<Config>,
    started_at: i64,
    mode: AnonymizationMode,
    key_id: Option<String>,
    key_origin: Option<KeyOrigin>,
    /// The source id and the MAC key exports carry.
    seal: Seal,
    queue_capacity: usize,
}

fn bounds(config: &Config) -> Bounds {
    let max_age = i64::try_from(config.max_age().as_nanos()).unwrap_or(i64::MAX);
    Bounds {
        max_age_nanos: max_age,
        max_events: config.retention.max_events,
        max_bytes: config.retention.max_bytes,
    }
}

impl Shared {
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, Store> {
        // The store is consistent between calls; a panic elsewhere does not spoil it.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn lock_log(&self) -> MutexGuard<'_, Option<LogWriter>> {
        // The writer's state is consistent between calls.
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Syncs and closes the data directory, releasing its lock.
    pub(crate) fn close_log(&self) {
        let mut log = self.lock_log();
        if let Some(log) = log.as_mut() {
            log.close();
            self.publish_storage(log);
        }
    }

    /// Failed writes and syncs so far, and the last error, as last published.
    fn storage_errors(&self) -> (u64, Option<String>) {
        self.storage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or((0, None), |s| (s.write_errors, s.last_error.clone()))
    }

    /// Publishes the writer's counters for `stats()`; called with the writer locked.
    pub(crate) fn publish_storage(&self, log: &LogWriter) {
        *self
            .storage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(log.stats());
    }

    /// Queues `event`, made by the collector itself, for the worker through `queue`:
    /// counted as generated and in flight first, then resolved like a producer's event
    /// (dropped as `queue_full` when the queue is full, `shutdown` once closed).
    pub(crate) fn generate(&self, queue: &Sender<Msg>, event: Event) {
        self.counters.generated.fetch_add(1, SeqCst);
        self.counters.hot.in_flight.fetch_add(1, SeqCst);
        // Counted before `closed` is read: see `Worker::close`.
        let error = if self.closed.load(SeqCst) {
            RecordError::ShutDown
        } else {
            let msg = Msg::Event {
                event,
                time: self.clock.now_unix_nanos(),
                occurred_at: None,
            };
            match queue.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => RecordError::QueueFull,
                Err(TrySendError::Disconnected(_)) => RecordError::ShutDown,
            }
        };
        self.counters.count(&error);
    }

    fn lock_config(&self) -> MutexGuard<'_, Config> {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Events submitted and neither stored nor counted yet.
    pub(crate) fn unresolved(&self) -> u64 {
        self.counters.unresolved()
    }

    fn admit(&self) -> Result<(), RecordError> {
        if self.closed.load(SeqCst) {
            Err(RecordError::ShutDown)
        } else if !self.live.enabled.load(Relaxed) {
            Err(RecordError::Disabled)
        } else if self.paused.load(Relaxed) {
            Err(RecordError::Paused)
        } else {
            Ok(())
        }
    }

    fn state(&self) -> State {
        if self.closed.load(SeqCst) {
            State::ShutDown
        } else if !self.live.enabled.load(SeqCst) {
            State::Disabled
        } else if self.paused.load(SeqCst) {
            State::Paused
        } else {
            State::Active
        }
    }

    fn stats(&self, queue_depth: usize) -> Stats {
        let storage = self
            .storage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let store = self.lock_store();
        let view = StoreView {
            retained: store.retained(),
            lifetime: store.lifetime(),
        };
        let (kinds, tasks) = (view.kinds(), view.tasks());
        let stored = store.stored();
        let (recovered, next_seq) = (store.recovered(), store.next_seq());
        let (retained, retained_bytes, pruned) = (store.len(), store.bytes(), store.pruned());
        let first_retained_seq = (retained > 0).then(|| store.first_seq());
        let last_time = store.last_time();
        // Read under the store's lock: the worker stores and lowers `in_flight` under it.
        let (submitted, generated, dropped, rejected, in_flight) = self.counters.snapshot(stored);
        drop(store);
        Stats {
            submitted,
            generated,
            stored,
            rejected,
            dropped,
            in_flight,
            retained,
            retained_bytes,
            pruned,
            first_retained_seq,
            last_seq: (next_seq > 1).then(|| next_seq - 1),
            recovered,
            queue_depth,
            queue_capacity: self.queue_capacity,
            kinds,
            tasks,
            collection_started_at: datetime(self.started_at),
            last_updated_at: last_time.map(datetime),
            state: self.state(),
            anonymization: self.mode,
            key_id: self.key_id.clone(),
            key_origin: self.key_origin,
            storage,
        }
    }
}

/// Builds a [`Collector`]: configuration, clock and key, validated by [`build`](Self::build).
#[derive(Debug, Default)]
pub struct CollectorBuilder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    key: Option<AnonymizationKey>,
    key_rotation: KeyRotation,
    execution_seed: Option<u64>,
}

impl CollectorBuilder {
    /// Uses `config` (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> CollectorBuilder {
        self.config = config;
        self
    }

    /// Takes record times and durations from `clock` (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> CollectorBuilder {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Pseudonymizes with `key`, ahead of any key the config or environment names.
    pub fn key(mut self, key: AnonymizationKey) -> CollectorBuilder {
        self.key = Some(key);
        self
    }

    /// What to do when the data directory's own key file is missing or holds another key
    /// than its newest segments were made under (default: [`KeyRotation::Refuse`]).
    /// Only the directory's key file is checked: a key given here, in the config or in
    /// the environment is used as given.
    pub fn key_rotation(mut self, rotation: KeyRotation) -> CollectorBuilder {
        self.key_rotation = rotation;
        self
    }

    /// Fixes the source of execution ids: [`Collector::start_task`] then names the
    /// executions `{seed as 16 hex digits}-{counter in hex}` (`0000000000000007-0`,
    /// `…-1`, …) instead of behind a random per-collector prefix. Two collectors built
    /// alike (same key, seed and a [`ManualClock`](crate::ManualClock)) and fed alike
    /// then give byte-identical exports, executions included.
    ///
    /// Ids are unique within one collector; collectors that share a seed share ids, so
    /// give each live collector writing to one place its own seed.
    ///
    /// ```
    /// use arbiter_events::{Attributes, Collector};
    /// let collector = Collector::builder().execution_seed(7).build()?;
    /// let run = collector.start_task("task-1", "agent-a", Attributes::new())?;
    /// assert_eq!(run.execution_id(), "0000000000000007-0");
    /// run.abandon()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execution_seed(mut self, seed: u64) -> CollectorBuilder {
        self.execution_seed = Some(seed);
        self
    }

    /// Validates the configuration, resolves the key and starts the ingest worker.
    ///
    /// # Errors
    /// [`BuildError::Config`] for the first rule broken, [`BuildError::Key`] when the
    /// configured key cannot be read, [`BuildError::Storage`] when the data directory is
    /// locked by another writer, damaged (under `on_damage = "fail"`) or cannot be read
    /// or written, [`BuildError::Spawn`] when no thread can start.
    ///
    /// With a data directory, building recovers it first: it reads every frame, so it
    /// takes time in proportion to the directory's size.
    pub fn build(self) -> Result<Collector, BuildError> {
        let config = self.config;
        config.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let dir = config.storage.data_dir.clone();
        // Lock first: the directory's key and segments are this writer's alone.
        let lock = match &dir {
            Some(dir) => {
                data_dir::create(dir)?;
                Some(data_dir::lock(dir)?)
            }
            None => None,
        };
        let a = &config.anonymization;
        let (anonymizer, key_id, key_origin, key, mac_key) = match a.mode {
            AnonymizationMode::Pseudonymize => {
                let (key, origin) = resolve_key(self.key, a, dir.as_deref(), self.key_rotation)?;
                // With a data directory, exports are signed with its own key (the
                // `key` file) or not at all, so that a reader of the directory in another
                // process, which has only that file, writes the same bytes.
                let mac_key = (dir.is_none() || origin == KeyOrigin::DataDir)
                    .then(|| (key.key_id(), key.mac_key()));
                let id = key.key_id();
                (
                    Anonymizer::new(&key, a),
                    Some(id),
                    Some(origin),
                    Some(key),
                    mac_key,
                )
            }
            AnonymizationMode::Off => (
                Anonymizer::new(&AnonymizationKey::from_bytes([0; 32]), a),
                None,
                None,
                None,
                None,
            ),
        };
        // The live stage names agents as the records do, with an anonymizer of its own.
        let live_anonymizer = config.analytics.enabled.then(|| match &key {
            Some(key) => Anonymizer::new(key, a),
            None => Anonymizer::new(&AnonymizationKey::from_bytes([0; 32]), a),
        });
        let source = match &dir {
            Some(dir) => data_dir::source(dir, config.source.as_deref(), true)?,
            None => config.source.clone(),
        };
        // Without a data directory or a configured id, the key names the stream.
        let source = source.unwrap_or_else(|| match &key_id {
            Some(id) => format!("mem-{id}"),
            None => "mem".to_owned(),
        });
        let seal = Seal {
            source: Some(source),
            mac_key,
        };
        let mut store = Store::new(bounds(&config));
        let log = match (&dir, lock) {
            (Some(dir), Some(lock)) => {
                let key_bytes = crate::storage::log::key_id_bytes(key_id.as_deref());
                let writer = LogWriter::open(
                    dir,
                    lock,
                    &config.storage,
                    config.retention.max_events,
                    key_bytes,
                    |meta, bytes| {
                        store.push_recovered(meta, bytes);
                    },
                )?;
                store.finish_recovery(writer.next_seq());
                Some(writer)
            }
            _ => None,
        };
        let prefix = match self.execution_seed {
            Some(seed) => seed.to_be_bytes(),
            None => {
                let mut prefix = [0u8; 8];
                getrandom::fill(&mut prefix).map_err(|e| KeyError::Random {
                    reason: e.to_string(),
                })?;
                prefix
            }
        };
        let live = Live::default();
        live.set(&config);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            live,
            started_at: clock.now_unix_nanos(),
            clock,
            paused: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            store: Mutex::new(store),
            storage: Mutex::new(log.as_ref().map(LogWriter::stats)),
            log: Mutex::new(log),
            sync_interval: match (&dir, config.storage.durability) {
                (Some(_), Durability::Interval(d)) => Some(d),
                _ => None,
            },
            data_dir: dir,
            mode: a.mode,
            key_id,
            key_origin,
            seal,
            queue_capacity: config.queue.capacity,
            config: Mutex::new(config),
        });
        let (tx, rx) = crossbeam_channel::bounded(shared.queue_capacity);
        let (live, feed) = match live_anonymizer {
            Some(ids) => {
                let config = shared.lock_config().clone();
                let (live, feed) = live::spawn(
                    Arc::clone(&shared),
                    &config.analytics,
                    config.alerts,
                    ids,
                    tx.clone(),
                )
                .map_err(|e| match e {
                    live::LiveError::Rules(e) => BuildError::Config(ConfigError::Alert(e)),
                    live::LiveError::Spawn(e) => BuildError::Spawn(e),
                })?;
                (Some(live), Some(feed))
            }
            None => (None, None),
        };
        let worker =
            worker::spawn(Arc::clone(&shared), rx, anonymizer, feed).map_err(BuildError::Spawn)?;
        let handle = Handle {
            shared,
            tx,
            worker: Mutex::new(Some(worker)),
            execution_prefix: hex::encode(prefix),
            executions: AtomicU64::new(0),
            key,
            live,
        };
        Ok(Collector {
            inner: Arc::new(handle),
        })
    }
}

struct Handle {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    worker: Mutex<Option<JoinHandle<()>>>,
    execution_prefix: String,
    executions: AtomicU64,
    /// The pseudonymization key, when pseudonymizing (for [`Collector::pseudonym`]).
    key: Option<AnonymizationKey>,
    /// The live analytics stage, unless `analytics.enabled` is off.
    live: Option<Arc<LiveAnalytics>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shutdown(DROP_FLUSH_TIMEOUT);
    }
}

impl Handle {
    fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        let mut worker = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = self.shared.stats(self.tx.len());
        self.shared.closed.store(true, SeqCst);
        let deadline = deadline_after(timeout);
        let grace = deadline.checked_add(SHUTDOWN_GRACE).unwrap_or(deadline);
        let finished = match worker.take() {
            None => true,
            Some(join) => {
                let (done_tx, done_rx) = crossbeam_channel::bounded(1);
                match self.tx.send_deadline(
                    Msg::Shutdown {
                        deadline,
                        done: done_tx,
                    },
                    deadline,
                ) {
                    Ok(()) if done_rx.recv_deadline(grace).is_ok() => {
                        let _ = join.join();
                        true
                    }
                    // The worker is gone already.
                    Err(SendTimeoutError::Disconnected(_)) => {
                        let _ = join.join();
                        true
                    }
                    // Still draining, or no room for the message: a later call tries again.
                    Ok(()) | Err(SendTimeoutError::Timeout(_)) => {
                        *worker = Some(join);
                        false
                    }
                }
            }
        };
        // A producer refused after `closed` is counted a moment after it is submitted;
        // wait out such moments (not events) before reading the final counts.
        let mut stats = self.shared.stats(self.tx.len());
        while finished && stats.in_flight > 0 && Instant::now() < grace {
            std::thread::yield_now();
            stats = self.shared.stats(self.tx.len());
        }
        let report = ShutdownReport {
            flushed: stats.stored - before.stored,
            dropped: stats.dropped.shutdown - before.dropped.shutdown,
            unresolved: stats.in_flight,
            stats,
        };
        if finished && report.unresolved == 0 {
            Ok(report)
        } else {
            Err(ShutdownError::TimedOut {
                timeout,
                report: Box::new(report),
            })
        }
    }
}

/// `timeout` from now; a timeout too long to represent (such as `Duration::MAX`) means
/// a century.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// Slack for the worker to answer after its own deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(50);

/// What [`Collector::shutdown`] stored and lost.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events stored while shutting down (queued before, stored during).
    pub flushed: u64,
    /// Events refused while shutting down (counted under `dropped.shutdown`).
    pub dropped: u64,
    /// Events still unresolved when the timeout ran out: lost, and not counted under
    /// any reason (0 on success).
    pub unresolved: u64,
    /// The final counters.
    pub stats: Stats,
}

/// The collector handle: cheap to clone, `Send + Sync`, shared by every producer thread.
///
/// ```
/// use std::time::Duration;
/// use arbiter_events::{Collector, Config, Cursor, Event, ExportRequest, ThinkingBudgetUsed};
/// let collector = Collector::new(Config::default())?;
/// collector.record(Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
///     task_id: "task-1".into(),
///     tokens_used: 10,
///     tokens_allocated: 20,
/// }))?;
/// collector.flush(Duration::from_secs(5))?;
/// let export = collector.export(&ExportRequest::after(Cursor::START))?;
/// assert_eq!(export.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Handle>,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("state", &self.inner.shared.state())
            .field("key_id", &self.inner.shared.key_id)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A builder with the default configuration.
    pub fn builder() -> CollectorBuilder {
        CollectorBuilder::default()
    }

    /// Builds a collector from `config` with the system clock.
    ///
    /// # Errors
    /// As [`CollectorBuilder::build`].
    pub fn new(config: Config) -> Result<Collector, BuildError> {
        Collector::builder().config(config).build()
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The live analytics stage, unless it is off.
    pub(crate) fn live(&self) -> Option<&LiveAnalytics> {
        self.inner.live.as_deref()
    }

    /// Now, in the collector's clock.
    pub(crate) fn now_unix_nanos(&self) -> i64 {
        self.shared().clock.now_unix_nanos()
    }

    /// Validates `event` and queues it for the worker.
    ///
    /// Blocking follows `queue.overflow`: with the default `DropNewest` this never blocks
    /// and does no I/O.
    ///
    /// # Errors
    /// [`RecordError`] says why the event was not accepted; every case is counted.
    pub fn record(&self, event: Event) -> Result<(), RecordError> {
        self.submit(event, None, self.shared().live.overflow())
            .map_err(|(_, e)| e)
    }

    /// Like [`record`](Self::record), saying when the thing happened: the record keeps
    /// `occurred_at` beside its ingest `time` (as an `occurred_at` field, Unix
    /// nanoseconds, present only when given; see [`Record::occurred_at`](crate::Record)).
    /// Retention, cursors and the `since`/`until` filters go by the ingest time.
    ///
    /// `occurred_at` must lie within the skew window around the ingest time:
    /// at most `limits.max_occurred_past_secs` before it and
    /// `limits.max_occurred_future_secs` after it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use arbiter_events::{Collector, Cursor, Event, ExportRequest, ThinkingBudgetUsed, read_export};
    /// use time::OffsetDateTime;
    /// let collector = Collector::builder().build()?;
    /// let happened = OffsetDateTime::now_utc() - Duration::from_secs(30);
    /// collector.record_at(Event::from(ThinkingBudgetUsed {
    ///     task_id: "task-1".into(),
    ///     tokens_used: 1,
    ///     tokens_allocated: 2,
    /// }), happened)?;
    /// collector.flush(Duration::from_secs(5))?;
    /// let file = read_export(collector.export(&ExportRequest::after(Cursor::START))?.to_msgpack().as_slice())?;
    /// assert_eq!(file.records[0].occurred_at, Some(happened));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`record`](Self::record); an `occurred_at` outside the window is
    /// [`RecordError::Invalid`] with field `occurred_at` and rule
    /// [`Rule::OutsideSkewWindow`](crate::Rule::OutsideSkewWindow), counted as rejected.
    pub fn record_at(&self, event: Event, occurred_at: OffsetDateTime) -> Result<(), RecordError> {
        let at = unix_nanos(occurred_at);
        self.submit(event, Some(at), self.shared().live.overflow())
            .map_err(|(_, e)| e)
    }

    /// Like [`record`](Self::record) but never blocks, whatever the overflow policy, and
    /// hands the event back on failure.
    ///
    /// # Errors
    /// [`TryRecordError`] with the event and the reason; the failure is counted.
    pub fn try_record(&self, event: Event) -> Result<(), TryRecordError> {
        self.submit(event, None, Overflow::DropNewest)
            .map_err(|(event, error)| TryRecordError {
                event: Box::new(event),
                error,
            })
    }

    /// Records an event from a destructor: follows the overflow policy but never waits
    /// longer than [`ABANDON_MAX_WAIT`].
    pub(crate) fn record_from_drop(&self, event: Event) -> Result<(), RecordError> {
        let overflow = match self.shared().live.overflow() {
            Overflow::DropNewest => Overflow::DropNewest,
            Overflow::Block => Overflow::BlockFor(ABANDON_MAX_WAIT),
            Overflow::BlockFor(d) => Overflow::BlockFor(d.min(ABANDON_MAX_WAIT)),
        };
        self.submit(event, None, overflow).map_err(|(_, e)| e)
    }

    #[allow(clippy::result_large_err)] // the event is handed back, as crossbeam's `TrySendError`
    fn submit(
        &self,
        event: Event,
        occurred_at: Option<i64>,
        overflow: Overflow,
    ) -> Result<(), (Event, RecordError)> {
        let shared = self.shared();
        // Counted before `closed` is read: see `Worker::close`.
        shared.counters.enter();
        let checked = shared.admit().and_then(|()| {
            event
                .validate(&shared.live.limits())
                .map_err(RecordError::from)
        });
        // The ingest time: stamped here, so it is when `record()` took the event.
        let time = shared.clock.now_unix_nanos();
        let checked = match (checked, occurred_at) {
            (Ok(()), Some(at)) => shared.live.check_occurred(&event, at, time),
            (checked, _) => checked,
        };
        let result = match checked {
            Err(error) => Err((event, error)),
            Ok(()) => self.send(event, time, occurred_at, overflow),
        };
        if let Err((_, error)) = &result {
            shared.counters.count(error);
        }
        result
    }

    #[allow(clippy::result_large_err)]
    fn send(
        &self,
        event: Event,
        time: i64,
        occurred_at: Option<i64>,
        overflow: Overflow,
    ) -> Result<(), (Event, RecordError)> {
        let tx = &self.inner.tx;
        let msg = Msg::Event {
            event,
            time,
            occurred_at,
        };
        let failed = match overflow {
            Overflow::DropNewest => match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(m)) => (m, RecordError::QueueFull),
                Err(TrySendError::Disconnected(m)) => (m, RecordError::ShutDown),
            },
            Overflow::Block => match tx.send(msg) {
                Ok(()) => return Ok(()),
                Err(e) => (e.into_inner(), RecordError::ShutDown),
            },
            Overflow::BlockFor(wait) => match tx.send_timeout(msg, wait) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(m)) => (m, RecordError::Timeout(wait)),
                Err(SendTimeoutError::Disconnected(m)) => (m, RecordError::ShutDown),
            },
        };
        match failed {
            (Msg::Event { event, .. }, error) => Err((event, error)),
            _ => unreachable!("only events are sent on this path"),
        }
    }

    /// Records [`TaskStarted`] for a new execution of `task_id` by `agent_id` and returns
    /// the execution. Completing it records `TaskCompleted` with the duration from the
    /// monotonic clock; dropping it unfinished records `TaskAbandoned`.
    ///
    /// Execution ids are unique per collector and across collectors (a random prefix and
    /// a counter), unless [`CollectorBuilder::execution_seed`] fixed the prefix.
    ///
    /// ```
    /// use arbiter_events::{Attributes, Collector, Config, OutcomeStatus, TaskOutcome};
    /// let collector = Collector::new(Config::default())?;
    /// let run = collector.start_task("task-1", "agent-a", Attributes::new())?;
    /// run.complete(TaskOutcome {
    ///     status: OutcomeStatus::Succeeded,
    ///     quality_score: 0.9,
    ///     efficiency_score: 0.8,
    ///     tokens_consumed: 1200,
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`record`](Self::record); no execution is returned when `TaskStarted` was not accepted.
    pub fn start_task(
        &self,
        task_id: impl Into<String>,
        agent_id: impl Into<String>,
        context: Attributes,
    ) -> Result<TaskExecution, RecordError> {
        let n = self.inner.executions.fetch_add(1, Relaxed);
        let execution_id = format!("{}-{n:x}", self.inner.execution_prefix);
        let (task_id, agent_id) = (task_id.into(), agent_id.into());
        let started = self.shared().clock.monotonic();
        self.record(Event::TaskStarted(TaskStarted {
            execution_id: execution_id.clone(),
            task_id: task_id.clone(),
            agent_id: agent_id.clone(),
            context,
        }))?;
        Ok(TaskExecution::new(
            self.clone(),
            execution_id,
            task_id,
            agent_id,
            started,
        ))
    }

    /// Validates an event built outside `record`; a failure is counted as submitted and
    /// rejected, as `record` would.
    pub(crate) fn validate(
        &self,
        event: &Event,
    ) -> Result<(), crate::contract::event::ValidationError> {
        let result = event.validate(&self.shared().live.limits());
        if result.is_err() {
            let counters = &self.shared().counters;
            counters.enter();
            counters.rejected.fetch_add(1, SeqCst);
            counters.leave(1);
        }
        result
    }

    pub(crate) fn monotonic(&self) -> Duration {
        self.shared().clock.monotonic()
    }

    /// Waits until every event recorded before this call is stored and visible to
    /// [`export`](Self::export) and [`stats`](Self::stats).
    ///
    /// Blocks up to `timeout`.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] when the worker did not catch up in time,
    /// [`FlushError::ShutDown`] after shutdown, [`FlushError::Storage`] when writing or
    /// syncing the data directory failed since the last flush (the records are in
    /// memory; `stats().storage` counts what is not on disk).
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.shared().closed.load(SeqCst) {
            return Err(FlushError::ShutDown);
        }
        // Any write or sync error after this point concerns records this flush covers,
        // even when a concurrent flush was the one told of it.
        let errors_before = self.shared().storage_errors().0;
        let deadline = deadline_after(timeout);
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        match self.inner.tx.send_deadline(Msg::Flush(ack_tx), deadline) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(FlushError::Timeout(timeout)),
            Err(SendTimeoutError::Disconnected(_)) => return Err(FlushError::ShutDown),
        }
        match ack_rx.recv_deadline(deadline) {
            Ok(Ok(())) => match self.shared().storage_errors() {
                (errors, reason) if errors > errors_before => Err(FlushError::Storage {
                    reason: reason.unwrap_or_default(),
                }),
                _ => Ok(()),
            },
            Ok(Err(reason)) => Err(FlushError::Storage { reason }),
            Err(RecvTimeoutError::Timeout) => Err(FlushError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(FlushError::ShutDown),
        }
    }

    /// The source id every export of this collector carries (see [`Config::source`]).
    pub fn source(&self) -> &str {
        self.shared().seal.source.as_deref().unwrap_or_default()
    }

    /// A snapshot of every counter. O(1): the tallies are kept incrementally.
    pub fn stats(&self) -> Stats {
        self.shared().stats(self.inner.tx.len())
    }

    /// Exports retained records per `request`.
    ///
    /// Holds the store's lock for short chunks only, so ingest goes on meanwhile.
    ///
    /// # Errors
    /// [`ExportError::InvalidRequest`] for a contradictory request,
    /// [`ExportError::CursorAhead`] for a cursor past the last stored seq.
    pub fn export(&self, request: &ExportRequest) -> Result<Export, ExportError> {
        let shared = self.shared();
        let ctx = ExportContext {
            store: &shared.store,
            now: shared.clock.now_unix_nanos(),
            anonymization: shared.mode,
            key_id: shared.key_id.clone(),
            data_dir: shared.data_dir.as_deref(),
            seal: shared.seal.clone(),
        };
        export::export(ctx, request)
    }

    /// The form `id`, an identifier of `kind`, takes in this collector's records: its
    /// keyed pseudonym, or `id` itself when anonymization is off. Use it to find your
    /// own agent, task or execution in an export or a report. Costs one keyed BLAKE3
    /// hash; never blocks.
    ///
    /// ```
    /// use std::time::Duration;
    /// use arbiter_events::{
    ///     Collector, Cursor, Event, ExportRequest, IdKind, ThinkingBudgetUsed, read_export,
    /// };
    /// let collector = Collector::builder().build()?;
    /// collector.record(Event::from(ThinkingBudgetUsed {
    ///     task_id: "task-1".into(),
    ///     tokens_used: 1,
    ///     tokens_allocated: 2,
    /// }))?;
    /// collector.flush(Duration::from_secs(5))?;
    /// let file = read_export(collector.export(&ExportRequest::after(Cursor::START))?.to_msgpack().as_slice())?;
    /// let mine = collector.pseudonym(IdKind::Task, "task-1");
    /// assert_eq!(file.records[0].event.task_id(), Some(mine.as_str()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pseudonym(&self, kind: IdKind, id: &str) -> String {
        match &self.inner.key {
            Some(key) => key.pseudonym(kind, id),
            None => id.to_owned(),
        }
    }

    /// Stops accepting events; they are counted under `dropped.paused` until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.shared().paused.store(true, SeqCst);
    }

    /// Accepts events again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.shared().paused.store(false, SeqCst);
    }

    /// Whether events are accepted now (enabled, not paused, not shut down).
    pub fn is_active(&self) -> bool {
        self.shared().state() == State::Active
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.shared().lock_config().clone()
    }

    /// Changes the configuration live: `f` edits a copy, which is validated and applied
    /// (retention at once, pruning if the new bounds demand it; producers pick up the
    /// limits and overflow policy on their next call). `f` runs under the configuration
    /// lock: it must not call back into the collector.
    ///
    /// ```
    /// use arbiter_events::{Collector, Config};
    /// let collector = Collector::new(Config::default())?;
    /// collector.update_config(|c| c.retention.max_events = 10)?;
    /// assert!(collector.update_config(|c| c.retention.max_events = 0).is_err());
    /// assert_eq!(collector.config().retention.max_events, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The first rule broken, or [`ConfigError::NotLive`] for `queue.capacity` and the
    /// `anonymization` section, which are fixed at build. Nothing changes on error.
    pub fn update_config(&self, f: impl FnOnce(&mut Config)) -> Result<(), ConfigError> {
        let shared = self.shared();
        let mut config = shared.lock_config();
        let mut next = config.clone();
        f(&mut next);
        next.validate()?;
        config.check_live_change(&next)?;
        if let Some(live) = self.live()
            && next.alerts != config.alerts
        {
            live.set_rules(next.alerts.clone())?;
        }
        let mut store = shared.lock_store();
        store.set_bounds(bounds(&next));
        store.prune_expired(shared.clock.now_unix_nanos());
        drop(store);
        shared.live.set(&next);
        *config = next;
        Ok(())
    }

    /// Removes every retained record (counted under `pruned.cleared`); returns how many.
    /// Consumers behind the cleared range see a gap with reason `cleared`.
    ///
    /// Events still queued are stored after the clear; call [`flush`](Self::flush)
    /// first for a clean cut.
    pub fn clear(&self) -> u64 {
        let shared = self.shared();
        let mut log = shared.lock_log();
        if let Some(log) = log.as_mut() {
            log.clear();
            shared.publish_storage(log);
        }
        shared.lock_store().clear()
    }

    /// Stops accepting events, stores everything queued, and stops the worker.
    ///
    /// Blocks up to `timeout` (`Duration::MAX` waits as long as it takes). A call after
    /// a timed-out one tries again; a call after a successful one returns a report with
    /// nothing flushed. Events recorded from now on are counted under `dropped.shutdown`.
    ///
    /// # Errors
    /// [`ShutdownError::TimedOut`] with the report when events were still unresolved
    /// when the timeout ran out.
    pub fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        self.inner.shutdown(timeout)
    }
}
