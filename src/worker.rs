//! The ingest worker: drains the channel in batches, assigns `seq` and `time`,
//! anonymizes, encodes, appends to the store and prunes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::anonymize::Anonymizer;
use crate::collector::Shared;
use crate::encode::encode_record;
use crate::event::Event;
use crate::log::{FrameRef, frame};
use crate::store::{Meta, TaskEnd, TaskMeta};

/// What travels from the handles to the worker.
pub(crate) enum Msg {
    /// An event that passed validation.
    Event(Event),
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

pub(crate) fn spawn(
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    anonymizer: Anonymizer,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("arbiter-events-ingest".into())
        .spawn(move || Worker::new(shared, anonymizer).run(&rx))
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
}

impl Worker {
    fn new(shared: Arc<Shared>, anonymizer: Anonymizer) -> Worker {
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
        }
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            let wait = self.shared.live.tick().min(self.shared.sync_due_in());
            let msg = match rx.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.commit(false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(shutdown) = self.batch(msg, rx) {
                self.close(rx, shutdown);
                return;
            }
        }
        let _ = self.commit(true);
        self.shared.close_log();
    }

    /// Handles `first` and up to a batch of what follows it; returns a shutdown request.
    fn batch(&mut self, first: Msg, rx: &Receiver<Msg>) -> Option<(Instant, Sender<()>)> {
        let batch_size = self.shared.live.batch_size();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            taken += 1;
            match msg {
                Msg::Event(event) => self.ingest(event),
                Msg::Flush(ack) => {
                    let _ = ack.send(self.commit(true));
                }
                Msg::Shutdown { deadline, done } => {
                    let _ = self.commit(true);
                    return Some((deadline, done));
                }
            }
            if taken < batch_size {
                next = rx.try_recv().ok();
            }
        }
        let _ = self.commit(false);
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
        let _ = self.commit(true);
        self.shared.close_log();
        let _ = done.send(());
    }

    fn ingest(&mut self, event: Event) {
        let time = self.shared.clock.now_unix_nanos().max(self.last_time);
        let seq = self.next_seq;
        let start = self.encoded.len();
        if self.framed {
            frame::begin(&mut self.encoded);
        }
        let payload = self.encoded.len();
        let encoded = encode_record(seq, time, &event, &mut self.anonymizer, &mut self.encoded);
        // The store addresses records with 32-bit lengths.
        if encoded.is_err() || self.encoded.len() - payload > u32::MAX as usize {
            self.encoded.truncate(start);
            // Unreachable for events within the limits; still accounted for.
            self.shared.counters.rejected.fetch_add(1, Ordering::SeqCst);
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
    }

    /// Writes the pending records to the data directory (syncing per the policy, or
    /// forced by `flush`), appends them to the store and prunes, in one short hold of
    /// the store's lock. Returns any data directory error since the last flush.
    fn commit(&mut self, flush: bool) -> Result<(), String> {
        let now = self.shared.clock.now_unix_nanos();
        let mut log = self.shared.lock_log();
        let mut result = Ok(());
        if let Some(log) = log.as_mut() {
            log.append(&self.encoded, &self.pending);
            result = log.commit(flush);
        }
        let header = if self.framed { frame::HEADER_LEN } else { 0 };
        let mut store = self.shared.lock_store();
        for f in self.pending.drain(..) {
            store.push(f.meta, &self.encoded[f.start + header..f.end]);
        }
        store.prune_expired(now);
        let cutoff = store.cutoff(now);
        drop(store);
        if let Some(log) = log.as_mut() {
            log.prune(cutoff);
        }
        drop(log);
        self.encoded.clear();
        // A batch of unusually large records must not pin its buffer for good.
        if self.encoded.capacity() > KEEP_BUFFER_BYTES {
            self.encoded = Vec::new();
        }
        result
    }
}

fn micros(ms: f64) -> u64 {
    // Rounded: `as_secs_f64() * 1000.0` lands just below whole microseconds. `as`
    // saturates; validation made `ms` finite and non-negative.
    (ms * 1000.0).round() as u64
}
