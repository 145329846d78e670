//! Quick measurements of the hot paths: `record()` latency, end-to-end throughput with
//! two producers, export encoding and `stats()` at two store sizes.
//!
//! `cargo bench --bench quick`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{
    Alternative, AnonymizationMode, Collector, Config, Cursor, Event, ExportRequest,
    JudgmentRecorded, OutcomeStatus, Overflow, RoutingDecision, RoutingStrategy, TaskCompleted,
    TaskOutcome, ThinkingBudgetUsed,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const FLUSH: Duration = Duration::from_secs(60);

/// A seeded mix of typical events: routing with alternatives, completions, judgments,
/// budget use. Task ids repeat across a few events each, as in a real arbiter.
fn events(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let task_id = format!("task-{}", i / 4);
            let agent = format!("agent-{:02}", rng.usize(..16));
            match i % 4 {
                0 => Event::RoutingDecision(RoutingDecision {
                    task_id,
                    selected_agent: agent,
                    strategy: RoutingStrategy::MultiArmedBandit,
                    confidence: rng.f64(),
                    alternatives: (0..2)
                        .map(|k| Alternative {
                            agent_id: format!("agent-{k:02}"),
                            score: rng.f64(),
                            reason: "lower score".into(),
                        })
                        .collect(),
                    rationale: "highest expected reward".into(),
                }),
                1 => Event::TaskCompleted(TaskCompleted {
                    execution_id: format!("exec-{i}"),
                    task_id,
                    agent_id: agent,
                    outcome: TaskOutcome {
                        status: OutcomeStatus::Succeeded,
                        quality_score: rng.f64(),
                        efficiency_score: rng.f64(),
                        tokens_consumed: rng.u64(..10_000),
                    },
                    duration_ms: rng.f64() * 1000.0,
                }),
                2 => Event::JudgmentRecorded(JudgmentRecorded {
                    task_id,
                    overall_score: rng.f64(),
                    overall_confidence: rng.f64(),
                    all_criteria_pass: rng.bool(),
                    criteria_scores: BTreeMap::from([
                        ("correctness".to_owned(), rng.f64()),
                        ("style".to_owned(), rng.f64()),
                    ]),
                    evaluation_time_ms: rng.f64() * 50.0,
                }),
                _ => Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
                    task_id,
                    tokens_used: rng.u64(..4096),
                    tokens_allocated: 4096,
                }),
            }
        })
        .collect()
}

fn config(mode: AnonymizationMode, overflow: Overflow, capacity: usize) -> Config {
    let mut c = Config::default();
    c.anonymization.mode = mode;
    c.queue.overflow = overflow;
    c.queue.capacity = capacity;
    c.retention.max_events = 2_000_000;
    c.retention.max_bytes = 1 << 30;
    c
}

fn collector(config: Config) -> Collector {
    match Collector::new(config) {
        Ok(c) => c,
        Err(e) => panic!("cannot build the collector: {e}"),
    }
}

fn record_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.bench_function("single_producer_room_in_queue", |b| {
        // Rounds of at most CHUNK events, the queue drained between rounds (untimed),
        // so every timed call finds room in the queue.
        const CHUNK: u64 = 65_536;
        let collector = collector(config(
            AnonymizationMode::Pseudonymize,
            Overflow::DropNewest,
            CHUNK as usize,
        ));
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let batch = events(n as usize, left);
                let start = Instant::now();
                for event in batch {
                    let _ = black_box(collector.record(event));
                }
                total += start.elapsed();
                let _ = collector.flush(FLUSH);
            }
            total
        });
    });
    group.finish();
}

fn throughput(c: &mut Criterion) {
    const PER_PRODUCER: usize = 200_000;
    let mut group = c.benchmark_group("end_to_end");
    group.sample_size(10);
    for (name, mode) in [
        ("anonymized", AnonymizationMode::Pseudonymize),
        ("plain", AnonymizationMode::Off),
    ] {
        for producers in [1usize, 2] {
            group.throughput(Throughput::Elements((PER_PRODUCER * producers) as u64));
            group.bench_function(format!("{name}/{producers}_producers"), |b| {
                b.iter_batched(
                    || {
                        let collector = collector(config(mode, Overflow::Block, 8192));
                        let batches: Vec<Vec<Event>> = (0..producers)
                            .map(|p| events(PER_PRODUCER, p as u64))
                            .collect();
                        (collector, batches)
                    },
                    |(collector, batches)| {
                        thread::scope(|s| {
                            for batch in batches {
                                let collector = collector.clone();
                                s.spawn(move || {
                                    for event in batch {
                                        let _ = collector.record(event);
                                    }
                                });
                            }
                        });
                        let _ = collector.flush(FLUSH);
                        collector
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    group.finish();
}

fn filled(n: usize) -> Collector {
    let collector = collector(config(
        AnonymizationMode::Pseudonymize,
        Overflow::Block,
        8192,
    ));
    for event in events(n, 3) {
        let _ = collector.record(event);
    }
    let _ = collector.flush(FLUSH);
    collector
}

fn export_and_stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    group.sample_size(10);
    for n in [10_000usize, 1_000_000] {
        let collector = filled(n);
        group.bench_function(format!("stats/{n}_retained"), |b| {
            b.iter(|| black_box(collector.stats()))
        });
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("export_to_msgpack/{n}_retained"), |b| {
            b.iter(|| {
                let export = collector.export(&ExportRequest::after(Cursor::START));
                black_box(export.map(|e| e.to_msgpack().len()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, record_latency, throughput, export_and_stats);
criterion_main!(benches);
