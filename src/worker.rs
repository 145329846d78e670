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
use crate::store::{Meta, TaskEnd, TaskMeta};

/// What travels from the handles to the worker.
pub(crate) enum Msg {
    /// An event that passed validation.
    Event(Event),
    /// Commit everything before this, then answer.
    Flush(Sender<()>),
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
    /// Encoded but not yet committed: each record's meta and end offset in `encoded`.
    pending: Vec<(Meta, usize)>,
    encoded: Vec<u8>,
}

impl Worker {
    fn new(shared: Arc<Shared>, anonymizer: Anonymizer) -> Worker {
        Worker {
            shared,
            anonymizer,
            next_seq: 1,
            last_time: i64::MIN,
            pending: Vec::new(),
            encoded: Vec::new(),
        }
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            let msg = match rx.recv_timeout(self.shared.live.tick()) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    self.commit();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(shutdown) = self.batch(msg, rx) {
                self.close(rx, shutdown);
                return;
            }
        }
        self.commit();
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
                    self.commit();
                    let _ = ack.send(());
                }
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
        self.commit();
        let _ = done.send(());
    }

    fn ingest(&mut self, event: Event) {
        let time = self.shared.clock.now_unix_nanos().max(self.last_time);
        let seq = self.next_seq;
        let start = self.encoded.len();
        let encoded = encode_record(seq, time, &event, &mut self.anonymizer, &mut self.encoded);
        // The store addresses records with 32-bit lengths.
        if encoded.is_err() || self.encoded.len() - start > u32::MAX as usize {
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
        self.pending.push((meta, self.encoded.len()));
        self.next_seq += 1;
        self.last_time = time;
    }

    /// Appends the pending records and prunes, in one short hold of the store's lock.
    fn commit(&mut self) {
        let now = self.shared.clock.now_unix_nanos();
        let mut store = self.shared.lock_store();
        let mut start = 0;
        for (meta, end) in self.pending.drain(..) {
            store.push(meta, &self.encoded[start..end]);
            start = end;
        }
        self.encoded.clear();
        // A batch of unusually large records must not pin its buffer for good.
        if self.encoded.capacity() > KEEP_BUFFER_BYTES {
            self.encoded = Vec::new();
        }
        store.prune_expired(now);
    }
}

fn micros(ms: f64) -> u64 {
    // Rounded: `as_secs_f64() * 1000.0` lands just below whole microseconds. `as`
    // saturates; validation made `ms` finite and non-negative.
    (ms * 1000.0).round() as u64
}
