//! The accounting identity: every submitted event is stored or counted under exactly one
//! reason (`submitted = stored + dropped + rejected`, nothing in flight after a flush), and
//! every stored record is retained or counted as pruned (`stored = retained + pruned`).

mod common;

use std::thread;
use std::time::Duration;

use arbiter_events::{
    AgentStatus, AgentStatusChanged, Attributes, Collector, Complexity, Config, Event, ManualClock,
    Overflow, RecordError, RlTrainingMetrics, Stats, ThinkingBudgetAllocated, ThinkingBudgetUsed,
};
use proptest::prelude::*;

use common::{T0, TestResult};

/// Generous bound for anything the test waits on; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(60);
const KEY: [u8; 32] = [3; 32];
const THREADS: u64 = 8;
const PER_THREAD: u64 = 100_000;
/// Every this many events a producer records one that fails validation.
const INVALID_EVERY: u64 = 1_000;
const CAPACITY: usize = 64;
const MAX_EVENTS: u64 = 10_000;

fn used(task: &str, n: u64) -> Event {
    Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
        task_id: task.into(),
        tokens_used: n,
        tokens_allocated: n + 1,
    })
}

/// An event that breaks a rule (`confidence` outside `[0, 1]`).
fn invalid() -> Event {
    Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
        task_id: "task-bad".into(),
        allocated_tokens: 10,
        complexity: Complexity::Standard,
        confidence: 1.5,
    })
}

/// A cheap valid event of one of several kinds.
fn valid(thread: u64, i: u64) -> Event {
    let task = format!("task-{}-{}", thread, i % 32);
    match i % 4 {
        0 => used(&task, i),
        1 => Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
            task_id: task,
            allocated_tokens: i,
            complexity: Complexity::Trivial,
            confidence: 0.5,
        }),
        2 => Event::AgentStatusChanged(AgentStatusChanged {
            agent_id: format!("agent-{}", i % 8),
            status: AgentStatus::Busy,
            previous: Some(AgentStatus::Available),
            reason: Some("load".into()),
        }),
        _ => Event::RlTrainingMetrics(RlTrainingMetrics {
            trajectories_processed: i,
            average_reward: 0.25,
            policy_loss: -0.5,
            value_loss: 0.1,
            kl_divergence: 0.01,
            training_time_ms: 3.0,
        }),
    }
}

/// Both halves of the identity, with nothing in flight, kind by kind too.
fn assert_settled(s: &Stats) {
    common::assert_settled(s);
    let kinds_stored: u64 = s.kinds.iter().map(|k| k.stored).sum();
    let kinds_retained: u64 = s.kinds.iter().map(|k| k.retained).sum();
    assert_eq!(kinds_stored, s.stored, "{s:#?}");
    assert_eq!(kinds_retained, s.retained, "{s:#?}");
}

/// What one producer saw from `record`.
#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    accepted: u64,
    invalid: u64,
    queue_full: u64,
    other: u64,
}

impl Outcomes {
    fn add(self, o: Outcomes) -> Outcomes {
        Outcomes {
            accepted: self.accepted + o.accepted,
            invalid: self.invalid + o.invalid,
            queue_full: self.queue_full + o.queue_full,
            other: self.other + o.other,
        }
    }
}

fn produce(collector: &Collector, thread: u64) -> Outcomes {
    let mut out = Outcomes::default();
    for i in 0..PER_THREAD {
        let event = if i % INVALID_EVERY == INVALID_EVERY - 1 {
            invalid()
        } else {
            valid(thread, i)
        };
        match collector.record(event) {
            Ok(()) => out.accepted += 1,
            Err(RecordError::Invalid(_)) => out.invalid += 1,
            Err(RecordError::QueueFull | RecordError::Timeout(_)) => out.queue_full += 1,
            Err(_) => out.other += 1,
        }
    }
    out
}

/// Eight producers record 100 000 events each into a small queue while the worker is
/// first held (so the overflow policy must act), then released.
fn stress(overflow: Overflow) -> common::Result<(Stats, Outcomes)> {
    let (collector, clock) = common::gated_collector(KEY, |c| {
        c.queue.capacity = CAPACITY;
        c.queue.overflow = overflow;
        c.retention.max_events = MAX_EVENTS;
    })?;
    let closed = clock.hold(PATIENCE)?;
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let collector = collector.clone();
            thread::spawn(move || produce(&collector, t))
        })
        .collect();
    common::wait_until("the overflow policy to act", PATIENCE, || {
        let s = collector.stats();
        match overflow {
            Overflow::Block => s.queue_depth == CAPACITY,
            _ => s.dropped.queue_full > 0,
        }
    })?;
    drop(closed);
    let mut total = Outcomes::default();
    for producer in producers {
        let outcomes = producer.join().map_err(|_| "a producer panicked")?;
        total = total.add(outcomes);
    }
    collector.flush(PATIENCE)?;
    Ok((collector.stats(), total))
}

fn check_stress(overflow: Overflow) -> TestResult {
    let (s, seen) = stress(overflow)?;
    let invalid = THREADS * (PER_THREAD / INVALID_EVERY);
    assert_eq!(s.submitted, THREADS * PER_THREAD);
    assert_eq!(s.submitted, 800_000);
    assert_settled(&s);
    assert_eq!(s.rejected, invalid);
    assert_eq!(seen.invalid, invalid);
    assert_eq!(seen.other, 0);
    assert_eq!(s.stored, seen.accepted, "{s:#?}");
    assert_eq!(s.dropped.queue_full, seen.queue_full, "{s:#?}");
    assert_eq!(
        (s.dropped.paused, s.dropped.disabled, s.dropped.shutdown),
        (0, 0, 0)
    );
    match overflow {
        Overflow::Block => {
            assert_eq!(s.dropped.total(), 0, "{s:#?}");
            assert_eq!(s.stored, THREADS * PER_THREAD - invalid);
        }
        _ => assert!(s.dropped.queue_full > 0, "{s:#?}"),
    }
    // The clock never moved, so only the count bound pruned.
    assert!(s.retained <= MAX_EVENTS);
    assert_eq!(s.retained, s.stored.min(MAX_EVENTS));
    assert_eq!(s.pruned.capacity, s.stored - s.retained);
    assert_eq!((s.pruned.age, s.pruned.cleared), (0, 0));
    assert_eq!(s.last_seq, Some(s.stored));
    assert_eq!(s.queue_depth, 0);
    Ok(())
}

#[test]
fn smoke() -> TestResult {
    let collector = common::build_collector(ManualClock::new(T0), Config::default(), KEY)?;
    collector.record(used("task-1", 1))?;
    assert!(matches!(
        collector.record(invalid()),
        Err(RecordError::Invalid(_))
    ));
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_settled(&s);
    assert_eq!((s.submitted, s.stored, s.rejected), (2, 1, 1));
    Ok(())
}

#[test]
fn identity_holds_under_drop_newest() -> TestResult {
    check_stress(Overflow::DropNewest)
}

#[test]
fn identity_holds_under_block() -> TestResult {
    check_stress(Overflow::Block)
}

#[test]
fn identity_holds_under_block_for() -> TestResult {
    check_stress(Overflow::BlockFor(Duration::from_micros(200)))
}

#[test]
fn try_record_counts_a_full_queue_under_every_policy() -> TestResult {
    for overflow in [
        Overflow::DropNewest,
        Overflow::Block,
        Overflow::BlockFor(Duration::from_secs(30)),
    ] {
        let (collector, clock) = common::gated_collector(KEY, |c| {
            c.queue.capacity = 4;
            c.queue.overflow = overflow;
        })?;
        let closed = clock.hold(PATIENCE)?;
        for i in 0..4 {
            collector.try_record(used("task", i))?;
        }
        let refused = collector.try_record(used("task", 99));
        let Err(error) = refused else {
            panic!("a full queue accepted an event under {overflow:?}");
        };
        assert!(matches!(error.error(), RecordError::QueueFull));
        assert_eq!(error.into_event(), used("task", 99));
        drop(closed);
        collector.flush(PATIENCE)?;
        let s = collector.stats();
        assert_settled(&s);
        assert_eq!((s.submitted, s.stored, s.dropped.queue_full), (5, 4, 1));
    }
    Ok(())
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Records `n` events; the last one is invalid when `invalid`.
    Record {
        n: u8,
        invalid: bool,
    },
    TryRecord,
    /// Starts an execution and drops it (two events when accepted).
    Task,
    Pause,
    Resume,
    Clear,
    Enable(bool),
    MaxEvents(u64),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6, any::<bool>()).prop_map(|(n, invalid)| Op::Record { n, invalid }),
        1 => Just(Op::TryRecord),
        1 => Just(Op::Task),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Clear),
        1 => any::<bool>().prop_map(Op::Enable),
        1 => (1u64..20).prop_map(Op::MaxEvents),
        2 => Just(Op::Flush),
    ]
}

/// The producer-side counters, which are exact at every instant.
#[derive(Debug, Default)]
struct Model {
    paused: bool,
    disabled: bool,
    submitted: u64,
    accepted: u64,
    rejected: u64,
    dropped_paused: u64,
    dropped_disabled: u64,
    max_events: u64,
}

impl Model {
    /// Accounts for one submission; returns whether it was admitted.
    fn submit(&mut self, valid: bool) -> bool {
        self.submitted += 1;
        if self.disabled {
            self.dropped_disabled += 1;
        } else if self.paused {
            self.dropped_paused += 1;
        } else if !valid {
            self.rejected += 1;
        } else {
            self.accepted += 1;
            return true;
        }
        false
    }

    fn check(&self, s: &Stats) {
        assert_eq!(s.submitted, self.submitted, "{s:#?}");
        assert_eq!(s.rejected, self.rejected, "{s:#?}");
        assert_eq!(s.dropped.paused, self.dropped_paused, "{s:#?}");
        assert_eq!(s.dropped.disabled, self.dropped_disabled, "{s:#?}");
        assert_eq!((s.dropped.queue_full, s.dropped.shutdown), (0, 0));
        assert_eq!(
            s.submitted,
            s.stored + s.dropped.total() + s.rejected + s.in_flight,
            "{s:#?}"
        );
        assert_eq!(s.stored, s.retained + s.pruned.total(), "{s:#?}");
        assert!(s.stored <= self.accepted, "{s:#?}");
    }
}

fn run_ops(ops: &[Op]) -> TestResult {
    let collector = common::build_collector(ManualClock::new(T0), Config::default(), KEY)?;
    let mut model = Model {
        max_events: collector.config().retention.max_events,
        ..Model::default()
    };
    let mut marker = 0;
    for op in ops {
        match *op {
            Op::Record { n, invalid: bad } => {
                for i in 0..n {
                    let valid = !(bad && i + 1 == n);
                    let event = if valid {
                        used("task", marker)
                    } else {
                        invalid()
                    };
                    marker += 1;
                    let admitted = model.submit(valid);
                    assert_eq!(collector.record(event).is_ok(), admitted);
                }
            }
            Op::TryRecord => {
                let admitted = model.submit(true);
                assert_eq!(collector.try_record(used("task", marker)).is_ok(), admitted);
                marker += 1;
            }
            Op::Task => {
                let admitted = model.submit(true);
                let run = collector.start_task("task", "agent", Attributes::new());
                assert_eq!(run.is_ok(), admitted);
                if let Ok(run) = run {
                    drop(run);
                    model.submit(true);
                }
            }
            Op::Pause => {
                collector.pause();
                model.paused = true;
            }
            Op::Resume => {
                collector.resume();
                model.paused = false;
            }
            Op::Clear => {
                collector.clear();
            }
            Op::Enable(enabled) => {
                collector.update_config(|c| c.enabled = enabled)?;
                model.disabled = !enabled;
            }
            Op::MaxEvents(max) => {
                collector.update_config(|c| c.retention.max_events = max)?;
                model.max_events = max;
                assert!(collector.stats().retained <= max);
            }
            Op::Flush => {
                collector.flush(PATIENCE)?;
                let s = collector.stats();
                assert_settled(&s);
                assert_eq!(s.stored, model.accepted, "{s:#?}");
                assert!(s.retained <= model.max_events, "{s:#?}");
            }
        }
        model.check(&collector.stats());
    }
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_settled(&s);
    model.check(&s);
    assert_eq!(s.stored, model.accepted);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn identity_holds_after_every_flush(ops in prop::collection::vec(op(), 1..40)) {
        run_ops(&ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
