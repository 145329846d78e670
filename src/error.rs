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
    /// Both `anonymization.key_hex` and `anonymization.key_file` are set.
    #[error("anonymization.key_hex and anonymization.key_file are both set; keep one")]
    ConflictingKeySources,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The worker did not catch up within the timeout.
    #[error("flush timed out after {0:?}")]
    Timeout(Duration),
    /// The collector is shut down.
    #[error("flush failed: the collector is shut down")]
    ShutDown,
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
    /// A value could not be encoded.
    #[error("cannot encode export: {0}")]
    Encode(String),
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
