//! The live analytics stage and its alert rules, on a manual clock: reports over the live
//! aggregates, each alert kind firing when and only when its condition has held for
//! `for_secs` and not again within `cooldown_secs`, alert records in the stream.

mod common;

use std::time::{Duration, Instant};

use arbiter_events::{
    AlertKind, Collector, Config, ConfigError, ConstitutionalValidation, Cursor, Event, EventKind,
    ExportRequest, IdKind, OutcomeStatus, RecordError, ReportRequest, Rule, Severity,
    TaskCompleted, TaskOutcome, ThinkingBudgetUsed, Violation,
};
use common::{GOLDEN_START_NANOS, PATIENCE, Result, Schema, TestResult, golden_collector};

const STEP: Duration = Duration::from_secs(10);

/// A config of 10 s buckets with `alerts` (TOML `[[alerts]]` entries).
fn config(alerts: &str) -> Result<Config> {
    Ok(Config::from_toml_str(&format!(
        "[analytics]\nbucket_secs = 10\nbuckets = 60\n{alerts}"
    ))?)
}

/// Waits until the live stage has folded every stored record.
fn caught_up(collector: &Collector) -> TestResult {
    collector.flush(PATIENCE)?;
    let deadline = Instant::now() + PATIENCE;
    while collector.analytics().folded < collector.stats().stored {
        if Instant::now() > deadline {
            return Err(format!("not folded: {:?}", collector.analytics()).into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Waits for the idle stage to evaluate again (after the clock moved).
fn evaluated(collector: &Collector, before: u64) -> TestResult {
    let deadline = Instant::now() + PATIENCE;
    while collector.analytics().evaluations <= before {
        if Instant::now() > deadline {
            return Err("no evaluation".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn completed(agent: &str, n: u64, status: OutcomeStatus, duration_ms: f64) -> Event {
    Event::TaskCompleted(TaskCompleted {
        execution_id: format!("exe-{agent}-{n}"),
        task_id: format!("task-{agent}-{n}"),
        agent_id: agent.into(),
        outcome: TaskOutcome {
            status,
            quality_score: 0.5,
            efficiency_score: 0.5,
            tokens_consumed: 100,
        },
        duration_ms,
    })
}

fn budget(n: u64, used: u64) -> Event {
    Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
        task_id: format!("task-{n}"),
        tokens_used: used,
        tokens_allocated: 1000,
    })
}

fn validation(n: u64, violations: usize) -> Event {
    Event::ConstitutionalValidation(ConstitutionalValidation {
        task_id: format!("task-{n}"),
        agent_id: "agent-a".into(),
        valid: violations == 0,
        compliance_score: if violations == 0 { 1.0 } else { 0.4 },
        violations: (0..violations)
            .map(|_| Violation {
                rule: Some("no-secrets".into()),
                severity: Severity::High,
                message: "a secret in the diff".into(),
            })
            .collect(),
        processing_time_ms: 3.0,
        rule_count: 5,
    })
}

/// One step of 10 s: the clock moves 9 s, `events` are recorded and folded, the clock
/// moves 1 s more and the idle stage evaluates. Returns the alerts received meanwhile.
fn step(
    collector: &Collector,
    clock: &arbiter_events::ManualClock,
    alerts: &arbiter_events::AlertReceiver,
    events: Vec<Event>,
) -> Result<Vec<arbiter_events::Alert>> {
    clock.advance(STEP - Duration::from_secs(1));
    record_then_evaluate(collector, clock, alerts, events, Duration::from_secs(1))
}

/// Records `events` and waits until they are folded, moves the clock `then` on and
/// waits for the idle stage to evaluate; returns the alerts received meanwhile.
fn record_then_evaluate(
    collector: &Collector,
    clock: &arbiter_events::ManualClock,
    alerts: &arbiter_events::AlertReceiver,
    events: Vec<Event>,
    then: Duration,
) -> Result<Vec<arbiter_events::Alert>> {
    for event in events {
        collector.record(event)?;
    }
    caught_up(collector)?;
    let before = collector.analytics().evaluations;
    clock.advance(then);
    evaluated(collector, before)?;
    let mut got = Vec::new();
    while let Some(a) = alerts.try_recv() {
        got.push(a);
    }
    Ok(got)
}

/// Runs `rule` through 5 steps of good events (no alert), 12 quiet steps (the window
/// empties), then 9 steps of bad events: with `for_secs = 30` the alert fires in the
/// fourth bad step (the condition first holds in the first) and, with the cooldown,
/// never again. Returns the alert.
fn fires_after_holding(
    rule: &str,
    good: impl Fn(u64) -> Vec<Event>,
    bad: impl Fn(u64) -> Vec<Event>,
) -> Result<arbiter_events::Alert> {
    let (collector, clock) = golden_collector(config(rule)?)?;
    let alerts = collector.alerts();
    for i in 0..5 {
        let got = step(&collector, &clock, &alerts, good(i))?;
        assert!(got.is_empty(), "good step {i}: {got:?}");
    }
    for i in 0..12 {
        let got = step(&collector, &clock, &alerts, vec![])?;
        assert!(got.is_empty(), "quiet step {i}: {got:?}");
    }
    let mut fired = Vec::new();
    for i in 0..9 {
        let got = step(&collector, &clock, &alerts, bad(100 + i))?;
        if i < 3 {
            assert!(got.is_empty(), "bad step {i}, held < 30 s: {got:?}");
        } else if i == 3 {
            assert_eq!(got.len(), 1, "bad step {i}, held 30 s: {got:?}");
        } else {
            assert!(got.is_empty(), "bad step {i}, within the cooldown: {got:?}");
        }
        fired.extend(got);
    }
    // The alert is a record in the stream, with a seq, counted as generated.
    caught_up(&collector)?;
    let stats = collector.stats();
    assert_eq!(stats.generated, 1);
    assert_eq!(
        stats.submitted + stats.generated,
        stats.stored + stats.dropped.total() + stats.rejected + stats.in_flight
    );
    assert_eq!(stats.kind(EventKind::AnomalyDetected).stored, 1);
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    let records: Vec<_> = export
        .records()
        .filter_map(|r| r.ok())
        .filter(|r| r.event.kind() == EventKind::AnomalyDetected)
        .collect();
    assert_eq!(records.len(), 1);
    let alert = fired.pop().ok_or("no alert")?;
    match &records[0].event {
        Event::AnomalyDetected(e) => {
            assert_eq!(e.rule, alert.rule);
            assert_eq!(e.kind, alert.kind);
            assert_eq!(e.agent_id, alert.agent_id);
            assert_eq!(e.observed, alert.observed);
            assert_eq!(e.samples, alert.samples);
        }
        other => return Err(format!("not an anomaly: {other:?}").into()),
    }
    // ... and it passes the record schema as exported.
    let schema = Schema::load("record.schema.json")?;
    let values = common::msgpack_values(&export.to_msgpack())?;
    let anomalies: Vec<_> = values
        .iter()
        .filter(|v| v["type"] == "anomaly_detected")
        .collect();
    assert_eq!(anomalies.len(), 1);
    schema.validate(anomalies[0])?;
    collector.shutdown(PATIENCE)?;
    Ok(alert)
}

const HOLD: &str = "window_secs = 60\nfor_secs = 30\ncooldown_secs = 600\nmin_samples = 5\n";

#[test]
fn latency_spike_fires_per_agent_after_holding_and_names_the_agent_by_pseudonym() -> TestResult {
    let rule = format!(
        "[[alerts]]\nname = \"slow\"\nkind = \"latency_spike\"\nscope = \"per_agent\"\nthreshold = 1000.0\n{HOLD}"
    );
    let alert = fires_after_holding(
        &rule,
        |i| {
            (0..6)
                .map(|j| completed("agent-ok", i * 10 + j, OutcomeStatus::Succeeded, 100.0))
                .collect()
        },
        |i| {
            let mut events: Vec<Event> = (0..6)
                .map(|j| completed("agent-ok", i * 10 + j, OutcomeStatus::Succeeded, 100.0))
                .collect();
            events
                .extend((0..6).map(|j| {
                    completed("agent-slow", i * 10 + j, OutcomeStatus::Succeeded, 5000.0)
                }));
            events
        },
    )?;
    assert_eq!(alert.kind, AlertKind::LatencySpike);
    let (collector, _) = golden_collector(Config::default())?;
    assert_eq!(
        alert.agent_id.as_deref(),
        Some(collector.pseudonym(IdKind::Agent, "agent-slow").as_str())
    );
    assert!(alert.observed > 1000.0, "{alert:?}");
    Ok(())
}

#[test]
fn success_rate_drop_fires_after_holding() -> TestResult {
    let rule = format!(
        "[[alerts]]\nname = \"drop\"\nkind = \"success_rate_drop\"\nthreshold = 0.5\n{HOLD}"
    );
    let alert = fires_after_holding(
        &rule,
        |i| {
            (0..6)
                .map(|j| completed("a", i * 10 + j, OutcomeStatus::Succeeded, 10.0))
                .collect()
        },
        |i| {
            (0..6)
                .map(|j| {
                    let status = if j == 0 {
                        OutcomeStatus::Succeeded
                    } else {
                        OutcomeStatus::Cancelled
                    };
                    completed("a", i * 10 + j, status, 10.0)
                })
                .collect()
        },
    )?;
    assert_eq!(alert.kind, AlertKind::SuccessRateDrop);
    assert!(
        alert.observed < 0.5 && alert.agent_id.is_none(),
        "{alert:?}"
    );
    Ok(())
}

#[test]
fn error_rate_fires_after_holding() -> TestResult {
    let rule =
        format!("[[alerts]]\nname = \"errors\"\nkind = \"error_rate\"\nthreshold = 0.5\n{HOLD}");
    let alert = fires_after_holding(
        &rule,
        |i| {
            (0..6)
                .map(|j| completed("a", i * 10 + j, OutcomeStatus::Succeeded, 10.0))
                .collect()
        },
        |i| {
            (0..6)
                .map(|j| {
                    let status = if j % 2 == 0 {
                        OutcomeStatus::Failed
                    } else {
                        OutcomeStatus::TimedOut
                    };
                    completed("a", i * 10 + j, status, 10.0)
                })
                .collect()
        },
    )?;
    assert_eq!(alert.kind, AlertKind::ErrorRate);
    assert_eq!(alert.observed, 1.0);
    Ok(())
}

#[test]
fn token_overuse_fires_after_holding() -> TestResult {
    let rule = format!(
        "[[alerts]]\nname = \"overspend\"\nkind = \"token_overuse\"\nmax_share = 0.5\n{HOLD}"
    );
    let alert = fires_after_holding(
        &rule,
        |i| (0..6).map(|j| budget(i * 10 + j, 500)).collect(),
        |i| (0..6).map(|j| budget(i * 10 + j, 1500)).collect(),
    )?;
    assert_eq!(alert.kind, AlertKind::TokenOveruse);
    assert_eq!(alert.observed, 1.0);
    Ok(())
}

#[test]
fn caws_violations_fire_after_holding() -> TestResult {
    let rule = format!(
        "[[alerts]]\nname = \"caws\"\nkind = \"caws_violations\"\nthreshold = 3.0\nmin_severity = \"high\"\n{HOLD}"
    );
    let alert = fires_after_holding(
        &rule,
        |i| (0..6).map(|j| validation(i * 10 + j, 0)).collect(),
        |i| (0..2).map(|j| validation(i * 10 + j, 2)).collect(),
    )?;
    assert_eq!(alert.kind, AlertKind::CawsViolations);
    assert!(alert.observed > 3.0, "{alert:?}");
    Ok(())
}

#[test]
fn the_live_report_equals_the_report_over_the_same_records() -> TestResult {
    let (collector, clock) = golden_collector(config("")?)?;
    for i in 0..200u64 {
        if i % 20 == 0 {
            clock.advance(Duration::from_secs(7));
        }
        let agent = format!("agent-{}", i % 7);
        let status = if i % 5 == 0 {
            OutcomeStatus::Failed
        } else {
            OutcomeStatus::Succeeded
        };
        collector.record(completed(&agent, i, status, 10.0 + (i * 37 % 900) as f64))?;
        collector.record(budget(i, 300 + i * 11 % 1200))?;
    }
    caught_up(&collector)?;
    let mut aggregator = arbiter_events::Aggregator::new(&collector.config().analytics)?;
    for record in collector
        .export(&ExportRequest::after(Cursor::START))?
        .records()
    {
        aggregator.add(&record?);
    }
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
        GOLDEN_START_NANOS + 71 * 1_000_000_000,
    ))?;
    clock.set_unix_nanos(GOLDEN_START_NANOS + 71 * 1_000_000_000);
    for request in [
        ReportRequest::last(Duration::from_secs(600)),
        ReportRequest::last(Duration::from_secs(600)).by(arbiter_events::Grouping::ByAgent),
        ReportRequest::last(Duration::from_secs(60)).by(arbiter_events::Grouping::ByKind),
    ] {
        let live = collector.report(&request);
        assert_eq!(live, aggregator.report_at(&request, now));
        assert!(live.records > 0);
    }
    let by_agent = collector.report(
        &ReportRequest::last(Duration::from_secs(600)).by(arbiter_events::Grouping::ByAgent),
    );
    let mine = collector.pseudonym(IdKind::Agent, "agent-3");
    assert!(
        by_agent.groups.iter().any(|g| g.group == mine),
        "agents are named by pseudonym"
    );
    Ok(())
}

#[test]
fn recording_an_anomaly_is_refused_and_counted() -> TestResult {
    let (collector, _) = golden_collector(Config::default())?;
    let event = common::read_events("fixtures/events/generated.jsonl")?
        .pop()
        .ok_or("no line")?;
    match collector.record(event) {
        Err(RecordError::Invalid(e)) => {
            assert_eq!(e.kind(), EventKind::AnomalyDetected);
            assert_eq!(e.rule(), &Rule::Generated);
        }
        other => return Err(format!("not refused: {other:?}").into()),
    }
    assert_eq!(collector.stats().rejected, 1);
    assert_eq!(collector.stats().generated, 0);
    Ok(())
}

#[test]
fn rules_change_live_and_a_bad_rule_changes_nothing() -> TestResult {
    let (collector, clock) = golden_collector(config("")?)?;
    let alerts = collector.alerts();
    let failing = |i: u64| {
        (0..6)
            .map(|j| completed("a", i * 10 + j, OutcomeStatus::Failed, 10.0))
            .collect::<Vec<_>>()
    };
    // No rule: errors do not alert.
    for event in failing(0) {
        collector.record(event)?;
    }
    caught_up(&collector)?;
    assert_eq!(collector.analytics().evaluations, 0);
    assert!(alerts.try_recv().is_none());
    let rule = config(
        "[[alerts]]\nname = \"e\"\nkind = \"error_rate\"\nthreshold = 0.5\nwindow_secs = 30\nmin_samples = 1\ncooldown_secs = 600\n",
    )?
    .alerts;
    let mut broken = rule.clone();
    broken[0].window_secs = 15;
    let bad = collector.update_config(|c| c.alerts = broken);
    assert!(matches!(bad, Err(ConfigError::Alert(_))), "{bad:?}");
    assert!(collector.config().alerts.is_empty());
    collector.update_config(|c| c.alerts = rule)?;
    assert_eq!(collector.config().alerts.len(), 1);
    let got = step(&collector, &clock, &alerts, failing(1))?;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].rule, "e");
    Ok(())
}

#[test]
fn without_analytics_there_is_no_stage_and_an_empty_report() -> TestResult {
    let mut off = config("")?;
    off.analytics.enabled = false;
    let (collector, _) = golden_collector(off)?;
    collector.record(budget(1, 10))?;
    collector.flush(PATIENCE)?;
    assert!(!collector.analytics().enabled);
    assert_eq!(
        collector
            .report(&ReportRequest::last(Duration::from_secs(60)))
            .records,
        0
    );
    Ok(())
}

#[test]
fn a_full_subscriber_misses_alerts_counted_and_nothing_waits_for_it() -> TestResult {
    const AGENTS: u64 = 300;
    let rule = "[[alerts]]\nname = \"errors\"\nkind = \"error_rate\"\nscope = \"per_agent\"\nthreshold = 0.5\nwindow_secs = 10\nmin_samples = 1\ncooldown_secs = 3600\n";
    let (collector, clock) = golden_collector(config(rule)?)?;
    let full = collector.alerts();
    for a in 0..AGENTS {
        collector.record(completed(
            &format!("agent-{a}"),
            a,
            OutcomeStatus::Failed,
            5.0,
        ))?;
    }
    caught_up(&collector)?;
    let before = collector.analytics().evaluations;
    clock.advance(Duration::from_secs(2));
    evaluated(&collector, before)?;
    caught_up(&collector)?;
    let analytics = collector.analytics();
    // Every agent fired once; the receiver kept what it holds and the rest is counted.
    assert_eq!(analytics.fired, AGENTS);
    assert_eq!(full.len(), arbiter_events::ALERT_SUBSCRIBER_CAPACITY);
    assert_eq!(
        analytics.undelivered,
        AGENTS - arbiter_events::ALERT_SUBSCRIBER_CAPACITY as u64
    );
    // Every alert is still a record.
    let stats = collector.stats();
    assert_eq!(stats.generated, AGENTS);
    assert_eq!(stats.kind(EventKind::AnomalyDetected).stored, AGENTS);
    assert_eq!(
        stats.submitted + stats.generated,
        stats.stored + stats.dropped.total() + stats.rejected + stats.in_flight
    );
    Ok(())
}

/// The golden alert export: a per-agent `caws_violations` rule fires once on the golden
/// key and clock, and the export of everything, its `AnomalyDetected` record last, is
/// pinned byte for byte (`UPDATE_GOLDEN=1` rewrites it), so consumers in other
/// languages have a real alert record to read.
#[test]
fn the_golden_alert_export_is_pinned() -> TestResult {
    let rule = format!(
        "[[alerts]]\nname = \"caws\"\nkind = \"caws_violations\"\nscope = \"per_agent\"\nthreshold = 3.0\nmin_severity = \"high\"\n{HOLD}"
    );
    let steps = (0..4).map(|i| (0..2).map(|j| validation(i * 10 + j, 2)).collect());
    let (collector, fired) = fired_in_steps(&rule, steps)?;
    assert_eq!(fired.len(), 1, "{fired:?}");
    let deadline = Instant::now() + PATIENCE;
    while collector.stats().kind(EventKind::AnomalyDetected).stored == 0 {
        if Instant::now() > deadline {
            return Err("the alert record was never stored".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    caught_up(&collector)?;
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    let records: Vec<_> = export.records().collect::<std::result::Result<_, _>>()?;
    assert_eq!(records.len(), 9);
    let Some(Event::AnomalyDetected(anomaly)) = records.last().map(|r| &r.event) else {
        return Err(format!("the last record is not the alert: {:?}", records.last()).into());
    };
    assert_eq!(anomaly.rule, "caws");
    assert_eq!(
        anomaly.agent_id.as_deref(),
        Some(collector.pseudonym(IdKind::Agent, "agent-a").as_str())
    );
    let schema = Schema::load("record.schema.json")?;
    for value in common::msgpack_values(&export.to_msgpack())?
        .iter()
        .filter(|v| v.get("seq").is_some())
    {
        schema.validate(value)?;
    }
    common::check_golden("fixtures/golden/alerts.msgpack", &export.to_msgpack())?;
    common::check_golden("fixtures/golden/alerts.export.jsonl", &export.to_jsonl()?)?;
    collector.shutdown(PATIENCE)?;
    Ok(())
}

/// One step of 10 s in which the stage evaluates only once, with everything folded:
/// `events` are recorded at the step's first instant and folded (the clock has not moved
/// since the last evaluation, so folding them evaluates nothing), then the clock moves
/// 10 s and the idle stage evaluates the window of the buckets before. Returns the
/// alerts received.
fn whole_step(
    collector: &Collector,
    clock: &arbiter_events::ManualClock,
    alerts: &arbiter_events::AlertReceiver,
    events: Vec<Event>,
) -> Result<Vec<arbiter_events::Alert>> {
    record_then_evaluate(collector, clock, alerts, events, STEP)
}

/// Runs `steps` (each one [`whole_step`]) under `rule`; returns each alert with the
/// index of the step it fired in.
fn fired_in_steps(
    rule: &str,
    steps: impl IntoIterator<Item = Vec<Event>>,
) -> Result<(Collector, Vec<(usize, arbiter_events::Alert)>)> {
    let (collector, clock) = golden_collector(config(rule)?)?;
    let alerts = collector.alerts();
    // The stage's first evaluation comes at once, with whatever is folded by then: let
    // it come over nothing, so that each step below is evaluated once, whole.
    whole_step(&collector, &clock, &alerts, Vec::new())?;
    let mut fired = Vec::new();
    for (i, events) in steps.into_iter().enumerate() {
        let got = whole_step(&collector, &clock, &alerts, events)?;
        fired.extend(got.into_iter().map(|a| (i, a)));
    }
    Ok((collector, fired))
}

fn tasks(agent: &str, from: u64, count: u64, duration_ms: f64, failed: u64) -> Vec<Event> {
    (0..count)
        .map(|k| {
            let status = if k < failed {
                OutcomeStatus::Failed
            } else {
                OutcomeStatus::Succeeded
            };
            completed(agent, from + k, status, duration_ms)
        })
        .collect()
}

#[test]
fn a_latency_spike_against_its_own_baseline_fires_only_for_the_agent_that_slowed() -> TestResult {
    let rule = format!(
        "[[alerts]]\nname = \"slower\"\nkind = \"latency_spike\"\nscope = \"per_agent\"\nbaseline_factor = 3.0\nbaseline_secs = 120\n{HOLD}"
    );
    // 18 steps (180 s) of every agent at its usual pace, then 9 in which `spiky` takes
    // ten times as long. `slow` is slow all along: above any fixed threshold a spiky
    // agent would pass, but never above 3 × its own baseline.
    let steps = (0..27u64).map(|i| {
        let spiky_ms = if i < 18 { 100.0 } else { 1000.0 };
        let mut events = tasks("steady", i * 10, 6, 100.0, 0);
        events.extend(tasks("spiky", i * 10, 6, spiky_ms, 0));
        events.extend(tasks("slow", i * 10, 6, 5000.0, 0));
        events
    });
    let (collector, fired) = fired_in_steps(&rule, steps)?;
    let [(at, alert)] = fired.as_slice() else {
        panic!("one alert expected: {fired:?}");
    };
    // The condition holds from the first slow step; after 30 s held, the fourth fires.
    assert_eq!(*at, 18 + 3);
    assert_eq!(
        alert.agent_id.as_deref(),
        Some(collector.pseudonym(IdKind::Agent, "spiky").as_str())
    );
    let baseline = alert.baseline.ok_or("a baseline rule names its baseline")?;
    assert!((baseline - 100.0).abs() <= 1.0, "{alert:?}");
    assert!((alert.threshold - 3.0 * baseline).abs() < 1e-9, "{alert:?}");
    assert!((alert.observed - 1000.0).abs() <= 10.0, "{alert:?}");
    collector.shutdown(PATIENCE)?;
    Ok(())
}

#[test]
fn a_success_rate_drop_against_its_baseline_fires_once_the_drop_exceeds_max_drop() -> TestResult {
    let rule = format!(
        "[[alerts]]\nname = \"dropping\"\nkind = \"success_rate_drop\"\nmax_drop = 0.15\nbaseline_secs = 120\n{HOLD}"
    );
    // 18 steps at 9 of 10 succeeded, then 9 steps at 4 of 10. Evaluated as a step ends,
    // the 60 s window holds the five steps before it (its sixth bucket has just begun),
    // with k bad ones its rate is (45 - 5k) / 50, more than 0.15 below the baseline's
    // 0.9 from k = 2 (the second bad step) on; held 30 s, the alert fires in the fifth,
    // at a rate of 0.4, while the baseline (the 120 s before the window) is still all
    // good steps.
    let steps = (0..27u64).map(|i| tasks("agent", i * 10, 10, 50.0, if i < 18 { 1 } else { 6 }));
    let (collector, fired) = fired_in_steps(&rule, steps)?;
    let [(at, alert)] = fired.as_slice() else {
        panic!("one alert expected: {fired:?}");
    };
    assert_eq!(*at, 18 + 4, "{alert:?}");
    assert_eq!(alert.kind, AlertKind::SuccessRateDrop);
    assert_eq!(alert.agent_id, None);
    assert_eq!(alert.baseline, Some(0.9));
    assert!((alert.threshold - 0.75).abs() < 1e-9, "{alert:?}");
    assert!((alert.observed - 0.4).abs() < 1e-9, "{alert:?}");
    assert_eq!(alert.samples, 50);
    collector.shutdown(PATIENCE)?;
    Ok(())
}
