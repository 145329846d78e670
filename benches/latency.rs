//! `record()` latency percentiles: one producer, room in the queue.
//!
//! `cargo bench --bench latency` (option: `-- --events N`, default 1,000,000)
//!
//! Times every call with `Instant` in rounds of 65,536 events; between rounds the queue
//! is drained (untimed), so every timed call finds room. The cost of the timer itself is
//! measured the same way around an empty call and printed beside the results.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use arbiter_events::{AnonymizationMode, Collector, Config};

const ROUND: usize = 65_536;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn report(name: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    println!(
        "{name:<28} median {:>5} ns  p90 {:>5} ns  p99 {:>6} ns  p99.9 {:>7} ns  max {:>9} ns",
        percentile(&ns, 0.5),
        percentile(&ns, 0.9),
        percentile(&ns, 0.99),
        percentile(&ns, 0.999),
        ns.last().copied().unwrap_or(0)
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut total = 1_000_000usize;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--events" {
            total = it.next().ok_or("--events needs a value")?.parse()?;
        }
    }
    let mut timer = Vec::with_capacity(total);
    for _ in 0..total {
        let start = Instant::now();
        black_box(());
        timer.push(start.elapsed().as_nanos() as u64);
    }
    report("timer alone", timer);
    for mode in [AnonymizationMode::Pseudonymize, AnonymizationMode::Off] {
        let mut config = Config::default();
        config.anonymization.mode = mode;
        config.queue.capacity = ROUND;
        let collector = Collector::new(config)?;
        let mut ns = Vec::with_capacity(total);
        let mut seed = 0;
        while ns.len() < total {
            let batch = support::events(ROUND.min(total - ns.len()), seed);
            seed += 1;
            for event in batch {
                let start = Instant::now();
                let result = collector.record(event);
                ns.push(start.elapsed().as_nanos() as u64);
                result?;
            }
            collector.flush(Duration::from_secs(60))?;
        }
        report(&format!("record(), anonymization {mode:?}"), ns);
    }
    Ok(())
}
