//! What the aggregates read of an event, borrowed: from an [`Event`] the live stage
//! holds, or straight from a record's MessagePack bytes, decoding only those fields
//! (no `String`, no allocation but for a validation's list of violations).

use serde::Deserialize;

use crate::codec::msgpack::value_len;
use crate::contract::event::{
    Event, EventKind, OutcomeStatus, RoutingStrategy, Severity, Violation,
};

/// An event as the aggregates fold it: its kind, the agent and the task it names (as
/// given), and the figures they count.
#[derive(Debug)]
pub(crate) struct EventView<'a> {
    pub(crate) kind: EventKind,
    pub(crate) agent: Option<&'a str>,
    pub(crate) task: Option<&'a str>,
    pub(crate) figures: Figures<'a>,
}

/// The figures of an event, per kind; [`Figures::None`] for kinds that count only.
#[derive(Debug)]
pub(crate) enum Figures<'a> {
    None,
    Routed {
        strategy: RoutingStrategy,
        confidence: f64,
    },
    Completed {
        status: OutcomeStatus,
        duration_ms: f64,
        tokens_consumed: u64,
    },
    Abandoned {
        duration_ms: f64,
    },
    BudgetUsed {
        tokens_used: u64,
        tokens_allocated: u64,
    },
    Validated {
        valid: bool,
        compliance_score: f64,
        violations: Violations<'a>,
    },
    Judged {
        overall_score: f64,
    },
    Evaluated {
        score: f64,
        passed: bool,
    },
    Trained {
        average_reward: f64,
        policy_loss: f64,
        value_loss: f64,
        kl_divergence: f64,
    },
}

/// A validation's violations: each one's severity and rule.
#[derive(Debug)]
pub(crate) enum Violations<'a> {
    Event(&'a [Violation]),
    Record(Vec<ViolationFields<'a>>),
}

impl Violations<'_> {
    /// Calls `f` with each violation's severity and rule, in order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(Severity, Option<&str>)) {
        match self {
            Violations::Event(v) => v.iter().for_each(|v| f(v.severity, v.rule.as_deref())),
            Violations::Record(v) => v.iter().for_each(|v| f(v.severity, v.rule)),
        }
    }
}

impl EventView<'_> {
    /// The strategy a routing decision names.
    pub(crate) fn strategy(&self) -> Option<RoutingStrategy> {
        match self.figures {
            Figures::Routed { strategy, .. } => Some(strategy),
            _ => None,
        }
    }
}

impl<'a> From<&'a Event> for EventView<'a> {
    fn from(event: &'a Event) -> EventView<'a> {
        let (agent, task, figures) = match event {
            Event::AgentRegistered(e) => (Some(&*e.agent_id), None, Figures::None),
            Event::AgentStatusChanged(e) => (Some(&*e.agent_id), None, Figures::None),
            Event::RoutingDecision(e) => (
                Some(&*e.selected_agent),
                Some(&*e.task_id),
                Figures::Routed {
                    strategy: e.strategy,
                    confidence: e.confidence,
                },
            ),
            Event::TaskStarted(e) => (Some(&*e.agent_id), Some(&*e.task_id), Figures::None),
            Event::TaskCompleted(e) => (
                Some(&*e.agent_id),
                Some(&*e.task_id),
                Figures::Completed {
                    status: e.outcome.status,
                    duration_ms: e.duration_ms,
                    tokens_consumed: e.outcome.tokens_consumed,
                },
            ),
            Event::TaskAbandoned(e) => (
                Some(&*e.agent_id),
                Some(&*e.task_id),
                Figures::Abandoned {
                    duration_ms: e.duration_ms,
                },
            ),
            Event::ConstitutionalValidation(e) => (
                Some(&*e.agent_id),
                Some(&*e.task_id),
                Figures::Validated {
                    valid: e.valid,
                    compliance_score: e.compliance_score,
                    violations: Violations::Event(&e.violations),
                },
            ),
            Event::ThinkingBudgetAllocated(e) => (None, Some(&*e.task_id), Figures::None),
            Event::ThinkingBudgetUsed(e) => (
                None,
                Some(&*e.task_id),
                Figures::BudgetUsed {
                    tokens_used: e.tokens_used,
                    tokens_allocated: e.tokens_allocated,
                },
            ),
            Event::MinimalityEvaluated(e) => (None, Some(&*e.task_id), Figures::None),
            Event::JudgmentRecorded(e) => (
                None,
                Some(&*e.task_id),
                Figures::Judged {
                    overall_score: e.overall_score,
                },
            ),
            Event::EvaluationOutcome(e) => (
                None,
                Some(&*e.task_id),
                Figures::Evaluated {
                    score: e.score,
                    passed: e.passed,
                },
            ),
            Event::RlTrainingMetrics(e) => (
                None,
                None,
                Figures::Trained {
                    average_reward: e.average_reward,
                    policy_loss: e.policy_loss,
                    value_loss: e.value_loss,
                    kl_divergence: e.kl_divergence,
                },
            ),
            Event::Custom(_) | Event::AnomalyDetected(_) => (None, None, Figures::None),
        };
        EventView {
            kind: event.kind(),
            agent,
            task,
            figures,
        }
    }
}

/// Why a record's bytes do not read as the view of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadRecord {
    /// The field (or `record` for the map itself).
    pub(crate) field: &'static str,
    pub(crate) reason: &'static str,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

/// A violation as a record's view reads it.
#[derive(Debug)]
pub(crate) struct ViolationFields<'a> {
    severity: Severity,
    rule: Option<&'a str>,
}

/// A number as MessagePack holds it.
enum Number {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

/// Reads MessagePack values off the front of a slice, borrowing strings from it; a
/// string is checked to be UTF-8 only when it is read, not when it is skipped.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let taken = self.rest.get(..n)?;
        self.rest = &self.rest[n..];
        Some(taken)
    }

    /// A big-endian unsigned integer of `n` bytes.
    fn be(&mut self, n: u64) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    }

    fn map_len(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(u64::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    fn array_len(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some(u64::from(m & 0x0f)),
            0xdc => self.be(2),
            0xdd => self.be(4),
            _ => None,
        }
    }

    /// A string's bytes, unchecked: for keys, compared byte for byte.
    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes()?).ok()
    }

    fn nil(&mut self) -> bool {
        let nil = self.rest.first() == Some(&0xc0);
        if nil {
            self.rest = &self.rest[1..];
        }
        nil
    }

    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Number> {
        Some(match self.byte()? {
            m @ 0x00..=0x7f => Number::Unsigned(u64::from(m)),
            m @ 0xe0..=0xff => Number::Signed(i64::from(m as i8)),
            0xcc => Number::Unsigned(self.be(1)?),
            0xcd => Number::Unsigned(self.be(2)?),
            0xce => Number::Unsigned(self.be(4)?),
            0xcf => Number::Unsigned(self.be(8)?),
            0xd0 => Number::Signed(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Number::Signed(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Number::Signed(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Number::Signed(self.be(8)? as i64),
            0xca => Number::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Number::Float(f64::from_bits(self.be(8)?)),
            _ => return None,
        })
    }

    /// A float, or an integer taken as one (as serde reads an `f64` field).
    fn f64(&mut self) -> Option<f64> {
        Some(match self.number()? {
            Number::Unsigned(n) => n as f64,
            Number::Signed(n) => n as f64,
            Number::Float(f) => f,
        })
    }

    fn u64(&mut self) -> Option<u64> {
        match self.number()? {
            Number::Unsigned(n) => Some(n),
            Number::Signed(n) => u64::try_from(n).ok(),
            Number::Float(_) => None,
        }
    }

    /// A unit variant of `T` by its name.
    fn name<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let name = self.str()?;
        T::deserialize(serde::de::value::BorrowedStrDeserializer::<
            serde::de::value::Error,
        >::new(name))
        .ok()
    }

    fn skip(&mut self) -> Option<()> {
        let len = value_len(self.rest)?;
        self.rest = &self.rest[len..];
        Some(())
    }
}

/// Reads one field's value, naming it when it is not of the type wanted.
fn field<'a, T>(
    r: &mut Reader<'a>,
    field: &'static str,
    read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Result<Option<T>, BadRecord> {
    read(r).map(Some).ok_or(BadRecord {
        field,
        reason: "not a value of its type",
    })
}

/// The fields any view reads, as found in a record's map.
#[derive(Default)]
struct Found<'a> {
    agent_id: Option<&'a str>,
    selected_agent: Option<&'a str>,
    task_id: Option<&'a str>,
    strategy: Option<RoutingStrategy>,
    confidence: Option<f64>,
    status: Option<OutcomeStatus>,
    tokens_consumed: Option<u64>,
    duration_ms: Option<f64>,
    tokens_used: Option<u64>,
    tokens_allocated: Option<u64>,
    valid: Option<bool>,
    compliance_score: Option<f64>,
    violations: Option<Vec<ViolationFields<'a>>>,
    overall_score: Option<f64>,
    score: Option<f64>,
    passed: Option<bool>,
    average_reward: Option<f64>,
    policy_loss: Option<f64>,
    value_loss: Option<f64>,
    kl_divergence: Option<f64>,
}

/// The value of a field the view of its kind needs.
fn need<T>(value: Option<T>, field: &'static str) -> Result<T, BadRecord> {
    value.ok_or(BadRecord {
        field,
        reason: "missing",
    })
}

const NOT_A_MAP: &str = "not a map";

impl<'a> Found<'a> {
    /// Reads the record map at the start of `bytes`; fields no view reads are skipped
    /// unread.
    fn read(bytes: &'a [u8]) -> Result<Found<'a>, BadRecord> {
        let mut r = Reader { rest: bytes };
        let mut f = Found::default();
        let entries = r.map_len().ok_or(BadRecord {
            field: "record",
            reason: NOT_A_MAP,
        })?;
        for _ in 0..entries {
            let key = r.str_bytes().ok_or(BadRecord {
                field: "record",
                reason: "a key is not a string",
            })?;
            let r = &mut r;
            match key {
                b"agent_id" => f.agent_id = field(r, "agent_id", Reader::str)?,
                b"selected_agent" => f.selected_agent = field(r, "selected_agent", Reader::str)?,
                b"task_id" => f.task_id = field(r, "task_id", Reader::str)?,
                b"strategy" => f.strategy = field(r, "strategy", Reader::name)?,
                b"confidence" => f.confidence = field(r, "confidence", Reader::f64)?,
                b"outcome" => f.outcome(r)?,
                b"duration_ms" => f.duration_ms = field(r, "duration_ms", Reader::f64)?,
                b"tokens_used" => f.tokens_used = field(r, "tokens_used", Reader::u64)?,
                b"tokens_allocated" => {
                    f.tokens_allocated = field(r, "tokens_allocated", Reader::u64)?;
                }
                b"valid" => f.valid = field(r, "valid", Reader::bool)?,
                b"compliance_score" => {
                    f.compliance_score = field(r, "compliance_score", Reader::f64)?;
                }
                b"violations" => f.violations = Some(violations(r)?),
                b"overall_score" => f.overall_score = field(r, "overall_score", Reader::f64)?,
                b"score" => f.score = field(r, "score", Reader::f64)?,
                b"passed" => f.passed = field(r, "passed", Reader::bool)?,
                b"average_reward" => f.average_reward = field(r, "average_reward", Reader::f64)?,
                b"policy_loss" => f.policy_loss = field(r, "policy_loss", Reader::f64)?,
                b"value_loss" => f.value_loss = field(r, "value_loss", Reader::f64)?,
                b"kl_divergence" => f.kl_divergence = field(r, "kl_divergence", Reader::f64)?,
                _ => {
                    field(r, "record", Reader::skip)?;
                }
            }
        }
        Ok(f)
    }

    /// A task's `outcome`: its status and tokens.
    fn outcome(&mut self, r: &mut Reader<'a>) -> Result<(), BadRecord> {
        let entries = r.map_len().ok_or(BadRecord {
            field: "outcome",
            reason: NOT_A_MAP,
        })?;
        for _ in 0..entries {
            match field(r, "outcome", Reader::str_bytes)? {
                Some(b"status") => self.status = field(r, "status", Reader::name)?,
                Some(b"tokens_consumed") => {
                    self.tokens_consumed = field(r, "tokens_consumed", Reader::u64)?;
                }
                _ => {
                    field(r, "outcome", Reader::skip)?;
                }
            }
        }
        Ok(())
    }
}

/// A validation's `violations`: each one's severity and rule.
fn violations<'a>(r: &mut Reader<'a>) -> Result<Vec<ViolationFields<'a>>, BadRecord> {
    let bad = |reason| BadRecord {
        field: "violations",
        reason,
    };
    let count = r.array_len().ok_or(bad("not an array"))?;
    let mut all = Vec::new();
    for _ in 0..count {
        let entries = r.map_len().ok_or(bad(NOT_A_MAP))?;
        let (mut severity, mut rule) = (None, None);
        for _ in 0..entries {
            match field(r, "violations", Reader::str_bytes)? {
                Some(b"severity") => severity = field(r, "severity", Reader::name)?,
                Some(b"rule") if r.nil() => rule = None,
                Some(b"rule") => rule = field(r, "rule", Reader::str)?,
                _ => {
                    field(r, "violations", Reader::skip)?;
                }
            }
        }
        all.push(ViolationFields {
            severity: need(severity, "severity")?,
            rule,
        });
    }
    Ok(all)
}

impl<'a> EventView<'a> {
    /// The view of the record `bytes` encode (a MessagePack map, as a data directory's
    /// frames and exports hold it), of kind `kind` (its frame's). Only the fields the
    /// view holds are read: the others are skipped, unchecked. Kinds whose events only
    /// count ([`EventKind::Custom`], [`EventKind::AnomalyDetected`]) are not read.
    ///
    /// # Errors
    ///
    /// [`BadRecord`] naming a field the view needs that is missing or of another type.
    pub(crate) fn decode(kind: EventKind, bytes: &'a [u8]) -> Result<EventView<'a>, BadRecord> {
        if matches!(kind, EventKind::Custom | EventKind::AnomalyDetected) {
            return Ok(EventView {
                kind,
                agent: None,
                task: None,
                figures: Figures::None,
            });
        }
        let f = Found::read(bytes)?;
        let agent = || need(f.agent_id, "agent_id");
        let task = || need(f.task_id, "task_id");
        let (agent, task, figures) = match kind {
            EventKind::AgentRegistered | EventKind::AgentStatusChanged => {
                (Some(agent()?), None, Figures::None)
            }
            EventKind::RoutingDecision => {
                let figures = Figures::Routed {
                    strategy: need(f.strategy, "strategy")?,
                    confidence: need(f.confidence, "confidence")?,
                };
                let selected = need(f.selected_agent, "selected_agent")?;
                (Some(selected), Some(task()?), figures)
            }
            EventKind::TaskStarted => (Some(agent()?), Some(task()?), Figures::None),
            EventKind::TaskCompleted => {
                let figures = Figures::Completed {
                    status: need(f.status, "status")?,
                    duration_ms: need(f.duration_ms, "duration_ms")?,
                    tokens_consumed: need(f.tokens_consumed, "tokens_consumed")?,
                };
                (Some(agent()?), Some(task()?), figures)
            }
            EventKind::TaskAbandoned => {
                let figures = Figures::Abandoned {
                    duration_ms: need(f.duration_ms, "duration_ms")?,
                };
                (Some(agent()?), Some(task()?), figures)
            }
            EventKind::ConstitutionalValidation => {
                let (agent, task) = (agent()?, task()?);
                let figures = Figures::Validated {
                    valid: need(f.valid, "valid")?,
                    compliance_score: need(f.compliance_score, "compliance_score")?,
                    violations: Violations::Record(need(f.violations, "violations")?),
                };
                (Some(agent), Some(task), figures)
            }
            EventKind::ThinkingBudgetAllocated | EventKind::MinimalityEvaluated => {
                (None, Some(task()?), Figures::None)
            }
            EventKind::ThinkingBudgetUsed => {
                let figures = Figures::BudgetUsed {
                    tokens_used: need(f.tokens_used, "tokens_used")?,
                    tokens_allocated: need(f.tokens_allocated, "tokens_allocated")?,
                };
                (None, Some(task()?), figures)
            }
            EventKind::JudgmentRecorded => {
                let figures = Figures::Judged {
                    overall_score: need(f.overall_score, "overall_score")?,
                };
                (None, Some(task()?), figures)
            }
            EventKind::EvaluationOutcome => {
                let figures = Figures::Evaluated {
                    score: need(f.score, "score")?,
                    passed: need(f.passed, "passed")?,
                };
                (None, Some(task()?), figures)
            }
            EventKind::RlTrainingMetrics => {
                let figures = Figures::Trained {
                    average_reward: need(f.average_reward, "average_reward")?,
                    policy_loss: need(f.policy_loss, "policy_loss")?,
                    value_loss: need(f.value_loss, "value_loss")?,
                    kl_divergence: need(f.kl_divergence, "kl_divergence")?,
                };
                (None, None, figures)
            }
            EventKind::Custom | EventKind::AnomalyDetected => (None, None, Figures::None),
        };
        Ok(EventView {
            kind,
            agent,
            task,
            figures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode::encode_record;
    use crate::codec::encode::tests::{fixture_events, keeping_identifiers};

    /// What the aggregates read of `v`, comparable across the two sources.
    fn shown(v: &EventView<'_>) -> String {
        let mut violations = Vec::new();
        let figures = match &v.figures {
            Figures::Validated {
                valid,
                compliance_score,
                violations: all,
            } => {
                all.for_each(|s, r| violations.push((s, r.map(str::to_owned))));
                format!("validated {valid} {compliance_score}")
            }
            other => format!("{other:?}"),
        };
        format!(
            "{:?} {:?} {:?} {figures} {violations:?}",
            v.kind, v.agent, v.task
        )
    }

    #[test]
    fn a_records_bytes_read_as_its_event_does() {
        let mut anonymizer = keeping_identifiers();
        let events = fixture_events();
        let mut kinds = std::collections::BTreeSet::new();
        for (i, event) in events.iter().enumerate() {
            let mut out = Vec::new();
            let occurred_at = (i % 2 == 1).then_some(5);
            assert!(
                encode_record(
                    i as u64 + 1,
                    7,
                    occurred_at,
                    event,
                    &mut anonymizer,
                    &mut out
                )
                .is_ok()
            );
            let decoded = EventView::decode(event.kind(), &out);
            assert!(decoded.is_ok(), "event {i}: {decoded:?}");
            let decoded = decoded.map(|v| shown(&v)).unwrap_or_default();
            assert_eq!(decoded, shown(&EventView::from(event)), "event {i}");
            kinds.insert(event.kind());
        }
        // Every kind but alerts, which the fixtures do not hold and which only count.
        assert_eq!(kinds.len(), EventKind::COUNT - 1);
    }

    #[test]
    fn bytes_without_the_fields_of_their_kind_are_refused() {
        let mut anonymizer = keeping_identifiers();
        let events = fixture_events();
        let completed = events.iter().find(|e| e.kind() == EventKind::TaskCompleted);
        let mut out = Vec::new();
        assert!(
            completed.is_some_and(|e| {
                encode_record(1, 2, None, e, &mut anonymizer, &mut out).is_ok()
            })
        );
        assert!(EventView::decode(EventKind::TaskCompleted, &out).is_ok());
        let missing = BadRecord {
            field: "tokens_used",
            reason: "missing",
        };
        let as_budget = EventView::decode(EventKind::ThinkingBudgetUsed, &out);
        assert_eq!(as_budget.err(), Some(missing));
        assert!(EventView::decode(EventKind::TaskCompleted, &out[..out.len() - 1]).is_err());
    }
}
