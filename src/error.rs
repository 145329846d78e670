//! Typed errors, one enum per operation.

use std::path::PathBuf;
use std::time::Duration;

use crate::anonymize::KeyError;
use crate::event::{Event, ValidationError};
use crate::execution::TaskExecution;

/// A configuration broke a rule; nothing was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A number is outside its allowed range.
    #[error("{field} must be within [{min}, {max}], got {value}")]
    OutOfRange {
        /// The field, e.g. `retention.max_events`.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A duration is outside its allowed range.
    #[error("{field} must be within [{min:?}, {max:?}], got {value:?}")]
    DurationOutOfRange {
        /// The field, e.g. `retention.max_age`.
        field: &'static str,
        /// The value given.
        value: Duration,
        /// The shortest allowed.
        min: Duration,
        /// The longest allowed.
        max: Duration,
    },
    /// Both `retention.max_age` and `retention.max_age_secs` are set.
    #[error("retention.max_age and retention.max_age_secs are both set; keep one")]
    ConflictingMaxAge,
    /// Both `anonymization.key_hex` and `anonymization.key_file` are set.
    #[error("anonymization.key_hex and anonymization.key_file are both set; keep one")]
    ConflictingKeySources,
    /// `source` is not a valid source id.
    #[error("source must be 1 to 64 letters, digits, `-`, `_` or `.`, got {value:?}")]
    InvalidSource {
        /// The value given.
        value: String,
    },
    /// `anonymization.key_hex` is not a key.
    #[error("anonymization.key_hex is invalid: {0}")]
    InvalidKey(#[source] KeyError),
    /// An entry of `anonymization.attribute_keys` is empty.
    #[error("anonymization.attribute_keys[{index}] must not be empty")]
    EmptyAttributeKey {
        /// Its position.
        index: usize,
    },
    /// `update_config` tried to change something fixed at build.
    #[error("{field} cannot change while the collector runs; build a new collector")]
    NotLive {
        /// The field or section.
        field: &'static str,
    },
    /// `storage.data_dir` is an empty path.
    #[error("storage.data_dir must not be empty; leave it out to keep records in memory only")]
    EmptyDataDir,
    /// An environment override names no key or holds a value of the wrong type.
    #[error("{var}: {reason}")]
    Env {
        /// The variable, e.g. `ARBITER_EVENTS_RETENTION_MAX_EVENTS`.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment override gives a value that breaks a rule.
    #[error("{var}: {source}")]
    EnvInvalid {
        /// The variable that set the field.
        var: String,
        /// The rule broken.
        source: Box<ConfigError>,
    },
    /// The TOML is malformed or names an unknown key.
    #[error("invalid configuration: {0}")]
    Parse(#[source] Box<toml::de::Error>),
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration could not be written as TOML.
    #[error("cannot write configuration as TOML: {0}")]
    Serialize(String),
}

/// A collector could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No anonymization key could be had.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The data directory could not be opened or recovered.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The ingest worker thread could not be started.
    #[error("cannot start the ingest worker thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Why an event was not accepted. Each case is counted in [`Stats`](crate::Stats).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The event broke a validation rule (counted as `rejected`).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The queue was full (counted as `dropped.queue_full`).
    #[error("event dropped: the queue is full")]
    QueueFull,
    /// The queue stayed full for the whole `BlockFor` wait (counted as `dropped.queue_full`).
    #[error("event dropped: the queue stayed full for {0:?}")]
    Timeout(Duration),
    /// The collector is paused (counted as `dropped.paused`).
    #[error("event dropped: the collector is paused")]
    Paused,
    /// The collector is disabled by config (counted as `dropped.disabled`).
    #[error("event dropped: the collector is disabled")]
    Disabled,
    /// The collector is shutting down or shut down (counted as `dropped.shutdown`).
    #[error("event dropped: the collector is shut down")]
    ShutDown,
}

/// [`Collector::try_record`](crate::Collector::try_record) failed; the event is handed back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct TryRecordError {
    pub(crate) event: Box<Event>,
    pub(crate) error: RecordError,
}

impl TryRecordError {
    /// The event that was not recorded.
    pub fn into_event(self) -> Event {
        *self.event
    }

    /// The event, by reference.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Why it was not recorded.
    pub fn error(&self) -> &RecordError {
        &self.error
    }
}

/// [`TaskExecution::complete`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompleteError {
    /// The outcome broke a validation rule: nothing was recorded and the execution is
    /// handed back, so it can be completed with a valid outcome.
    #[error("{error}")]
    Invalid {
        /// The rule broken.
        error: ValidationError,
        /// The execution, still open.
        execution: Box<TaskExecution>,
    },
    /// The completion was dropped and counted (see [`RecordError`]).
    #[error(transparent)]
    Dropped(RecordError),
}

/// A flush did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The worker did not catch up within the timeout.
    #[error("flush timed out after {0:?}")]
    Timeout(Duration),
    /// The collector is shut down.
    #[error("flush failed: the collector is shut down")]
    ShutDown,
    /// Records are in memory, but writing or syncing the data directory failed since
    /// the last flush; `storage.last_error` in the stats says more.
    #[error("flush failed: cannot write the data directory: {reason}")]
    Storage {
        /// The I/O error, with the path.
        reason: String,
    },
}

/// An export could not be made, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The request contradicts itself.
    #[error("invalid export request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: &'static str,
    },
    /// The cursor is past the last record ever stored (e.g. from another collector).
    #[error("cursor {after} is ahead of the last stored seq {last_seq}")]
    CursorAhead {
        /// The request's cursor.
        after: u64,
        /// The last seq assigned (0 if none).
        last_seq: u64,
    },
    /// Reading or writing failed.
    #[error("export I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The input ended early.
    #[error(
        "export truncated at byte {offset}: {what} missing after {records_read} of {expected} records"
    )]
    Truncated {
        /// What was being read: `header`, `record` or `trailer`.
        what: &'static str,
        /// Records read in full.
        records_read: u64,
        /// Records the header announced.
        expected: u64,
        /// Byte offset where it ended.
        offset: u64,
    },
    /// A value could not be decoded.
    #[error("export corrupt at record {index} (byte {offset}): {reason}")]
    Corrupt {
        /// The record's position.
        index: u64,
        /// Byte offset of the value.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The records' bytes do not match the trailer's checksum.
    #[error("export checksum mismatch: trailer says {expected}, records hash to {actual}")]
    ChecksumMismatch {
        /// The trailer's checksum.
        expected: String,
        /// The records' checksum.
        actual: String,
    },
    /// The header and trailer disagree on the count.
    #[error("export count mismatch: header says {header}, trailer says {trailer}")]
    CountMismatch {
        /// The header's count.
        header: u64,
        /// The trailer's count.
        trailer: u64,
    },
    /// Not an export this version can read.
    #[error("unsupported export: format `{format}` version {version}")]
    Unsupported {
        /// The header's format.
        format: String,
        /// The header's version.
        version: u32,
    },
    /// The header says something the records contradict (a field rewritten along with
    /// the checksum, or a writer's bug).
    #[error(
        "export header field `{field}` disagrees with the records: {reason}; the file was changed or damaged, export it again"
    )]
    HeaderMismatch {
        /// The header field, e.g. `next_cursor`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file has no MAC to verify.
    #[error(
        "export has no mac (version {version}): it was written before version 2 or without an anonymization key; read it with read_export, or export again from a collector with a key"
    )]
    MacMissing {
        /// The file's layout version.
        version: u32,
    },
    /// The file's MAC does not match the MAC key.
    #[error(
        "export mac does not match the mac key: the file was changed, or signed under another key (check the mac key file with `arbiter-events key mac`)"
    )]
    MacMismatch,
    /// A MAC key could not be read.
    #[error("invalid mac key: {reason}")]
    InvalidMacKey {
        /// What is wrong, with the path when read from a file.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode export: {0}")]
    Encode(String),
    /// The data directory could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The data directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. `create segment`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another collector holds the directory's lock.
    #[error(
        "data directory {path} is in use by another writer; stop it, or point storage.data_dir elsewhere (readers need no lock)"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The path is not a data directory.
    #[error("{path} is not a data directory (no `segments` folder); record into it first")]
    NotADataDir {
        /// The path given.
        path: PathBuf,
    },
    /// A segment is damaged before its end.
    #[error(
        "segment {path} is damaged at byte {offset} (expected seq {expected_seq}): {reason}; {bytes_after} bytes follow; run `arbiter-events verify` to see it, then `arbiter-events repair` (or reopen with storage.on_damage = \"truncate\") to set it aside and keep the valid frames"
    )]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// The seq the frame there should have had.
        expected_seq: u64,
        /// What is wrong.
        reason: String,
        /// Bytes of the file from the damage on.
        bytes_after: u64,
    },
    /// A consumer name is not usable as a file name.
    #[error(
        "consumer name {name:?} is invalid: use 1 to 64 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`"
    )]
    InvalidConsumer {
        /// The name given.
        name: String,
    },
    /// A committed cursor file cannot be read.
    #[error(
        "cursor file {path} is corrupt: {reason}; set it with `arbiter-events consumer reset NAME --to SEQ`, or delete it to pull from the start"
    )]
    BadCursor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The log of deleted seq ranges (`pruned.json`) cannot be read.
    #[error(
        "pruned-range log {path} is corrupt: {reason}; restore it from a backup (without it, gaps cannot be explained and deleted seqs could be given again)"
    )]
    BadPrunedLog {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A range in the log of deleted seq ranges cannot have been noted by a writer: it
    /// starts at 0, ends before it starts, or ends at `u64::MAX` (the next seq would wrap).
    #[error(
        "pruned-range log {path} holds the impossible range {from_seq}..={to_seq} (seqs run from 1 and the next seq must stay below u64::MAX); correct or remove that entry, or restore the file from a backup"
    )]
    BadPrunedRange {
        /// The file.
        path: PathBuf,
        /// The range's first seq.
        from_seq: u64,
        /// The range's last seq.
        to_seq: u64,
    },
    /// The directory's key file is missing while its segments were pseudonymized: a new
    /// key would make pseudonyms that no longer link to the old ones.
    #[error(
        "key file {path} is missing, but the segments were pseudonymized under key id {segments_key_id}; restore the key file, or rotate the key on purpose (`--rotate-key`, or `KeyRotation::Rotate` on the builder) so that new pseudonyms start that will not link to the old ones"
    )]
    KeyFileMissing {
        /// The key file.
        path: PathBuf,
        /// The key id of the newest pseudonymized segment.
        segments_key_id: String,
    },
    /// The directory's key file holds another key than the newest segments were made
    /// under: pseudonyms would stop linking.
    #[error(
        "key file {path} holds key id {key_id}, but the newest segments were pseudonymized under key id {segments_key_id}; restore the original key file, or rotate the key on purpose (`--rotate-key`, or `KeyRotation::Rotate` on the builder) so that new pseudonyms start that will not link to the old ones"
    )]
    KeyFileChanged {
        /// The key file.
        path: PathBuf,
        /// The key id of the key in the file.
        key_id: String,
        /// The key id of the newest pseudonymized segment.
        segments_key_id: String,
    },
    /// A cursor to commit is ahead of the last record on disk.
    #[error(
        "cannot commit cursor {after} for consumer {consumer:?}: the last seq on disk is {last_seq}"
    )]
    CursorAhead {
        /// The consumer.
        consumer: String,
        /// The cursor given.
        after: u64,
        /// The last seq in the directory (0 if none).
        last_seq: u64,
    },
}

impl StorageError {
    /// A closure turning an I/O error into [`StorageError::Io`] about `path`.
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
        move |source| StorageError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// A shutdown did not resolve every event in time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The timeout ran out; the report says what was stored and what is lost.
    #[error("shutdown timed out after {timeout:?} with {} events unresolved", report.unresolved)]
    TimedOut {
        /// The timeout given.
        timeout: Duration,
        /// What was stored and lost.
        report: Box<crate::collector::ShutdownReport>,
    },
}
