//! The ingest worker: drains the channel in batches, assigns `seq` and `time`,
//! anonymizes, encodes, appends to the store and prunes.
//!
//! With a data directory the work is a two-stage pipeline: the ingest worker encodes
//! and frames each batch and hands it to a commit thread, which writes it to the
//! segment file (syncing per the durability policy), then appends it to the store and
//! prunes. Encoding the next batch overlaps with writing the last one, and the store
//! never holds a record the segments do not.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::codec::anonymize::Anonymizer;
use crate::codec::encode::encode_record;
use crate::contract::event::Event;
use crate::pipeline::collector::Shared;
use crate::pipeline::live::LiveFeed;
use crate::storage::log::{FrameRef, frame};
use crate::storage::store::{Meta, TaskEnd, TaskMeta};

/// What travels from the handles to the worker.
pub(crate) enum Msg {
    /// An event that passed validation, with its ingest time (the clock read in
    /// `record()`) and the caller's `occurred_at`, both Unix nanoseconds.
    Event {
        event: Event,
        time: i64,
        occurred_at: Option<i64>,
    },
    /// Commit everything before this (synced, when the durability policy syncs), then
    /// answer with any data directory error since the last flush.
    Flush(Sender<Result<(), String>>),
    /// Commit everything, resolve every event in flight (until `deadline`), then stop.
    Shutdown { deadline: Instant, done: Sender<()> },
}

/// The most buffer capacity the worker keeps between batches.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// How often a closing worker re-checks the count of unresolved events.
const CLOSE_RECHECK: Duration = Duration::from_millis(1);

/// Batches between the ingest worker and the commit thread: what bounds the memory the
/// pipeline holds beyond the queue.
const COMMIT_QUEUE: usize = 4;

pub(crate) fn spawn(
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    anonymizer: Anonymizer,
    live: Option<LiveFeed>,
) -> std::io::Result<JoinHandle<()>> {
    let committer = match shared.data_dir {
        Some(_) => Some(Committer::spawn(Arc::clone(&shared))?),
        None => None,
    };
    std::thread::Builder::new()
        .name("arbiter-events-ingest".into())
        .spawn(move || Worker::new(shared, anonymizer, committer, live).run(&rx))
}

/// What the ingest worker hands the commit thread.
enum Commit {
    /// Frames to write, then append to the store.
    Batch {
        bytes: Vec<u8>,
        frames: Vec<FrameRef>,
    },
    /// Nothing new: prune, and sync if an interval sync is due.
    Tick,
    /// Sync what was handed over before, then answer with any error since the last flush.
    Flush(Sender<Result<(), String>>),
    /// Sync, close the data directory, answer, stop.
    Close(Sender<()>),
}

/// The commit thread's end of the pipeline, held by the ingest worker.
struct Committer {
    tx: Sender<Commit>,
    /// Emptied buffers coming back, so batches do not allocate.
    recycled: Receiver<(Vec<u8>, Vec<FrameRef>)>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    fn spawn(shared: Arc<Shared>) -> std::io::Result<Committer> {
        let (tx, rx) = crossbeam_channel::bounded(COMMIT_QUEUE);
        let (back, recycled) = crossbeam_channel::bounded(COMMIT_QUEUE + 1);
        let thread = std::thread::Builder::new()
            .name("arbiter-events-commit".into())
            .spawn(move || run_committer(&shared, &rx, &back))?;
        Ok(Committer {
            tx,
            recycled,
            thread: Some(thread),
        })
    }
}

fn run_committer(shared: &Shared, rx: &Receiver<Commit>, back: &Sender<(Vec<u8>, Vec<FrameRef>)>) {
    for msg in rx.iter() {
        match msg {
            Commit::Batch {
                mut bytes,
                mut frames,
            } => {
                commit_batch(shared, &bytes, &frames, frame::HEADER_LEN);
                // A batch of unusually large records must not pin its buffer for good.
                if bytes.capacity() <= KEEP_BUFFER_BYTES {
                    bytes.clear();
                    frames.clear();
                    let _ = back.try_send((bytes, frames));
                }
            }
            Commit::Tick => commit_batch(shared, &[], &[], frame::HEADER_LEN),
            Commit::Flush(ack) => {
                commit_batch(shared, &[], &[], frame::HEADER_LEN);
                let mut log = shared.lock_log();
                let result = log.as_mut().map_or(Ok(()), |l| {
                    let synced = l.commit(true);
                    shared.publish_storage(l);
                    synced
                });
                drop(log);
                let _ = ack.send(result);
            }
            Commit::Close(done) => {
                shared.close_log();
                let _ = done.send(());
                return;
            }
        }
    }
    shared.close_log();
}

/// Writes `frames` (held in `bytes`) to the data directory, if there is one, syncing per
/// the policy; then appends their records (each `header` bytes into its frame) to the
/// store, and prunes memory and disk.
fn commit_batch(shared: &Shared, bytes: &[u8], frames: &[FrameRef], header: usize) {
    // Age pruning goes by the newest record's time (stamped by the clock in `record()`,
    // so at most as late as the clock): a clock read per batch was about 6 % of the
    // worker's time when batches are small. Ticks and flushes, which bring no records,
    // read the clock and catch up.
    let now = match frames.last() {
        Some(f) => f.meta.time,
        None => shared.clock.now_unix_nanos(),
    };
    let mut log = shared.lock_log();
    if let Some(log) = log.as_mut() {
        log.append(bytes, frames);
        // Errors are kept for the next flush to report.
        let _ = log.commit(false);
    }
    let mut store = shared.lock_store();
    for f in frames {
        store.push(f.meta, &bytes[f.start + header..f.end]);
    }
    // Under the store's lock, so a `stats()` snapshot sees `stored` and `in_flight` move
    // together.
    shared.counters.leave(frames.len() as u64);
    store.prune_expired(now);
    let cutoff = store.cutoff(now);
    drop(store);
    if let Some(log) = log.as_mut() {
        log.prune(cutoff);
        shared.publish_storage(log);
    }
}

struct Worker {
    shared: Arc<Shared>,
    anonymizer: Anonymizer,
    next_seq: u64,
    last_time: i64,
    /// Encoded but not yet committed: each record's meta and bytes in `encoded` (its
    /// frame, header first, when there is a data directory).
    pending: Vec<FrameRef>,
    encoded: Vec<u8>,
    /// Whether records are framed for the data directory.
    framed: bool,
    /// The commit thread, when there is a data directory.
    committer: Option<Committer>,
    /// Events already encoded, whose strings (allocated by the producers) are freed on
    /// the reclaim thread rather than here, after the batch is committed.
    spent: Vec<Event>,
    reclaimer: Option<Reclaimer>,
    /// The live analytics stage, handed each batch once it is committed; when there is
    /// one, it frees the events it folds, and there is no reclaim thread.
    live: Option<LiveFeed>,
}

/// Batches of spent events travelling to the reclaim thread, which drops them and
/// sends the emptied vectors back: bounded, so the memory they hold is at most
/// `RECLAIM_QUEUE + 2` batches. When it is full the worker frees a batch itself; it
/// never waits for the reclaim thread.
const RECLAIM_QUEUE: usize = 2;

/// The thread that frees spent events. Freeing a producer's strings costs the worker
/// about a quarter of its time per event (see BENCHMARKS.md), work that needs no order
/// and no lock, so it runs beside the worker. Stops when the worker drops `tx`.
struct Reclaimer {
    tx: Sender<Vec<Event>>,
    back: Receiver<Vec<Event>>,
}

impl Reclaimer {
    fn spawn() -> std::io::Result<Reclaimer> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Event>>(RECLAIM_QUEUE);
        let (back_tx, back) = crossbeam_channel::bounded(RECLAIM_QUEUE + 1);
        thread::Builder::new()
            .name("arbiter-events-reclaim".into())
            .spawn(move || {
                for mut batch in rx {
                    batch.clear();
                    let _ = back_tx.try_send(batch);
                }
            })?;
        Ok(Reclaimer { tx, back })
    }

    /// Hands `spent` over to be freed, leaving an empty vector in its place; frees it
    /// here when the reclaim thread is behind.
    fn hand_over(&self, spent: &mut Vec<Event>) {
        let empty = self.back.try_recv().unwrap_or_default();
        let batch = std::mem::replace(spent, empty);
        if let Err(e) = self.tx.try_send(batch) {
            let mut batch = e.into_inner();
            batch.clear();
            *spent = batch;
        }
    }
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        anonymizer: Anonymizer,
        committer: Option<Committer>,
        live: Option<LiveFeed>,
    ) -> Worker {
        // Numbering and time go on from what was recovered from the data directory.
        let (next_seq, last_time) = {
            let store = shared.lock_store();
            (store.next_seq(), store.last_time().unwrap_or(i64::MIN))
        };
        Worker {
            framed: shared.data_dir.is_some(),
            shared,
            anonymizer,
            next_seq,
            last_time,
            pending: Vec::new(),
            encoded: Vec::new(),
            committer,
            spent: Vec::new(),
            // Without the thread, the worker frees events itself, as it always could.
            reclaimer: match live {
                Some(_) => None,
                None => Reclaimer::spawn().ok(),
            },
            live,
        }
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            let wait = self
                .shared
                .live
                .tick()
                .min(self.shared.sync_interval.unwrap_or(Duration::MAX));
            let msg = match rx.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    self.tick();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(shutdown) = self.batch(msg, rx) {
                self.close(rx, shutdown);
                return;
            }
        }
        self.finish();
    }

    /// Handles `first` and up to a batch of what follows it; returns a shutdown request.
    fn batch(&mut self, first: Msg, rx: &Receiver<Msg>) -> Option<(Instant, Sender<()>)> {
        let batch_size = self.shared.live.batch_size();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            taken += 1;
            match msg {
                Msg::Event {
                    event,
                    time,
                    occurred_at,
                } => self.ingest(event, time, occurred_at),
                Msg::Flush(ack) => self.flush(ack),
                Msg::Shutdown { deadline, done } => {
                    self.commit();
                    return Some((deadline, done));
                }
            }
            if taken < batch_size {
                next = rx.try_recv().ok();
            }
        }
        self.commit();
        None
    }

    /// Resolves every event submitted before the collector closed: each ends stored or
    /// counted. Producers count first and check `closed` after; the worker was told of
    /// `closed` before it reads the count, so every producer that missed `closed` is
    /// in that count and is waited for.
    fn close(&mut self, rx: &Receiver<Msg>, (deadline, done): (Instant, Sender<()>)) {
        while self.shared.unresolved() > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Re-check often: an event refused after `closed` resolves without a message.
            match rx.recv_timeout((deadline - now).min(CLOSE_RECHECK)) {
                Ok(msg) => {
                    if let Some((_, extra)) = self.batch(msg, rx) {
                        let _ = extra.send(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.finish();
        let _ = done.send(());
    }

    fn ingest(&mut self, event: Event, stamped: i64, occurred_at: Option<i64>) {
        // Producers stamp in `record()`; racing ones may arrive out of time order.
        let time = stamped.max(self.last_time);
        let seq = self.next_seq;
        let start = self.encoded.len();
        if self.framed {
            frame::begin(&mut self.encoded);
        }
        let payload = self.encoded.len();
        let encoded = encode_record(
            seq,
            time,
            occurred_at,
            &event,
            &mut self.anonymizer,
            &mut self.encoded,
        );
        // The store addresses records with 32-bit lengths.
        if encoded.is_err() || self.encoded.len() - payload > u32::MAX as usize {
            self.encoded.truncate(start);
            // Unreachable for events within the limits; still accounted for.
            self.shared.counters.rejected.fetch_add(1, Ordering::SeqCst);
            self.shared.counters.leave(1);
            return;
        }
        let task = match &event {
            Event::TaskCompleted(e) => Some(TaskMeta {
                end: e.outcome.status.into(),
                duration_us: micros(e.duration_ms),
            }),
            Event::TaskAbandoned(e) => Some(TaskMeta {
                end: TaskEnd::Abandoned,
                duration_us: micros(e.duration_ms),
            }),
            _ => None,
        };
        let meta = Meta {
            seq,
            time,
            kind: event.kind(),
            task,
        };
        if self.framed {
            frame::finish(&mut self.encoded, start, &meta);
        }
        self.pending.push(FrameRef {
            meta,
            start,
            end: self.encoded.len(),
        });
        self.next_seq += 1;
        self.last_time = time;
        match &mut self.live {
            Some(live) => live.push(time, event),
            None => self.spent.push(event),
        }
    }

    /// Commits the pending records: hands them to the commit thread, or (without a data
    /// directory) appends them to the store and prunes.
    fn commit(&mut self) {
        if !self.spent.is_empty() {
            match &self.reclaimer {
                Some(r) => r.hand_over(&mut self.spent),
                None => self.spent.clear(),
            }
        }
        self.commit_batch();
        if let Some(live) = &mut self.live {
            live.hand_over();
        }
    }

    fn commit_batch(&mut self) {
        match &self.committer {
            Some(c) => {
                if self.pending.is_empty() {
                    return;
                }
                let (bytes, frames) = c.recycled.try_recv().unwrap_or_default();
                let bytes = std::mem::replace(&mut self.encoded, bytes);
                let frames = std::mem::replace(&mut self.pending, frames);
                // The commit thread outlives every send: it stops on `Close` only.
                let _ = c.tx.send(Commit::Batch { bytes, frames });
            }
            None => {
                commit_batch(&self.shared, &self.encoded, &self.pending, 0);
                self.pending.clear();
                self.encoded.clear();
                // A batch of unusually large records must not pin its buffer for good.
                if self.encoded.capacity() > KEEP_BUFFER_BYTES {
                    self.encoded = Vec::new();
                }
            }
        }
    }

    /// The idle tick: prune (and sync, if an interval sync is due).
    fn tick(&mut self) {
        self.commit();
        if let Some(c) = &self.committer {
            let _ = c.tx.send(Commit::Tick);
        } else {
            commit_batch(&self.shared, &[], &[], 0);
        }
    }

    /// Answers a flush once everything before it is stored (and synced, per the policy).
    fn flush(&mut self, ack: Sender<Result<(), String>>) {
        self.commit();
        match &self.committer {
            Some(c) => {
                if let Err(e) = c.tx.send(Commit::Flush(ack))
                    && let Commit::Flush(ack) = e.into_inner()
                {
                    let _ = ack.send(Err("the commit thread has stopped".to_owned()));
                }
            }
            None => {
                // Prune by the clock, as of this flush.
                commit_batch(&self.shared, &[], &[], 0);
                let _ = ack.send(Ok(()));
            }
        }
    }

    /// Commits what is pending and closes the data directory, waiting for the commit
    /// thread to finish.
    fn finish(&mut self) {
        self.commit();
        if let Some(mut c) = self.committer.take() {
            let (done, closed) = crossbeam_channel::bounded(1);
            if c.tx.send(Commit::Close(done)).is_ok() {
                let _ = closed.recv();
            }
            if let Some(thread) = c.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn micros(ms: f64) -> u64 {
    // Rounded: `as_secs_f64() * 1000.0` lands just below whole microseconds. `as`
    // saturates; validation made `ms` finite and non-negative.
    (ms * 1000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::Msg;

    #[test]
    fn a_message_fits_the_queue_slot_the_readme_states() {
        // README: the queue allocates `capacity` slots of about 150 bytes at build.
        assert!(
            std::mem::size_of::<Msg>() <= 152,
            "{}",
            std::mem::size_of::<Msg>()
        );
    }
}
