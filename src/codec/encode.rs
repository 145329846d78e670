//! Records encoded by hand as named MessagePack maps, anonymized on the way.
//!
//! The bytes are exactly what serde with rmp-serde's struct maps gives for the
//! anonymized event (`seq`, `time`, `type`, then the fields in declaration order; the
//! golden export pins this), but identifiers are written as pseudonyms and free text as
//! its redaction straight into the output: the event's own strings are never rewritten.

use std::collections::BTreeMap;
use std::io;

use rmp::encode as mp;

use crate::codec::anonymize::Anonymizer;
use crate::contract::event::{
    AgentStatus, Attributes, Complexity, Event, OutcomeStatus, RoutingStrategy, Severity, Value,
};
use crate::contract::key::{IdKind, write_pseudonym};

type Written = io::Result<()>;

/// MessagePack markers of the short forms (the low bits hold the length).
const FIXMAP: u8 = 0x80;
const FIXARRAY: u8 = 0x90;
const FIXSTR: u8 = 0xa0;
const STR8: u8 = 0xd9;
const F64: u8 = 0xcb;

/// Appends the record `seq` at `time` holding `event` to `out`; `occurred_at` (when the
/// caller gave one) follows `time`, and is absent otherwise.
pub(crate) fn encode_record(
    seq: u64,
    time: i64,
    occurred_at: Option<i64>,
    event: &Event,
    anonymizer: &mut Anonymizer,
    out: &mut Vec<u8>,
) -> Written {
    let mut e = Encoder { out, anonymizer };
    e.map(3 + u32::from(occurred_at.is_some()) + fields(event))?;
    e.key("seq")?;
    mp::write_uint(e.out, seq)?;
    e.key("time")?;
    mp::write_sint(e.out, time)?;
    if let Some(at) = occurred_at {
        e.key("occurred_at")?;
        mp::write_sint(e.out, at)?;
    }
    e.key("type")?;
    e.str(event.kind().as_str())?;
    e.fields(event)
}

/// The number of fields of each variant (besides `type`).
fn fields(event: &Event) -> u32 {
    match event {
        Event::AgentRegistered(_) | Event::ThinkingBudgetUsed(_) => 3,
        Event::AgentStatusChanged(_)
        | Event::TaskStarted(_)
        | Event::TaskAbandoned(_)
        | Event::ThinkingBudgetAllocated(_) => 4,
        Event::TaskCompleted(_) | Event::EvaluationOutcome(_) => 5,
        Event::RoutingDecision(_)
        | Event::MinimalityEvaluated(_)
        | Event::JudgmentRecorded(_)
        | Event::RlTrainingMetrics(_) => 6,
        Event::ConstitutionalValidation(_) => 7,
        Event::Custom(_) => 2,
        Event::AnomalyDetected(_) => 9,
    }
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    anonymizer: &'a mut Anonymizer,
}

impl Encoder<'_> {
    // The markers of the short forms are written straight into the buffer: the same
    // bytes `rmp` writes (it too picks the shortest form), without a fallible `Write`
    // call per marker, which is most of the cost of a record of short strings.

    fn map(&mut self, len: u32) -> Written {
        if len < 16 {
            self.out.push(FIXMAP | len as u8);
            return Ok(());
        }
        mp::write_map_len(self.out, len)?;
        Ok(())
    }

    fn array(&mut self, len: usize) -> Written {
        if len < 16 {
            self.out.push(FIXARRAY | len as u8);
            return Ok(());
        }
        mp::write_array_len(self.out, u32::try_from(len).map_err(io::Error::other)?)?;
        Ok(())
    }

    fn str_len(&mut self, len: usize) -> Written {
        match u8::try_from(len) {
            Ok(n) if n < 32 => self.out.push(FIXSTR | n),
            Ok(n) => self.out.extend_from_slice(&[STR8, n]),
            Err(_) => {
                mp::write_str_len(self.out, u32::try_from(len).map_err(io::Error::other)?)?;
            }
        }
        Ok(())
    }

    fn str(&mut self, s: &str) -> Written {
        self.str_len(s.len())?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn key(&mut self, name: &str) -> Written {
        self.str(name)
    }

    fn f64(&mut self, name: &str, v: f64) -> Written {
        self.key(name)?;
        self.out.push(F64);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }

    fn uint(&mut self, name: &str, v: u64) -> Written {
        self.key(name)?;
        mp::write_uint(self.out, v)?;
        Ok(())
    }

    fn bool(&mut self, name: &str, v: bool) -> Written {
        self.key(name)?;
        mp::write_bool(self.out, v)
    }

    fn name(&mut self, name: &str, value: &str) -> Written {
        self.key(name)?;
        self.str(value)
    }

    /// An identifier value: its pseudonym, or itself when identifiers are kept.
    fn id_value(&mut self, kind: IdKind, id: &str) -> Written {
        match self.anonymizer.pseudonym(kind, id) {
            None => self.str(id),
            Some((prefix, digits)) => {
                self.str_len(prefix.len() + digits.len())?;
                self.out.extend_from_slice(prefix.as_bytes());
                self.out.extend_from_slice(&digits);
                Ok(())
            }
        }
    }

    fn id(&mut self, name: &str, kind: IdKind, id: &str) -> Written {
        self.key(name)?;
        self.id_value(kind, id)
    }

    fn text_value(&mut self, text: &str) -> Written {
        let text = self.anonymizer.redaction().unwrap_or(text);
        self.str(text)
    }

    fn text(&mut self, name: &str, text: &str) -> Written {
        self.key(name)?;
        self.text_value(text)
    }

    fn opt_text(&mut self, name: &str, text: Option<&str>) -> Written {
        self.key(name)?;
        match text {
            Some(t) => self.text_value(t),
            None => mp::write_nil(self.out),
        }
    }

    fn scores(&mut self, name: &str, scores: &BTreeMap<String, f64>) -> Written {
        self.key(name)?;
        self.map(len32(scores.len())?)?;
        for (k, v) in scores {
            self.f64(k, *v)?;
        }
        Ok(())
    }

    fn attributes(&mut self, name: &str, attrs: &Attributes) -> Written {
        self.key(name)?;
        self.value_map(&attrs.0, false)
    }

    /// A map of attribute values; below a configured key (`pseudonymized`) its keys
    /// and scalars are pseudonyms, in the order of the pseudonyms.
    fn value_map(&mut self, map: &BTreeMap<String, Value>, pseudonymized: bool) -> Written {
        self.map(len32(map.len())?)?;
        if !pseudonymized {
            for (k, v) in map {
                self.str(k)?;
                let below = self.anonymizer.is_pseudonymized_key(k);
                self.value(v, below)?;
            }
            return Ok(());
        }
        let mut entries: Vec<(String, &Value)> = map
            .iter()
            .map(|(k, v)| (self.pseudonym_string(k), v))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in entries {
            self.str(&k)?;
            self.value(v, true)?;
        }
        Ok(())
    }

    fn pseudonym_string(&mut self, id: &str) -> String {
        match self.anonymizer.pseudonym(IdKind::Attribute, id) {
            None => id.to_owned(),
            Some((_, digits)) => {
                let mut s = String::new();
                write_pseudonym(IdKind::Attribute, &digits, &mut s);
                s
            }
        }
    }

    fn value(&mut self, value: &Value, pseudonymized: bool) -> Written {
        match value {
            Value::Null => mp::write_nil(self.out),
            Value::Bool(b) => mp::write_bool(self.out, *b),
            Value::Int(i) if pseudonymized => self.id_value(IdKind::Attribute, &i.to_string()),
            Value::Int(i) => {
                mp::write_sint(self.out, *i)?;
                Ok(())
            }
            Value::Float(f) if pseudonymized => self.id_value(IdKind::Attribute, &f.to_string()),
            Value::Float(f) => {
                mp::write_f64(self.out, *f)?;
                Ok(())
            }
            Value::String(s) if pseudonymized => self.id_value(IdKind::Attribute, s),
            Value::String(s) => self.str(s),
            Value::List(items) => {
                self.array(items.len())?;
                items.iter().try_for_each(|v| self.value(v, pseudonymized))
            }
            Value::Map(map) => self.value_map(map, pseudonymized),
        }
    }

    fn fields(&mut self, event: &Event) -> Written {
        use IdKind::{Agent, Execution, Task};
        match event {
            Event::AgentRegistered(e) => {
                self.id("agent_id", Agent, &e.agent_id)?;
                self.key("capabilities")?;
                self.array(e.capabilities.len())?;
                e.capabilities.iter().try_for_each(|c| self.str(c))?;
                self.key("baseline")?;
                self.map(4)?;
                let b = &e.baseline;
                self.f64("latency_ms", b.latency_ms)?;
                self.f64("accuracy", b.accuracy)?;
                self.f64("cost_per_task", b.cost_per_task)?;
                self.f64("reliability", b.reliability)
            }
            Event::AgentStatusChanged(e) => {
                self.id("agent_id", Agent, &e.agent_id)?;
                self.name("status", status(e.status))?;
                self.key("previous")?;
                match e.previous {
                    Some(p) => self.str(status(p))?,
                    None => mp::write_nil(self.out)?,
                }
                self.opt_text("reason", e.reason.as_deref())
            }
            Event::RoutingDecision(e) => {
                self.id("task_id", Task, &e.task_id)?;
                self.id("selected_agent", Agent, &e.selected_agent)?;
                self.name("strategy", strategy(e.strategy))?;
                self.f64("confidence", e.confidence)?;
                self.key("alternatives")?;
                self.array(e.alternatives.len())?;
                for a in &e.alternatives {
                    self.map(3)?;
                    self.id("agent_id", Agent, &a.agent_id)?;
                    self.f64("score", a.score)?;
                    self.text("reason", &a.reason)?;
                }
                self.text("rationale", &e.rationale)
            }
            Event::TaskStarted(e) => {
                self.id("execution_id", Execution, &e.execution_id)?;
                self.id("task_id", Task, &e.task_id)?;
                self.id("agent_id", Agent, &e.agent_id)?;
                self.attributes("context", &e.context)
            }
            Event::TaskCompleted(e) => {
                self.id("execution_id", Execution, &e.execution_id)?;
                self.id("task_id", Task, &e.task_id)?;
                self.id("agent_id", Agent, &e.agent_id)?;
                self.key("outcome")?;
                self.map(4)?;
                let o = &e.outcome;
                self.name("status", outcome(o.status))?;
                self.f64("quality_score", o.quality_score)?;
                self.f64("efficiency_score", o.efficiency_score)?;
                self.uint("tokens_consumed", o.tokens_consumed)?;
                self.f64("duration_ms", e.duration_ms)
            }
            Event::TaskAbandoned(e) => {
                self.id("execution_id", Execution, &e.execution_id)?;
                self.id("task_id", Task, &e.task_id)?;
                self.id("agent_id", Agent, &e.agent_id)?;
                self.f64("duration_ms", e.duration_ms)
            }
            Event::ConstitutionalValidation(e) => {
                self.id("task_id", Task, &e.task_id)?;
                self.id("agent_id", Agent, &e.agent_id)?;
                self.bool("valid", e.valid)?;
                self.key("violations")?;
                self.array(e.violations.len())?;
                for v in &e.violations {
                    self.map(3)?;
                    self.name("severity", severity(v.severity))?;
                    self.text("message", &v.message)?;
                    self.key("rule")?;
                    match &v.rule {
                        Some(r) => self.str(r)?,
                        None => mp::write_nil(self.out)?,
                    }
                }
                self.f64("compliance_score", e.compliance_score)?;
                self.f64("processing_time_ms", e.processing_time_ms)?;
                self.uint("rule_count", u64::from(e.rule_count))
            }
            Event::ThinkingBudgetAllocated(e) => {
                self.id("task_id", Task, &e.task_id)?;
                self.uint("allocated_tokens", e.allocated_tokens)?;
                self.name("complexity", complexity(e.complexity))?;
                self.f64("confidence", e.confidence)
            }
            Event::ThinkingBudgetUsed(e) => {
                self.id("task_id", Task, &e.task_id)?;
                self.uint("tokens_used", e.tokens_used)?;
                self.uint("tokens_allocated", e.tokens_allocated)
            }
            Event::MinimalityEvaluated(e) => {
                self.id("task_id", Task, &e.task_id)?;
                self.f64("minimality_factor", e.minimality_factor)?;
                self.f64("ast_similarity", e.ast_similarity)?;
                self.f64("scaffolding_penalty", e.scaffolding_penalty)?;
                self.uint("lines_changed", e.lines_changed)?;
                self.text("quality_assessment", &e.quality_assessment)
            }
            Event::JudgmentRecorded(e) => {
                self.id("task_id", Task, &e.task_id)?;
                self.f64("overall_score", e.overall_score)?;
                self.f64("overall_confidence", e.overall_confidence)?;
                self.bool("all_criteria_pass", e.all_criteria_pass)?;
                self.scores("criteria_scores", &e.criteria_scores)?;
                self.f64("evaluation_time_ms", e.evaluation_time_ms)
            }
            Event::EvaluationOutcome(e) => {
                self.id("task_id", Task, &e.task_id)?;
                self.bool("passed", e.passed)?;
                self.f64("score", e.score)?;
                self.scores("rubric_scores", &e.rubric_scores)?;
                self.opt_text("feedback", e.feedback.as_deref())
            }
            Event::RlTrainingMetrics(e) => {
                self.uint("trajectories_processed", e.trajectories_processed)?;
                self.f64("average_reward", e.average_reward)?;
                self.f64("policy_loss", e.policy_loss)?;
                self.f64("value_loss", e.value_loss)?;
                self.f64("kl_divergence", e.kl_divergence)?;
                self.f64("training_time_ms", e.training_time_ms)
            }
            Event::Custom(e) => {
                self.name("name", &e.name)?;
                self.attributes("attributes", &e.attributes)
            }
            // Made by the collector from its aggregates: `agent_id` is already as the
            // records name it (a pseudonym when pseudonymizing), so it is kept as is.
            Event::AnomalyDetected(e) => {
                self.name("rule", &e.rule)?;
                self.name("kind", e.kind.as_str())?;
                self.name("scope", e.scope.as_str())?;
                self.key("agent_id")?;
                match &e.agent_id {
                    Some(a) => self.str(a)?,
                    None => mp::write_nil(self.out)?,
                }
                self.f64("observed", e.observed)?;
                self.f64("threshold", e.threshold)?;
                self.key("baseline")?;
                match e.baseline {
                    Some(b) => mp::write_f64(self.out, b)?,
                    None => mp::write_nil(self.out)?,
                }
                self.uint("window_secs", e.window_secs)?;
                self.uint("samples", e.samples)
            }
        }
    }
}

fn len32(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(io::Error::other)
}

fn status(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Available => "available",
        AgentStatus::Busy => "busy",
        AgentStatus::Offline => "offline",
        AgentStatus::Maintenance => "maintenance",
    }
}

fn strategy(s: RoutingStrategy) -> &'static str {
    match s {
        RoutingStrategy::MultiArmedBandit => "multi_armed_bandit",
        RoutingStrategy::CapabilityMatch => "capability_match",
        RoutingStrategy::LoadBalance => "load_balance",
        RoutingStrategy::Random => "random",
    }
}

fn outcome(s: OutcomeStatus) -> &'static str {
    match s {
        OutcomeStatus::Succeeded => "succeeded",
        OutcomeStatus::Failed => "failed",
        OutcomeStatus::TimedOut => "timed_out",
        OutcomeStatus::Cancelled => "cancelled",
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn complexity(c: Complexity) -> &'static str {
    match c {
        Complexity::Trivial => "trivial",
        Complexity::Standard => "standard",
        Complexity::Complex => "complex",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde::Serialize;

    use super::*;
    use crate::contract::config::{AnonymizationConfig, AnonymizationMode};
    use crate::contract::key::AnonymizationKey;

    /// The same record through serde and rmp-serde's struct maps.
    fn serde_record(seq: u64, time: i64, occurred_at: Option<i64>, event: &Event) -> Vec<u8> {
        let mut body = Vec::new();
        let serialized =
            event.serialize(&mut rmp_serde::Serializer::new(&mut body).with_struct_map());
        assert!(serialized.is_ok(), "{serialized:?}");
        let mut rest: &[u8] = &body;
        let fields = rmp::decode::read_map_len(&mut rest).unwrap_or(0);
        let mut out = Vec::new();
        let extra = u32::from(occurred_at.is_some());
        assert!(mp::write_map_len(&mut out, fields + 2 + extra).is_ok());
        assert!(mp::write_str(&mut out, "seq").is_ok());
        assert!(mp::write_uint(&mut out, seq).is_ok());
        assert!(mp::write_str(&mut out, "time").is_ok());
        assert!(mp::write_sint(&mut out, time).is_ok());
        if let Some(at) = occurred_at {
            assert!(mp::write_str(&mut out, "occurred_at").is_ok());
            assert!(mp::write_sint(&mut out, at).is_ok());
        }
        out.extend_from_slice(rest);
        out
    }

    /// An anonymizer that keeps identifiers as they are.
    pub(crate) fn keeping_identifiers() -> Anonymizer {
        let config = AnonymizationConfig {
            mode: AnonymizationMode::Off,
            ..AnonymizationConfig::default()
        };
        Anonymizer::new(&AnonymizationKey::from_bytes([1; 32]), &config)
    }

    /// Every event of the fixture streams.
    pub(crate) fn fixture_events() -> Vec<Event> {
        let mut events = Vec::new();
        for name in [
            "all_variants",
            "session_pr_review",
            "session_rl_batch",
            "session_hotfix",
        ] {
            let path = format!(
                "{}/fixtures/events/{name}.jsonl",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!text.is_empty(), "cannot read {path}");
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let event: Result<Event, _> = serde_json::from_str(line);
                assert!(event.is_ok(), "{path}: {event:?}");
                events.extend(event.ok());
            }
        }
        events
    }

    #[test]
    fn smoke() {
        let mut anonymizer = keeping_identifiers();
        let event = Event::ThinkingBudgetUsed(crate::contract::event::ThinkingBudgetUsed {
            task_id: "t".into(),
            tokens_used: 1,
            tokens_allocated: 2,
        });
        let mut out = Vec::new();
        assert!(encode_record(1, 2, None, &event, &mut anonymizer, &mut out).is_ok());
        assert_eq!(out, serde_record(1, 2, None, &event));
    }

    #[test]
    fn short_form_markers_are_rmps_at_every_boundary() {
        let config = AnonymizationConfig::default();
        let mut anonymizer = Anonymizer::new(&AnonymizationKey::from_bytes([1; 32]), &config);
        for len in [0usize, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536] {
            let text = "x".repeat(len);
            let mut ours = Vec::new();
            let mut e = Encoder {
                out: &mut ours,
                anonymizer: &mut anonymizer,
            };
            assert!(e.str(&text).is_ok());
            assert!(e.map(len as u32).is_ok());
            assert!(e.array(len).is_ok());
            assert!(e.f64("v", len as f64 / 3.0).is_ok());
            let mut theirs = Vec::new();
            assert!(mp::write_str(&mut theirs, &text).is_ok());
            assert!(mp::write_map_len(&mut theirs, len as u32).is_ok());
            assert!(mp::write_array_len(&mut theirs, len as u32).is_ok());
            assert!(mp::write_str(&mut theirs, "v").is_ok());
            assert!(mp::write_f64(&mut theirs, len as f64 / 3.0).is_ok());
            assert_eq!(ours, theirs, "length {len}");
        }
    }

    #[test]
    fn with_identifiers_kept_the_bytes_are_serdes() {
        let mut anonymizer = keeping_identifiers();
        let events = fixture_events();
        assert!(events.len() > 100);
        for (i, event) in events.iter().enumerate() {
            let (seq, time) = (
                i as u64 * 7919,
                i as i64 * -104_729 + 1_700_000_000_000_000_000,
            );
            // Every other record carries an `occurred_at`.
            let occurred_at = (i % 2 == 1).then_some(time - 5);
            let mut out = Vec::new();
            assert!(
                encode_record(seq, time, occurred_at, event, &mut anonymizer, &mut out).is_ok()
            );
            assert_eq!(
                out,
                serde_record(seq, time, occurred_at, event),
                "event {i}: {event:?}"
            );
        }
    }
}
