//! The relay: tails a data directory and publishes its records to NATS JetStream, each
//! (source, seq) exactly once and in order, so that one pipeline can pull the records
//! of many machines.
//!
//! A message is one export (the version 2 MessagePack file [`Export::to_msgpack`]
//! writes, header, records and trailer, with its checksum and MAC) of a contiguous seq
//! range of one source: the range after the last message's `next_cursor`. Its headers
//! name it: `Nats-Msg-Id: <source>:<first>-<last>`, `Arbiter-Source`,
//! `Arbiter-First-Seq`, `Arbiter-Last-Seq`, `Arbiter-Records`, and `Arbiter-Gap:
//! <from>-<to> <reason>` when records were pruned locally before they were relayed
//! (the export's header says the same). Every publish carries
//! `Nats-Expected-Last-Subject-Sequence`: the broker takes it only if the subject's last
//! message is still the one the relay resumed after, so a retry, a restart or a second
//! relay can never put a range in twice or out of order.
//!
//! [`Export::to_msgpack`]: crate::Export::to_msgpack

mod config;
mod puller;

pub use config::*;
pub use puller::{
    DEFAULT_ACK_WAIT, DEFAULT_PULL_MESSAGES, DEFAULT_PULL_WAIT, Pending, PullOutcome, Puller,
    PullerState,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use serde::{Deserialize, Serialize};

use crate::{Cursor, DataDir, ExportError, ExportRequest, StorageError};

/// The header naming a message's source.
pub const HEADER_SOURCE: &str = "Arbiter-Source";
/// The header naming the first seq a message covers (its gap's first, if any).
pub const HEADER_FIRST_SEQ: &str = "Arbiter-First-Seq";
/// The header naming the last seq a message covers: the relay resumes after it.
pub const HEADER_LAST_SEQ: &str = "Arbiter-Last-Seq";
/// The header counting a message's records.
pub const HEADER_RECORDS: &str = "Arbiter-Records";
/// The header of a gap marker: `<from>-<to> <reason>`, seqs pruned before they were
/// relayed.
pub const HEADER_GAP: &str = "Arbiter-Gap";
/// Where the relay keeps its lock and status, inside the data directory.
pub const RELAY_FOLDER: &str = "relay";
/// How often a running relay rewrites its status file.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// The first guess of a record's size, before any was published.
const FIRST_GUESS_RECORD_BYTES: u64 = 256;

/// What went wrong relaying or pulling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A `relay.*` setting is wrong.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field, e.g. `relay.max_message_bytes`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An export could not be made or read.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The data directory has no source id (it was never opened by a collector that
    /// writes one).
    #[error("{} has no source id: open it once with a collector first", path.display())]
    NoSource {
        /// The data directory.
        path: PathBuf,
    },
    /// Another relay relays this data directory to this stream.
    #[error("another relay holds {} (relaying {source_id} to stream {stream})", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The source.
        source_id: String,
        /// The stream.
        stream: String,
    },
    /// The broker could not be reached or refused a request; the relay retries these.
    #[error("nats {action} failed ({url}): {reason}")]
    Broker {
        /// What was being done: `connect`, `create stream`, `publish`...
        action: &'static str,
        /// The server URL(s).
        url: String,
        /// The client's message.
        reason: String,
    },
    /// The last message on the subject was not written by a relay of this source.
    #[error(
        "message {stream_sequence} on {subject} is not a relay message of this source: {reason}"
    )]
    ForeignMessage {
        /// The subject.
        subject: String,
        /// Its stream sequence.
        stream_sequence: u64,
        /// What is wrong.
        reason: String,
    },
    /// The stream holds seqs of this source that the data directory never had: another
    /// directory with the same source id, or a directory recreated under it.
    #[error(
        "stream holds {source_id} through seq {stream_through}, but the data directory ends at {dir_through}"
    )]
    StreamAhead {
        /// The source.
        source_id: String,
        /// The last seq the stream holds.
        stream_through: u64,
        /// The last seq in the data directory.
        dir_through: u64,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl RelayError {
    /// Whether waiting and trying again may help (the broker was down or busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, RelayError::Broker { .. })
    }

    fn broker(action: &'static str, url: &str, e: impl std::fmt::Display) -> RelayError {
        RelayError::Broker {
            action,
            url: url.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// When [`Relay::run`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunMode {
    /// Only when stopped ([`RelayStopper::stop`]) or on an error that waiting cannot
    /// mend: a relay daemon.
    Forever,
    /// Once every record synced when it looked last is published (and, as in
    /// `Forever`, when stopped): a catch-up run.
    UntilCaughtUp,
}

/// A relay's progress, as `relay --status` prints it and the relay's status file
/// holds (rewritten every second while it runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RelayStatus {
    /// The source relayed.
    pub source: String,
    /// Its subject.
    pub subject: String,
    /// The stream.
    pub stream: String,
    /// Every seq up to this one is in the stream (as records or as a gap marker).
    pub relayed_through_seq: u64,
    /// The stream sequence of the subject's last message (0: none yet).
    pub stream_sequence: u64,
    /// The data directory's synced position when the relay last read it: records up to
    /// it are what the relay may publish.
    pub synced_through_seq: u64,
    /// Records synced and not yet in the stream, when the relay last read the
    /// directory.
    pub lag_records: u64,
    /// How long the oldest record synced and not yet in the stream had been waiting
    /// (by its ingest time), in milliseconds, when the relay last read it; 0 when
    /// caught up.
    pub lag_ms: u64,
    /// Messages this run published.
    pub messages: u64,
    /// Records this run published.
    pub records: u64,
    /// Payload bytes this run published.
    pub bytes: u64,
    /// Gap markers this run published (messages carrying an `Arbiter-Gap`).
    pub gaps: u64,
    /// Publishes the broker refused because another publish came first (a lost ack
    /// or a second relay); the relay resumed after the subject's last message.
    pub conflicts: u64,
    /// Waits after a failure.
    pub retries: u64,
    /// Failures (connect, create stream, publish, read).
    pub errors: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Whether the relay is connected.
    pub connected: bool,
    /// When this was written, unix milliseconds.
    pub updated_at_ms: u64,
}

/// Stops a running [`Relay`] (or [`Puller`]) from another thread; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct RelayStopper(Arc<AtomicBool>);

impl RelayStopper {
    /// Asks the run to return at its next step (at most one broker request later).
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`RelayStopper::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Publishes one data directory's records to a JetStream stream.
///
/// ```no_run
/// use arbiter_events::{Relay, RelayConfig, RunMode};
/// let mut config = RelayConfig::default();
/// config.url = "nats://127.0.0.1:4222".into();
/// let relay = Relay::new("./arbiter-data", config)?;
/// let status = relay.run(RunMode::UntilCaughtUp)?;
/// println!("relayed through seq {}", status.relayed_through_seq);
/// # Ok::<(), arbiter_events::RelayError>(())
/// ```
#[derive(Debug)]
pub struct Relay {
    dir: DataDir,
    config: RelayConfig,
    source: String,
    subject: String,
    lock_path: PathBuf,
    status_path: PathBuf,
    stopper: RelayStopper,
}

/// Where the subject stands: the last seq relayed and the stream sequence of the
/// message that covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    cursor: u64,
    stream_sequence: u64,
}

/// A connection and what was learned on it.
struct Session {
    js: jetstream::Context,
    stream: Option<jetstream::stream::Stream>,
    position: Option<Position>,
}

/// Capped exponential backoff.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &RelayConfig) -> Backoff {
        let initial = Duration::from_millis(config.backoff_initial_ms);
        Backoff {
            initial,
            max: Duration::from_millis(config.backoff_max_ms),
            next: initial,
        }
    }

    /// The wait before the next try; doubles the one after.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Relay {
    /// A relay of the data directory at `data_dir`, under `config` (validated). It
    /// reads the directory's source id; it connects only in [`Relay::run`].
    ///
    /// # Errors
    /// [`RelayError::Config`], [`RelayError::Storage`] when `data_dir` is not a data
    /// directory, [`RelayError::NoSource`] when it has no source id.
    pub fn new(data_dir: impl AsRef<Path>, config: RelayConfig) -> Result<Relay, RelayError> {
        config.validate()?;
        let dir = DataDir::open(data_dir)?;
        let probe = dir.export(&ExportRequest::after(Cursor::START).limit(1))?;
        let Some(source) = probe.header().source.clone() else {
            return Err(RelayError::NoSource {
                path: dir.path().to_owned(),
            });
        };
        let subject = config.subject(&source);
        let folder = dir.path().join(RELAY_FOLDER);
        Ok(Relay {
            lock_path: folder.join(format!("{}.lock", config.stream)),
            status_path: status_path(dir.path(), &config.stream),
            dir,
            config,
            source,
            subject,
            stopper: RelayStopper::default(),
        })
    }

    /// The source id relayed.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The subject its records go to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// A handle that stops [`Relay::run`] from another thread.
    pub fn stopper(&self) -> RelayStopper {
        self.stopper.clone()
    }

    /// Relays until `mode` says to return, on a runtime of its own (call it from a
    /// thread of your own, not from async code). Takes `relay/<stream>.lock` in the
    /// data directory for its duration, so a second relay of the same directory to the
    /// same stream refuses to start. When the broker is down or refuses a request, it
    /// waits (capped exponential backoff, `relay.backoff_*`) and tries again, resuming
    /// after the subject's last message; it never writes to the collector's files.
    ///
    /// # Errors
    /// [`RelayError::Locked`] when another relay holds the lock;
    /// [`RelayError::Storage`] or [`RelayError::Export`] when the data directory cannot
    /// be read; [`RelayError::ForeignMessage`] or [`RelayError::StreamAhead`] when the
    /// subject holds what this directory did not write. Broker failures are retried,
    /// not returned.
    pub fn run(&self, mode: RunMode) -> Result<RelayStatus, RelayError> {
        let _lock = self.lock()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RelayError::Runtime)?;
        let mut status = RelayStatus {
            source: self.source.clone(),
            subject: self.subject.clone(),
            stream: self.config.stream.clone(),
            ..RelayStatus::default()
        };
        let result = runtime.block_on(self.run_async(mode, &mut status));
        status.connected = false;
        self.write_status(&mut status);
        result.map(|()| status)
    }

    fn lock(&self) -> Result<std::fs::File, RelayError> {
        let io = |action| {
            let path = self.lock_path.clone();
            move |source| RelayError::Io {
                action,
                path,
                source,
            }
        };
        if let Some(folder) = self.lock_path.parent() {
            std::fs::create_dir_all(folder).map_err(io("create"))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io("open"))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(RelayError::Locked {
                path: self.lock_path.clone(),
                source_id: self.source.clone(),
                stream: self.config.stream.clone(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io("lock")(e)),
        }
    }

    async fn run_async(&self, mode: RunMode, status: &mut RelayStatus) -> Result<(), RelayError> {
        let mut backoff = Backoff::new(&self.config);
        let mut session: Option<Session> = None;
        let mut limit = (self.config.max_message_bytes / FIRST_GUESS_RECORD_BYTES)
            .clamp(1, self.config.max_message_records);
        let mut last_status = std::time::Instant::now();
        while !self.stopper.is_stopped() {
            if last_status.elapsed() >= STATUS_EVERY {
                self.write_status(status);
                last_status = std::time::Instant::now();
            }
            let s = match &mut session {
                Some(s) => s,
                None => match connect(&self.config, "relay").await {
                    Ok(client) => {
                        let js = jetstream_context(&self.config, client);
                        status.connected = true;
                        session.insert(Session {
                            js,
                            stream: None,
                            position: None,
                        })
                    }
                    Err(e) => {
                        self.failed(status, e, &mut backoff).await?;
                        continue;
                    }
                },
            };
            match self.step(s, &mut limit, status).await {
                Ok(Step::Published) => backoff.reset(),
                Ok(Step::CaughtUp) => {
                    backoff.reset();
                    if mode == RunMode::UntilCaughtUp {
                        return Ok(());
                    }
                    self.write_status(status);
                    last_status = std::time::Instant::now();
                    tokio::time::sleep(self.config.flush_interval()).await;
                }
                Err(e) => {
                    // Whatever happened, learn the subject's last message again.
                    s.position = None;
                    s.stream = None;
                    self.failed(status, e, &mut backoff).await?;
                }
            }
        }
        Ok(())
    }

    /// Counts a failure; returns it when waiting cannot mend it, else waits.
    async fn failed(
        &self,
        status: &mut RelayStatus,
        e: RelayError,
        backoff: &mut Backoff,
    ) -> Result<(), RelayError> {
        status.errors += 1;
        status.last_error = Some(e.to_string());
        if !e.is_transient() {
            return Err(e);
        }
        status.retries += 1;
        self.write_status(status);
        let wait = backoff.next_wait();
        let deadline = tokio::time::Instant::now() + wait;
        // Wake now and then to notice a stop.
        while tokio::time::Instant::now() < deadline && !self.stopper.is_stopped() {
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + STATUS_EVERY))
                .await;
        }
        Ok(())
    }

    /// Creates the stream if absent (explicit settings) and learns where the subject
    /// stands.
    async fn resync(&self, s: &mut Session) -> Result<Position, RelayError> {
        let stream = ensure_stream(&self.config, &s.js).await?;
        let position = last_position(&stream, &self.subject, &self.source, &self.config.url)
            .await?
            .unwrap_or(Position {
                cursor: 0,
                stream_sequence: 0,
            });
        s.stream = Some(stream);
        if position.cursor > 0 {
            let report = self.dir.survey()?;
            let dir_through = report
                .seqs
                .map_or(0, |(_, last)| last)
                .max(report.high_water_seq);
            if position.cursor > dir_through {
                return Err(RelayError::StreamAhead {
                    source_id: self.source.clone(),
                    stream_through: position.cursor,
                    dir_through,
                });
            }
        }
        Ok(position)
    }

    async fn step(
        &self,
        s: &mut Session,
        limit: &mut u64,
        status: &mut RelayStatus,
    ) -> Result<Step, RelayError> {
        let position = match s.position {
            Some(p) => p,
            None => {
                let p = self.resync(s).await?;
                status.relayed_through_seq = p.cursor;
                status.stream_sequence = p.stream_sequence;
                s.position = Some(p);
                p
            }
        };
        let synced = self.dir.synced_through()?;
        let export = self.dir.export_synced(
            &ExportRequest::after(Cursor::after_seq(position.cursor)).limit(*limit),
        )?;
        let last = export.next_cursor().seq();
        status.synced_through_seq = synced.max(last);
        status.lag_records = status.synced_through_seq.saturating_sub(position.cursor);
        if last == position.cursor {
            status.lag_ms = 0;
            return Ok(Step::CaughtUp);
        }
        status.lag_ms = match export.records().next() {
            Some(Ok(first)) => {
                let waited = time::OffsetDateTime::now_utc() - first.time;
                u64::try_from(waited.whole_milliseconds()).unwrap_or(0)
            }
            _ => 0,
        };
        let body = export.to_msgpack();
        let size = body.len() as u64;
        let count = export.len();
        if size > self.config.max_message_bytes && count > 1 {
            // Too big for one message: fewer records, in proportion.
            *limit = (count * self.config.max_message_bytes / size)
                .clamp(1, count - 1)
                .min(self.config.max_message_records);
            return Ok(Step::Published);
        }
        if let Some(mean) = size.checked_div(count) {
            // Aim a little under the bound, at this export's mean record size.
            let mean = mean.max(1);
            *limit = (self.config.max_message_bytes * 15 / 16 / mean)
                .clamp(1, self.config.max_message_records);
        }
        let first = position.cursor + 1;
        let mut publish = jetstream::message::PublishMessage::build()
            .message_id(format!("{}:{first}-{last}", self.source))
            .expected_last_subject_sequence(position.stream_sequence)
            .header(HEADER_SOURCE, self.source.as_str())
            .header(HEADER_FIRST_SEQ, first.to_string().as_str())
            .header(HEADER_LAST_SEQ, last.to_string().as_str())
            .header(HEADER_RECORDS, count.to_string().as_str());
        if let Some(gap) = export.gap() {
            let reason = serde_json::to_value(gap.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".to_owned());
            publish = publish.header(
                HEADER_GAP,
                format!("{}-{} {reason}", gap.from_seq, gap.to_seq).as_str(),
            );
        }
        let publish = publish.payload(bytes::Bytes::from(body));
        let url = &self.config.url;
        let outcome = match s.js.send_publish(self.subject.clone(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(ack) if ack.duplicate => {
                // Published before, by this relay (a lost ack) or another: learn again.
                status.conflicts += 1;
                s.position = None;
                Ok(Step::Published)
            }
            Ok(ack) => {
                s.position = Some(Position {
                    cursor: last,
                    stream_sequence: ack.sequence,
                });
                status.relayed_through_seq = last;
                status.lag_records = status.synced_through_seq.saturating_sub(last);
                status.stream_sequence = ack.sequence;
                status.messages += 1;
                status.records += count;
                status.bytes += size;
                status.gaps += u64::from(export.gap().is_some());
                Ok(Step::Published)
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                status.conflicts += 1;
                s.position = None;
                Ok(Step::Published)
            }
            Err(e) => Err(RelayError::broker("publish", url, e)),
        }
    }

    fn write_status(&self, status: &mut RelayStatus) {
        status.updated_at_ms = unix_ms();
        // The status is informative: failing to write it must not stop the relay.
        if let Ok(bytes) = serde_json::to_vec_pretty(status) {
            let _ = write_atomic(&self.status_path, &bytes, false);
        }
    }
}

/// What a step did.
enum Step {
    /// Published a message, or learned something that lets the next step publish.
    Published,
    /// Nothing new is synced.
    CaughtUp,
}

/// The status file of a relay of `data_dir` to `stream`.
pub fn status_path(data_dir: &Path, stream: &str) -> PathBuf {
    data_dir.join(RELAY_FOLDER).join(format!("{stream}.json"))
}

/// Reads the status every relay of `data_dir` last wrote (one per stream), in stream
/// order; none when no relay ever ran there.
///
/// # Errors
/// [`RelayError::Io`] when the folder cannot be listed or a status file cannot be read
/// or parsed.
pub fn read_statuses(data_dir: &Path) -> Result<Vec<RelayStatus>, RelayError> {
    let folder = data_dir.join(RELAY_FOLDER);
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RelayError::Io {
                action: "list",
                path: folder,
                source,
            });
        }
    };
    let mut streams = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| RelayError::Io {
            action: "list",
            path: folder.clone(),
            source,
        })?;
        let name = entry.file_name();
        if let Some(stream) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
            streams.push(stream.to_owned());
        }
    }
    streams.sort();
    let mut statuses = Vec::with_capacity(streams.len());
    for stream in streams {
        statuses.extend(read_status(data_dir, &stream)?);
    }
    Ok(statuses)
}

/// Reads the status a relay of `data_dir` to `stream` last wrote (`None` when no
/// relay ever ran there).
///
/// # Errors
/// [`RelayError::Io`] when the file exists but cannot be read or parsed.
pub fn read_status(data_dir: &Path, stream: &str) -> Result<Option<RelayStatus>, RelayError> {
    let path = status_path(data_dir, stream);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RelayError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RelayError::Io {
            action: "parse",
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes `bytes` to `path` through a temporary file and a rename (with `sync`, the
/// file and its folder are synced too), so readers see the old or the new file whole.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> Result<(), RelayError> {
    use std::io::Write;
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| RelayError::Io {
            action,
            path,
            source,
        }
    };
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(io("create", folder))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    if sync {
        file.sync_all().map_err(io("sync", &tmp))?;
    }
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    if sync {
        // A folder opened read-only can be synced on Unix; elsewhere this may fail,
        // which leaves the rename as durable as the platform makes it.
        if let Ok(dir) = std::fs::File::open(folder) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Reads the first line of a secret file, trimmed.
fn read_secret(path: &Path) -> Result<String, RelayError> {
    let text = std::fs::read_to_string(path).map_err(|source| RelayError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Connects as `config` says (credentials, TLS), failing at once when the server is
/// down (the callers retry with backoff).
pub(crate) async fn connect(
    config: &RelayConfig,
    name: &str,
) -> Result<async_nats::Client, RelayError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("arbiter-events {name}"))
        .connection_timeout(config.request_timeout())
        .request_timeout(Some(config.request_timeout()))
        .require_tls(config.tls_required);
    if let (Some(user), Some(password_file)) = (&config.user, &config.password_file) {
        options = options.user_and_password(user.clone(), read_secret(password_file)?);
    }
    if let Some(token_file) = &config.token_file {
        options = options.token(read_secret(token_file)?);
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<&str> = config.url.split(',').map(str::trim).collect();
    let addrs: Result<Vec<async_nats::ServerAddr>, _> = servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect();
    let addrs = addrs.map_err(|e| RelayError::Config {
        field: "relay.url",
        reason: format!("{:?}: {e}", config.url),
    })?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| RelayError::broker("connect", &config.url, e))?;
    let max_payload = client.server_info().max_payload as u64;
    if config.max_message_bytes > max_payload {
        return Err(RelayError::Config {
            field: "relay.max_message_bytes",
            reason: format!(
                "{} is above the server's max_payload {max_payload}",
                config.max_message_bytes
            ),
        });
    }
    Ok(client)
}

pub(crate) fn jetstream_context(
    config: &RelayConfig,
    client: async_nats::Client,
) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(config.request_timeout());
    js
}

/// The stream, created if absent with explicit settings: file storage, retention by
/// limits (`relay.stream_max_age_secs`, `relay.stream_max_bytes`, oldest discarded),
/// the duplicate window, one replica, every source's subject.
pub(crate) async fn ensure_stream(
    config: &RelayConfig,
    js: &jetstream::Context,
) -> Result<jetstream::stream::Stream, RelayError> {
    use jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
    if let Ok(stream) = js.get_stream(&config.stream).await {
        return Ok(stream);
    }
    let settings = Config {
        name: config.stream.clone(),
        description: Some("arbiter-events records, one subject per source".to_owned()),
        subjects: vec![config.stream_subjects()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: Duration::from_secs(config.stream_max_age_secs),
        max_bytes: i64::try_from(config.stream_max_bytes)
            .ok()
            .filter(|&b| b > 0)
            .unwrap_or(-1),
        max_messages: -1,
        max_messages_per_subject: -1,
        max_message_size: i32::try_from(config.max_message_bytes + 64 * 1024).unwrap_or(-1),
        duplicate_window: Duration::from_secs(config.duplicate_window_secs),
        num_replicas: 1,
        allow_direct: true,
        ..Config::default()
    };
    match js.create_stream(settings).await {
        Ok(stream) => Ok(stream),
        // Created by another relay meanwhile.
        Err(create) => js
            .get_stream(&config.stream)
            .await
            .map_err(|_| RelayError::broker("create stream", &config.url, create)),
    }
}

/// The last message on `subject`: the seq it covers through and its stream sequence.
async fn last_position(
    stream: &jetstream::stream::Stream,
    subject: &str,
    source: &str,
    url: &str,
) -> Result<Option<Position>, RelayError> {
    let message = match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => message,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(RelayError::broker("read last message", url, e)),
    };
    let foreign = |reason: String| RelayError::ForeignMessage {
        subject: subject.to_owned(),
        stream_sequence: message.sequence,
        reason,
    };
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    match header(HEADER_SOURCE) {
        Some(s) if s == source => {}
        other => return Err(foreign(format!("{HEADER_SOURCE} is {other:?}"))),
    }
    let cursor = header(HEADER_LAST_SEQ)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| foreign(format!("no valid {HEADER_LAST_SEQ}")))?;
    Ok(Some(Position {
        cursor,
        stream_sequence: message.sequence,
    }))
}
