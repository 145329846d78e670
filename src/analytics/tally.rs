//! What one bucket keeps of one group: counts, distributions and series, folded in O(1)
//! per event and merged in O(size) per report.

use super::sketch::{Distribution, Mapping, Moments};
use super::view::{EventView, Figures};
use crate::contract::event::{EventKind, OutcomeStatus, Severity};

/// Task ends, in report order: the four outcome statuses, then abandoned.
pub(crate) const TASK_ENDS: usize = 5;
pub(crate) const ABANDONED: usize = 4;

/// Bands of the thinking-budget utilization histogram.
pub(crate) const UTILIZATION_BANDS: usize = 8;
/// The width of one band: 0–25 %, 25–50 %, … 150–175 %, then 175 % and over.
pub(crate) const UTILIZATION_BAND: f64 = 0.25;

/// Distinct CAWS rules counted per tally; the rest are counted under [`OTHER_RULES`].
const MAX_RULES: usize = 32;

/// The name violations of rules beyond the tracked ones, and violations without a rule,
/// are counted under.
pub const OTHER_RULES: &str = "(other)";

pub(crate) fn status_index(status: OutcomeStatus) -> usize {
    match status {
        OutcomeStatus::Succeeded => 0,
        OutcomeStatus::Failed => 1,
        OutcomeStatus::TimedOut => 2,
        OutcomeStatus::Cancelled => 3,
    }
}

pub(crate) fn severity_index(severity: Severity) -> usize {
    match severity {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

/// One bucket's figures for one group.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    pub(crate) events: [u64; EventKind::COUNT],
    pub(crate) task_ends: [u64; TASK_ENDS],
    pub(crate) duration_ms: Distribution,
    pub(crate) tokens_consumed: u64,
    pub(crate) budget_utilization: Distribution,
    pub(crate) budget_overspent: u64,
    /// Uses per utilization band of [`UTILIZATION_BAND`], the last band open-ended.
    pub(crate) budget_bands: [u64; UTILIZATION_BANDS],
    pub(crate) caws_passed: u64,
    pub(crate) violations: [u64; 4],
    /// Violations per rule, at most [`MAX_RULES`] names plus [`OTHER_RULES`].
    pub(crate) rules: Vec<(Box<str>, u64)>,
    pub(crate) compliance: Distribution,
    pub(crate) judgment: Distribution,
    pub(crate) evaluation: Distribution,
    pub(crate) evaluations_passed: u64,
    pub(crate) confidence: Distribution,
    pub(crate) reward: Moments,
    pub(crate) policy_loss: Moments,
    pub(crate) value_loss: Moments,
    pub(crate) kl_divergence: Moments,
}

impl Tally {
    /// Folds one event in. Identifiers are not read here: the caller chose the group.
    pub(crate) fn add(&mut self, mapping: &Mapping, event: &EventView<'_>) {
        self.events[event.kind.index()] += 1;
        match &event.figures {
            Figures::Completed {
                status,
                duration_ms,
                tokens_consumed,
            } => {
                self.task_ends[status_index(*status)] += 1;
                self.duration_ms.add(mapping, *duration_ms);
                self.tokens_consumed = self.tokens_consumed.saturating_add(*tokens_consumed);
            }
            Figures::Abandoned { duration_ms } => {
                self.task_ends[ABANDONED] += 1;
                self.duration_ms.add(mapping, *duration_ms);
            }
            &Figures::BudgetUsed {
                tokens_used,
                tokens_allocated,
            } => {
                if tokens_allocated > 0 {
                    let u = tokens_used as f64 / tokens_allocated as f64;
                    self.budget_utilization.add(mapping, u);
                    let band = ((u / UTILIZATION_BAND) as usize).min(UTILIZATION_BANDS - 1);
                    self.budget_bands[band] += 1;
                }
                if tokens_used > tokens_allocated {
                    self.budget_overspent += 1;
                }
            }
            Figures::Validated {
                valid,
                compliance_score,
                violations,
            } => {
                if *valid {
                    self.caws_passed += 1;
                }
                self.compliance.add(mapping, *compliance_score);
                violations.for_each(|severity, rule| {
                    self.violations[severity_index(severity)] += 1;
                    self.count_rule(rule.unwrap_or(OTHER_RULES), 1);
                });
            }
            Figures::Judged { overall_score } => self.judgment.add(mapping, *overall_score),
            Figures::Evaluated { score, passed } => {
                self.evaluation.add(mapping, *score);
                if *passed {
                    self.evaluations_passed += 1;
                }
            }
            Figures::Routed { confidence, .. } => self.confidence.add(mapping, *confidence),
            Figures::Trained {
                average_reward,
                policy_loss,
                value_loss,
                kl_divergence,
            } => {
                self.reward.add(*average_reward);
                self.policy_loss.add(*policy_loss);
                self.value_loss.add(*value_loss);
                self.kl_divergence.add(*kl_divergence);
            }
            Figures::None => {}
        }
    }

    fn count_rule(&mut self, rule: &str, n: u64) {
        if let Some((_, c)) = self.rules.iter_mut().find(|(r, _)| &**r == rule) {
            *c += n;
            return;
        }
        let name = if self.rules.len() < MAX_RULES || rule == OTHER_RULES {
            rule
        } else {
            OTHER_RULES
        };
        match self.rules.iter_mut().find(|(r, _)| &**r == name) {
            Some((_, c)) => *c += n,
            None => self.rules.push((name.into(), n)),
        }
    }

    /// Folds another tally in, as if its events had been added here.
    pub(crate) fn merge(&mut self, other: &Tally) {
        for (a, b) in self.events.iter_mut().zip(other.events) {
            *a += b;
        }
        for (a, b) in self.task_ends.iter_mut().zip(other.task_ends) {
            *a += b;
        }
        for (a, b) in self.violations.iter_mut().zip(other.violations) {
            *a += b;
        }
        for (a, b) in self.budget_bands.iter_mut().zip(other.budget_bands) {
            *a += b;
        }
        self.duration_ms.merge(&other.duration_ms);
        self.tokens_consumed = self.tokens_consumed.saturating_add(other.tokens_consumed);
        self.budget_utilization.merge(&other.budget_utilization);
        self.budget_overspent += other.budget_overspent;
        self.caws_passed += other.caws_passed;
        for (rule, n) in &other.rules {
            self.count_rule(rule, *n);
        }
        self.compliance.merge(&other.compliance);
        self.judgment.merge(&other.judgment);
        self.evaluation.merge(&other.evaluation);
        self.evaluations_passed += other.evaluations_passed;
        self.confidence.merge(&other.confidence);
        self.reward.merge(&other.reward);
        self.policy_loss.merge(&other.policy_loss);
        self.value_loss.merge(&other.value_loss);
        self.kl_divergence.merge(&other.kl_divergence);
    }

    pub(crate) fn total_events(&self) -> u64 {
        self.events.iter().sum()
    }

    /// Bytes held, the tally itself included.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of::<Tally>()
            + [
                &self.duration_ms,
                &self.budget_utilization,
                &self.compliance,
                &self.judgment,
                &self.evaluation,
                &self.confidence,
            ]
            .iter()
            .map(|d| d.heap_bytes())
            .sum::<usize>()
            + self
                .rules
                .iter()
                .map(|(r, _)| r.len() + std::mem::size_of::<(Box<str>, u64)>())
                .sum::<usize>()
    }
}
