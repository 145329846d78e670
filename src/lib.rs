#![deny(missing_docs)]
//! # arbiter-events
//!
//! A bounded, anonymizing event collector for agent arbiters, with incremental
//! MessagePack exports for RL training pipelines.
//!
//! ```
//! use std::time::Duration;
//! use arbiter_events::{
//!     read_export, Collector, Config, Cursor, Event, ExportRequest, RoutingDecision, RoutingStrategy,
//! };
//!
//! // Build: validates the config, picks the anonymization key, starts the ingest worker.
//! let collector = Collector::new(Config::default())?;
//!
//! // Record from any thread: validated, never blocks by default.
//! collector.record(Event::RoutingDecision(RoutingDecision {
//!     task_id: "task-42".into(),
//!     selected_agent: "agent-a".into(),
//!     strategy: RoutingStrategy::CapabilityMatch,
//!     confidence: 0.92,
//!     alternatives: vec![],
//!     rationale: "best capability match".into(),
//! }))?;
//! collector.flush(Duration::from_secs(5))?;
//!
//! // Export everything after a cursor; keep `next_cursor` for the next increment.
//! let export = collector.export(&ExportRequest::after(Cursor::START))?;
//! let bytes = export.to_msgpack();
//! let file = read_export(bytes.as_slice())?;
//! assert_eq!(file.records.len(), 1);
//! let Event::RoutingDecision(decision) = &file.records[0].event else { unreachable!() };
//! assert!(decision.task_id.starts_with("tsk_")); // a keyed pseudonym, not "task-42"
//! assert_eq!(export.next_cursor(), Cursor::after_seq(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## What it guarantees
//! - **Every event is accounted for**: `submitted = stored + dropped + rejected + in_flight`
//!   and `stored + recovered = retained + pruned` in every [`Stats`] snapshot.
//! - **`seq` is strictly increasing** from 1 and never reused; `time` never decreases in `seq` order.
//! - **Memory is bounded** by the queue capacity, `retention.max_events`,
//!   `retention.max_bytes` and the memo capacity, whatever the input rate.
//! - **Private by construction**: with anonymization on (the default), identifiers
//!   become keyed BLAKE3 pseudonyms and free text is redacted before anything is stored.
//! - **Exactly-once increments**: successive exports from [`Cursor::START`] concatenate
//!   to every retained record once, in order; records pruned before they were pulled are
//!   reported as a [`Gap`], never silently skipped.
//! - **Deterministic exports**: the same records, request and key give the same bytes.
//! - **Durable when asked**: with `storage.data_dir` set, records go to checksummed
//!   segment files; under [`Durability::EveryBatch`] (the default) a completed `flush`
//!   means on disk; reopening recovers the longest valid prefix and reports what it cut.
//!   [`DataDir`] reads the directory from any process, with named consumers' cursors.
//!
//! ## It is not
//! - a tracing or logging framework (no spans, no levels, no subscribers);
//! - a metrics backend: its reports and alerts cover its own records (bounded
//!   aggregates with DDSketch percentiles), not arbitrary time series;
//! - a network service: the library does no network I/O (exports are bytes you write
//!   where you like); the HTTP server behind the `serve` feature is an adapter over this API;
//! - a replicated log: one writer per data directory, on one machine.

// The layers, lowest first: contract, codec, storage, analytics, pipeline. Each imports
// only the layers below it (ARCHITECTURE.md, "Layers"; enforced by tests/layering.rs).
mod analytics;
mod codec;
mod contract;
mod pipeline;
mod storage;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "nats")]
pub mod relay;

#[cfg(feature = "serve")]
pub mod serve;

/// MessagePack helpers the crate's network adapters share; not a stable API.
#[doc(hidden)]
pub mod wire {
    pub use crate::codec::msgpack::value_len;
}

#[allow(deprecated)]
pub use analytics::HISTORY_CHUNK;
pub use analytics::{
    Aggregator, Alert, AlertKind, AlertRule, AlertRuleError, AlertScope, AnalyticsConfig,
    BudgetFigures, CawsFigures, DEFAULT_BUCKET_SECS, DEFAULT_BUCKETS, DEFAULT_MAX_AGENTS,
    DEFAULT_MIN_SAMPLES, DEFAULT_RELATIVE_ERROR, EvaluationFigures, Figures, GroupReport, Grouping,
    MAX_AGENTS, MAX_BUCKET_SECS, MAX_BUCKETS, OTHER_GROUP, OTHER_RULES, Report, ReportError,
    ReportRequest, RuleCount, Series, SeverityCounts, Summary, TOP_RULES, TaskFigures,
    TrainingFigures, Trend, TrendPoint, Window,
};
pub use codec::anonymize::{Pseudonymizer, REDACTED};
pub use contract::clock::{Clock, ManualClock, SystemClock};
pub use contract::config::*;
pub use contract::event::*;
pub use contract::key::{AnonymizationKey, IdKind, KEY_ENV, KeyError, KeyOrigin};
pub use pipeline::collector::{
    ABANDON_MAX_WAIT, Collector, CollectorBuilder, DROP_FLUSH_TIMEOUT, ShutdownReport,
};
pub use pipeline::error::{
    BuildError, CompleteError, FlushError, RecordError, ShutdownError, TryRecordError,
};
pub use pipeline::execution::TaskExecution;
pub use pipeline::live::{
    ALERT_SUBSCRIBER_CAPACITY, AlertReceiver, AnalyticsStats, EVALUATE_EVERY, LIVE_QUEUE_BATCHES,
};
#[cfg(feature = "nats")]
pub use relay::{
    Puller, Relay, RelayConfig, RelayError, RelayStatus, RelayStopper, RunMode,
    read_statuses as read_relay_statuses,
};
pub use storage::export::ExportError;
pub use storage::export::{
    Cursor, EXPORT_FORMAT, EXPORT_VERSION, EXPORT_VERSION_1, Export, ExportFile, ExportHeader,
    ExportMerger, ExportRequest, ExportTrailer, Gap, GapReason, MacKey, Record, SourceRange,
    read_export, read_export_verified,
};
pub use storage::log::StorageError;
pub use storage::log::{
    Damage, DataDir, KeyRotation, RecoveryReport, SegmentReport, StorageStats, VerifyReport,
};
pub use storage::stats::{Dropped, KindCount, Pruned, State, Stats, TaskStats, TaskWindow};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
