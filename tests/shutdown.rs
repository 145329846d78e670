//! Shutdown: stores what was queued, refuses and counts what comes later, reports
//! both, and leaves every event accounted for.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use arbiter_events::{
    Attributes, Collector, Config, Cursor, ExportRequest, FlushError, ManualClock, Overflow,
    RecordError, ShutdownError, State,
};

use common::{GatedClock, PATIENCE, T0, TestResult, assert_settled, used};

const KEY: [u8; 32] = [2; 32];

/// A collector whose worker can be held, with a queue of `capacity`.
fn gated(capacity: usize) -> common::Result<(Collector, GatedClock)> {
    common::gated_collector(KEY, |c| c.queue.capacity = capacity)
}

#[test]
fn smoke() -> TestResult {
    let collector = common::build_collector(ManualClock::new(T0), Config::default(), KEY)?;
    collector.record(used(1))?;
    let report = collector.shutdown(PATIENCE)?;
    assert_eq!(report.stats.stored, 1);
    assert_eq!(report.unresolved, 0);
    assert_eq!(report.stats.state, State::ShutDown);
    Ok(())
}

#[test]
fn shutdown_stores_what_was_queued_and_counts_what_came_later() -> TestResult {
    const QUEUED: u64 = 10;
    let (collector, clock) = gated(64)?;
    let closed = clock.hold(PATIENCE)?;
    for i in 0..QUEUED {
        collector.record(used(i))?;
    }
    assert_eq!(collector.stats().stored, 0);
    let stopping = {
        let collector = collector.clone();
        thread::spawn(move || collector.shutdown(PATIENCE))
    };
    common::wait_until("the collector to close", PATIENCE, || {
        collector.stats().state == State::ShutDown
    })?;
    assert!(!collector.is_active());
    // Refused while shutting down: counted, and named in the report.
    for i in 0..3 {
        assert!(matches!(
            collector.record(used(100 + i)),
            Err(RecordError::ShutDown)
        ));
    }
    drop(closed);
    let report = stopping.join().map_err(|_| "shutdown panicked")??;
    assert_eq!(report.flushed, QUEUED);
    assert_eq!(report.dropped, 3);
    assert_eq!(report.unresolved, 0);
    assert_eq!(report.stats.stored, QUEUED);
    assert_eq!(report.stats.dropped.shutdown, 3);
    assert_eq!(report.stats.state, State::ShutDown);
    assert_settled(&report.stats);

    // Everything later is refused and counted; reads still work.
    assert!(matches!(
        collector.record(used(200)),
        Err(RecordError::ShutDown)
    ));
    let refused = collector.try_record(used(201));
    let Err(error) = refused else {
        panic!("try_record accepted an event after shutdown");
    };
    assert!(matches!(error.error(), RecordError::ShutDown));
    assert_eq!(error.into_event(), used(201));
    assert!(matches!(
        collector.start_task("task", "agent", Attributes::new()),
        Err(RecordError::ShutDown)
    ));
    assert!(matches!(
        collector.flush(PATIENCE),
        Err(FlushError::ShutDown)
    ));
    let s = collector.stats();
    assert_eq!(s.dropped.shutdown, 6);
    assert_settled(&s);
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(export.len(), QUEUED);

    let again = collector.shutdown(PATIENCE)?;
    assert_eq!((again.flushed, again.dropped, again.unresolved), (0, 0, 0));
    assert_eq!(again.stats.stored, QUEUED);
    assert_eq!(again.stats.dropped.shutdown, 6);
    Ok(())
}

#[test]
fn a_shutdown_that_runs_out_of_time_says_what_is_unresolved() -> TestResult {
    const QUEUED: u64 = 5;
    let (collector, clock) = gated(64)?;
    let closed = clock.hold(PATIENCE)?;
    for i in 0..QUEUED {
        collector.record(used(i))?;
    }
    let timeout = Duration::from_millis(20);
    let result = collector.shutdown(timeout);
    let Err(ShutdownError::TimedOut { timeout: t, report }) = result else {
        panic!("a held worker finished shutting down: {result:?}");
    };
    assert_eq!(t, timeout);
    assert_eq!(report.unresolved, QUEUED);
    assert_eq!(report.flushed, 0);
    assert_eq!(report.stats.in_flight, QUEUED);
    assert!(matches!(
        collector.record(used(9)),
        Err(RecordError::ShutDown)
    ));
    // Released late, the worker still stores what it was given.
    drop(closed);
    common::wait_until("the queued events to be stored", PATIENCE, || {
        collector.stats().stored == QUEUED
    })?;
    assert_settled(&collector.stats());
    let later = collector.shutdown(PATIENCE)?;
    assert_eq!((later.flushed, later.unresolved), (0, 0));
    Ok(())
}

#[test]
fn dropping_a_clone_does_not_shut_down() -> TestResult {
    let collector = common::build_collector(ManualClock::new(T0), Config::default(), KEY)?;
    let clone = collector.clone();
    clone.record(used(1))?;
    drop(clone);
    assert!(collector.is_active());
    assert_eq!(collector.stats().state, State::Active);
    collector.record(used(2))?;
    collector.flush(PATIENCE)?;
    assert_eq!(collector.stats().stored, 2);
    // An open execution holds the collector too.
    let run = collector.start_task("task", "agent", Attributes::new())?;
    let handle = collector.clone();
    drop(collector);
    run.abandon()?;
    handle.flush(PATIENCE)?;
    assert_eq!(handle.stats().stored, 4);
    Ok(())
}

/// Producers record until they are refused, while the main thread shuts down.
fn race(overflow: Overflow) -> TestResult {
    const PRODUCERS: usize = 4;
    /// A bound on each producer, far above what it records before the shutdown.
    const CAP: u64 = 50_000_000;
    let mut config = Config::default();
    config.queue.capacity = 128;
    config.queue.overflow = overflow;
    let collector = common::build_collector(ManualClock::new(T0), config, KEY)?;
    let started = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let collector = collector.clone();
            let started = Arc::clone(&started);
            thread::spawn(move || {
                for i in 0..CAP {
                    started.store(true, Ordering::Relaxed);
                    if let Err(RecordError::ShutDown) = collector.record(used(i)) {
                        return true;
                    }
                }
                false
            })
        })
        .collect();
    common::wait_until("the producers to get going", PATIENCE, || {
        started.load(Ordering::Relaxed) && collector.stats().stored >= 1_000
    })?;
    let report = collector.shutdown(PATIENCE)?;
    assert_eq!(report.unresolved, 0);
    assert_eq!(report.stats.in_flight, 0);
    assert_eq!(report.stats.state, State::ShutDown);
    assert_eq!(
        report.stats.submitted,
        report.stats.stored + report.stats.dropped.total() + report.stats.rejected
    );
    for producer in producers {
        let refused = producer.join().map_err(|_| "a producer panicked")?;
        assert!(refused, "a producer was never refused");
    }
    let s = collector.stats();
    assert_settled(&s);
    assert_eq!(
        s.stored, report.stats.stored,
        "nothing stored after shutdown"
    );
    assert_eq!(s.dropped.shutdown, PRODUCERS as u64);
    assert_eq!(s.rejected, 0);
    if overflow == Overflow::Block {
        assert_eq!(s.dropped.queue_full, 0);
    }
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(export.len(), s.retained);
    Ok(())
}

#[test]
fn producers_racing_a_shutdown_are_all_accounted_for_under_block() -> TestResult {
    race(Overflow::Block)
}

#[test]
fn producers_racing_a_shutdown_are_all_accounted_for_under_drop_newest() -> TestResult {
    race(Overflow::DropNewest)
}

#[test]
fn shutdown_returns_once_nothing_is_left_to_resolve() -> TestResult {
    // Producers keep recording through the shutdown, as an arbiter would: once the
    // collector closes, each call is refused and counted on the spot, so nothing is left
    // for the worker to wait for. Given an hour, shutdown must still come back as soon
    // as the queue is drained rather than sit out its timeout.
    const PRODUCERS: usize = 4;
    let mut config = Config::default();
    config.queue.capacity = 128;
    config.queue.overflow = Overflow::Block;
    let collector = common::build_collector(ManualClock::new(T0), config, KEY)?;
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let collector = collector.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = collector.record(used(i));
                    i += 1;
                }
            })
        })
        .collect();
    common::wait_until("the producers to get going", PATIENCE, || {
        collector.stats().stored >= 1_000
    })?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stopping = {
        let collector = collector.clone();
        thread::spawn(move || {
            let _ = done_tx.send(collector.shutdown(Duration::from_secs(3600)));
        })
    };
    let result = done_rx.recv_timeout(PATIENCE);
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        producer.join().map_err(|_| "a producer panicked")?;
    }
    let report = result.map_err(
        |_| "shutdown was still waiting with nothing left to store; it sits out its timeout",
    )??;
    stopping.join().map_err(|_| "shutdown panicked")?;
    assert_eq!(report.unresolved, 0);
    assert_eq!(report.stats.state, State::ShutDown);
    let s = collector.stats();
    assert_settled(&s);
    assert_eq!(s.stored, report.stats.stored);
    assert!(s.dropped.shutdown > 0);
    Ok(())
}
