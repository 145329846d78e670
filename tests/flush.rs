//! `flush` is a barrier: when it returns, every event recorded before it is stored and
//! visible to `stats` and `export`; it fails with a typed error after shutdown or when
//! the worker cannot catch up in time.

mod common;

use std::thread;
use std::time::Duration;

use arbiter_events::{
    AnonymizationMode, Collector, Config, Cursor, Event, EventKind, ExportRequest, FlushError,
    ManualClock, Overflow,
};

use common::{GatedClock, PATIENCE, T0, TestResult, used, used_by};

const KEY: [u8; 32] = [1; 32];

/// A collector whose worker can be held, with a queue of `capacity` under `overflow`.
fn gated(capacity: usize, overflow: Overflow) -> common::Result<(Collector, GatedClock)> {
    common::gated_collector(KEY, |c| {
        c.queue.capacity = capacity;
        c.queue.overflow = overflow;
    })
}

#[test]
fn smoke() -> TestResult {
    let collector = common::build_collector(ManualClock::new(T0), Config::default(), KEY)?;
    collector.record(used(1))?;
    collector.flush(PATIENCE)?;
    assert_eq!(collector.stats().stored, 1);
    assert_eq!(
        collector
            .export(&ExportRequest::after(Cursor::START))?
            .len(),
        1
    );
    Ok(())
}

#[test]
fn flush_is_a_barrier_for_each_recording_thread() -> TestResult {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 2_000;
    let mut config = Config::default();
    config.anonymization.mode = AnonymizationMode::Off;
    config.queue.capacity = 64;
    config.queue.overflow = Overflow::Block;
    let collector = Collector::builder()
        .config(config)
        .clock(ManualClock::new(T0))
        .build()?;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let collector = collector.clone();
            thread::spawn(move || -> Result<(), String> {
                let task = format!("thread-{t}");
                for round in 0..4 {
                    for i in 0..PER_THREAD / 4 {
                        collector
                            .record(used_by(&task, round * 1000 + i))
                            .map_err(|e| e.to_string())?;
                    }
                    collector.flush(PATIENCE).map_err(|e| e.to_string())?;
                    let mine = (round + 1) * (PER_THREAD / 4);
                    let s = collector.stats();
                    if s.stored < mine || s.kind(EventKind::ThinkingBudgetUsed).stored < mine {
                        return Err(format!("{task}: {} stored after flushing {mine}", s.stored));
                    }
                    let export = collector
                        .export(&ExportRequest::after(Cursor::START))
                        .map_err(|e| e.to_string())?;
                    let mut seen = 0;
                    for record in export.records() {
                        let record = record.map_err(|e| e.to_string())?;
                        if matches!(&record.event, Event::ThinkingBudgetUsed(e) if e.task_id == task)
                        {
                            seen += 1;
                        }
                    }
                    if seen != mine {
                        return Err(format!("{task}: {seen} exported after flushing {mine}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a recording thread panicked")??;
    }
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!(s.stored, THREADS * PER_THREAD);
    assert_eq!(s.in_flight, 0);
    Ok(())
}

#[test]
fn flush_after_shutdown_is_refused() -> TestResult {
    let collector = common::build_collector(ManualClock::new(T0), Config::default(), KEY)?;
    let clone = collector.clone();
    collector.shutdown(PATIENCE)?;
    assert!(matches!(
        collector.flush(PATIENCE),
        Err(FlushError::ShutDown)
    ));
    assert!(matches!(clone.flush(PATIENCE), Err(FlushError::ShutDown)));
    Ok(())
}

/// A flush times out while the worker is held; once released, the next flush drains.
fn times_out_then_drains<T>(collector: &Collector, held: T) -> TestResult {
    let timeout = Duration::from_millis(20);
    assert!(matches!(
        collector.flush(timeout),
        Err(FlushError::Timeout(t)) if t == timeout
    ));
    drop(held);
    collector.flush(PATIENCE)?;
    Ok(())
}

#[test]
fn flush_times_out_while_the_worker_is_held() -> TestResult {
    let (collector, clock) = gated(16, Overflow::Block)?;
    let closed = clock.hold(PATIENCE)?;
    collector.record(used(1))?;
    times_out_then_drains(&collector, closed)?;
    let s = collector.stats();
    assert_eq!((s.stored, s.in_flight), (1, 0));
    Ok(())
}

#[test]
fn flush_times_out_on_a_saturated_block_queue() -> TestResult {
    const CAPACITY: usize = 8;
    let (collector, clock) = gated(CAPACITY, Overflow::Block)?;
    let closed = clock.hold(PATIENCE)?;
    // `try_record` never blocks, whatever the policy: fill the queue to the brim.
    let mut accepted = 0;
    while collector.try_record(used(accepted)).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, CAPACITY as u64);
    assert_eq!(collector.stats().queue_depth, CAPACITY);
    times_out_then_drains(&collector, closed)?;
    let s = collector.stats();
    assert_eq!(s.stored, CAPACITY as u64);
    assert_eq!(s.dropped.queue_full, 1);
    assert_eq!(s.in_flight, 0);
    Ok(())
}

#[test]
fn a_flush_that_timed_out_still_completes_later_events() -> TestResult {
    let (collector, clock) = gated(16, Overflow::DropNewest)?;
    let closed = clock.hold(PATIENCE)?;
    for i in 0..5 {
        collector.record(used(i))?;
    }
    assert!(collector.flush(Duration::from_millis(10)).is_err());
    drop(closed);
    for i in 5..10 {
        collector.record(used(i))?;
    }
    collector.flush(PATIENCE)?;
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(export.len(), 10);
    assert_eq!(collector.stats().in_flight, 0);
    Ok(())
}

#[test]
fn an_unrepresentable_timeout_means_wait_as_long_as_it_takes() -> TestResult {
    let collector = common::build_collector(ManualClock::new(T0), Config::default(), KEY)?;
    collector.record(used(1))?;
    collector.flush(Duration::MAX)?;
    assert_eq!(collector.stats().stored, 1);
    let report = collector.shutdown(Duration::MAX)?;
    assert_eq!((report.unresolved, report.stats.stored), (0, 1));
    Ok(())
}
