//! The analytics part of the configuration: the `[analytics]` section (bucket width,
//! buckets kept, agents tracked) and the `[[alerts]]` rules. It sits in the contract
//! because [`Config`](crate::contract::config::Config) holds it; the aggregates and the
//! rules' evaluation are in the analytics layer.

use serde::{Deserialize, Serialize};

use crate::contract::config::ConfigError;
use crate::contract::event::Severity;

/// Default width of one aggregate bucket, in seconds.
pub const DEFAULT_BUCKET_SECS: u64 = 60;
/// Default number of buckets kept (with the default width: the last hour).
pub const DEFAULT_BUCKETS: usize = 60;
/// Default number of agents given a row of their own; less recently active ones fold
/// into the `other` row.
pub const DEFAULT_MAX_AGENTS: usize = 1_000;
/// The widest bucket: one day.
pub const MAX_BUCKET_SECS: u64 = 86_400;
/// The most buckets kept.
pub const MAX_BUCKETS: usize = 10_080;
/// The most agents tracked.
pub const MAX_AGENTS: usize = 100_000;

/// Online aggregates for reports and alerts (fixed at build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AnalyticsConfig {
    /// Whether a collector keeps live aggregates (for `Collector::report`) and evaluates
    /// the `[[alerts]]` rules.
    pub enabled: bool,
    /// Width of one bucket in seconds; a report's window is whole buckets.
    pub bucket_secs: u64,
    /// Buckets kept: the live window reports can cover is `bucket_secs × buckets`.
    pub buckets: usize,
    /// Agents given a row of their own.
    pub max_agents: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            bucket_secs: DEFAULT_BUCKET_SECS,
            buckets: DEFAULT_BUCKETS,
            max_agents: DEFAULT_MAX_AGENTS,
        }
    }
}

impl AnalyticsConfig {
    /// Checks every field, returning the first broken rule.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] naming `analytics.bucket_secs`, `analytics.buckets`
    /// or `analytics.max_agents`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |field, value: u64, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                })
            }
        };
        check(
            "analytics.bucket_secs",
            self.bucket_secs,
            1,
            MAX_BUCKET_SECS,
        )?;
        check(
            "analytics.buckets",
            self.buckets as u64,
            1,
            MAX_BUCKETS as u64,
        )?;
        check(
            "analytics.max_agents",
            self.max_agents as u64,
            0,
            MAX_AGENTS as u64,
        )
    }

    pub(crate) fn bucket_nanos(&self) -> i64 {
        (self.bucket_secs.clamp(1, MAX_BUCKET_SECS) * 1_000_000_000) as i64
    }
}

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

impl AlertScope {
    /// The name in configuration and in `AnomalyDetected` records.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertScope::Overall => "overall",
            AlertScope::PerAgent => "per_agent",
        }
    }
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

/// Checks `rules` against the bucket width and the buckets kept: each rule on its own,
/// then that names are unique.
pub(crate) fn validate_alerts(
    rules: &[AlertRule],
    bucket_secs: u64,
    buckets: usize,
) -> Result<(), AlertRuleError> {
    for (i, rule) in rules.iter().enumerate() {
        rule.validate(i, bucket_secs, buckets)?;
        if rules[..i].iter().any(|r| r.name == rule.name) {
            return Err(AlertRuleError::DuplicateName {
                index: i,
                name: rule.name.clone(),
            });
        }
    }
    Ok(())
}
