//! Validation of events before they are queued: one rule, one typed error.

use std::collections::BTreeMap;
use std::fmt;

use super::{Attributes, Event, EventKind, Value};

/// The limits an event is validated against (from [`LimitsConfig`](crate::LimitsConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_id_bytes: usize,
    pub(crate) max_string_bytes: usize,
    pub(crate) max_collection_len: usize,
    pub(crate) max_attribute_depth: usize,
    pub(crate) max_attribute_entries: usize,
}

/// The rule a field broke.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Rule {
    /// A float was NaN or infinite.
    NotFinite,
    /// A number was outside `[min, max]`.
    OutOfRange {
        /// The value given.
        value: f64,
        /// The smallest value allowed.
        min: f64,
        /// The largest value allowed.
        max: f64,
    },
    /// A number was negative.
    Negative {
        /// The value given.
        value: f64,
    },
    /// An identifier was empty.
    Empty,
    /// A string was longer than allowed.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// An identifier held a control character.
    ControlCharacter {
        /// Byte offset of the character.
        offset: usize,
    },
    /// A collection held more items than allowed.
    TooMany {
        /// How many it held.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// Attributes were nested deeper than allowed.
    TooDeep {
        /// The deepest level allowed.
        max: usize,
    },
    /// An `occurred_at` was further from the ingest time than the skew window allows
    /// (`limits.max_occurred_past_secs` before, `limits.max_occurred_future_secs` after).
    OutsideSkewWindow {
        /// `occurred_at` minus the ingest time, in nanoseconds (negative: in the past).
        skew_nanos: i128,
        /// How far in the past it may be.
        max_past: std::time::Duration,
        /// How far in the future it may be.
        max_future: std::time::Duration,
    },
    /// The event is of a kind only the collector makes (`anomaly_detected`).
    Generated,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::NotFinite => f.write_str("must be finite"),
            Rule::OutOfRange { value, min, max } => {
                write!(f, "must be within [{min}, {max}], got {value}")
            }
            Rule::Negative { value } => write!(f, "must not be negative, got {value}"),
            Rule::Empty => f.write_str("must not be empty"),
            Rule::Generated => f.write_str(
                "names a kind only the collector makes (from its alert rules); it cannot be recorded",
            ),
            Rule::TooLong { len, max } => write!(f, "is {len} bytes long, the limit is {max}"),
            Rule::ControlCharacter { offset } => {
                write!(f, "holds a control character at byte {offset}")
            }
            Rule::TooMany { len, max } => write!(f, "holds {len} items, the limit is {max}"),
            Rule::TooDeep { max } => write!(f, "is nested deeper than {max} levels"),
            Rule::OutsideSkewWindow {
                skew_nanos,
                max_past,
                max_future,
            } => {
                let skew = std::time::Duration::from_nanos(
                    u64::try_from(skew_nanos.unsigned_abs()).unwrap_or(u64::MAX),
                );
                let side = if *skew_nanos < 0 { "before" } else { "after" };
                write!(
                    f,
                    "is {skew:?} {side} the ingest time, outside the window of {max_past:?} \
                     before to {max_future:?} after; check the clock, or widen \
                     limits.max_occurred_past_secs / limits.max_occurred_future_secs"
                )
            }
        }
    }
}

/// An event broke a validation rule; it was not stored.
///
/// ```
/// use arbiter_events::{Collector, Config, Event, RecordError, Rule, ThinkingBudgetAllocated, Complexity};
/// let collector = Collector::new(Config::default())?;
/// let bad = Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
///     task_id: "task-1".into(),
///     allocated_tokens: 100,
///     complexity: Complexity::Standard,
///     confidence: 1.5,
/// });
/// let Err(RecordError::Invalid(error)) = collector.record(bad) else { panic!("accepted") };
/// assert_eq!(error.field(), "confidence");
/// assert!(matches!(error.rule(), Rule::OutOfRange { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {kind} event: field `{field}` {rule}")]
pub struct ValidationError {
    kind: EventKind,
    field: String,
    rule: Rule,
}

impl ValidationError {
    pub(crate) fn occurred_at(kind: EventKind, rule: Rule) -> ValidationError {
        ValidationError {
            kind,
            field: "occurred_at".to_owned(),
            rule,
        }
    }

    /// The kind of the rejected event.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The path of the offending field, e.g. `alternatives[1].score`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rule it broke.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }
}

/// A field-level failure before the event kind is attached.
#[derive(Debug)]
pub(crate) struct FieldError {
    field: String,
    rule: Rule,
}

impl FieldError {
    fn new(field: &str, rule: Rule) -> FieldError {
        FieldError {
            field: field.to_owned(),
            rule,
        }
    }

    /// Prefixes the path with `parent`, e.g. `score` inside `alternatives[1]`.
    fn within(mut self, parent: &str) -> FieldError {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }

    pub(crate) fn into_error(self, kind: EventKind) -> ValidationError {
        ValidationError {
            kind,
            field: self.field,
            rule: self.rule,
        }
    }
}

type Check = Result<(), FieldError>;

impl Limits {
    fn id(&self, field: &str, value: &str) -> Check {
        if value.is_empty() {
            return Err(FieldError::new(field, Rule::Empty));
        }
        if value.len() > self.max_id_bytes {
            let rule = Rule::TooLong {
                len: value.len(),
                max: self.max_id_bytes,
            };
            return Err(FieldError::new(field, rule));
        }
        if let Some((offset, _)) = value.char_indices().find(|(_, c)| c.is_control()) {
            return Err(FieldError::new(field, Rule::ControlCharacter { offset }));
        }
        Ok(())
    }

    fn text(&self, field: &str, value: &str) -> Check {
        if value.len() > self.max_string_bytes {
            let rule = Rule::TooLong {
                len: value.len(),
                max: self.max_string_bytes,
            };
            return Err(FieldError::new(field, rule));
        }
        Ok(())
    }

    fn opt_text(&self, field: &str, value: Option<&str>) -> Check {
        value.map_or(Ok(()), |v| self.text(field, v))
    }

    fn count(&self, field: &str, len: usize) -> Check {
        if len > self.max_collection_len {
            let rule = Rule::TooMany {
                len,
                max: self.max_collection_len,
            };
            return Err(FieldError::new(field, rule));
        }
        Ok(())
    }

    fn each<T>(&self, field: &str, items: &[T], check: impl Fn(&T) -> Check) -> Check {
        self.count(field, items.len())?;
        for (i, item) in items.iter().enumerate() {
            check(item).map_err(|e| e.within(&format!("{field}[{i}]")))?;
        }
        Ok(())
    }

    fn scores(&self, field: &str, map: &BTreeMap<String, f64>) -> Check {
        self.count(field, map.len())?;
        for (key, score) in map {
            self.id("", key).map_err(|e| keyed(field, key, e))?;
            unit("", *score).map_err(|e| keyed(field, key, e))?;
        }
        Ok(())
    }

    /// The whole tree is bounded by `max_attribute_entries` values (reported on the
    /// attributes field itself), each collection by `max_collection_len`, nesting by
    /// `max_attribute_depth`.
    fn attributes(&self, field: &str, attrs: &Attributes) -> Check {
        self.map(field, &attrs.0, 1)?;
        let values = count_values(attrs.0.values(), self.max_attribute_entries + 1);
        if values > self.max_attribute_entries {
            let rule = Rule::TooMany {
                len: values,
                max: self.max_attribute_entries,
            };
            return Err(FieldError::new(field, rule));
        }
        Ok(())
    }

    fn map(&self, field: &str, map: &BTreeMap<String, Value>, depth: usize) -> Check {
        self.count(field, map.len())?;
        for (key, value) in map {
            self.id("", key).map_err(|e| keyed(field, key, e))?;
            self.value(value, depth).map_err(|e| keyed(field, key, e))?;
        }
        Ok(())
    }

    fn value(&self, value: &Value, depth: usize) -> Check {
        match value {
            Value::Null | Value::Bool(_) | Value::Int(_) => Ok(()),
            Value::Float(f) => finite("", *f),
            Value::String(s) => self.text("", s),
            Value::List(_) | Value::Map(_) if depth >= self.max_attribute_depth => {
                Err(FieldError::new(
                    "",
                    Rule::TooDeep {
                        max: self.max_attribute_depth,
                    },
                ))
            }
            Value::List(items) => {
                self.count("", items.len())?;
                for (i, item) in items.iter().enumerate() {
                    self.value(item, depth + 1)
                        .map_err(|e| e.within(&format!("[{i}]")))?;
                }
                Ok(())
            }
            Value::Map(map) => self.map("", map, depth + 1),
        }
    }
}

/// Counts the values in a tree, stopping once `stop` is reached.
fn count_values<'a>(values: impl Iterator<Item = &'a Value>, stop: usize) -> usize {
    let mut n = 0;
    let mut pending: Vec<&Value> = values.collect();
    while let Some(v) = pending.pop() {
        n += 1;
        if n >= stop {
            break;
        }
        match v {
            Value::List(items) => pending.extend(items),
            Value::Map(map) => pending.extend(map.values()),
            _ => {}
        }
    }
    n
}

fn keyed(field: &str, key: &str, e: FieldError) -> FieldError {
    e.within(&format!("{field}[{key:?}]"))
}

fn finite(field: &str, value: f64) -> Check {
    if value.is_finite() {
        Ok(())
    } else {
        Err(FieldError::new(field, Rule::NotFinite))
    }
}

/// Scores, confidences, rates and probabilities: finite and in `[0, 1]`.
fn unit(field: &str, value: f64) -> Check {
    finite(field, value)?;
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            Rule::OutOfRange {
                value,
                min: 0.0,
                max: 1.0,
            },
        ))
    }
}

/// Durations, costs, losses that cannot be negative: finite and `>= 0`.
fn non_negative(field: &str, value: f64) -> Check {
    finite(field, value)?;
    if value >= 0.0 {
        Ok(())
    } else {
        Err(FieldError::new(field, Rule::Negative { value }))
    }
}

impl Event {
    /// Checks this event against `limits`, naming the first field that breaks a rule.
    pub(crate) fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        self.check(limits).map_err(|e| e.into_error(self.kind()))
    }

    fn check(&self, l: &Limits) -> Check {
        match self {
            Event::AgentRegistered(e) => {
                l.id("agent_id", &e.agent_id)?;
                l.each("capabilities", &e.capabilities, |c| l.id("", c))?;
                let b = &e.baseline;
                non_negative("baseline.latency_ms", b.latency_ms)?;
                unit("baseline.accuracy", b.accuracy)?;
                non_negative("baseline.cost_per_task", b.cost_per_task)?;
                unit("baseline.reliability", b.reliability)
            }
            Event::AgentStatusChanged(e) => {
                l.id("agent_id", &e.agent_id)?;
                l.opt_text("reason", e.reason.as_deref())
            }
            Event::RoutingDecision(e) => {
                l.id("task_id", &e.task_id)?;
                l.id("selected_agent", &e.selected_agent)?;
                unit("confidence", e.confidence)?;
                l.each("alternatives", &e.alternatives, |a| {
                    l.id("agent_id", &a.agent_id)?;
                    unit("score", a.score)?;
                    l.text("reason", &a.reason)
                })?;
                l.text("rationale", &e.rationale)
            }
            Event::TaskStarted(e) => {
                l.id("execution_id", &e.execution_id)?;
                l.id("task_id", &e.task_id)?;
                l.id("agent_id", &e.agent_id)?;
                l.attributes("context", &e.context)
            }
            Event::TaskCompleted(e) => {
                l.id("execution_id", &e.execution_id)?;
                l.id("task_id", &e.task_id)?;
                l.id("agent_id", &e.agent_id)?;
                unit("outcome.quality_score", e.outcome.quality_score)?;
                unit("outcome.efficiency_score", e.outcome.efficiency_score)?;
                non_negative("duration_ms", e.duration_ms)
            }
            Event::TaskAbandoned(e) => {
                l.id("execution_id", &e.execution_id)?;
                l.id("task_id", &e.task_id)?;
                l.id("agent_id", &e.agent_id)?;
                non_negative("duration_ms", e.duration_ms)
            }
            Event::ConstitutionalValidation(e) => {
                l.id("task_id", &e.task_id)?;
                l.id("agent_id", &e.agent_id)?;
                l.each("violations", &e.violations, |v| {
                    l.text("message", &v.message)?;
                    v.rule.as_deref().map_or(Ok(()), |r| l.id("rule", r))
                })?;
                unit("compliance_score", e.compliance_score)?;
                non_negative("processing_time_ms", e.processing_time_ms)
            }
            Event::ThinkingBudgetAllocated(e) => {
                l.id("task_id", &e.task_id)?;
                unit("confidence", e.confidence)
            }
            Event::ThinkingBudgetUsed(e) => l.id("task_id", &e.task_id),
            Event::MinimalityEvaluated(e) => {
                l.id("task_id", &e.task_id)?;
                unit("minimality_factor", e.minimality_factor)?;
                unit("ast_similarity", e.ast_similarity)?;
                unit("scaffolding_penalty", e.scaffolding_penalty)?;
                l.text("quality_assessment", &e.quality_assessment)
            }
            Event::JudgmentRecorded(e) => {
                l.id("task_id", &e.task_id)?;
                unit("overall_score", e.overall_score)?;
                unit("overall_confidence", e.overall_confidence)?;
                l.scores("criteria_scores", &e.criteria_scores)?;
                non_negative("evaluation_time_ms", e.evaluation_time_ms)
            }
            Event::EvaluationOutcome(e) => {
                l.id("task_id", &e.task_id)?;
                unit("score", e.score)?;
                l.scores("rubric_scores", &e.rubric_scores)?;
                l.opt_text("feedback", e.feedback.as_deref())
            }
            Event::RlTrainingMetrics(e) => {
                finite("average_reward", e.average_reward)?;
                finite("policy_loss", e.policy_loss)?;
                non_negative("value_loss", e.value_loss)?;
                non_negative("kl_divergence", e.kl_divergence)?;
                non_negative("training_time_ms", e.training_time_ms)
            }
            Event::Custom(e) => {
                l.id("name", &e.name)?;
                l.attributes("attributes", &e.attributes)
            }
            Event::AnomalyDetected(_) => Err(FieldError::new("type", Rule::Generated)),
        }
    }
}
