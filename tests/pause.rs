//! Pausing and disabling: refused events are counted under `dropped.paused` or
//! `dropped.disabled`, never stored, and the state shows in `stats` and `is_active`.

mod common;

use arbiter_events::{
    Attributes, Collector, CompleteError, Complexity, Config, Event, ManualClock, OutcomeStatus,
    RecordError, State, TaskOutcome, ThinkingBudgetAllocated,
};

use common::{PATIENCE, T0, TestResult, assert_drained, used};

fn build() -> common::Result<Collector> {
    common::build_collector(ManualClock::new(T0), Config::default(), [4; 32])
}

fn invalid() -> Event {
    Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
        task_id: "task".into(),
        allocated_tokens: 1,
        complexity: Complexity::Trivial,
        confidence: f64::NAN,
    })
}

fn outcome() -> TaskOutcome {
    TaskOutcome {
        status: OutcomeStatus::Succeeded,
        quality_score: 1.0,
        efficiency_score: 1.0,
        tokens_consumed: 1,
    }
}

/// The markers of the stored records, in seq order.
fn stored_markers(collector: &Collector) -> common::Result<Vec<u64>> {
    let export = common::flushed_export(collector)?;
    let mut markers = Vec::new();
    for record in export.records() {
        if let Event::ThinkingBudgetUsed(e) = record?.event {
            markers.push(e.tokens_used);
        }
    }
    Ok(markers)
}

#[test]
fn smoke() -> TestResult {
    let collector = build()?;
    assert!(collector.is_active());
    collector.pause();
    assert!(!collector.is_active());
    assert!(matches!(
        collector.record(used(1)),
        Err(RecordError::Paused)
    ));
    collector.resume();
    assert!(collector.is_active());
    collector.record(used(2))?;
    assert_eq!(stored_markers(&collector)?, [2]);
    Ok(())
}

#[test]
fn paused_events_are_counted_and_not_stored() -> TestResult {
    let collector = build()?;
    for i in 0..5 {
        collector.record(used(i))?;
    }
    collector.pause();
    for i in 5..12 {
        assert!(matches!(
            collector.record(used(i)),
            Err(RecordError::Paused)
        ));
    }
    let refused = collector.try_record(used(12));
    let Err(error) = refused else {
        panic!("try_record accepted an event while paused");
    };
    assert!(matches!(error.error(), RecordError::Paused));
    assert_eq!(error.into_event(), used(12));
    collector.resume();
    for i in 13..16 {
        collector.record(used(i))?;
    }
    assert_eq!(stored_markers(&collector)?, [0, 1, 2, 3, 4, 13, 14, 15]);
    let s = collector.stats();
    assert_drained(&s);
    assert_eq!(s.submitted, 16);
    assert_eq!(s.stored, 8);
    assert_eq!(s.dropped.paused, 8);
    assert_eq!(s.dropped.total(), 8);
    assert_eq!(s.rejected, 0);
    Ok(())
}

#[test]
fn an_invalid_event_while_paused_is_counted_once() -> TestResult {
    let collector = build()?;
    collector.pause();
    assert!(collector.record(invalid()).is_err());
    let s = collector.stats();
    assert_eq!(s.submitted, 1);
    assert_eq!(s.dropped.paused + s.rejected, 1);
    assert_drained(&s);
    Ok(())
}

#[test]
fn disabled_events_are_counted_and_not_stored() -> TestResult {
    let collector = build()?;
    collector.record(used(1))?;
    collector.update_config(|c| c.enabled = false)?;
    assert!(!collector.is_active());
    assert!(!collector.config().enabled);
    for i in 2..6 {
        assert!(matches!(
            collector.record(used(i)),
            Err(RecordError::Disabled)
        ));
    }
    assert!(matches!(
        collector.start_task("task", "agent", Attributes::new()),
        Err(RecordError::Disabled)
    ));
    collector.update_config(|c| c.enabled = true)?;
    assert!(collector.is_active());
    collector.record(used(6))?;
    assert_eq!(stored_markers(&collector)?, [1, 6]);
    let s = collector.stats();
    assert_drained(&s);
    assert_eq!(s.dropped.disabled, 5);
    assert_eq!(s.dropped.paused, 0);
    assert_eq!((s.submitted, s.stored), (7, 2));
    Ok(())
}

#[test]
fn the_state_shows_in_stats() -> TestResult {
    let collector = build()?;
    let state = |c: &Collector| c.stats().state;
    assert_eq!(state(&collector), State::Active);
    collector.pause();
    assert_eq!(state(&collector), State::Paused);
    collector.resume();
    assert_eq!(state(&collector), State::Active);

    // Disabled outranks paused, and each is undone on its own.
    collector.pause();
    collector.update_config(|c| c.enabled = false)?;
    assert_eq!(state(&collector), State::Disabled);
    assert!(matches!(
        collector.record(used(1)),
        Err(RecordError::Disabled)
    ));
    collector.update_config(|c| c.enabled = true)?;
    assert_eq!(state(&collector), State::Paused);
    assert!(!collector.is_active());
    collector.resume();
    assert_eq!(state(&collector), State::Active);
    assert!(collector.is_active());

    // Pausing twice, resuming twice: no nesting.
    collector.pause();
    collector.pause();
    collector.resume();
    assert!(collector.is_active());
    collector.resume();
    assert!(collector.is_active());

    collector.pause();
    collector.shutdown(PATIENCE)?;
    assert_eq!(state(&collector), State::ShutDown);
    collector.resume();
    assert_eq!(state(&collector), State::ShutDown);
    assert!(!collector.is_active());
    assert!(matches!(
        collector.record(used(2)),
        Err(RecordError::ShutDown)
    ));
    Ok(())
}

#[test]
fn pausing_does_not_stop_reads_or_flushes() -> TestResult {
    let collector = build()?;
    for i in 0..3 {
        collector.record(used(i))?;
    }
    collector.pause();
    collector.flush(PATIENCE)?;
    assert_eq!(collector.stats().stored, 3);
    assert_eq!(stored_markers(&collector)?, [0, 1, 2]);
    assert_eq!(collector.clear(), 3);
    assert_eq!(collector.stats().retained, 0);
    Ok(())
}

#[test]
fn executions_across_a_pause() -> TestResult {
    let collector = build()?;
    let abandoned = collector.start_task("task-a", "agent", Attributes::new())?;
    let completed = collector.start_task("task-b", "agent", Attributes::new())?;
    collector.pause();
    assert!(matches!(
        collector.start_task("task-c", "agent", Attributes::new()),
        Err(RecordError::Paused)
    ));
    // Dropped while paused: the abandonment is counted, never stored.
    drop(abandoned);
    // Completed while paused: the completion is counted and the execution closed, so
    // no abandonment follows.
    let result = completed.complete(outcome());
    assert!(matches!(
        result,
        Err(CompleteError::Dropped(RecordError::Paused))
    ));
    collector.resume();
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_drained(&s);
    assert_eq!(s.submitted, 5);
    assert_eq!(s.stored, 2);
    assert_eq!(s.dropped.paused, 3);
    assert_eq!(s.tasks.lifetime.completed + s.tasks.lifetime.abandoned, 0);
    Ok(())
}
