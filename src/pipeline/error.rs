//! Typed errors, one enum per operation.

use std::time::Duration;

use crate::contract::config::ConfigError;
use crate::contract::event::{Event, ValidationError};
use crate::contract::key::KeyError;
use crate::pipeline::execution::TaskExecution;
use crate::storage::log::StorageError;
use crate::storage::log::dir::KeyFileError;

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

impl From<KeyFileError> for BuildError {
    fn from(e: KeyFileError) -> BuildError {
        match e {
            KeyFileError::Key(e) => BuildError::Key(e),
            KeyFileError::Storage(e) => BuildError::Storage(e),
        }
    }
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
        report: Box<crate::pipeline::collector::ShutdownReport>,
    },
}
