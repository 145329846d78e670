//! Reports: the figures of a window of buckets, overall or per group, with a trend.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::aggregates::{Aggregates, Bucket, STRATEGIES};
use super::sketch::{Mapping, Series, Summary};
use super::tally::{ABANDONED, OTHER_RULES, Tally};

use crate::contract::clock::{datetime, unix_nanos};
use crate::contract::event::EventKind;

/// CAWS rules listed per group, most violated first.
pub const TOP_RULES: usize = 10;

/// The group a report row stands for when agents beyond `analytics.max_agents` were
/// folded together.
pub const OTHER_GROUP: &str = "other";

/// Which records a report covers, by record time. A report covers whole buckets: the
/// window is widened to bucket edges, and the report says what it covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last `Duration` up to now (the collector's clock, or the newest record read
    /// back from a data directory).
    Last(Duration),
    /// From `since` (inclusive) to `until` (exclusive).
    Between {
        /// The start.
        since: OffsetDateTime,
        /// The end.
        until: OffsetDateTime,
    },
}

/// How a report's rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Grouping {
    /// One row for everything.
    #[default]
    Overall,
    /// One row per agent (by pseudonym when anonymization is on), then `other`.
    ByAgent,
    /// One row per event kind.
    ByKind,
    /// One row per routing strategy, counting the events of tasks routed with it.
    ByStrategy,
}

/// Whether rows carry their figures bucket by bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Trend {
    /// Each row has a point per bucket of the window.
    #[default]
    PerBucket,
    /// Rows have only the window's figures.
    None,
}

/// What to report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportRequest {
    /// The records covered.
    pub window: Window,
    /// The rows.
    pub grouping: Grouping,
    /// With [`Grouping::ByAgent`], only this agent's row (as reports name it).
    pub agent: Option<String>,
    /// Per-bucket points.
    pub trend: Trend,
}

impl ReportRequest {
    /// The last `window` up to now, overall, with a trend.
    pub fn last(window: Duration) -> ReportRequest {
        ReportRequest {
            window: Window::Last(window),
            grouping: Grouping::Overall,
            agent: None,
            trend: Trend::PerBucket,
        }
    }

    /// `since` (inclusive) to `until` (exclusive), overall, with a trend.
    pub fn between(since: OffsetDateTime, until: OffsetDateTime) -> ReportRequest {
        ReportRequest {
            window: Window::Between { since, until },
            ..ReportRequest::last(Duration::ZERO)
        }
    }

    /// Groups the rows.
    pub fn by(mut self, grouping: Grouping) -> ReportRequest {
        self.grouping = grouping;
        self
    }

    /// One agent's row only (implies [`Grouping::ByAgent`]).
    pub fn agent(mut self, agent: impl Into<String>) -> ReportRequest {
        self.grouping = Grouping::ByAgent;
        self.agent = Some(agent.into());
        self
    }

    /// Whether rows carry per-bucket points.
    pub fn trend(mut self, trend: Trend) -> ReportRequest {
        self.trend = trend;
        self
    }
}

/// A report: the window it covered and one row per group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The first instant covered (a bucket edge).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The first instant after the window (a bucket edge).
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// Width of one bucket, in seconds.
    pub bucket_secs: u64,
    /// The rows' grouping.
    pub grouping: Grouping,
    /// Records in the window.
    pub records: u64,
    /// Agents folded into the `other` row since the aggregates began.
    pub folded_agents: u64,
    /// Records in the window that the live analytics stage did not fold because it had
    /// fallen behind (`Collector::analytics().skipped` counts them over all time): the
    /// figures undercount by this many. Always 0 for reports over records read back.
    pub skipped: u64,
    /// The rows: `overall` first for [`Grouping::Overall`], else one per group with
    /// records in the window, largest first (then by name), `other` last.
    pub groups: Vec<GroupReport>,
}

/// One row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GroupReport {
    /// `overall`, the agent, the event kind, the strategy, or `other`.
    pub group: String,
    /// The figures of the whole window.
    pub figures: Figures,
    /// The figures bucket by bucket, oldest first (buckets with no record are left out).
    pub trend: Vec<TrendPoint>,
}

/// One bucket of a row's trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TrendPoint {
    /// The bucket's start.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Its figures.
    pub figures: Figures,
}

/// The figures of a row or a bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Figures {
    /// Records.
    pub events: u64,
    /// Records per event kind (kinds with none left out).
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Task ends.
    pub tasks: TaskFigures,
    /// Task duration (completed and abandoned), milliseconds.
    pub duration_ms: Option<Summary>,
    /// Tokens consumed by completed tasks.
    pub tokens_consumed: u64,
    /// Thinking budgets used.
    pub budget: BudgetFigures,
    /// Constitutional (CAWS) validations.
    pub caws: CawsFigures,
    /// Judgment overall scores.
    pub judgment_score: Option<Summary>,
    /// Evaluation outcomes.
    pub evaluation: EvaluationFigures,
    /// Routing decisions' confidence.
    pub routing_confidence: Option<Summary>,
    /// RL training metrics.
    pub training: TrainingFigures,
}

/// How tasks ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TaskFigures {
    /// Ends of every kind.
    pub ended: u64,
    /// Completed, succeeded.
    pub succeeded: u64,
    /// Completed, failed.
    pub failed: u64,
    /// Completed, timed out.
    pub timed_out: u64,
    /// Completed, cancelled.
    pub cancelled: u64,
    /// Dropped without completion.
    pub abandoned: u64,
    /// `succeeded / ended`, when any ended.
    pub success_rate: Option<f64>,
    /// `(failed + timed_out) / ended`, when any ended.
    pub error_rate: Option<f64>,
}

/// Thinking-budget use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BudgetFigures {
    /// Uses recorded.
    pub uses: u64,
    /// Uses over their allocation.
    pub overspent: u64,
    /// `overspent / uses`, when any.
    pub overspent_share: Option<f64>,
    /// `tokens_used / tokens_allocated` per use.
    pub utilization: Option<Summary>,
    /// Uses per utilization band: `[0, 0.25)`, `[0.25, 0.5)`, … `[1.5, 1.75)`, then
    /// `1.75` and over (uses with no allocation are left out).
    pub utilization_bands: [u64; 8],
}

/// CAWS validations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CawsFigures {
    /// Validations.
    pub validations: u64,
    /// Valid ones.
    pub passed: u64,
    /// `passed / validations`, when any.
    pub pass_rate: Option<f64>,
    /// Violations by severity.
    pub violations: SeverityCounts,
    /// The most violated rules, at most [`TOP_RULES`], most first.
    pub top_rules: Vec<RuleCount>,
    /// Compliance scores.
    pub compliance: Option<Summary>,
}

/// Violations per severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SeverityCounts {
    /// Low.
    pub low: u64,
    /// Medium.
    pub medium: u64,
    /// High.
    pub high: u64,
    /// Critical.
    pub critical: u64,
}

/// One rule's violations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RuleCount {
    /// The rule id, or `(other)`.
    pub rule: String,
    /// Violations of it.
    pub violations: u64,
}

/// Evaluation outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EvaluationFigures {
    /// Outcomes.
    pub count: u64,
    /// Passed ones.
    pub passed: u64,
    /// `passed / count`, when any.
    pub pass_rate: Option<f64>,
    /// Scores.
    pub score: Option<Summary>,
}

/// RL training metrics as series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TrainingFigures {
    /// Average reward.
    pub reward: Option<Series>,
    /// Policy loss.
    pub policy_loss: Option<Series>,
    /// Value loss.
    pub value_loss: Option<Series>,
    /// KL divergence.
    pub kl_divergence: Option<Series>,
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl Figures {
    pub(crate) fn of(t: &Tally, mapping: &Mapping) -> Figures {
        let count = |k: EventKind| t.events[k.index()];
        let ends = t.task_ends;
        let ended: u64 = ends.iter().sum();
        let uses = count(EventKind::ThinkingBudgetUsed);
        let validations = count(EventKind::ConstitutionalValidation);
        let evaluations = count(EventKind::EvaluationOutcome);
        let mut rules: Vec<RuleCount> = t
            .rules
            .iter()
            .map(|(rule, n)| RuleCount {
                rule: rule.to_string(),
                violations: *n,
            })
            .collect();
        rules.sort_by(|a, b| {
            (a.rule == OTHER_RULES)
                .cmp(&(b.rule == OTHER_RULES))
                .then(b.violations.cmp(&a.violations))
                .then(a.rule.cmp(&b.rule))
        });
        rules.truncate(TOP_RULES);
        Figures {
            events: t.total_events(),
            by_kind: EventKind::ALL
                .iter()
                .filter(|k| count(**k) > 0)
                .map(|k| (k.as_str(), count(*k)))
                .collect(),
            tasks: TaskFigures {
                ended,
                succeeded: ends[0],
                failed: ends[1],
                timed_out: ends[2],
                cancelled: ends[3],
                abandoned: ends[ABANDONED],
                success_rate: ratio(ends[0], ended),
                error_rate: ratio(ends[1] + ends[2], ended),
            },
            duration_ms: t.duration_ms.summary(mapping),
            tokens_consumed: t.tokens_consumed,
            budget: BudgetFigures {
                uses,
                overspent: t.budget_overspent,
                overspent_share: ratio(t.budget_overspent, uses),
                utilization: t.budget_utilization.summary(mapping),
                utilization_bands: t.budget_bands,
            },
            caws: CawsFigures {
                validations,
                passed: t.caws_passed,
                pass_rate: ratio(t.caws_passed, validations),
                violations: SeverityCounts {
                    low: t.violations[0],
                    medium: t.violations[1],
                    high: t.violations[2],
                    critical: t.violations[3],
                },
                top_rules: rules,
                compliance: t.compliance.summary(mapping),
            },
            judgment_score: t.judgment.summary(mapping),
            evaluation: EvaluationFigures {
                count: evaluations,
                passed: t.evaluations_passed,
                pass_rate: ratio(t.evaluations_passed, evaluations),
                score: t.evaluation.summary(mapping),
            },
            routing_confidence: t.confidence.summary(mapping),
            training: TrainingFigures {
                reward: t.reward.series(),
                policy_loss: t.policy_loss.series(),
                value_loss: t.value_loss.series(),
                kl_divergence: t.kl_divergence.series(),
            },
        }
    }
}

/// A row under construction: the window's tally (borrowed from an agent's span until
/// something is merged into it) and the per-bucket points (borrowed from the buckets,
/// except the overall row's, which are merged per bucket).
struct Row<'a> {
    name: String,
    total: Cow<'a, Tally>,
    trend: Vec<(i64, Cow<'a, Tally>)>,
}

impl<'a> Row<'a> {
    fn new(name: String) -> Row<'a> {
        Row {
            name,
            total: Cow::Owned(Tally::default()),
            trend: Vec::new(),
        }
    }

    fn add(&mut self, start: i64, tally: Cow<'a, Tally>, trend: Trend) {
        if tally.total_events() == 0 {
            return;
        }
        self.total.to_mut().merge(&tally);
        self.point(start, tally, trend);
    }

    /// A trend point only: its tally is already in `total`.
    fn point(&mut self, start: i64, tally: Cow<'a, Tally>, trend: Trend) {
        if trend == Trend::PerBucket && tally.total_events() > 0 {
            self.trend.push((start, tally));
        }
    }

    fn finish(self, mapping: &Mapping) -> GroupReport {
        GroupReport {
            group: self.name,
            figures: Figures::of(&self.total, mapping),
            trend: self
                .trend
                .iter()
                .map(|(start, t)| TrendPoint {
                    start: datetime(*start),
                    figures: Figures::of(t, mapping),
                })
                .collect(),
        }
    }
}

/// Where a by-agent report takes its rows' totals from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Totals {
    /// From the agents' spans when the window covers every bucket kept, else from the
    /// buckets.
    Spans,
    /// From the buckets, always (the reference the spans are checked against).
    #[cfg_attr(not(test), allow(dead_code))]
    Buckets,
}

impl Aggregates {
    /// The report of `request`, with `now` the end of a [`Window::Last`]. Its cost is a
    /// merge per bucket and group with records (bin counts added, nothing allocated per
    /// record) and the figures of each row: proportional to buckets × groups. A by-agent
    /// report over a window covering every bucket kept (`last(1h)` with the defaults)
    /// takes each agent's total from its span and newest bucket row instead, with the
    /// same figures: without a trend, its cost is proportional to agents.
    pub(crate) fn report(&self, request: &ReportRequest, now: i64) -> Report {
        self.report_from(request, now, Totals::Spans)
    }

    /// The report of `request`, the by-agent rows' totals taken from `totals`.
    pub(crate) fn report_from(&self, request: &ReportRequest, now: i64, totals: Totals) -> Report {
        let (since, until) = match request.window {
            Window::Last(d) => {
                let d = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
                (now.saturating_sub(d), now)
            }
            Window::Between { since, until } => (unix_nanos(since), unix_nanos(until)),
        };
        // Whole buckets: from the one `since` falls in to the one before the edge at or
        // after `until` (an instant exactly on an edge belongs to the bucket it starts).
        let first = self.bucket_start(since);
        let end = match self.bucket_start(until) {
            edge if edge == until => edge,
            edge => edge.saturating_add(self.width),
        };
        let end = end.max(first);
        let window: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.start >= first && b.start < end)
            .collect();
        let trend = request.trend;
        // Rows are finished as they are built, so that a row merged into a copy of a span
        // is read back while it is still in cache, and freed for the next.
        let mapping = &self.mapping;
        let mut rows: Vec<GroupReport> = Vec::new();
        let mut other = Row::new(OTHER_GROUP.to_string());
        match request.grouping {
            Grouping::Overall => {
                let mut row = Row::new("overall".to_string());
                for b in &window {
                    let mut all = Tally::default();
                    b.overall_into(&mut all);
                    row.add(b.start, Cow::Owned(all), trend);
                }
                rows.push(row.finish(mapping));
            }
            Grouping::ByKind => {
                for (i, kind) in EventKind::ALL.iter().enumerate() {
                    let mut row = Row::new(kind.as_str().to_string());
                    for b in &window {
                        row.add(b.start, Cow::Borrowed(&b.kinds[i]), trend);
                    }
                    rows.push(row.finish(mapping));
                }
            }
            Grouping::ByStrategy => {
                for (i, (_, name)) in STRATEGIES.iter().enumerate() {
                    let mut row = Row::new(name.to_string());
                    for b in &window {
                        row.add(b.start, Cow::Borrowed(&b.strategies[i]), trend);
                    }
                    rows.push(row.finish(mapping));
                }
            }
            Grouping::ByAgent => {
                // The spans hold the closed buckets' rows: usable when the window holds
                // every bucket kept.
                let spans = totals == Totals::Spans
                    && self.buckets.front().is_some_and(|b| b.start >= first)
                    && self.buckets.back().is_some_and(|b| b.start < end);
                let (closed, newest) = match window.split_last() {
                    Some((newest, closed)) if spans => (closed, Some(*newest)),
                    _ => (&window[..], None),
                };
                // Agent by agent, so that the row being merged into stays in cache while
                // the buckets' rows stream past.
                for slot in self.tracked_slots() {
                    let Some(agent) = self.agent(slot) else {
                        continue;
                    };
                    if request.agent.as_deref().is_some_and(|a| a != &*agent.name) {
                        continue;
                    }
                    let mut row = Row::new(agent.name.to_string());
                    if spans {
                        row.total = Cow::Borrowed(&agent.span);
                    }
                    for b in closed {
                        if let Some(tally) = b.agents.get(&slot) {
                            if spans {
                                row.point(b.start, Cow::Borrowed(tally), trend);
                            } else {
                                row.add(b.start, Cow::Borrowed(tally), trend);
                            }
                        }
                    }
                    if let Some(tally) = newest.and_then(|b| b.agents.get(&slot)) {
                        row.add(newest.map_or(0, |b| b.start), Cow::Borrowed(tally), trend);
                    }
                    rows.push(row.finish(mapping));
                }
                if request.agent.is_none() {
                    for b in &window {
                        other.add(b.start, Cow::Borrowed(&b.other), trend);
                    }
                }
            }
        }
        let mut groups: Vec<GroupReport> = rows
            .into_iter()
            .filter(|r| r.figures.events > 0 || request.grouping == Grouping::Overall)
            .collect();
        if request.grouping != Grouping::Overall {
            groups.sort_by(|a, b| {
                b.figures
                    .events
                    .cmp(&a.figures.events)
                    .then_with(|| a.group.cmp(&b.group))
            });
        }
        if other.total.total_events() > 0 {
            groups.push(other.finish(mapping));
        }
        Report {
            since: datetime(first),
            until: datetime(end),
            bucket_secs: (self.width / 1_000_000_000) as u64,
            grouping: request.grouping,
            records: window
                .iter()
                .flat_map(|b| &b.kinds)
                .map(Tally::total_events)
                .sum(),
            folded_agents: self.folded_agents,
            skipped: 0,
            groups,
        }
    }
}
