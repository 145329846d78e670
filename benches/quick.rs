//! Quick measurements of the hot paths: `record()` latency, end-to-end throughput with
//! two producers, export encoding and `stats()` at two store sizes.
//!
//! `cargo bench --bench quick`

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{
    AnonymizationKey, AnonymizationMode, Collector, Config, Cursor, Event, ExportRequest, IdKind,
    Overflow, Pseudonymizer,
};
#[path = "support/mod.rs"]
mod support;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use support::events;

const FLUSH: Duration = Duration::from_secs(60);

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
        for producers in [1usize, 2, 4, 8] {
            group.throughput(Throughput::Elements((PER_PRODUCER * producers) as u64));
            // One collector for all iterations: after the warm-up its store is at
            // `max_events` and pruning, as in a long run (its memory is recycled, not
            // faulted in afresh).
            let mut steady = config(mode, Overflow::Block, 8192);
            steady.retention.max_events = 500_000;
            let collector = collector(steady);
            group.bench_function(format!("{name}/{producers}_producers"), |b| {
                b.iter_batched(
                    || {
                        (0..producers)
                            .map(|p| events(PER_PRODUCER, p as u64))
                            .collect::<Vec<Vec<Event>>>()
                    },
                    |batches| {
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
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    // The same with a consumer pulling increments all along: what readers cost ingest.
    let mut steady = config(AnonymizationMode::Pseudonymize, Overflow::Block, 8192);
    steady.retention.max_events = 500_000;
    let collector = collector(steady);
    group.throughput(Throughput::Elements((PER_PRODUCER * 2) as u64));
    group.bench_function("anonymized/2_producers_while_exporting", |b| {
        b.iter_batched(
            || {
                (0..2)
                    .map(|p| events(PER_PRODUCER, p))
                    .collect::<Vec<Vec<Event>>>()
            },
            |batches| {
                let done = std::sync::atomic::AtomicBool::new(false);
                thread::scope(|s| {
                    s.spawn(|| {
                        let mut cursor = collector
                            .stats()
                            .last_seq
                            .map_or(Cursor::START, Cursor::after_seq);
                        while !done.load(std::sync::atomic::Ordering::Relaxed) {
                            if let Ok(export) = collector.export(&ExportRequest::after(cursor)) {
                                cursor = export.next_cursor();
                                let _ = export.write_msgpack(std::io::sink());
                            }
                        }
                    });
                    thread::scope(|p| {
                        for batch in batches {
                            let collector = collector.clone();
                            p.spawn(move || {
                                for event in batch {
                                    let _ = collector.record(event);
                                }
                            });
                        }
                    });
                    let _ = collector.flush(FLUSH);
                    done.store(true, std::sync::atomic::Ordering::Relaxed);
                });
            },
            BatchSize::PerIteration,
        );
    });
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
        group.throughput(Throughput::Elements(1));
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
        // What a consumer writing a file does: no second copy of the records.
        group.bench_function(format!("export_write_msgpack/{n}_retained"), |b| {
            b.iter(|| {
                let export = collector.export(&ExportRequest::after(Cursor::START));
                black_box(export.map(|e| e.write_msgpack(std::io::sink()).is_ok()))
            })
        });
    }
    group.finish();
}

fn anonymization(c: &mut Criterion) {
    let key = AnonymizationKey::from_bytes([5; 32]);
    let mut group = c.benchmark_group("pseudonym");
    group.throughput(Throughput::Elements(1));
    let mut hot = Pseudonymizer::new(&key, 16_384);
    group.bench_function("memo_hit", |b| {
        b.iter_batched_ref(
            || String::from("task-4242"),
            |id| hot.pseudonymize(IdKind::Task, id),
            BatchSize::SmallInput,
        )
    });
    let mut cold = Pseudonymizer::new(&key, 0);
    group.bench_function("memo_miss", |b| {
        b.iter_batched_ref(
            || String::from("task-4242"),
            |id| cold.pseudonymize(IdKind::Task, id),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("uncached_key_pseudonym", |b| {
        b.iter(|| black_box(key.pseudonym(IdKind::Task, black_box("task-4242"))))
    });
    group.finish();
}

criterion_group!(
    benches,
    record_latency,
    throughput,
    export_and_stats,
    anonymization
);
criterion_main!(benches);
