//! Reports for operators: online, time-bucketed aggregates of the record stream, grouped
//! overall, per agent, per event kind and per routing strategy, with percentiles from
//! mergeable quantile sketches.
//!
//! Distributions are [DDSketch]es: every percentile in a [`Report`] is within a relative
//! error of [`DEFAULT_RELATIVE_ERROR`] (1 %) of the exact percentile of the same values.
//! A report over a window merges the window's buckets, so its cost is proportional to
//! buckets × groups, never to the number of records.
//!
//! [DDSketch]: https://arxiv.org/abs/1908.10693

mod aggregates;
mod config;
mod report;
mod sketch;
mod tally;

pub(crate) use aggregates::{Aggregates, Verbatim};
pub use config::{
    AnalyticsConfig, DEFAULT_BUCKET_SECS, DEFAULT_BUCKETS, DEFAULT_MAX_AGENTS, MAX_AGENTS,
    MAX_BUCKET_SECS, MAX_BUCKETS,
};
pub use report::{
    BudgetFigures, CawsFigures, EvaluationFigures, Figures, GroupReport, Grouping, OTHER_GROUP,
    Report, ReportRequest, RuleCount, SeverityCounts, TOP_RULES, TaskFigures, TrainingFigures,
    Trend, TrendPoint, Window,
};
pub use sketch::{DEFAULT_RELATIVE_ERROR, Series, Summary};
pub use tally::OTHER_RULES;

use crate::clock::unix_nanos;
use crate::error::ConfigError;
use crate::export::Record;

/// Aggregates built from records read back (from an export or a data directory), for
/// reports over them.
///
/// ```
/// use std::time::Duration;
/// use arbiter_events::{Aggregator, AnalyticsConfig, Collector, Config, Cursor, ExportRequest, ReportRequest};
///
/// let collector = Collector::new(Config::default())?;
/// // ... record, flush ...
/// let export = collector.export(&ExportRequest::after(Cursor::START))?;
/// let mut aggregator = Aggregator::new(&AnalyticsConfig::default())?;
/// for record in export.records() {
///     aggregator.add(&record?);
/// }
/// let report = aggregator.report(&ReportRequest::last(Duration::from_secs(3600)));
/// assert_eq!(report.records, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Aggregator {
    inner: Aggregates,
    newest: Option<i64>,
}

impl Aggregator {
    /// Empty aggregates with `config`'s buckets and agent bound.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `config` breaks a rule.
    pub fn new(config: &AnalyticsConfig) -> Result<Aggregator, ConfigError> {
        config.validate()?;
        Ok(Aggregator {
            inner: Aggregates::new(config),
            newest: None,
        })
    }

    /// Folds a record in. Records are expected in seq order (so time never goes back);
    /// a record older than the newest bucket is counted in the newest bucket.
    pub fn add(&mut self, record: &Record) {
        let time = unix_nanos(record.time).max(self.newest.unwrap_or(i64::MIN));
        self.newest = Some(time);
        self.inner.add(time, &record.event, &mut Verbatim);
    }

    /// The report of `request`; a [`Window::Last`] ends at the newest record's time
    /// (or the Unix epoch when there is none).
    pub fn report(&self, request: &ReportRequest) -> Report {
        let now = self.newest.map_or(0, |t| t.saturating_add(1));
        self.inner.report(request, now)
    }

    /// Records folded in.
    pub fn records(&self) -> u64 {
        self.inner.records
    }

    /// Agents with a row of their own now.
    pub fn tracked_agents(&self) -> usize {
        self.inner.tracked_agents()
    }

    /// Bytes held by the aggregates (buckets, sketches, agent and task tables).
    pub fn memory_bytes(&self) -> usize {
        self.inner.bytes()
    }
}

#[cfg(test)]
mod tests;
