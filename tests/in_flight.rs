//! `in_flight` is a true figure at every instant: never more than the queue holds, plus
//! the worker's batch in hand, plus one per producer mid-send; and the accounting
//! identity holds in every snapshot taken while producers run.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{Collector, Config, ManualClock, Stats};

use common::{FLUSH_TIMEOUT, T0, TestResult};

const KEY: [u8; 32] = [11; 32];
const CAPACITY: usize = 2;
const BATCH: usize = 4;
const PRODUCERS: u64 = 3;
/// Producers run until the snapshots are done, at most this many events each.
const PER_PRODUCER: u64 = 10_000_000;
const SNAPSHOTS: usize = 20_000;
/// A bound on the whole run, never reached when things work.
const PATIENCE: Duration = Duration::from_secs(60);

fn build() -> common::Result<Collector> {
    common::build_collector(
        ManualClock::new(T0),
        common::config_with(|c: &mut Config| {
            c.queue.capacity = CAPACITY;
            c.worker.batch_size = BATCH;
        }),
        KEY,
    )
}

fn check(s: &Stats) {
    let bound = CAPACITY as u64 + BATCH as u64 + PRODUCERS;
    assert!(s.in_flight <= bound, "in_flight above {bound}: {s:#?}");
    assert_eq!(
        s.submitted,
        s.stored + s.dropped.total() + s.rejected + s.in_flight,
        "{s:#?}"
    );
    assert_eq!(s.stored + s.recovered, s.retained + s.pruned.total());
}

#[test]
fn smoke() -> TestResult {
    let collector = build()?;
    collector.record(common::used(1))?;
    collector.flush(FLUSH_TIMEOUT)?;
    let s = collector.stats();
    check(&s);
    assert_eq!((s.submitted, s.stored, s.in_flight), (1, 1, 0));
    Ok(())
}

#[test]
fn bounded_and_balanced_under_load() -> TestResult {
    let collector = build()?;
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (collector, running) = (collector.clone(), Arc::clone(&running));
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    if !running.load(Ordering::Relaxed) || started.elapsed() > PATIENCE {
                        break;
                    }
                    // Drops are expected with a 2-slot queue; each is counted.
                    let _ = collector.record(common::used(p * PER_PRODUCER + i));
                }
            })
        })
        .collect();
    // Stop the producers even when an assertion below fails.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Relaxed);
        }
    }
    let stop = Stop(Arc::clone(&running));
    // Wait (bounded) until every producer is under way.
    while collector.stats().submitted < PRODUCERS * 100 && started.elapsed() < PATIENCE {
        thread::yield_now();
    }
    let mut during = 0;
    for _ in 0..SNAPSHOTS {
        let s = collector.stats();
        check(&s);
        during += usize::from(producers.iter().any(|p| !p.is_finished()) && s.submitted > 0);
    }
    drop(stop);
    for p in producers {
        p.join().map_err(|_| "a producer panicked")?;
    }
    collector.flush(FLUSH_TIMEOUT)?;
    let s = collector.stats();
    check(&s);
    assert_eq!(s.in_flight, 0, "{s:#?}");
    assert!(s.submitted > 0);
    // Snapshots were taken while producers ran, not only after the fact.
    assert!(during > 0, "no snapshot was taken while producers ran");
    Ok(())
}

#[test]
fn in_flight_counts_what_is_queued() -> TestResult {
    let collector = build()?;
    collector.pause();
    let _ = collector.record(common::used(1));
    let s = collector.stats();
    check(&s);
    assert_eq!((s.submitted, s.dropped.paused, s.in_flight), (1, 1, 0));
    collector.resume();
    collector.record(common::used(2))?;
    collector.flush(FLUSH_TIMEOUT)?;
    let s = collector.stats();
    check(&s);
    assert_eq!((s.submitted, s.stored, s.in_flight), (2, 1, 0));
    Ok(())
}
