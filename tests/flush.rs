//! `flush` is a barrier: when it returns, every event recorded before it is stored and
//! visible to `stats` and `export`; it fails with a typed error after shutdown or when
//! the worker cannot catch up in time.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{
    AnonymizationKey, AnonymizationMode, Clock, Collector, Config, Cursor, Event, EventKind,
    ExportRequest, FlushError, ManualClock, Overflow, ThinkingBudgetUsed,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const T0: i64 = 1_700_000_000_000_000_000;
const PATIENCE: Duration = Duration::from_secs(10);

fn used(task: &str, n: u64) -> Event {
    Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
        task_id: task.into(),
        tokens_used: n,
        tokens_allocated: n,
    })
}

/// A clock the test can stop: while its gate is closed every wall-clock reading blocks,
/// which holds the ingest worker at its next commit.
#[derive(Debug, Clone)]
struct GatedClock {
    time: ManualClock,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    held: usize,
}

/// Opens the gate when dropped, so a failing test never leaves the worker stuck.
#[must_use]
struct Closed(Arc<Gate>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.lock().closed = false;
        self.0.changed.notify_all();
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(self: &Arc<Self>) -> Closed {
        self.lock().closed = true;
        Closed(Arc::clone(self))
    }

    fn pass(&self) {
        let mut state = self.lock();
        if state.closed {
            state.held += 1;
            self.changed.notify_all();
            while state.closed {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.held -= 1;
        }
    }

    /// Waits until some thread is held at the closed gate.
    fn wait_for_holder(&self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        let mut state = self.lock();
        while !(state.closed && state.held > 0) {
            let now = Instant::now();
            if now >= deadline {
                return Err("no thread reached the gate".into());
            }
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Ok(())
    }
}

impl Clock for GatedClock {
    fn now_unix_nanos(&self) -> i64 {
        self.gate.pass();
        self.time.now_unix_nanos()
    }

    fn monotonic(&self) -> Duration {
        self.time.monotonic()
    }
}

/// A collector whose worker can be held; its worker wakes every millisecond, so a
/// closed gate catches it at once.
fn gated(
    capacity: usize,
    overflow: Overflow,
) -> Result<(Collector, GatedClock), Box<dyn std::error::Error>> {
    let clock = GatedClock {
        time: ManualClock::new(T0),
        gate: Arc::default(),
    };
    let mut config = Config::default();
    config.queue.capacity = capacity;
    config.queue.overflow = overflow;
    config.worker.tick_ms = 1;
    let collector = Collector::builder()
        .config(config)
        .clock(clock.clone())
        .key(AnonymizationKey::from_bytes([1; 32]))
        .build()?;
    Ok((collector, clock))
}

#[test]
fn smoke() -> TestResult {
    let collector = Collector::builder()
        .clock(ManualClock::new(T0))
        .key(AnonymizationKey::from_bytes([1; 32]))
        .build()?;
    collector.record(used("task", 1))?;
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
                            .record(used(&task, round * 1000 + i))
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
    let collector = Collector::builder()
        .clock(ManualClock::new(T0))
        .key(AnonymizationKey::from_bytes([1; 32]))
        .build()?;
    let clone = collector.clone();
    collector.shutdown(PATIENCE)?;
    assert!(matches!(
        collector.flush(PATIENCE),
        Err(FlushError::ShutDown)
    ));
    assert!(matches!(clone.flush(PATIENCE), Err(FlushError::ShutDown)));
    Ok(())
}

#[test]
fn flush_times_out_while_the_worker_is_held() -> TestResult {
    let (collector, clock) = gated(16, Overflow::Block)?;
    let closed = clock.gate.close();
    clock.gate.wait_for_holder()?;
    collector.record(used("task", 1))?;
    let timeout = Duration::from_millis(20);
    assert!(matches!(
        collector.flush(timeout),
        Err(FlushError::Timeout(t)) if t == timeout
    ));
    drop(closed);
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!((s.stored, s.in_flight), (1, 0));
    Ok(())
}

#[test]
fn flush_times_out_on_a_saturated_block_queue() -> TestResult {
    const CAPACITY: usize = 8;
    let (collector, clock) = gated(CAPACITY, Overflow::Block)?;
    let closed = clock.gate.close();
    clock.gate.wait_for_holder()?;
    // `try_record` never blocks, whatever the policy: fill the queue to the brim.
    let mut accepted = 0;
    while collector.try_record(used("task", accepted)).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, CAPACITY as u64);
    assert_eq!(collector.stats().queue_depth, CAPACITY);
    let timeout = Duration::from_millis(20);
    assert!(matches!(
        collector.flush(timeout),
        Err(FlushError::Timeout(t)) if t == timeout
    ));
    drop(closed);
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!(s.stored, CAPACITY as u64);
    assert_eq!(s.dropped.queue_full, 1);
    assert_eq!(s.in_flight, 0);
    Ok(())
}

#[test]
fn a_flush_that_timed_out_still_completes_later_events() -> TestResult {
    let (collector, clock) = gated(16, Overflow::DropNewest)?;
    let closed = clock.gate.close();
    clock.gate.wait_for_holder()?;
    for i in 0..5 {
        collector.record(used("task", i))?;
    }
    assert!(collector.flush(Duration::from_millis(10)).is_err());
    drop(closed);
    for i in 5..10 {
        collector.record(used("task", i))?;
    }
    collector.flush(PATIENCE)?;
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(export.len(), 10);
    assert_eq!(collector.stats().in_flight, 0);
    Ok(())
}
