//! Alert rules over the aggregates: conditions on a sliding window of buckets, overall
//! or per agent, that must hold for a while before they fire and then stay quiet for a
//! cooldown. The rules themselves are configuration (in the contract).

use std::collections::HashMap;

use serde::Serialize;

use super::aggregates::Aggregates;
use super::report::Figures;
use super::sketch::Mapping;
use super::tally::Tally;
use crate::contract::analytics::{
    AlertKind, AlertRule, AlertRuleError, AlertScope, validate_alerts,
};
use crate::contract::event::Severity;

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
        validate_alerts(&rules, bucket_secs, buckets)?;
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
                        b.overall_into(target);
                    } else if let Some(t) = b.agents.get(&group) {
                        target.merge(t);
                    }
                }
                let finding = check(
                    rule,
                    &aggregates.mapping,
                    &window,
                    rule.baseline_secs.map(|_| &baseline),
                );
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
fn check(
    rule: &AlertRule,
    mapping: &Mapping,
    window: &Tally,
    baseline: Option<&Tally>,
) -> Option<Finding> {
    let w = Figures::of(window, mapping);
    let b = baseline.map(|b| Figures::of(b, mapping));
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
