//! Task executions as guards: `start_task` records the start, `complete` the outcome with
//! a duration from the collector's clock, and dropping an open execution records an
//! abandonment; the task tallies follow, over the lifetime and over what is retained.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use arbiter_events::{
    AnonymizationKey, Attributes, Collector, CompleteError, Config, Event, EventKind, IdKind,
    ManualClock, OutcomeStatus, Overflow, RecordError, Rule, TaskOutcome, TaskWindow,
};

use common::{PATIENCE, T0, TestResult, flushed_export, records};

const KEY: [u8; 32] = [6; 32];

fn build(clock: &ManualClock) -> common::Result<Collector> {
    build_with(clock, Config::default())
}

fn build_with(clock: &ManualClock, config: Config) -> common::Result<Collector> {
    common::build_collector(clock.clone(), config, KEY)
}

fn outcome(status: OutcomeStatus) -> TaskOutcome {
    TaskOutcome {
        status,
        quality_score: 0.75,
        efficiency_score: 0.5,
        tokens_consumed: 321,
    }
}

fn pseudonym(kind: IdKind, id: &str) -> String {
    AnonymizationKey::from_bytes(KEY).pseudonym(kind, id)
}

/// Starts an execution, advances the clock by `ms`, and completes it with `status`.
fn run(collector: &Collector, clock: &ManualClock, status: OutcomeStatus, ms: u64) -> TestResult {
    let execution = collector.start_task("task", "agent", Attributes::new())?;
    clock.advance(Duration::from_millis(ms));
    execution.complete(outcome(status))?;
    Ok(())
}

/// Starts an execution, advances the clock by `ms`, and drops it.
fn abandon(collector: &Collector, clock: &ManualClock, ms: u64) -> TestResult {
    let execution = collector.start_task("task", "agent", Attributes::new())?;
    clock.advance(Duration::from_millis(ms));
    drop(execution);
    Ok(())
}

fn empty_window(w: &TaskWindow) -> bool {
    w.completed + w.abandoned == 0 && w.success_rate.is_none() && w.mean_duration_ms.is_none()
}

#[test]
fn smoke() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    let execution = collector.start_task("task-1", "agent-a", Attributes::new())?;
    execution.complete(outcome(OutcomeStatus::Succeeded))?;
    let kinds: Vec<EventKind> = records(&flushed_export(&collector)?)?
        .iter()
        .map(|r| r.event.kind())
        .collect();
    assert_eq!(kinds, [EventKind::TaskStarted, EventKind::TaskCompleted]);
    Ok(())
}

#[test]
fn complete_records_the_outcome_and_the_clock_duration() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    let context = Attributes::new()
        .with("task_type", "refactor")
        .with("files", 3);
    let execution = collector.start_task("task-1", "agent-a", context.clone())?;
    assert_eq!(execution.task_id(), "task-1");
    assert_eq!(execution.agent_id(), "agent-a");
    let execution_id = execution.execution_id().to_owned();
    assert!(!execution_id.is_empty());
    clock.advance(Duration::from_millis(250));
    assert_eq!(execution.elapsed(), Duration::from_millis(250));
    execution.complete(outcome(OutcomeStatus::Failed))?;

    let got = records(&flushed_export(&collector)?)?;
    assert_eq!(got.len(), 2);
    let Event::TaskStarted(started) = &got[0].event else {
        panic!("expected task_started, got {:?}", got[0]);
    };
    assert_eq!(
        started.execution_id,
        pseudonym(IdKind::Execution, &execution_id)
    );
    assert_eq!(started.task_id, pseudonym(IdKind::Task, "task-1"));
    assert_eq!(started.agent_id, pseudonym(IdKind::Agent, "agent-a"));
    assert_eq!(started.context, context);
    let Event::TaskCompleted(completed) = &got[1].event else {
        panic!("expected task_completed, got {:?}", got[1]);
    };
    assert_eq!(completed.execution_id, started.execution_id);
    assert_eq!(completed.task_id, started.task_id);
    assert_eq!(completed.agent_id, started.agent_id);
    assert_eq!(completed.outcome, outcome(OutcomeStatus::Failed));
    assert_eq!(completed.duration_ms, 250.0);
    Ok(())
}

#[test]
fn dropping_an_open_execution_records_an_abandonment() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    let execution = collector.start_task("task-1", "agent-a", Attributes::new())?;
    let execution_id = execution.execution_id().to_owned();
    clock.advance(Duration::from_millis(40));
    drop(execution);

    let explicit = collector.start_task("task-2", "agent-b", Attributes::new())?;
    clock.advance(Duration::from_millis(15));
    explicit.abandon()?;

    let got = records(&flushed_export(&collector)?)?;
    let kinds: Vec<EventKind> = got.iter().map(|r| r.event.kind()).collect();
    assert_eq!(
        kinds,
        [
            EventKind::TaskStarted,
            EventKind::TaskAbandoned,
            EventKind::TaskStarted,
            EventKind::TaskAbandoned
        ]
    );
    let Event::TaskAbandoned(dropped) = &got[1].event else {
        panic!("expected task_abandoned, got {:?}", got[1]);
    };
    assert_eq!(
        dropped.execution_id,
        pseudonym(IdKind::Execution, &execution_id)
    );
    assert_eq!(dropped.task_id, pseudonym(IdKind::Task, "task-1"));
    assert_eq!(dropped.agent_id, pseudonym(IdKind::Agent, "agent-a"));
    assert_eq!(dropped.duration_ms, 40.0);
    let Event::TaskAbandoned(abandoned) = &got[3].event else {
        panic!("expected task_abandoned, got {:?}", got[3]);
    };
    assert_eq!(abandoned.task_id, pseudonym(IdKind::Task, "task-2"));
    assert_eq!(abandoned.duration_ms, 15.0);
    let s = collector.stats();
    assert_eq!(s.tasks.lifetime.abandoned, 2);
    assert_eq!(s.tasks.lifetime.completed, 0);
    Ok(())
}

#[test]
fn an_invalid_outcome_hands_the_execution_back() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    let execution = collector.start_task("task-1", "agent-a", Attributes::new())?;
    let execution_id = execution.execution_id().to_owned();
    clock.advance(Duration::from_millis(100));
    let bad = TaskOutcome {
        quality_score: 1.5,
        ..outcome(OutcomeStatus::Succeeded)
    };
    let Err(CompleteError::Invalid { error, execution }) = execution.complete(bad) else {
        panic!("an invalid outcome was accepted");
    };
    assert_eq!(error.kind(), EventKind::TaskCompleted);
    assert_eq!(error.field(), "outcome.quality_score");
    assert!(matches!(error.rule(), Rule::OutOfRange { .. }));
    assert_eq!(execution.execution_id(), execution_id);
    // Nothing but the start was recorded, the bad completion was counted as rejected,
    // and the execution is still open.
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!((s.stored, s.rejected, s.submitted), (1, 1, 2));
    clock.advance(Duration::from_millis(20));
    execution.complete(outcome(OutcomeStatus::Succeeded))?;

    let got = records(&flushed_export(&collector)?)?;
    let kinds: Vec<EventKind> = got.iter().map(|r| r.event.kind()).collect();
    assert_eq!(kinds, [EventKind::TaskStarted, EventKind::TaskCompleted]);
    let Event::TaskCompleted(completed) = &got[1].event else {
        panic!("expected task_completed, got {:?}", got[1]);
    };
    assert_eq!(
        completed.execution_id,
        pseudonym(IdKind::Execution, &execution_id)
    );
    assert_eq!(completed.duration_ms, 120.0);
    let s = collector.stats();
    assert_eq!(s.tasks.lifetime.succeeded, 1);
    assert_eq!(s.tasks.lifetime.abandoned, 0);
    assert_eq!(s.submitted, s.stored + s.dropped.total() + s.rejected);
    Ok(())
}

#[test]
fn an_execution_handed_back_and_dropped_is_abandoned() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    let execution = collector.start_task("task-1", "agent-a", Attributes::new())?;
    let bad = TaskOutcome {
        efficiency_score: f64::NAN,
        ..outcome(OutcomeStatus::Succeeded)
    };
    let Err(CompleteError::Invalid { execution, .. }) = execution.complete(bad) else {
        panic!("an invalid outcome was accepted");
    };
    drop(execution);
    let kinds: Vec<EventKind> = records(&flushed_export(&collector)?)?
        .iter()
        .map(|r| r.event.kind())
        .collect();
    assert_eq!(kinds, [EventKind::TaskStarted, EventKind::TaskAbandoned]);
    Ok(())
}

#[test]
fn a_refused_start_gives_no_execution() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    assert!(matches!(
        collector.start_task("", "agent-a", Attributes::new()),
        Err(RecordError::Invalid(_))
    ));
    collector.pause();
    assert!(matches!(
        collector.start_task("task-1", "agent-a", Attributes::new()),
        Err(RecordError::Paused)
    ));
    collector.resume();
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!(
        (s.submitted, s.rejected, s.dropped.paused, s.stored),
        (2, 1, 1, 0)
    );
    Ok(())
}

#[test]
fn execution_ids_are_unique_across_executions_and_collectors() -> TestResult {
    const PER_COLLECTOR: usize = 500;
    let clock = ManualClock::new(T0);
    let collectors = [build(&clock)?, build(&clock)?];
    let mut raw = HashSet::new();
    for collector in &collectors {
        for i in 0..PER_COLLECTOR {
            let execution = collector.start_task("task", "agent", Attributes::new())?;
            assert!(raw.insert(execution.execution_id().to_owned()));
            if i % 2 == 0 {
                execution.complete(outcome(OutcomeStatus::Succeeded))?;
            } else {
                drop(execution);
            }
        }
    }
    assert_eq!(raw.len(), 2 * PER_COLLECTOR);
    // Both collectors share a key, so equal raw ids would show as equal pseudonyms.
    let mut pseudonyms = HashSet::new();
    for collector in &collectors {
        for record in records(&flushed_export(collector)?)? {
            if let Event::TaskStarted(e) = record.event {
                assert!(e.execution_id.starts_with("exe_"));
                assert!(pseudonyms.insert(e.execution_id));
            }
        }
    }
    assert_eq!(pseudonyms.len(), 2 * PER_COLLECTOR);
    Ok(())
}

#[test]
fn task_stats_count_outcomes_over_the_lifetime_and_the_retained_records() -> TestResult {
    let clock = ManualClock::new(T0);
    let mut config = Config::default();
    config.retention.max_age_secs = 60;
    let collector = build_with(&clock, config)?;
    run(&collector, &clock, OutcomeStatus::Succeeded, 100)?;
    run(&collector, &clock, OutcomeStatus::Succeeded, 200)?;
    run(&collector, &clock, OutcomeStatus::Succeeded, 300)?;
    run(&collector, &clock, OutcomeStatus::Failed, 400)?;
    abandon(&collector, &clock, 50)?;
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    for window in [s.tasks.lifetime, s.tasks.retained] {
        assert_eq!(window.succeeded, 3);
        assert_eq!(window.failed, 1);
        assert_eq!((window.timed_out, window.cancelled), (0, 0));
        assert_eq!(window.completed, 4);
        assert_eq!(window.abandoned, 1);
        assert_eq!(window.success_rate, Some(0.75));
        assert_eq!(window.mean_duration_ms, Some(250.0));
    }

    // Age the first five executions out; the lifetime tallies stay.
    clock.advance(Duration::from_secs(61));
    run(&collector, &clock, OutcomeStatus::TimedOut, 30)?;
    run(&collector, &clock, OutcomeStatus::Cancelled, 10)?;
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!(s.pruned.age, 10);
    let retained = s.tasks.retained;
    assert_eq!(
        (
            retained.succeeded,
            retained.failed,
            retained.timed_out,
            retained.cancelled
        ),
        (0, 0, 1, 1)
    );
    assert_eq!((retained.completed, retained.abandoned), (2, 0));
    assert_eq!(retained.success_rate, Some(0.0));
    assert_eq!(retained.mean_duration_ms, Some(20.0));
    let lifetime = s.tasks.lifetime;
    assert_eq!((lifetime.succeeded, lifetime.failed), (3, 1));
    assert_eq!((lifetime.timed_out, lifetime.cancelled), (1, 1));
    assert_eq!((lifetime.completed, lifetime.abandoned), (6, 1));
    assert_eq!(lifetime.success_rate, Some(0.5));
    let mean = lifetime.mean_duration_ms.unwrap_or(f64::NAN);
    assert!((mean - 1040.0 / 6.0).abs() < 1e-9, "{mean}");

    // Clearing empties the retained window only.
    collector.clear();
    let s = collector.stats();
    assert!(empty_window(&s.tasks.retained), "{:?}", s.tasks.retained);
    assert_eq!(s.tasks.lifetime, lifetime);

    // And pruning by count takes the tallies of what it removes.
    collector.update_config(|c| c.retention.max_events = 3)?;
    run(&collector, &clock, OutcomeStatus::Succeeded, 5)?;
    abandon(&collector, &clock, 7)?;
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    // Retained: the first completion, the second start and its abandonment.
    assert_eq!(s.tasks.retained.completed, 1);
    assert_eq!(s.tasks.retained.abandoned, 1);
    assert_eq!(s.tasks.retained.mean_duration_ms, Some(5.0));
    assert_eq!(s.tasks.lifetime.completed, 7);
    assert_eq!(s.tasks.lifetime.abandoned, 2);
    Ok(())
}

#[test]
fn the_mean_duration_agrees_with_the_recorded_durations() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    let durations = [
        Duration::from_millis(1001),
        Duration::from_micros(70),
        Duration::from_millis(250),
        Duration::from_micros(1_003_021),
    ];
    for (i, d) in durations.iter().enumerate() {
        let execution = collector.start_task(format!("task-{i}"), "agent", Attributes::new())?;
        clock.advance(*d);
        execution.complete(outcome(OutcomeStatus::Succeeded))?;
    }
    let recorded: Vec<f64> = records(&flushed_export(&collector)?)?
        .iter()
        .filter_map(|r| match &r.event {
            Event::TaskCompleted(e) => Some(e.duration_ms),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.len(), durations.len());
    for (ms, d) in recorded.iter().zip(&durations) {
        assert!(
            (ms - d.as_secs_f64() * 1000.0).abs() < 1e-9,
            "{ms} for {d:?}"
        );
    }
    let expected = recorded.iter().sum::<f64>() / recorded.len() as f64;
    let mean = collector
        .stats()
        .tasks
        .lifetime
        .mean_duration_ms
        .unwrap_or(f64::NAN);
    assert!(
        (mean - expected).abs() < 1e-6,
        "mean_duration_ms is {mean}, the records' durations average {expected}"
    );
    Ok(())
}

#[test]
fn dropping_under_a_blocking_policy_waits_only_briefly() -> TestResult {
    const CAPACITY: usize = 4;
    let (collector, clock) = common::gated_collector(KEY, |c| {
        c.queue.capacity = CAPACITY;
        c.queue.overflow = Overflow::Block;
    })?;
    let execution = collector.start_task("task-1", "agent-a", Attributes::new())?;
    collector.flush(PATIENCE)?;
    let held = clock.hold(PATIENCE)?;
    let mut queued = 0;
    while collector.try_record(common::used(queued)).is_ok() {
        queued += 1;
    }
    // The queue is full and the worker held: a blocking record would wait forever, the
    // destructor gives up after ABANDON_MAX_WAIT and counts the drop.
    let before = collector.stats().dropped.queue_full;
    drop(execution);
    assert_eq!(collector.stats().dropped.queue_full, before + 1);
    drop(held);
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!(s.stored, 1 + queued);
    assert_eq!(s.tasks.lifetime.abandoned, 0);
    assert_eq!(s.submitted, s.stored + s.dropped.total() + s.rejected);
    Ok(())
}

#[test]
fn huge_durations_do_not_overflow_the_tallies() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    for (n, status) in [OutcomeStatus::Succeeded, OutcomeStatus::Failed]
        .into_iter()
        .enumerate()
    {
        collector.record(Event::TaskCompleted(arbiter_events::TaskCompleted {
            execution_id: format!("exec-{n}"),
            task_id: "task-1".into(),
            agent_id: "agent-a".into(),
            outcome: outcome(status),
            duration_ms: 1e16,
        }))?;
    }
    collector.flush(PATIENCE)?;
    let mean = collector.stats().tasks.lifetime.mean_duration_ms;
    assert!(
        matches!(mean, Some(m) if (m - 1e16).abs() / 1e16 < 1e-9),
        "{mean:?}"
    );
    Ok(())
}

/// Two collectors built alike, with a fixed execution seed, key and a manual clock.
fn seeded(seed: u64) -> common::Result<(Collector, ManualClock)> {
    let clock = ManualClock::new(T0);
    let collector = Collector::builder()
        .clock(clock.clone())
        .key(AnonymizationKey::from_bytes(KEY))
        .execution_seed(seed)
        .build()?;
    Ok((collector, clock))
}

/// The same session on `collector`: executions completed, abandoned and dropped.
fn session(collector: &Collector, clock: &ManualClock) -> TestResult {
    for i in 0..5 {
        let run = collector.start_task(format!("task-{i}"), "agent-a", Attributes::new())?;
        clock.advance(Duration::from_millis(3 + i));
        if i % 2 == 0 {
            run.complete(outcome(OutcomeStatus::Succeeded))?;
        } else {
            drop(run);
        }
    }
    Ok(())
}

#[test]
fn a_fixed_execution_seed_gives_byte_identical_exports() -> TestResult {
    let mut exports = Vec::new();
    for _ in 0..2 {
        let (collector, clock) = seeded(42)?;
        session(&collector, &clock)?;
        exports.push(flushed_export(&collector)?.to_msgpack());
    }
    assert_eq!(exports[0], exports[1]);
    let file = arbiter_events::read_export(exports[0].as_slice())?;
    assert_eq!(file.records.len(), 10);
    // The ids are the seed's: the pseudonym of `{seed:016x}-{n:x}`.
    let first = file.records[0]
        .event
        .execution_id()
        .ok_or("the first record is not an execution's")?;
    assert_eq!(first, pseudonym(IdKind::Execution, "000000000000002a-0"));
    // Another seed, other ids: the seed is what fixes them.
    let (collector, clock) = seeded(43)?;
    session(&collector, &clock)?;
    assert_ne!(flushed_export(&collector)?.to_msgpack(), exports[0]);
    Ok(())
}

#[test]
fn without_a_seed_execution_ids_differ_between_collectors() -> TestResult {
    let clock = ManualClock::new(T0);
    let a = build(&clock)?.start_task("t", "a", Attributes::new())?;
    let b = build(&clock)?.start_task("t", "a", Attributes::new())?;
    assert_ne!(a.execution_id(), b.execution_id());
    Ok(())
}
