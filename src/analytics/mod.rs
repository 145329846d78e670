//! Reports for operators: online, time-bucketed aggregates of the record stream, grouped
//! overall, per agent, per event kind and per routing strategy, with percentiles from
//! mergeable quantile sketches.
//!
//! Distributions are [DDSketch]es: every percentile in a [`Report`] is within a relative
//! error of [`DEFAULT_RELATIVE_ERROR`] (1 %) of the exact percentile of the same values.
//! A report over a window merges the window's buckets, so its cost is proportional to
//! buckets × groups, never to the number of records; a by-agent report over a window
//! covering every bucket kept takes each agent's total from a span pre-merged as buckets
//! close, so without a trend its cost is proportional to agents.
//!
//! [DDSketch]: https://arxiv.org/abs/1908.10693

mod aggregates;
mod alerts;
mod history;
mod report;
mod sketch;
mod tally;
mod view;

pub use crate::contract::analytics::{
    AlertKind, AlertRule, AlertRuleError, AlertScope, AnalyticsConfig, DEFAULT_BUCKET_SECS,
    DEFAULT_BUCKETS, DEFAULT_MAX_AGENTS, DEFAULT_MIN_SAMPLES, MAX_AGENTS, MAX_BUCKET_SECS,
    MAX_BUCKETS,
};
pub(crate) use aggregates::{Aggregates, IdView, Verbatim};
pub use alerts::Alert;
pub(crate) use alerts::Alerting;
#[allow(deprecated)]
pub use history::HISTORY_CHUNK;
pub use history::ReportError;
pub use report::{
    BudgetFigures, CawsFigures, EvaluationFigures, Figures, GroupReport, Grouping, OTHER_GROUP,
    Report, ReportRequest, RuleCount, SeverityCounts, TOP_RULES, TaskFigures, TrainingFigures,
    Trend, TrendPoint, Window,
};
pub use sketch::{DEFAULT_RELATIVE_ERROR, Series, Summary};
pub use tally::OTHER_RULES;
use view::EventView;

use crate::contract::clock::unix_nanos;
use crate::contract::config::ConfigError;
use crate::contract::event::Event;
use crate::storage::export::Record;
use time::OffsetDateTime;

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
    alerting: Alerting,
    bucket_secs: u64,
    buckets: usize,
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
            alerting: Alerting::default(),
            bucket_secs: config.bucket_secs,
            buckets: config.buckets,
            newest: None,
        })
    }

    /// Watches `rules` from now on, keeping the state (holding time, cooldown) of rules
    /// that are unchanged.
    ///
    /// # Errors
    ///
    /// [`AlertRuleError`] naming the first broken rule; the rules watched before stay.
    pub fn set_alerts(&mut self, rules: Vec<AlertRule>) -> Result<(), AlertRuleError> {
        let next = Alerting::new(rules, self.bucket_secs, self.buckets)?;
        self.alerting.replace(next);
        Ok(())
    }

    /// The rules watched.
    pub fn alerts(&self) -> &[AlertRule] {
        self.alerting.rules()
    }

    /// Evaluates every rule at `now` over the window of buckets ending with the one `now`
    /// falls in, returning the alerts that fire: a condition must hold for the rule's
    /// `for_secs` (across evaluations) and a rule fires at most once per `cooldown_secs`
    /// per group.
    pub fn evaluate(&mut self, now: OffsetDateTime) -> Vec<Alert> {
        self.alerting.evaluate(&self.inner, unix_nanos(now))
    }

    /// Folds a record in. Records are expected in seq order (so time never goes back);
    /// a record older than the newest bucket is counted in the newest bucket.
    pub fn add(&mut self, record: &Record) {
        self.add_event(record.time, &record.event);
    }

    /// Folds an event in at `time`, its identifiers taken as they are. Times are expected
    /// not to go back; an event older than the newest bucket is counted in the newest.
    pub fn add_event(&mut self, time: OffsetDateTime, event: &Event) {
        self.add_view(unix_nanos(time), &EventView::from(event));
    }

    /// Folds an event in at `time` (unix nanoseconds), as the aggregates read it.
    pub(crate) fn add_view(&mut self, time: i64, event: &EventView<'_>) {
        let time = time.max(self.newest.unwrap_or(i64::MIN));
        self.newest = Some(time);
        self.inner.add_view(time, event, &mut Verbatim);
    }

    /// The report of `request`; a [`Window::Last`] ends at the newest record's time
    /// (or the Unix epoch when there is none).
    pub fn report(&self, request: &ReportRequest) -> Report {
        let now = self.newest.map_or(0, |t| t.saturating_add(1));
        self.inner.report(request, now)
    }

    /// The report of `request`, with `now` the end of a [`Window::Last`].
    pub fn report_at(&self, request: &ReportRequest, now: OffsetDateTime) -> Report {
        self.inner.report(request, unix_nanos(now))
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
