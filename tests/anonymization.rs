//! Anonymization at ingest: identifiers become keyed, kind-separated pseudonyms, free text
//! is redacted, and nothing raw reaches an export; the key's origin is reported and the
//! key itself is never printed.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use arbiter_events::{
    AgentRegistered, AgentStatus, AgentStatusChanged, Alternative, AnonymizationKey,
    AnonymizationMode, Attributes, Baseline, BuildError, Collector, Complexity, Config,
    ConstitutionalValidation, Custom, EvaluationOutcome, Event, EventKind, Export, FreeText,
    IdKind, JudgmentRecorded, KEY_ENV, KeyError, KeyHex, KeyOrigin, ManualClock,
    MinimalityEvaluated, OutcomeStatus, REDACTED, RlTrainingMetrics, RoutingDecision,
    RoutingStrategy, Severity, TaskAbandoned, TaskCompleted, TaskOutcome, TaskStarted,
    ThinkingBudgetAllocated, ThinkingBudgetUsed, Value, Violation,
};

use common::{T0, TestResult, flushed_export, records};

const KEY_A: [u8; 32] = [0xA5; 32];
const KEY_B: [u8; 32] = [0x5A; 32];

/// Identifiers recorded by `every_kind`: none may appear in a pseudonymized export.
/// Each holds characters outside `[0-9a-f_]`, so no pseudonym can contain one by chance.
const RAW_IDS: &[&str] = &[
    "AGENT-registered-Rx",
    "AGENT-status-Rx",
    "TASK-routing-Rx",
    "AGENT-selected-Rx",
    "AGENT-alternative-one-Rx",
    "AGENT-alternative-two-Rx",
    "EXEC-started-Rx",
    "TASK-started-Rx",
    "AGENT-started-Rx",
    "EXEC-completed-Rx",
    "TASK-completed-Rx",
    "AGENT-completed-Rx",
    "EXEC-abandoned-Rx",
    "TASK-abandoned-Rx",
    "AGENT-abandoned-Rx",
    "TASK-caws-Rx",
    "AGENT-caws-Rx",
    "TASK-budget-allocated-Rx",
    "TASK-budget-used-Rx",
    "TASK-minimality-Rx",
    "TASK-judgment-Rx",
    "TASK-evaluation-Rx",
    "TASK-run-Rx",
    "AGENT-run-Rx",
];

/// Values under configured attribute keys, at every depth and inside lists.
const RAW_ATTRIBUTES: &[&str] = &[
    "USER-top-level-Rx",
    "USER-nested-Rx",
    "USER-in-list-one-Rx",
    "USER-in-list-two-Rx",
    "USER-list-of-maps-Rx",
    "ACCOUNT-deep-Rx",
    "USER-custom-Rx",
    "ACCOUNT-custom-list-Rx",
];

/// Free text recorded by `every_kind`: redacted by default.
const RAW_TEXT: &[&str] = &[
    "TEXT status reason Rx",
    "TEXT rationale Rx",
    "TEXT alternative reason one Rx",
    "TEXT alternative reason two Rx",
    "TEXT violation message Rx",
    "TEXT quality assessment Rx",
    "TEXT feedback Rx",
];

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    config.anonymization.attribute_keys = vec!["user".into(), "account".into()];
    edit(&mut config);
    config
}

fn build(config: Config, key: [u8; 32]) -> common::Result<Collector> {
    common::build_collector(ManualClock::new(T0), config, key)
}

fn outcome() -> TaskOutcome {
    TaskOutcome {
        status: OutcomeStatus::Succeeded,
        quality_score: 0.9,
        efficiency_score: 0.8,
        tokens_consumed: 100,
    }
}

fn context() -> Attributes {
    let nested: BTreeMap<String, Value> = [
        ("user".to_owned(), Value::from("USER-nested-Rx")),
        (
            "deeper".to_owned(),
            Value::Map([("account".to_owned(), Value::from("ACCOUNT-deep-Rx"))].into()),
        ),
        ("flag".to_owned(), Value::Bool(true)),
    ]
    .into();
    let list_of_maps = Value::List(vec![Value::Map(
        [("user".to_owned(), Value::from("USER-list-of-maps-Rx"))].into(),
    )]);
    Attributes::new()
        .with("user", "USER-top-level-Rx")
        .with("meta", nested)
        .with(
            "user_list_holder",
            Value::Map(
                [(
                    "user".to_owned(),
                    Value::List(vec![
                        "USER-in-list-one-Rx".into(),
                        "USER-in-list-two-Rx".into(),
                    ]),
                )]
                .into(),
            ),
        )
        .with("people", list_of_maps)
        .with("files", 3)
}

/// One event of every kind, carrying every raw identifier and text above.
fn every_kind() -> Vec<Event> {
    let scores: BTreeMap<String, f64> = [("correctness".to_owned(), 0.5)].into();
    vec![
        Event::AgentRegistered(AgentRegistered {
            agent_id: "AGENT-registered-Rx".into(),
            capabilities: vec!["code-review".into()],
            baseline: Baseline {
                latency_ms: 10.0,
                accuracy: 0.9,
                cost_per_task: 0.1,
                reliability: 0.99,
            },
        }),
        Event::AgentStatusChanged(AgentStatusChanged {
            agent_id: "AGENT-status-Rx".into(),
            status: AgentStatus::Offline,
            previous: Some(AgentStatus::Available),
            reason: Some("TEXT status reason Rx".into()),
        }),
        Event::RoutingDecision(RoutingDecision {
            task_id: "TASK-routing-Rx".into(),
            selected_agent: "AGENT-selected-Rx".into(),
            strategy: RoutingStrategy::MultiArmedBandit,
            confidence: 0.7,
            alternatives: vec![
                Alternative {
                    agent_id: "AGENT-alternative-one-Rx".into(),
                    score: 0.4,
                    reason: "TEXT alternative reason one Rx".into(),
                },
                Alternative {
                    agent_id: "AGENT-alternative-two-Rx".into(),
                    score: 0.2,
                    reason: "TEXT alternative reason two Rx".into(),
                },
            ],
            rationale: "TEXT rationale Rx".into(),
        }),
        Event::TaskStarted(TaskStarted {
            execution_id: "EXEC-started-Rx".into(),
            task_id: "TASK-started-Rx".into(),
            agent_id: "AGENT-started-Rx".into(),
            context: context(),
        }),
        Event::TaskCompleted(TaskCompleted {
            execution_id: "EXEC-completed-Rx".into(),
            task_id: "TASK-completed-Rx".into(),
            agent_id: "AGENT-completed-Rx".into(),
            outcome: outcome(),
            duration_ms: 12.5,
        }),
        Event::TaskAbandoned(TaskAbandoned {
            execution_id: "EXEC-abandoned-Rx".into(),
            task_id: "TASK-abandoned-Rx".into(),
            agent_id: "AGENT-abandoned-Rx".into(),
            duration_ms: 3.0,
        }),
        Event::ConstitutionalValidation(ConstitutionalValidation {
            task_id: "TASK-caws-Rx".into(),
            agent_id: "AGENT-caws-Rx".into(),
            valid: false,
            violations: vec![Violation {
                severity: Severity::High,
                message: "TEXT violation message Rx".into(),
                rule: Some("rule-7".into()),
            }],
            compliance_score: 0.3,
            processing_time_ms: 4.0,
            rule_count: 12,
        }),
        Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
            task_id: "TASK-budget-allocated-Rx".into(),
            allocated_tokens: 1000,
            complexity: Complexity::Complex,
            confidence: 0.6,
        }),
        Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
            task_id: "TASK-budget-used-Rx".into(),
            tokens_used: 900,
            tokens_allocated: 1000,
        }),
        Event::MinimalityEvaluated(MinimalityEvaluated {
            task_id: "TASK-minimality-Rx".into(),
            minimality_factor: 0.8,
            ast_similarity: 0.9,
            scaffolding_penalty: 0.1,
            lines_changed: 12,
            quality_assessment: "TEXT quality assessment Rx".into(),
        }),
        Event::JudgmentRecorded(JudgmentRecorded {
            task_id: "TASK-judgment-Rx".into(),
            overall_score: 0.8,
            overall_confidence: 0.7,
            all_criteria_pass: true,
            criteria_scores: scores.clone(),
            evaluation_time_ms: 30.0,
        }),
        Event::EvaluationOutcome(EvaluationOutcome {
            task_id: "TASK-evaluation-Rx".into(),
            passed: true,
            score: 0.95,
            rubric_scores: scores,
            feedback: Some("TEXT feedback Rx".into()),
        }),
        Event::RlTrainingMetrics(RlTrainingMetrics {
            trajectories_processed: 64,
            average_reward: 0.4,
            policy_loss: 0.2,
            value_loss: 0.1,
            kl_divergence: 0.01,
            training_time_ms: 100.0,
        }),
        Event::Custom(Custom {
            name: "custom-event".into(),
            attributes: Attributes::new()
                .with("user", "USER-custom-Rx")
                .with(
                    "account",
                    Value::List(vec!["ACCOUNT-custom-list-Rx".into(), Value::Null]),
                )
                .with("count", 2),
        }),
    ]
}

/// Records one event of every kind, and an execution through `start_task` (returning
/// its raw execution id), then exports everything.
fn record_every_kind(collector: &Collector) -> common::Result<(Export, String)> {
    for event in every_kind() {
        collector.record(event)?;
    }
    let run = collector.start_task("TASK-run-Rx", "AGENT-run-Rx", context())?;
    let execution_id = run.execution_id().to_owned();
    run.complete(outcome())?;
    let export = flushed_export(collector)?;
    Ok((export, execution_id))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Whether `s` is `prefix` then 32 lowercase hex digits (128 bits).
fn is_pseudonym(s: &str, kind: IdKind) -> bool {
    s.strip_prefix(kind.prefix()).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Every identifier field of `event`, with its kind.
fn identifiers(event: &Event) -> Vec<(IdKind, &str)> {
    use IdKind::{Agent, Execution, Task};
    match event {
        Event::AgentRegistered(e) => vec![(Agent, e.agent_id.as_str())],
        Event::AgentStatusChanged(e) => vec![(Agent, e.agent_id.as_str())],
        Event::RoutingDecision(e) => {
            let mut ids = vec![
                (Task, e.task_id.as_str()),
                (Agent, e.selected_agent.as_str()),
            ];
            ids.extend(e.alternatives.iter().map(|a| (Agent, a.agent_id.as_str())));
            ids
        }
        Event::TaskStarted(e) => vec![
            (Execution, e.execution_id.as_str()),
            (Task, e.task_id.as_str()),
            (Agent, e.agent_id.as_str()),
        ],
        Event::TaskCompleted(e) => vec![
            (Execution, e.execution_id.as_str()),
            (Task, e.task_id.as_str()),
            (Agent, e.agent_id.as_str()),
        ],
        Event::TaskAbandoned(e) => vec![
            (Execution, e.execution_id.as_str()),
            (Task, e.task_id.as_str()),
            (Agent, e.agent_id.as_str()),
        ],
        Event::ConstitutionalValidation(e) => {
            vec![(Task, e.task_id.as_str()), (Agent, e.agent_id.as_str())]
        }
        Event::ThinkingBudgetAllocated(e) => vec![(Task, e.task_id.as_str())],
        Event::ThinkingBudgetUsed(e) => vec![(Task, e.task_id.as_str())],
        Event::MinimalityEvaluated(e) => vec![(Task, e.task_id.as_str())],
        Event::JudgmentRecorded(e) => vec![(Task, e.task_id.as_str())],
        Event::EvaluationOutcome(e) => vec![(Task, e.task_id.as_str())],
        _ => Vec::new(),
    }
}

#[test]
fn smoke() -> TestResult {
    let collector = build(Config::default(), KEY_A)?;
    let (export, _) = record_every_kind(&collector)?;
    assert_eq!(export.len(), every_kind().len() as u64 + 2);
    assert!(!contains(&export.to_msgpack(), "TASK-routing-Rx"));
    Ok(())
}

#[test]
fn nothing_raw_reaches_an_export() -> TestResult {
    let collector = build(config(|_| {}), KEY_A)?;
    let (export, execution_id) = record_every_kind(&collector)?;
    let bytes = export.to_msgpack();
    let kinds: Vec<EventKind> = records(&export)?.iter().map(|r| r.event.kind()).collect();
    // Every kind a caller can record (`anomaly_detected` is made by the collector).
    for kind in EventKind::ALL
        .iter()
        .filter(|k| **k != EventKind::AnomalyDetected)
    {
        assert!(kinds.contains(kind), "no {kind} record");
    }
    let key_hex = AnonymizationKey::from_bytes(KEY_A).to_hex();
    let raw = RAW_IDS
        .iter()
        .chain(RAW_ATTRIBUTES)
        .chain(RAW_TEXT)
        .copied()
        .chain([execution_id.as_str(), key_hex.as_str()]);
    for needle in raw {
        assert!(!contains(&bytes, needle), "{needle:?} is in the export");
    }
    // Non-identifying content stays readable.
    for kept in ["code-review", "rule-7", "custom-event", "correctness"] {
        assert!(contains(&bytes, kept), "{kept:?} was lost");
    }
    Ok(())
}

#[test]
fn identifiers_become_prefixed_128_bit_pseudonyms() -> TestResult {
    let key = AnonymizationKey::from_bytes(KEY_A);
    let collector = build(config(|_| {}), KEY_A)?;
    let (export, execution_id) = record_every_kind(&collector)?;
    let got = records(&export)?;
    let originals: Vec<Event> = every_kind();
    for (record, original) in got.iter().zip(&originals) {
        let ids = identifiers(&record.event);
        let raw = identifiers(original);
        assert_eq!(ids.len(), raw.len());
        for ((kind, id), (_, raw_id)) in ids.iter().zip(&raw) {
            assert!(
                is_pseudonym(id, *kind),
                "{id:?} is not a {kind:?} pseudonym"
            );
            assert_eq!(*id, key.pseudonym(*kind, raw_id));
        }
    }
    let Event::TaskStarted(started) = &got[got.len() - 2].event else {
        panic!(
            "expected the execution's start, got {:?}",
            got[got.len() - 2]
        );
    };
    assert_eq!(
        started.execution_id,
        key.pseudonym(IdKind::Execution, &execution_id)
    );

    // Attribute values under configured keys, at any depth: `atr_` pseudonyms; the rest
    // (other keys, null, booleans, numbers elsewhere) untouched.
    let atr = |raw: &str| Value::String(key.pseudonym(IdKind::Attribute, raw));
    let Event::TaskStarted(e) = &got[3].event else {
        panic!("expected task_started, got {:?}", got[3]);
    };
    let c = &e.context;
    assert_eq!(c.get("user"), Some(&atr("USER-top-level-Rx")));
    assert_eq!(c.get("files"), Some(&Value::Int(3)));
    let Some(Value::Map(meta)) = c.get("meta") else {
        panic!("meta lost: {c:?}");
    };
    assert_eq!(meta.get("user"), Some(&atr("USER-nested-Rx")));
    assert_eq!(meta.get("flag"), Some(&Value::Bool(true)));
    let Some(Value::Map(deeper)) = meta.get("deeper") else {
        panic!("deeper lost: {meta:?}");
    };
    assert_eq!(deeper.get("account"), Some(&atr("ACCOUNT-deep-Rx")));
    let Some(Value::List(people)) = c.get("people") else {
        panic!("people lost: {c:?}");
    };
    assert_eq!(
        people,
        &vec![Value::Map(
            [("user".to_owned(), atr("USER-list-of-maps-Rx"))].into()
        )]
    );
    let Event::Custom(custom) = &got[13].event else {
        panic!("expected custom, got {:?}", got[13]);
    };
    assert_eq!(custom.name, "custom-event");
    assert_eq!(
        custom.attributes.get("account"),
        Some(&Value::List(vec![
            atr("ACCOUNT-custom-list-Rx"),
            Value::Null
        ]))
    );
    assert_eq!(custom.attributes.get("count"), Some(&Value::Int(2)));
    Ok(())
}

#[test]
fn free_text_is_redacted_by_default() -> TestResult {
    let collector = build(config(|_| {}), KEY_A)?;
    let (export, _) = record_every_kind(&collector)?;
    for record in records(&export)? {
        match &record.event {
            Event::AgentStatusChanged(e) => assert_eq!(e.reason.as_deref(), Some(REDACTED)),
            Event::RoutingDecision(e) => {
                assert_eq!(e.rationale, REDACTED);
                assert!(e.alternatives.iter().all(|a| a.reason == REDACTED));
            }
            Event::ConstitutionalValidation(e) => {
                assert!(e.violations.iter().all(|v| v.message == REDACTED));
            }
            Event::MinimalityEvaluated(e) => assert_eq!(e.quality_assessment, REDACTED),
            Event::EvaluationOutcome(e) => assert_eq!(e.feedback.as_deref(), Some(REDACTED)),
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn keep_policy_keeps_free_text_but_not_identifiers() -> TestResult {
    let collector = build(
        config(|c| c.anonymization.free_text = FreeText::Keep),
        KEY_A,
    )?;
    let (export, _) = record_every_kind(&collector)?;
    let bytes = export.to_msgpack();
    for text in RAW_TEXT {
        assert!(contains(&bytes, text), "{text:?} was not kept");
    }
    for id in RAW_IDS.iter().chain(RAW_ATTRIBUTES) {
        assert!(!contains(&bytes, id), "{id:?} is in the export");
    }
    Ok(())
}

#[test]
fn off_mode_keeps_everything_and_names_no_key() -> TestResult {
    let collector = Collector::builder()
        .config(config(|c| c.anonymization.mode = AnonymizationMode::Off))
        .clock(ManualClock::new(T0))
        .build()?;
    let (export, execution_id) = record_every_kind(&collector)?;
    let bytes = export.to_msgpack();
    let raw = RAW_IDS
        .iter()
        .chain(RAW_ATTRIBUTES)
        .chain(RAW_TEXT)
        .copied()
        .chain([execution_id.as_str()]);
    for needle in raw {
        assert!(contains(&bytes, needle), "{needle:?} is missing");
    }
    let got = records(&export)?;
    for (record, original) in got.iter().zip(every_kind()) {
        assert_eq!(record.event, original);
    }
    assert_eq!(export.header().key_id, None);
    assert_eq!(export.header().anonymization, AnonymizationMode::Off);
    let s = collector.stats();
    assert_eq!(s.anonymization, AnonymizationMode::Off);
    assert_eq!((s.key_id, s.key_origin), (None, None));
    Ok(())
}

#[test]
fn pseudonyms_are_stable_per_key_and_differ_across_keys() -> TestResult {
    let first = build(config(|_| {}), KEY_A)?;
    let second = build(config(|_| {}), KEY_A)?;
    let other = build(config(|_| {}), KEY_B)?;
    let exports = [&first, &second, &other].map(|c| {
        for event in every_kind() {
            c.record(event)?;
        }
        flushed_export(c)
    });
    let [a, b, c] = exports;
    let (a, b, c) = (records(&a?)?, records(&b?)?, records(&c?)?);
    assert_eq!(a, b, "same key, same records: same pseudonyms");
    for (x, y) in a.iter().zip(&c) {
        let (ids_x, ids_y) = (identifiers(&x.event), identifiers(&y.event));
        assert_eq!(ids_x.len(), ids_y.len());
        for ((_, p), (_, q)) in ids_x.iter().zip(&ids_y) {
            assert_ne!(p, q, "two keys gave one pseudonym");
        }
    }
    let key_a = AnonymizationKey::from_bytes(KEY_A);
    let key_b = AnonymizationKey::from_bytes(KEY_B);
    assert_ne!(key_a.key_id(), key_b.key_id());
    assert_eq!(
        first.stats().key_id,
        Some(key_a.key_id()),
        "the stats name the key by fingerprint"
    );
    assert_eq!(other.stats().key_id, Some(key_b.key_id()));
    Ok(())
}

#[test]
fn the_same_string_as_agent_and_task_is_unlinkable() -> TestResult {
    let collector = build(Config::default(), KEY_A)?;
    collector.record(Event::RoutingDecision(RoutingDecision {
        task_id: "shared-name".into(),
        selected_agent: "shared-name".into(),
        strategy: RoutingStrategy::Random,
        confidence: 0.5,
        alternatives: vec![],
        rationale: String::new(),
    }))?;
    let run = collector.start_task("shared-name", "shared-name", Attributes::new())?;
    run.complete(outcome())?;
    let export = flushed_export(&collector)?;
    let got = records(&export)?;
    let Event::RoutingDecision(d) = &got[0].event else {
        panic!("expected routing_decision, got {:?}", got[0]);
    };
    assert!(is_pseudonym(&d.task_id, IdKind::Task));
    assert!(is_pseudonym(&d.selected_agent, IdKind::Agent));
    assert_ne!(d.task_id[4..], d.selected_agent[4..]);
    let Event::TaskStarted(s) = &got[1].event else {
        panic!("expected task_started, got {:?}", got[1]);
    };
    assert_eq!((&s.task_id, &s.agent_id), (&d.task_id, &d.selected_agent));
    let key = AnonymizationKey::from_bytes(KEY_A);
    let per_kind = [
        IdKind::Agent,
        IdKind::Task,
        IdKind::Execution,
        IdKind::Attribute,
    ]
    .map(|kind| key.pseudonym(kind, "shared-name"));
    for (i, p) in per_kind.iter().enumerate() {
        for q in &per_kind[i + 1..] {
            assert_ne!(p[4..], q[4..]);
        }
    }
    Ok(())
}

#[test]
fn debug_never_prints_the_key() -> TestResult {
    let key = AnonymizationKey::from_bytes(KEY_A);
    let hex = key.to_hex();
    assert_eq!(format!("{key:?}"), "Key(..)");
    let config = config(|c| c.anonymization.key_hex = Some(KeyHex(hex.clone())));
    let collector = Collector::new(config.clone())?;
    for text in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.anonymization),
        format!("{collector:?}"),
        format!("{:?}", collector.stats()),
        format!("{:?}", collector.config()),
        format!("{:?}", Collector::builder().key(key.clone())),
    ] {
        assert!(!text.contains(&hex), "the key is printed in {text}");
        assert!(!text.contains(&hex.to_uppercase()));
    }
    assert!(format!("{config:?}").contains("KeyHex(..)"));
    Ok(())
}

/// Set in a child process of `key_sources_and_origins` to say which case it checks.
const CHILD_CASE: &str = "ARBITER_EVENTS_TEST_KEY_CASE";
const ENV_KEY: [u8; 32] = [0x42; 32];

/// Runs `key_sources_and_origins` again in a child process with `case` and the key
/// variable set to `key` (or unset), so the environment of this process never changes.
fn run_child(case: &str, key: Option<&str>) -> TestResult {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["key_sources_and_origins", "--exact", "--test-threads=1"])
        .env(CHILD_CASE, case);
    match key {
        Some(key) => command.env(KEY_ENV, key),
        None => command.env_remove(KEY_ENV),
    };
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains("1 passed") {
        return Err(format!(
            "child case {case} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

fn pseudonym_of_one_record(collector: &Collector) -> common::Result<String> {
    collector.record(Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
        task_id: "task-1".into(),
        tokens_used: 1,
        tokens_allocated: 2,
    }))?;
    let export = flushed_export(collector)?;
    match records(&export)?.first().map(|r| &r.event) {
        Some(Event::ThinkingBudgetUsed(e)) => Ok(e.task_id.clone()),
        other => Err(format!("unexpected record {other:?}").into()),
    }
}

/// The cases that need a particular environment, run in a child process.
fn child_case(case: &str) -> TestResult {
    let env_key = AnonymizationKey::from_bytes(ENV_KEY);
    match case {
        "environment" => {
            let collector = Collector::new(Config::default())?;
            let s = collector.stats();
            assert_eq!(s.key_origin, Some(KeyOrigin::Environment));
            assert_eq!(s.key_id, Some(env_key.key_id()));
            assert_eq!(
                pseudonym_of_one_record(&collector)?,
                env_key.pseudonym(IdKind::Task, "task-1")
            );
            // Every source named in the config or the builder comes first.
            let mut config = Config::default();
            config.anonymization.key_hex =
                Some(KeyHex(AnonymizationKey::from_bytes(KEY_A).to_hex()));
            assert_eq!(
                Collector::new(config)?.stats().key_origin,
                Some(KeyOrigin::Config)
            );
            let explicit = Collector::builder()
                .key(AnonymizationKey::from_bytes(KEY_B))
                .build()?;
            assert_eq!(explicit.stats().key_origin, Some(KeyOrigin::Explicit));
        }
        "invalid-environment" => {
            let result = Collector::new(Config::default());
            assert!(
                matches!(result, Err(BuildError::Key(KeyError::Env { .. }))),
                "{result:?}"
            );
        }
        "ephemeral" => {
            let first = Collector::new(Config::default())?;
            let second = Collector::new(Config::default())?;
            let (a, b) = (first.stats(), second.stats());
            assert_eq!(a.key_origin, Some(KeyOrigin::Ephemeral));
            assert_eq!(b.key_origin, Some(KeyOrigin::Ephemeral));
            assert!(a.key_id.is_some());
            assert_ne!(a.key_id, b.key_id, "ephemeral keys are fresh per collector");
            assert_ne!(
                pseudonym_of_one_record(&first)?,
                pseudonym_of_one_record(&second)?
            );
        }
        other => return Err(format!("unknown child case {other}").into()),
    }
    Ok(())
}

#[test]
fn key_sources_and_origins() -> TestResult {
    if let Ok(case) = std::env::var(CHILD_CASE) {
        return child_case(&case);
    }
    let key = AnonymizationKey::from_bytes(KEY_A);

    let explicit = build(Config::default(), KEY_A)?;
    assert_eq!(explicit.stats().key_origin, Some(KeyOrigin::Explicit));
    assert_eq!(explicit.stats().key_id, Some(key.key_id()));

    let from_hex = Collector::new(config(|c| {
        c.anonymization.key_hex = Some(KeyHex(key.to_hex()));
    }))?;
    assert_eq!(from_hex.stats().key_origin, Some(KeyOrigin::Config));
    assert_eq!(
        pseudonym_of_one_record(&from_hex)?,
        key.pseudonym(IdKind::Task, "task-1")
    );

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("key.hex");
    std::fs::write(&path, format!("{}\n", key.to_hex()))?;
    let from_file = Collector::new(config(|c| c.anonymization.key_file = Some(path.clone())))?;
    let s = from_file.stats();
    assert_eq!(s.key_origin, Some(KeyOrigin::File));
    assert_eq!(s.key_id, Some(key.key_id()));
    assert_eq!(
        pseudonym_of_one_record(&from_file)?,
        key.pseudonym(IdKind::Task, "task-1")
    );

    // The builder's key wins over the config's.
    let both = Collector::builder()
        .config(config(|c| c.anonymization.key_file = Some(path.clone())))
        .key(AnonymizationKey::from_bytes(KEY_B))
        .build()?;
    assert_eq!(both.stats().key_origin, Some(KeyOrigin::Explicit));
    assert_eq!(
        both.stats().key_id,
        Some(AnonymizationKey::from_bytes(KEY_B).key_id())
    );

    let missing = Collector::new(config(|c| {
        c.anonymization.key_file = Some(dir.path().join("absent.hex"));
    }));
    assert!(
        matches!(missing, Err(BuildError::Key(KeyError::Read { .. }))),
        "{missing:?}"
    );

    run_child(
        "environment",
        Some(&AnonymizationKey::from_bytes(ENV_KEY).to_hex()),
    )?;
    run_child("invalid-environment", Some("not a key"))?;
    run_child("ephemeral", None)?;
    Ok(())
}

#[test]
fn the_export_names_the_key_by_fingerprint_only() -> TestResult {
    let key = AnonymizationKey::from_bytes(KEY_A);
    let collector = build(Config::default(), KEY_A)?;
    let (export, _) = record_every_kind(&collector)?;
    assert_eq!(export.header().key_id, Some(key.key_id()));
    assert_eq!(
        export.header().anonymization,
        AnonymizationMode::Pseudonymize
    );
    assert_eq!(collector.stats().key_id, Some(key.key_id()));
    let id = key.key_id();
    assert_eq!(id.len(), 16);
    assert!(!key.to_hex().contains(&id));
    assert!(!contains(&export.to_msgpack(), &key.to_hex()));
    Ok(())
}

#[test]
fn pseudonyms_do_not_depend_on_the_memo() -> TestResult {
    let key = AnonymizationKey::from_bytes(KEY_A);
    for memo_capacity in [0, 1, 3, 1000] {
        let collector = build(
            config(|c| c.anonymization.memo_capacity = memo_capacity),
            KEY_A,
        )?;
        // Ids cycle through more than a small memo holds, so it fills and empties.
        let ids: Vec<String> = (0..40).map(|i| format!("task-{}", i % 7)).collect();
        for (i, id) in ids.iter().enumerate() {
            collector.record(Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
                task_id: id.clone(),
                tokens_used: i as u64,
                tokens_allocated: 0,
            }))?;
        }
        let export = flushed_export(&collector)?;
        let got = records(&export)?;
        assert_eq!(got.len(), ids.len());
        for (record, id) in got.iter().zip(&ids) {
            let Event::ThinkingBudgetUsed(e) = &record.event else {
                panic!("unexpected record {record:?}");
            };
            assert_eq!(
                e.task_id,
                key.pseudonym(IdKind::Task, id),
                "memo capacity {memo_capacity}"
            );
        }
    }
    Ok(())
}

#[test]
fn map_keys_below_a_configured_key_are_pseudonymized_too() -> TestResult {
    let key = AnonymizationKey::from_bytes(KEY_A);
    let collector = build(
        config(|c| c.anonymization.attribute_keys = vec!["user".into()]),
        KEY_A,
    )?;
    let by_email: BTreeMap<String, Value> =
        [("alice@example.com".to_owned(), Value::Bool(true))].into();
    collector.record(Event::Custom(Custom {
        name: "login".into(),
        attributes: Attributes::new().with("user", Value::Map(by_email)),
    }))?;
    let export = flushed_export(&collector)?;
    assert!(!contains(&export.to_msgpack(), "alice@example.com"));
    let got = records(&export)?;
    let Event::Custom(e) = &got[0].event else {
        panic!("unexpected record {:?}", got[0]);
    };
    let Some(Value::Map(map)) = e.attributes.get("user") else {
        panic!("user is not a map: {e:?}");
    };
    let pseudonym = key.pseudonym(IdKind::Attribute, "alice@example.com");
    assert_eq!(map.get(&pseudonym), Some(&Value::Bool(true)));
    Ok(())
}
