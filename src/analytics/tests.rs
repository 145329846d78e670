//! The aggregates against exact computations over the same events.

use std::time::Duration;

use proptest::prelude::*;

use super::report::Totals;
use super::*;
use crate::contract::clock::datetime;
use crate::contract::event::{
    ConstitutionalValidation, Event, OutcomeStatus, RoutingDecision, RoutingStrategy, Severity,
    TaskCompleted, TaskOutcome, ThinkingBudgetUsed, Violation,
};

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * SEC;

fn config(bucket_secs: u64, buckets: usize, max_agents: usize) -> AnalyticsConfig {
    AnalyticsConfig {
        enabled: true,
        bucket_secs,
        buckets,
        max_agents,
    }
}

fn completed(agent: &str, task: &str, status: OutcomeStatus, duration_ms: f64) -> Event {
    Event::TaskCompleted(TaskCompleted {
        execution_id: format!("exe-{task}"),
        task_id: task.into(),
        agent_id: agent.into(),
        outcome: TaskOutcome {
            status,
            quality_score: 0.5,
            efficiency_score: 0.5,
            tokens_consumed: 10,
        },
        duration_ms,
    })
}

fn routed(agent: &str, task: &str, strategy: RoutingStrategy) -> Event {
    Event::RoutingDecision(RoutingDecision {
        task_id: task.into(),
        selected_agent: agent.into(),
        strategy,
        confidence: 0.75,
        alternatives: vec![],
        rationale: String::new(),
    })
}

fn budget(task: &str, used: u64, allocated: u64) -> Event {
    Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
        task_id: task.into(),
        tokens_used: used,
        tokens_allocated: allocated,
    })
}

fn aggregates(config: &AnalyticsConfig, events: &[(i64, Event)]) -> Aggregates {
    let mut a = Aggregates::new(config);
    for (time, event) in events {
        a.add(*time, event, &mut Verbatim);
    }
    a
}

fn overall(a: &Aggregates, since: i64, until: i64) -> Figures {
    let request = ReportRequest::between(
        crate::contract::clock::datetime(since),
        crate::contract::clock::datetime(until),
    );
    let report = a.report(&request, until);
    report.groups[0].figures.clone()
}

/// Whether two reports' figures are equal, floats up to a relative 1e-9: sums (the mean)
/// differ in their last bits with the order values were added in.
fn close(a: &Figures, b: &Figures) -> bool {
    fn walk(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| walk(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| walk(v, w)))
            }
            (x, y) => x == y,
        }
    }
    let json = |f: &Figures| serde_json::to_value(f).unwrap_or_default();
    walk(&json(a), &json(b))
}

/// The exact `q` quantile by the sketch's rank rule (`rank = floor(q × (n − 1))`).
fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64) as usize]
}

proptest! {
    #[test]
    fn percentiles_are_within_the_stated_relative_error(
        durations in prop::collection::vec(0.001f64..1.0e7, 1..400),
    ) {
        let events: Vec<_> = durations
            .iter()
            .enumerate()
            .map(|(i, d)| (T0 + i as i64, completed("a", &format!("t{i}"), OutcomeStatus::Succeeded, *d)))
            .collect();
        let a = aggregates(&config(3600, 4, 10), &events);
        let figures = overall(&a, T0, T0 + 3600 * SEC);
        let s = figures.duration_ms.expect("durations were recorded");
        let mut sorted = durations.clone();
        sorted.sort_by(f64::total_cmp);
        prop_assert_eq!(s.count, durations.len() as u64);
        prop_assert_eq!(s.min, sorted[0]);
        prop_assert_eq!(s.max, sorted[sorted.len() - 1]);
        for (got, q) in [(s.p50, 0.5), (s.p90, 0.9), (s.p95, 0.95), (s.p99, 0.99)] {
            let want = exact(&sorted, q);
            prop_assert!(
                (got - want).abs() <= want * DEFAULT_RELATIVE_ERROR * (1.0 + 1e-9),
                "p{} = {} but the exact value is {}", q * 100.0, got, want
            );
        }
    }

    #[test]
    fn by_agent_reports_from_spans_equal_merging_the_buckets(
        steps in prop::collection::vec((0i64..40, 0usize..5, 0usize..4, 1.0f64..10_000.0), 1..400),
        max_agents in 1usize..5,
    ) {
        let mut a = Aggregates::new(&config(60, 4, max_agents));
        let mut time = T0;
        for (i, step) in steps.iter().enumerate() {
            time += step.0 * SEC;
            a.add(time, &stream_event(i, *step), &mut Verbatim);
            if i % 50 == 49 {
                let checked = assert_spans_equal_bucket_merges(&a, time + 1);
                prop_assert!(checked.is_ok(), "{:?}", checked);
            }
        }
        let checked = assert_spans_equal_bucket_merges(&a, time + 1);
        prop_assert!(checked.is_ok(), "{:?}", checked);
    }

    #[test]
    fn merged_buckets_equal_one_bucket_over_the_union(
        values in prop::collection::vec((0i64..600, 1.0f64..10_000.0, 0usize..4), 1..300),
    ) {
        let mut sorted = values.clone();
        sorted.sort_by_key(|v| v.0);
        let statuses = OutcomeStatus::ALL;
        let events: Vec<_> = sorted
            .iter()
            .enumerate()
            .map(|(i, (secs, d, s))| {
                (T0 + secs * SEC, completed("a", &format!("t{i}"), statuses[*s], *d))
            })
            .collect();
        // Ten one-minute buckets merged against a single ten-minute bucket.
        let fine = aggregates(&config(60, 20, 10), &events);
        let coarse = aggregates(&config(600, 2, 10), &events);
        let start = T0.div_euclid(600 * SEC) * 600 * SEC;
        let end = start + 1200 * SEC;
        // Equal up to the last bits of floating-point sums (the mean), which depend on the
        // order values were added in.
        let (fine, coarse) = (overall(&fine, start, end), overall(&coarse, start, end));
        prop_assert!(close(&fine, &coarse), "{:?} != {:?}", fine, coarse);
    }
}

#[test]
fn an_event_on_a_bucket_edge_is_counted_once_in_the_bucket_it_starts() {
    let edge = T0.div_euclid(60 * SEC) * 60 * SEC + 60 * SEC;
    let events = [
        (
            edge - 1,
            completed("a", "t1", OutcomeStatus::Succeeded, 1.0),
        ),
        (edge, completed("a", "t2", OutcomeStatus::Failed, 2.0)),
    ];
    let a = aggregates(&config(60, 10, 10), &events);
    let before = overall(&a, edge - 60 * SEC, edge);
    let after = overall(&a, edge, edge + 60 * SEC);
    let both = overall(&a, edge - 60 * SEC, edge + 60 * SEC);
    assert_eq!((before.tasks.succeeded, before.tasks.failed), (1, 0));
    assert_eq!((after.tasks.succeeded, after.tasks.failed), (0, 1));
    assert_eq!(both.tasks.ended, 2);
    assert_eq!(both.events, before.events + after.events);
}

#[test]
fn old_buckets_leave_the_window() {
    let events: Vec<_> = (0..10)
        .map(|i| {
            (
                T0 + i * 60 * SEC,
                completed("a", &format!("t{i}"), OutcomeStatus::Succeeded, 1.0),
            )
        })
        .collect();
    let a = aggregates(&config(60, 3, 10), &events);
    let report = a.report(
        &ReportRequest::last(Duration::from_secs(3600)),
        T0 + 600 * SEC,
    );
    assert_eq!(report.records, 3, "three one-minute buckets are kept");
    assert_eq!(report.groups[0].trend.len(), 3);
}

#[test]
fn least_recently_active_agents_fold_into_other() {
    let events = [
        (
            minute(0),
            completed("a", "t1", OutcomeStatus::Succeeded, 1.0),
        ),
        (
            minute(1),
            completed("b", "t2", OutcomeStatus::Succeeded, 1.0),
        ),
        (
            minute(2),
            completed("a", "t3", OutcomeStatus::Succeeded, 1.0),
        ),
        // `b` is now the least recently active: `c` takes its row.
        (minute(3), completed("c", "t4", OutcomeStatus::Failed, 1.0)),
        (
            minute(3) + 1,
            completed("c", "t5", OutcomeStatus::Failed, 1.0),
        ),
    ];
    let a = aggregates(&config(60, 10, 2), &events);
    let request = ReportRequest::last(Duration::from_secs(240)).by(Grouping::ByAgent);
    let report = a.report(&request, minute(4));
    let rows: Vec<(&str, u64)> = report
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.figures.tasks.ended))
        .collect();
    assert_eq!(rows, [("a", 2), ("c", 2), (OTHER_GROUP, 1)]);
    assert_eq!(report.folded_agents, 1);
    assert_eq!(a.tracked_agents(), 2);
    let total: u64 = report.groups.iter().map(|g| g.figures.events).sum();
    assert_eq!(total, report.records, "every record is in exactly one row");
}

#[test]
fn task_only_events_count_for_the_routed_agent_and_strategy() {
    let events = [
        (T0, routed("a", "t1", RoutingStrategy::LoadBalance)),
        (T0 + 1, budget("t1", 150, 100)),
        (T0 + 2, budget("t-unknown", 50, 100)),
    ];
    let a = aggregates(&config(60, 10, 10), &events);
    let by_agent = a.report(
        &ReportRequest::last(Duration::from_secs(60)).agent("a"),
        T0 + 3,
    );
    assert_eq!(by_agent.groups.len(), 1);
    let b = by_agent.groups[0].figures.budget;
    assert_eq!((b.uses, b.overspent), (1, 1));
    assert_eq!(b.utilization.map(|u| u.max), Some(1.5));
    let by_strategy = a.report(
        &ReportRequest::last(Duration::from_secs(60)).by(Grouping::ByStrategy),
        T0 + 3,
    );
    assert_eq!(by_strategy.groups.len(), 1);
    assert_eq!(by_strategy.groups[0].group, "load_balance");
    assert_eq!(by_strategy.groups[0].figures.events, 2);
    let all = overall(&a, T0, T0 + 60 * SEC);
    assert_eq!(
        (all.budget.uses, all.budget.overspent_share),
        (2, Some(0.5))
    );
}

#[test]
fn by_kind_rows_partition_the_records() {
    let events = [
        (T0, routed("a", "t1", RoutingStrategy::Random)),
        (T0 + 1, completed("a", "t1", OutcomeStatus::TimedOut, 5.0)),
        (T0 + 2, completed("a", "t2", OutcomeStatus::Succeeded, 5.0)),
    ];
    let a = aggregates(&config(60, 10, 10), &events);
    let report = a.report(
        &ReportRequest::last(Duration::from_secs(60)).by(Grouping::ByKind),
        T0 + 3,
    );
    let rows: Vec<(&str, u64)> = report
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.figures.events))
        .collect();
    assert_eq!(rows, [("task_completed", 2), ("routing_decision", 1)]);
    let tasks = report.groups[0].figures.tasks;
    assert_eq!(tasks.error_rate, Some(0.5));
    assert_eq!(tasks.success_rate, Some(0.5));
}

#[test]
fn memory_stays_bounded_with_many_agents() {
    let config = config(60, 4, 100);
    let mut a = Aggregates::new(&config);
    for i in 0..5_000i64 {
        let agent = format!("agent-{}", i % 1_000);
        a.add(
            T0 + i * SEC / 10,
            &completed(
                &agent,
                &format!("t{i}"),
                OutcomeStatus::Succeeded,
                (i % 97) as f64,
            ),
            &mut Verbatim,
        );
    }
    assert_eq!(a.tracked_agents(), 100);
    assert!(a.folded_agents >= 900);
    let rows: usize = a.buckets.iter().map(|b| b.agents.len()).max().unwrap_or(0);
    assert!(
        rows <= 100,
        "a bucket holds at most max_agents rows, got {rows}"
    );
}

fn validated(agent: &str, task: &str, rules: &[String], compliance: f64) -> Event {
    Event::ConstitutionalValidation(ConstitutionalValidation {
        task_id: task.into(),
        agent_id: agent.into(),
        valid: rules.is_empty(),
        violations: rules
            .iter()
            .map(|r| Violation {
                severity: Severity::High,
                message: String::new(),
                rule: Some(r.clone()),
            })
            .collect(),
        compliance_score: compliance,
        processing_time_ms: 1.0,
        rule_count: 0,
    })
}

/// One event of a generated stream: seconds after the previous one, agent, what, value.
type Step = (i64, usize, usize, f64);

fn stream_event(i: usize, (_, agent, what, value): Step) -> Event {
    let agent = format!("agent-{agent}");
    let task = format!("t{i}");
    match what {
        0 => routed(&agent, &task, RoutingStrategy::LoadBalance),
        1 => budget(&task, (value * 10.0) as u64, 1000),
        // Forty rule names, more than a tally keeps apart.
        2 => validated(&agent, &task, &[format!("R{}", i % 40)], value / 1e4),
        _ => completed(&agent, &task, OutcomeStatus::ALL[i % 4], value),
    }
}

/// By-agent requests over windows of the buckets kept: all of them, the first half, the
/// newest bucket, windows reaching before the oldest kept, with and without a trend, and
/// one agent.
fn by_agent_requests(a: &Aggregates) -> Vec<ReportRequest> {
    let (Some(front), Some(back)) = (a.buckets.front(), a.buckets.back()) else {
        return Vec::new();
    };
    let (w, first, last) = (a.width, front.start, back.start);
    let half = first + (last - first) / w / 2 * w + w;
    let between = |since: i64, until: i64| ReportRequest::between(datetime(since), datetime(until));
    let mut requests = Vec::new();
    for window in [
        ReportRequest::last(Duration::from_secs(86_400)),
        between(first, last + w),
        between(first, half),
        between(half, last + w),
        between(last, last + w),
        between(first - 5 * w, last),
        between(first - 5 * w, last + 3 * w),
        between(first + w / 2, last + 1),
    ] {
        let window = window.by(Grouping::ByAgent);
        requests.push(window.clone().trend(Trend::None));
        requests.push(window.clone().agent("agent-1"));
        requests.push(window);
    }
    requests
}

/// Checks every by-agent request against the report merging the buckets directly.
fn assert_spans_equal_bucket_merges(a: &Aggregates, now: i64) -> Result<(), String> {
    for request in by_agent_requests(a) {
        let fast = serde_json::to_value(a.report_from(&request, now, Totals::Spans));
        let merged = serde_json::to_value(a.report_from(&request, now, Totals::Buckets));
        match (fast, merged) {
            (Ok(fast), Ok(merged)) if fast == merged => {}
            (fast, merged) => return Err(format!("{request:?}: {fast:?} != {merged:?}")),
        }
    }
    Ok(())
}

#[test]
fn by_agent_reports_over_any_window_equal_merging_the_buckets() {
    // Five one-minute buckets, three agents tracked of five (so agents fold into
    // `other`), over fifty minutes (so buckets are dropped), with rows past the exact
    // values and more rule names than a tally keeps.
    let config = config(60, 5, 3);
    let mut a = Aggregates::new(&config);
    let mut time = T0;
    for i in 0..6_000usize {
        time += SEC / 2;
        // Agents 3 and 4 show up twice each, so that others are folded into `other`
        // while most rows live through the dropping of buckets.
        let agent = match i {
            1_000..1_010 | 4_200..4_205 => 3,
            1_500..1_510 | 4_600..4_602 => 4,
            _ => i % 3,
        };
        let step = (0, agent, i % 4, 1.0 + (i * 7919 % 10_000) as f64);
        a.add(time, &stream_event(i, step), &mut Verbatim);
        if i % 97 == 0 {
            let checked = assert_spans_equal_bucket_merges(&a, time + 1);
            assert!(checked.is_ok(), "after {i} events: {checked:?}");
        }
    }
    assert!(a.folded_agents > 0, "agents were folded into other");
    let checked = assert_spans_equal_bucket_merges(&a, time + 1);
    assert!(checked.is_ok(), "{checked:?}");
    let whole = a.report(
        &ReportRequest::last(Duration::from_secs(3600))
            .by(Grouping::ByAgent)
            .trend(Trend::None),
        time + 1,
    );
    let mut names: Vec<&str> = whole.groups.iter().map(|g| g.group.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["agent-0", "agent-1", "agent-2"],
        "the folds left the window"
    );
}

fn rule(name: &str, kind: AlertKind) -> AlertRule {
    AlertRule {
        name: name.into(),
        kind,
        scope: AlertScope::Overall,
        window_secs: 60,
        threshold: None,
        baseline_factor: None,
        max_drop: None,
        max_share: None,
        baseline_secs: None,
        min_severity: None,
        min_samples: 1,
        for_secs: 0,
        cooldown_secs: 0,
    }
}

/// Feeds `events` and evaluates `rules` after each, returning (time, rule, agent) fired.
fn fire(rules: Vec<AlertRule>, events: &[(i64, Event)]) -> Vec<(i64, String, Option<String>, f64)> {
    let config = config(60, 60, 10);
    let mut a = Aggregates::new(&config);
    let mut alerting = Alerting::new(rules, 60, 60).expect("valid rules");
    let mut fired = Vec::new();
    for (time, event) in events {
        a.add(*time, event, &mut Verbatim);
        for alert in alerting.evaluate(&a, *time) {
            fired.push((alert.time, alert.rule, alert.agent_id, alert.observed));
        }
    }
    fired
}

fn minute(m: i64) -> i64 {
    T0.div_euclid(60 * SEC) * 60 * SEC + m * 60 * SEC
}

#[test]
fn a_latency_spike_fires_once_it_held_for_and_not_again_within_the_cooldown() {
    let mut r = rule("slow", AlertKind::LatencySpike);
    r.threshold = Some(1000.0);
    r.for_secs = 30;
    r.cooldown_secs = 120;
    let slow = |t: i64, i: usize| {
        (
            t,
            completed("a", &format!("t{i}"), OutcomeStatus::Succeeded, 5000.0),
        )
    };
    let events = [
        (
            minute(0),
            completed("a", "t0", OutcomeStatus::Succeeded, 10.0),
        ),
        slow(minute(1), 1),            // condition starts holding
        slow(minute(1) + 20 * SEC, 2), // 20 s: not yet
        slow(minute(1) + 30 * SEC, 3), // 30 s: fires
        slow(minute(1) + 40 * SEC, 4), // within the cooldown
        slow(minute(3) + 29 * SEC, 5), // 119 s after: still cooling
        slow(minute(3) + 30 * SEC, 6), // 120 s after: fires again
    ];
    let fired = fire(vec![r], &events);
    let times: Vec<i64> = fired.iter().map(|f| f.0).collect();
    assert_eq!(times, [minute(1) + 30 * SEC, minute(3) + 30 * SEC]);
    assert!(fired.iter().all(|f| f.3 > 1000.0));
}

#[test]
fn a_condition_that_stops_holding_starts_its_wait_again() {
    let mut r = rule("errors", AlertKind::ErrorRate);
    r.threshold = Some(0.5);
    r.for_secs = 60;
    let events = [
        (minute(0), completed("a", "t1", OutcomeStatus::Failed, 1.0)),
        // The window (the current minute) clears: the condition stops holding.
        (
            minute(1),
            completed("a", "t2", OutcomeStatus::Succeeded, 1.0),
        ),
        (minute(2), completed("a", "t3", OutcomeStatus::Failed, 1.0)),
        (
            minute(2) + 59 * SEC,
            completed("a", "t4", OutcomeStatus::TimedOut, 1.0),
        ),
        (minute(3), completed("a", "t5", OutcomeStatus::Failed, 1.0)),
    ];
    let fired = fire(vec![r], &events);
    assert_eq!(fired.iter().map(|f| f.0).collect::<Vec<_>>(), [minute(3)]);
}

#[test]
fn a_success_rate_drop_against_its_baseline_fires_per_agent() {
    let mut r = rule("drop", AlertKind::SuccessRateDrop);
    r.scope = AlertScope::PerAgent;
    r.max_drop = Some(0.3);
    r.baseline_secs = Some(120);
    r.min_samples = 4;
    let mut events = Vec::new();
    let mut i = 0;
    let mut push = |t: i64, agent: &str, status| {
        i += 1;
        events.push((t, completed(agent, &format!("t{i}"), status, 1.0)));
    };
    for m in 0..2 {
        for k in 0..4 {
            push(minute(m) + k * SEC, "good", OutcomeStatus::Succeeded);
            push(minute(m) + k * SEC, "bad", OutcomeStatus::Succeeded);
        }
    }
    for k in 0..4 {
        push(minute(2) + k * SEC, "good", OutcomeStatus::Succeeded);
        let status = if k == 0 {
            OutcomeStatus::Succeeded
        } else {
            OutcomeStatus::Failed
        };
        push(minute(2) + k * SEC, "bad", status);
    }
    let fired = fire(vec![r], &events);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].2.as_deref(), Some("bad"));
    assert_eq!(fired[0].3, 0.25, "one success in four");
}

#[test]
fn token_overuse_and_caws_violations_fire_on_their_limits() {
    let mut over = rule("over", AlertKind::TokenOveruse);
    over.max_share = Some(0.5);
    over.min_samples = 2;
    let mut caws = rule("caws", AlertKind::CawsViolations);
    caws.threshold = Some(1.0);
    caws.min_severity = Some(crate::contract::event::Severity::High);
    let violation = |severity| crate::contract::event::Violation {
        severity,
        message: String::new(),
        rule: Some("no-secrets".into()),
    };
    let validation = |violations| {
        Event::ConstitutionalValidation(crate::contract::event::ConstitutionalValidation {
            task_id: "t".into(),
            agent_id: "a".into(),
            valid: false,
            violations,
            compliance_score: 0.2,
            processing_time_ms: 1.0,
            rule_count: 3,
        })
    };
    use crate::contract::event::Severity::{Critical, High, Low};
    let events = [
        (minute(0), budget("t1", 150, 100)),
        (minute(0) + 1, budget("t2", 50, 100)), // share 0.5: not above
        (minute(0) + 2, budget("t3", 120, 100)), // share 2/3: fires
        (
            minute(0) + 3,
            validation(vec![violation(Low), violation(High)]),
        ), // 1 counted
        (minute(0) + 4, validation(vec![violation(Critical)])), // 2 counted: fires
    ];
    let fired = fire(vec![over, caws], &events);
    let names: Vec<(&str, f64)> = fired.iter().map(|f| (f.1.as_str(), f.3)).collect();
    assert_eq!(
        names.len(),
        4,
        "each fires at every evaluation without a cooldown: {names:?}"
    );
    assert_eq!(names[0], ("over", 2.0 / 3.0));
    assert_eq!(names.iter().filter(|n| n.0 == "caws").count(), 1);
    assert_eq!(names.iter().find(|n| n.0 == "caws").map(|n| n.1), Some(2.0));
}

#[test]
fn bad_rules_are_refused_with_the_field_named() {
    let base = || {
        let mut r = rule("r", AlertKind::LatencySpike);
        r.threshold = Some(100.0);
        r
    };
    let cases: Vec<(AlertRule, &str)> = vec![
        (
            {
                let mut r = base();
                r.window_secs = 90;
                r
            },
            "window_secs",
        ),
        (
            {
                let mut r = base();
                r.window_secs = 7200;
                r
            },
            "window_secs",
        ),
        (
            {
                let mut r = base();
                r.threshold = None;
                r
            },
            "threshold",
        ),
        (
            {
                let mut r = base();
                r.threshold = Some(-1.0);
                r
            },
            "threshold",
        ),
        (
            {
                let mut r = base();
                r.baseline_factor = Some(2.0);
                r
            },
            "baseline_secs",
        ),
        (
            {
                let mut r = base();
                r.max_drop = Some(0.1);
                r
            },
            "max_drop",
        ),
        (
            {
                let mut r = base();
                r.min_severity = Some(crate::contract::event::Severity::Low);
                r
            },
            "min_severity",
        ),
        (
            {
                let mut r = base();
                r.min_samples = 0;
                r
            },
            "min_samples",
        ),
        (
            {
                let mut r = base();
                r.name = String::new();
                r
            },
            "name",
        ),
    ];
    for (r, field) in cases {
        match Alerting::new(vec![r.clone()], 60, 60) {
            Err(AlertRuleError::Field { field: f, .. }) => assert_eq!(f, field, "{r:?}"),
            other => panic!("{r:?} gave {other:?}, not an error on {field}"),
        }
    }
    assert!(matches!(
        Alerting::new(vec![base(), base()], 60, 60),
        Err(AlertRuleError::DuplicateName { index: 1, .. })
    ));
}
