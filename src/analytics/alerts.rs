//! Alert rules over the aggregates: conditions on a sliding window of buckets, overall
//! or per agent, that must hold for a while before they fire and then stay quiet for a
//! cooldown.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::aggregates::Aggregates;
use super::report::Figures;
use super::tally::Tally;
use crate::contract::event::Severity;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// The window's p95 task duration (ms) is above `threshold`, or above
    /// `baseline_factor` × the p95 of the trailing baseline.
    LatencySpike,
    /// The window's success rate is below `threshold`, or below the baseline's by more
    /// than `max_drop`.
    SuccessRateDrop,
    /// The window's p95 budget utilization (used / allocated) is above `threshold`, or the
    /// share of overspending uses is above `max_share`.
    TokenOveruse,
    /// The window's `(failed + timed_out) / ended` is above `threshold`.
    ErrorRate,
    /// The window holds more than `threshold` violations at or above `min_severity`.
    CawsViolations,
}

impl AlertKind {
    /// The name in configuration and in `AnomalyDetected` records.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::LatencySpike => "latency_spike",
            AlertKind::SuccessRateDrop => "success_rate_drop",
            AlertKind::TokenOveruse => "token_overuse",
            AlertKind::ErrorRate => "error_rate",
            AlertKind::CawsViolations => "caws_violations",
        }
    }
}

/// Whether a rule watches everything together or each agent on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertScope {
    /// All records together.
    #[default]
    Overall,
    /// Each tracked agent separately (agents folded into `other` are not watched).
    PerAgent,
}

/// Default samples a window needs before a rate or percentile rule looks at it.
pub const DEFAULT_MIN_SAMPLES: u64 = 10;

/// One `[[alerts]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertRule {
    /// The rule's name, unique among the rules; `AnomalyDetected.rule` carries it.
    pub name: String,
    /// What it watches.
    pub kind: AlertKind,
    /// Overall or per agent.
    #[serde(default)]
    pub scope: AlertScope,
    /// The sliding window, in seconds: a whole number of `analytics.bucket_secs`.
    pub window_secs: u64,
    /// The fixed limit (see [`AlertKind`] for its unit). At least one of `threshold`,
    /// `baseline_factor`, `max_drop` and `max_share` is set, as the kind allows.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// `latency_spike`: fire above this multiple of the baseline's p95.
    #[serde(default)]
    pub baseline_factor: Option<f64>,
    /// `success_rate_drop`: fire when the rate is this much below the baseline's.
    #[serde(default)]
    pub max_drop: Option<f64>,
    /// `token_overuse`: fire when the share of overspending uses is above this.
    #[serde(default)]
    pub max_share: Option<f64>,
    /// The trailing baseline before the window, in seconds (a whole number of buckets);
    /// required with `baseline_factor` or `max_drop`.
    #[serde(default)]
    pub baseline_secs: Option<u64>,
    /// `caws_violations`: the lowest severity counted.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Samples the window (and the baseline) needs before the rule looks at it.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// How long the condition must hold before the rule fires, in seconds.
    #[serde(default, rename = "for_secs")]
    pub for_secs: u64,
    /// How long after firing the rule stays quiet for the same group, in seconds.
    #[serde(default)]
    pub cooldown_secs: u64,
}

fn default_min_samples() -> u64 {
    DEFAULT_MIN_SAMPLES
}

/// Why an `[[alerts]]` entry was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AlertRuleError {
    /// Two rules share a name.
    #[error("alerts[{index}].name {name:?} is used by an earlier rule; names must be unique")]
    DuplicateName {
        /// The later rule.
        index: usize,
        /// The name.
        name: String,
    },
    /// A field is missing, out of range or does not fit the rule's kind.
    #[error("alerts[{index}].{field} {rule}")]
    Field {
        /// The rule.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        rule: String,
    },
}

impl AlertRule {
    /// Checks the rule against the bucket width and the buckets kept.
    pub(crate) fn validate(
        &self,
        index: usize,
        bucket_secs: u64,
        buckets: usize,
    ) -> Result<(), AlertRuleError> {
        let err = |field, rule: String| Err(AlertRuleError::Field { index, field, rule });
        if self.name.is_empty() || self.name.len() > 64 || self.name.chars().any(char::is_control) {
            return err(
                "name",
                "must be 1 to 64 characters without control characters".into(),
            );
        }
        let span = bucket_secs.saturating_mul(buckets as u64);
        let whole = |field, secs: u64| {
            if secs == 0 || !secs.is_multiple_of(bucket_secs) {
                err(
                    field,
                    format!(
                        "must be a positive multiple of analytics.bucket_secs ({bucket_secs}), got {secs}"
                    ),
                )
            } else {
                Ok(())
            }
        };
        whole("window_secs", self.window_secs)?;
        let allowed: &[&str] = match self.kind {
            AlertKind::LatencySpike => &["threshold", "baseline_factor"],
            AlertKind::SuccessRateDrop => &["threshold", "max_drop"],
            AlertKind::TokenOveruse => &["threshold", "max_share"],
            AlertKind::ErrorRate => &["threshold"],
            AlertKind::CawsViolations => &["threshold"],
        };
        let limits = [
            ("threshold", self.threshold),
            ("baseline_factor", self.baseline_factor),
            ("max_drop", self.max_drop),
            ("max_share", self.max_share),
        ];
        for (field, value) in limits {
            let Some(v) = value else { continue };
            if !allowed.contains(&field) {
                return err(
                    field,
                    format!("does not apply to {} rules", self.kind.as_str()),
                );
            }
            let ok = match (self.kind, field) {
                (AlertKind::LatencySpike, "threshold") => v.is_finite() && v > 0.0,
                (_, "baseline_factor") => v.is_finite() && v > 1.0,
                (AlertKind::TokenOveruse, "threshold") => v.is_finite() && v > 0.0,
                (AlertKind::CawsViolations, "threshold") => v.is_finite() && v >= 0.0,
                _ => (0.0..=1.0).contains(&v),
            };
            if !ok {
                let range = match (self.kind, field) {
                    (AlertKind::LatencySpike | AlertKind::TokenOveruse, "threshold") => {
                        "must be finite and > 0"
                    }
                    (_, "baseline_factor") => "must be finite and > 1",
                    (AlertKind::CawsViolations, "threshold") => "must be finite and >= 0",
                    _ => "must be within [0, 1]",
                };
                return err(field, format!("{range}, got {v}"));
            }
        }
        if limits.iter().all(|(_, v)| v.is_none()) {
            return err(
                "threshold",
                format!("or another limit ({}) is required", allowed.join(", ")),
            );
        }
        let baseline_needed = self.baseline_factor.is_some() || self.max_drop.is_some();
        match self.baseline_secs {
            Some(b) => {
                whole("baseline_secs", b)?;
                if !baseline_needed {
                    return err(
                        "baseline_secs",
                        "is only used with baseline_factor or max_drop".into(),
                    );
                }
            }
            None if baseline_needed => {
                return err(
                    "baseline_secs",
                    "is required with baseline_factor or max_drop".into(),
                );
            }
            None => {}
        }
        let reach = self
            .window_secs
            .saturating_add(self.baseline_secs.unwrap_or(0));
        if reach > span {
            return err(
                "window_secs",
                format!(
                    "plus baseline_secs ({reach} s) exceeds the {span} s the analytics buckets keep"
                ),
            );
        }
        if self.min_severity.is_some() && self.kind != AlertKind::CawsViolations {
            return err(
                "min_severity",
                "only applies to caws_violations rules".into(),
            );
        }
        if self.min_samples == 0 {
            return err("min_samples", "must be at least 1".into());
        }
        Ok(())
    }
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// Its kind.
    pub kind: AlertKind,
    /// Its scope.
    pub scope: AlertScope,
    /// The agent, for a per-agent rule (as reports name it).
    pub agent_id: Option<String>,
    /// The figure that broke the limit.
    pub observed: f64,
    /// The limit it broke (for a baseline rule, the limit derived from the baseline).
    pub threshold: f64,
    /// The baseline's figure, for a baseline rule.
    pub baseline: Option<f64>,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Samples in the window.
    pub samples: u64,
    /// When it fired (unix nanoseconds of the evaluation).
    pub time: i64,
}

/// The state of one (rule, group): since when the condition holds, when it last fired.
#[derive(Debug, Clone, Copy, Default)]
struct Watch {
    holding_since: Option<i64>,
    last_fired: Option<i64>,
}

/// The rules and their per-group state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Alerting {
    rules: Vec<AlertRule>,
    /// Keyed by (rule index, agent slot or `u32::MAX` for overall).
    watches: HashMap<(usize, u32), Watch>,
}

const OVERALL: u32 = u32::MAX;

/// What a condition found: the observed figure, the limit, the baseline, the samples.
struct Finding {
    observed: f64,
    threshold: f64,
    baseline: Option<f64>,
    samples: u64,
}

impl Alerting {
    /// Rules checked against the analytics buckets.
    pub(crate) fn new(
        rules: Vec<AlertRule>,
        bucket_secs: u64,
        buckets: usize,
    ) -> Result<Alerting, AlertRuleError> {
        for (i, rule) in rules.iter().enumerate() {
            rule.validate(i, bucket_secs, buckets)?;
            if rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(AlertRuleError::DuplicateName {
                    index: i,
                    name: rule.name.clone(),
                });
            }
        }
        Ok(Alerting {
            rules,
            watches: HashMap::new(),
        })
    }

    /// Replaces the rules; the state of rules whose name and definition are unchanged
    /// is kept, so a live update does not re-arm cooldowns.
    pub(crate) fn replace(&mut self, next: Alerting) {
        let mut watches = HashMap::new();
        for (new_index, rule) in next.rules.iter().enumerate() {
            if let Some(old_index) = self.rules.iter().position(|r| r == rule) {
                for ((i, group), w) in &self.watches {
                    if *i == old_index {
                        watches.insert((new_index, *group), *w);
                    }
                }
            }
        }
        self.rules = next.rules;
        self.watches = watches;
    }

    pub(crate) fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Evaluates every rule at `now` over the buckets ending with the one `now` falls in,
    /// returning the alerts that fire.
    pub(crate) fn evaluate(&mut self, aggregates: &Aggregates, now: i64) -> Vec<Alert> {
        let mut fired = Vec::new();
        let width = aggregates.width;
        let current = aggregates.bucket_start(now);
        for (index, rule) in self.rules.iter().enumerate() {
            let window_buckets = (rule.window_secs * 1_000_000_000 / width as u64) as i64;
            let baseline_buckets = rule
                .baseline_secs
                .map_or(0, |b| (b * 1_000_000_000 / width as u64) as i64);
            let window_start = current - (window_buckets - 1) * width;
            let baseline_start = window_start - baseline_buckets * width;
            let groups: Vec<u32> = match rule.scope {
                AlertScope::Overall => vec![OVERALL],
                AlertScope::PerAgent => aggregates.tracked_slots().collect(),
            };
            for group in groups {
                let mut window = Tally::default();
                let mut baseline = Tally::default();
                for b in &aggregates.buckets {
                    if b.start < baseline_start || b.start > current {
                        continue;
                    }
                    let target = if b.start >= window_start {
                        &mut window
                    } else {
                        &mut baseline
                    };
                    if group == OVERALL {
                        b.overall_into(&aggregates.sketch, target);
                    } else if let Some(t) = b.agents.get(&group) {
                        target.merge(&aggregates.sketch, t);
                    }
                }
                let finding = check(rule, &window, rule.baseline_secs.map(|_| &baseline));
                let watch = self.watches.entry((index, group)).or_default();
                let Some(f) = finding else {
                    watch.holding_since = None;
                    continue;
                };
                let since = *watch.holding_since.get_or_insert(now);
                let held = now.saturating_sub(since)
                    >= (rule.for_secs as i64).saturating_mul(1_000_000_000);
                let cooled = watch.last_fired.is_none_or(|last| {
                    now.saturating_sub(last)
                        >= (rule.cooldown_secs as i64).saturating_mul(1_000_000_000)
                });
                if held && cooled {
                    watch.last_fired = Some(now);
                    fired.push(Alert {
                        rule: rule.name.clone(),
                        kind: rule.kind,
                        scope: rule.scope,
                        agent_id: (group != OVERALL)
                            .then(|| aggregates.agent_name(group).map(str::to_string))
                            .flatten(),
                        observed: f.observed,
                        threshold: f.threshold,
                        baseline: f.baseline,
                        window_secs: rule.window_secs,
                        samples: f.samples,
                        time: now,
                    });
                }
            }
        }
        // Forget the state of agents no longer tracked.
        self.watches
            .retain(|(_, group), _| *group == OVERALL || aggregates.agent_name(*group).is_some());
        fired
    }
}

/// Whether `rule` is broken by `window` (against `baseline` when the rule has one).
fn check(rule: &AlertRule, window: &Tally, baseline: Option<&Tally>) -> Option<Finding> {
    let w = Figures::of(window);
    let b = baseline.map(Figures::of);
    let enough = |n: u64| n >= rule.min_samples;
    let above = |observed: f64, limit: f64, base: Option<f64>, samples| {
        (observed > limit).then_some(Finding {
            observed,
            threshold: limit,
            baseline: base,
            samples,
        })
    };
    match rule.kind {
        AlertKind::LatencySpike => {
            let d = w.duration_ms.filter(|d| enough(d.count))?;
            if let Some(t) = rule.threshold
                && let Some(f) = above(d.p95, t, None, d.count)
            {
                return Some(f);
            }
            let factor = rule.baseline_factor?;
            let base = b?.duration_ms.filter(|d| enough(d.count))?;
            above(d.p95, factor * base.p95, Some(base.p95), d.count)
        }
        AlertKind::SuccessRateDrop => {
            let t = w.tasks;
            if !enough(t.ended) {
                return None;
            }
            let rate = t.success_rate?;
            if let Some(min) = rule.threshold
                && rate < min
            {
                return Some(Finding {
                    observed: rate,
                    threshold: min,
                    baseline: None,
                    samples: t.ended,
                });
            }
            let drop = rule.max_drop?;
            let base = b?.tasks;
            if !enough(base.ended) {
                return None;
            }
            let base_rate = base.success_rate?;
            (base_rate - rate > drop).then_some(Finding {
                observed: rate,
                threshold: base_rate - drop,
                baseline: Some(base_rate),
                samples: t.ended,
            })
        }
        AlertKind::TokenOveruse => {
            let budget = w.budget;
            if !enough(budget.uses) {
                return None;
            }
            if let Some(t) = rule.threshold
                && let Some(u) = budget.utilization
                && let Some(f) = above(u.p95, t, None, budget.uses)
            {
                return Some(f);
            }
            above(budget.overspent_share?, rule.max_share?, None, budget.uses)
        }
        AlertKind::ErrorRate => {
            let t = w.tasks;
            if !enough(t.ended) {
                return None;
            }
            above(t.error_rate?, rule.threshold?, None, t.ended)
        }
        AlertKind::CawsViolations => {
            let min = rule.min_severity.unwrap_or(Severity::Low);
            let v = &window.violations;
            let count: u64 = v[super::tally::severity_index(min)..].iter().sum();
            above(count as f64, rule.threshold?, None, w.caws.validations)
        }
    }
}
