//! Validation in `record()`: every rule, on several event kinds and nested paths, from
//! `fixtures/events/bad_events.jsonl`; non-finite floats built here (JSON has none);
//! and inputs serde refuses before validation, from `fixtures/events/undecodable.jsonl`.

mod common;

use std::collections::BTreeMap;

use arbiter_events::{
    Alternative, AnonymizationKey, Attributes, Baseline, Collector, Config, Cursor, Event,
    EventKind, ExportRequest, JudgmentRecorded, OutcomeStatus, RecordError, RlTrainingMetrics,
    RoutingDecision, RoutingStrategy, Rule, TaskAbandoned, TaskCompleted, TaskOutcome,
    ThinkingBudgetAllocated, ValidationError, Value,
};

use common::Result;

fn collector() -> Result<Collector> {
    Ok(Collector::builder()
        .key(AnonymizationKey::from_bytes(common::GOLDEN_KEY))
        .build()?)
}

/// Records `event` and returns the validation error, failing on anything else.
fn rejection(collector: &Collector, event: Event) -> std::result::Result<ValidationError, String> {
    match collector.record(event) {
        Err(RecordError::Invalid(error)) => Ok(error),
        Err(other) => Err(format!("refused for another reason: {other}")),
        Ok(()) => Err("accepted".to_owned()),
    }
}

/// Asserts nothing was stored and `rejected` invalid events were counted.
fn assert_nothing_stored(collector: &Collector, rejected: u64) -> Result<()> {
    collector.flush(common::FLUSH_TIMEOUT)?;
    let stats = collector.stats();
    assert_eq!(stats.rejected, rejected);
    assert_eq!(stats.submitted, rejected);
    assert_eq!(stats.stored, 0);
    assert_eq!(stats.retained, 0);
    assert_eq!(stats.in_flight, 0);
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    assert!(export.is_empty());
    Ok(())
}

#[test]
fn smoke() -> Result<()> {
    let collector = collector()?;
    let error = rejection(
        &collector,
        Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
            task_id: "task-1".into(),
            allocated_tokens: 100,
            complexity: arbiter_events::Complexity::Standard,
            confidence: 1.5,
        }),
    )?;
    assert_eq!(error.kind(), EventKind::ThinkingBudgetAllocated);
    assert_eq!(error.field(), "confidence");
    assert!(matches!(error.rule(), Rule::OutOfRange { value, min, max }
        if *value == 1.5 && *min == 0.0 && *max == 1.0));
    assert_nothing_stored(&collector, 1)
}

#[test]
fn every_bad_event_fixture_is_rejected_naming_its_field_and_rule() -> Result<()> {
    let cases = common::bad_cases()?;
    let collector = collector()?;
    let mut failures = Vec::new();
    for case in &cases {
        let kind = case.event.kind();
        match rejection(&collector, case.event.clone()) {
            Err(why) => failures.push(format!("{}: {why}", case.name)),
            Ok(error) => {
                let rule = common::rule_name(error.rule());
                if error.field() != case.field || rule != case.rule || error.kind() != kind {
                    failures.push(format!(
                        "{}: expected {kind} `{}` {}, got {} `{}` {rule} ({error})",
                        case.name,
                        case.field,
                        case.rule,
                        error.kind(),
                        error.field(),
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_nothing_stored(&collector, cases.len() as u64)
}

#[test]
fn the_fixtures_cover_every_rule_on_several_kinds() -> Result<()> {
    let cases = common::bad_cases()?;
    let mut kinds_by_rule: BTreeMap<&str, std::collections::BTreeSet<EventKind>> = BTreeMap::new();
    for case in &cases {
        kinds_by_rule
            .entry(case.rule.as_str())
            .or_default()
            .insert(case.event.kind());
    }
    for rule in [
        "out_of_range",
        "negative",
        "empty",
        "too_long",
        "control_character",
        "too_many",
        "too_deep",
    ] {
        let kinds = kinds_by_rule.get(rule).map_or(0, |k| k.len());
        assert!(kinds >= 2, "{rule} is tested on {kinds} event kinds");
    }
    let nested = cases
        .iter()
        .filter(|c| c.field.contains(['.', '[']))
        .count();
    assert!(nested >= 20, "only {nested} cases on nested paths");
    Ok(())
}

#[test]
fn size_cases_pass_once_their_limit_is_lifted() -> Result<()> {
    // Each size case breaks one limit only: at the largest limits it is accepted, except
    // identifiers, which are capped at 256 bytes by every configuration.
    let mut config = Config::default();
    config.limits.max_string_bytes = arbiter_events::MAX_STRING_BYTES;
    config.limits.max_collection_len = arbiter_events::MAX_COLLECTION_LEN;
    config.limits.max_attribute_entries = arbiter_events::MAX_COLLECTION_LEN;
    config.limits.max_attribute_depth = arbiter_events::MAX_ATTRIBUTE_DEPTH;
    let collector = Collector::builder().config(config).build()?;
    let mut lifted = 0;
    for case in common::bad_cases()? {
        if !["too_long", "too_many", "too_deep"].contains(&case.rule.as_str()) {
            continue;
        }
        match collector.record(case.event.clone()) {
            Ok(()) => lifted += 1,
            Err(RecordError::Invalid(e))
                if e.field() == case.field
                    && matches!(e.rule(), Rule::TooLong { max, .. }
                        if *max == arbiter_events::DEFAULT_MAX_ID_BYTES) => {}
            Err(e) => {
                return Err(format!("{}: refused with every limit lifted: {e}", case.name).into());
            }
        }
    }
    assert!(
        lifted >= 15,
        "only {lifted} size cases were accepted with the limits lifted"
    );
    Ok(())
}

/// Non-finite floats: JSON cannot hold them, so the cases are built here.
fn not_finite_cases() -> Vec<(&'static str, Event, &'static str)> {
    let baseline = Baseline {
        latency_ms: 100.0,
        accuracy: 0.9,
        cost_per_task: 0.01,
        reliability: 0.99,
    };
    let registered = |baseline: Baseline| {
        Event::AgentRegistered(arbiter_events::AgentRegistered {
            agent_id: "agent-a".into(),
            capabilities: vec!["code-review".into()],
            baseline,
        })
    };
    let routing = |confidence: f64, score: f64| {
        Event::RoutingDecision(RoutingDecision {
            task_id: "task-1".into(),
            selected_agent: "agent-a".into(),
            strategy: RoutingStrategy::MultiArmedBandit,
            confidence,
            alternatives: vec![
                Alternative {
                    agent_id: "agent-b".into(),
                    score: 0.5,
                    reason: "slower".into(),
                },
                Alternative {
                    agent_id: "agent-c".into(),
                    score,
                    reason: "costlier".into(),
                },
            ],
            rationale: "ucb".into(),
        })
    };
    let completed = |quality: f64, duration_ms: f64| {
        Event::TaskCompleted(TaskCompleted {
            execution_id: "exec-1".into(),
            task_id: "task-1".into(),
            agent_id: "agent-a".into(),
            outcome: TaskOutcome {
                status: OutcomeStatus::Succeeded,
                quality_score: quality,
                efficiency_score: 0.5,
                tokens_consumed: 10,
            },
            duration_ms,
        })
    };
    let judgment = |score: f64| {
        Event::JudgmentRecorded(JudgmentRecorded {
            task_id: "task-1".into(),
            overall_score: 0.5,
            overall_confidence: 0.5,
            all_criteria_pass: false,
            criteria_scores: [("correctness".to_owned(), 0.5), ("style".to_owned(), score)]
                .into_iter()
                .collect(),
            evaluation_time_ms: 1.0,
        })
    };
    let metrics = |reward: f64, policy: f64, value: f64| {
        Event::RlTrainingMetrics(RlTrainingMetrics {
            trajectories_processed: 10,
            average_reward: reward,
            policy_loss: policy,
            value_loss: value,
            kl_divergence: 0.01,
            training_time_ms: 1.0,
        })
    };
    let custom = |attributes: Attributes| {
        Event::Custom(arbiter_events::Custom {
            name: "arbiter.sample".into(),
            attributes,
        })
    };
    let nested = |v: f64| {
        Value::Map(
            [(
                "y".to_owned(),
                Value::List(vec![Value::Int(1), Value::Float(v)]),
            )]
            .into_iter()
            .collect(),
        )
    };
    vec![
        (
            "latency NaN",
            registered(Baseline {
                latency_ms: f64::NAN,
                ..baseline.clone()
            }),
            "baseline.latency_ms",
        ),
        (
            "accuracy infinite",
            registered(Baseline {
                accuracy: f64::INFINITY,
                ..baseline.clone()
            }),
            "baseline.accuracy",
        ),
        (
            "cost negative infinite",
            registered(Baseline {
                cost_per_task: f64::NEG_INFINITY,
                ..baseline
            }),
            "baseline.cost_per_task",
        ),
        ("confidence NaN", routing(f64::NAN, 0.5), "confidence"),
        (
            "alternative score negative infinite",
            routing(0.5, f64::NEG_INFINITY),
            "alternatives[1].score",
        ),
        (
            "quality infinite",
            completed(f64::INFINITY, 1.0),
            "outcome.quality_score",
        ),
        (
            "duration infinite",
            completed(0.5, f64::INFINITY),
            "duration_ms",
        ),
        (
            "abandoned duration NaN",
            Event::TaskAbandoned(TaskAbandoned {
                execution_id: "exec-1".into(),
                task_id: "task-1".into(),
                agent_id: "agent-a".into(),
                duration_ms: f64::NAN,
            }),
            "duration_ms",
        ),
        (
            "criterion NaN",
            judgment(f64::NAN),
            "criteria_scores[\"style\"]",
        ),
        ("reward NaN", metrics(f64::NAN, 0.0, 0.0), "average_reward"),
        (
            "policy loss negative infinite",
            metrics(0.0, f64::NEG_INFINITY, 0.0),
            "policy_loss",
        ),
        (
            "value loss infinite",
            metrics(0.0, 0.0, f64::INFINITY),
            "value_loss",
        ),
        (
            "context float NaN",
            Event::TaskStarted(arbiter_events::TaskStarted {
                execution_id: "exec-1".into(),
                task_id: "task-1".into(),
                agent_id: "agent-a".into(),
                context: Attributes::new()
                    .with("weights", vec![Value::Float(0.5), f64::NAN.into()]),
            }),
            "context[\"weights\"][1]",
        ),
        (
            "nested attribute infinite",
            custom(Attributes::new().with("x", nested(f64::INFINITY))),
            "attributes[\"x\"][\"y\"][1]",
        ),
    ]
}

#[test]
fn non_finite_floats_are_rejected() -> Result<()> {
    let collector = collector()?;
    let cases = not_finite_cases();
    for (name, event, field) in &cases {
        let error = rejection(&collector, event.clone()).map_err(|e| format!("{name}: {e}"))?;
        assert_eq!(error.field(), *field, "{name}");
        assert!(
            matches!(error.rule(), Rule::NotFinite),
            "{name}: {:?}",
            error.rule()
        );
        assert_eq!(error.kind(), event.kind(), "{name}");
    }
    assert_nothing_stored(&collector, cases.len() as u64)
}

#[test]
fn boundary_values_are_accepted() -> Result<()> {
    let collector = collector()?;
    let at = |confidence: f64| {
        Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
            task_id: "t".repeat(256),
            allocated_tokens: u64::MAX,
            complexity: arbiter_events::Complexity::Trivial,
            confidence,
        })
    };
    for confidence in [0.0, -0.0, 1.0, f64::MIN_POSITIVE, 1.0 - f64::EPSILON] {
        collector.record(at(confidence))?;
    }
    collector.record(Event::TaskAbandoned(TaskAbandoned {
        execution_id: "e".into(),
        task_id: "é".repeat(128),
        agent_id: "a".into(),
        duration_ms: 0.0,
    }))?;
    collector.record(Event::RlTrainingMetrics(RlTrainingMetrics {
        trajectories_processed: 0,
        average_reward: -f64::MAX,
        policy_loss: f64::MAX,
        value_loss: f64::MAX,
        kl_divergence: 0.0,
        training_time_ms: f64::MIN_POSITIVE,
    }))?;
    collector.flush(common::FLUSH_TIMEOUT)?;
    let stats = collector.stats();
    assert_eq!(stats.rejected, 0);
    assert_eq!(stats.stored, 7);
    Ok(())
}

#[test]
fn limits_follow_the_configuration_live() -> Result<()> {
    let collector = collector()?;
    let routing = |alternatives: usize| {
        Event::RoutingDecision(RoutingDecision {
            task_id: "task-1".into(),
            selected_agent: "agent-a".into(),
            strategy: RoutingStrategy::Random,
            confidence: 0.5,
            alternatives: (0..alternatives)
                .map(|i| Alternative {
                    agent_id: format!("agent-{i}"),
                    score: 0.5,
                    reason: String::new(),
                })
                .collect(),
            rationale: "x".repeat(100),
        })
    };
    collector.record(routing(3))?;
    collector.update_config(|c| {
        c.limits.max_collection_len = 2;
        c.limits.max_string_bytes = 99;
    })?;
    let error = rejection(&collector, routing(2))?;
    assert_eq!(error.field(), "rationale");
    assert!(matches!(error.rule(), Rule::TooLong { len: 100, max: 99 }));
    let error = rejection(&collector, routing(3))?;
    assert_eq!(error.field(), "alternatives");
    assert!(matches!(error.rule(), Rule::TooMany { len: 3, max: 2 }));
    collector.update_config(|c| c.limits.max_id_bytes = 4)?;
    let error = rejection(&collector, routing(0))?;
    assert_eq!(error.field(), "task_id");
    assert!(matches!(error.rule(), Rule::TooLong { len: 6, max: 4 }));
    Ok(())
}

#[test]
fn messages_name_the_kind_the_field_and_the_rule() -> Result<()> {
    let collector = collector()?;
    let mut messages = BTreeMap::new();
    for case in common::bad_cases()? {
        let error = rejection(&collector, case.event).map_err(|e| format!("{}: {e}", case.name))?;
        let message = error.to_string();
        assert!(message.contains(error.kind().as_str()), "{message}");
        assert!(
            message.contains(&format!("`{}`", error.field())),
            "{message}"
        );
        assert!(
            messages.insert(case.name, message).is_none(),
            "duplicate case name"
        );
    }
    for (name, event, _) in not_finite_cases() {
        let error = rejection(&collector, event)?;
        messages.insert(format!("not finite: {name}"), error.to_string());
    }
    insta::assert_yaml_snapshot!("validation_messages", messages);
    Ok(())
}

#[test]
fn try_record_hands_the_invalid_event_back() -> Result<()> {
    let collector = collector()?;
    for case in common::bad_cases()?.into_iter().take(5) {
        let error = collector
            .try_record(case.event.clone())
            .err()
            .ok_or_else(|| format!("{}: accepted", case.name))?;
        assert_eq!(error.event(), &case.event);
        assert!(matches!(error.error(), RecordError::Invalid(e) if e.field() == case.field));
    }
    assert_nothing_stored(&collector, 5)
}

#[test]
fn undecodable_inputs_are_refused_by_serde() -> Result<()> {
    let cases = common::undecodable_cases()?;
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case.event.to_string();
        let result = serde_json::from_str::<Event>(&text);
        assert!(
            result.is_err(),
            "{}: deserialized as {:?}",
            case.name,
            result.ok()
        );
        let from_value = serde_json::from_value::<Event>(case.event.clone());
        assert!(
            from_value.is_err(),
            "{}: deserialized from a value",
            case.name
        );
    }
    Ok(())
}

#[test]
fn integers_beyond_i64_decode_as_floats_whatever_their_sign() -> Result<()> {
    let big: arbiter_events::Value = serde_json::from_str("18446744073709551615")?;
    let small: arbiter_events::Value = serde_json::from_str("-9223372036854775809")?;
    assert!(matches!(big, arbiter_events::Value::Float(f) if f > 1.8e19));
    assert!(matches!(small, arbiter_events::Value::Float(f) if f < -9.2e18));
    Ok(())
}
