//! Memory stays bounded however long the collector runs.
//!
//! `cargo bench --bench memory` (option: `-- --events N`, default 20,000,000)
//!
//! Records N events with `retention.max_events = 1_000_000` (anonymization on,
//! `Overflow::Block`) and prints, after 1M, 5M, 10M and 20M events, the peak resident
//! set (`VmHWM`), the current one (`VmRSS`), the retained records and their encoded
//! bytes, and the bytes each retained record costs beside its own payload (the
//! event as JSON, before anonymization).

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use arbiter_events::{Collector, Config, Overflow};

const CHUNK: usize = 10_000;

/// A field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1}", b as f64 / (1 << 20) as f64),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut total: u64 = 20_000_000;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--events" {
            total = it.next().ok_or("--events needs a value")?.parse()?;
        }
    }
    let mut config = Config::default();
    config.retention.max_events = 1_000_000;
    config.retention.max_bytes = 1 << 34;
    config.queue.overflow = Overflow::Block;
    let collector = Collector::new(config)?;

    let sample = support::events(CHUNK, 0);
    let payload: usize = sample
        .iter()
        .map(|e| serde_json::to_vec(e).map_or(0, |v| v.len()))
        .sum();
    let payload_per_event = payload as f64 / CHUNK as f64;
    println!(
        "memory: {total} events, max_events 1,000,000; payload {payload_per_event:.0} bytes/event as JSON, \
         {} bytes of Event struct",
        std::mem::size_of::<arbiter_events::Event>()
    );
    println!(
        "{:>12} {:>10} {:>10} {:>10} {:>14} {:>12} {:>12}",
        "events", "VmHWM MiB", "VmRSS MiB", "retained", "encoded MiB", "enc B/rec", "RSS B/rec"
    );
    let milestones = [1_000_000u64, 5_000_000, 10_000_000, 20_000_000];
    let start = Instant::now();
    let mut recorded = 0u64;
    let mut seed = 1;
    let mut hwm_at = Vec::new();
    while recorded < total {
        for event in support::events(CHUNK, seed) {
            collector.record(event)?;
        }
        seed += 1;
        recorded += CHUNK as u64;
        if milestones.contains(&recorded) || recorded >= total {
            collector.flush(Duration::from_secs(600))?;
            let s = collector.stats();
            let (hwm, rss) = (status_bytes("VmHWM:"), status_bytes("VmRSS:"));
            hwm_at.push((recorded, hwm));
            let per = |b: Option<u64>| b.map_or(0.0, |b| b as f64 / s.retained.max(1) as f64);
            println!(
                "{:>12} {:>10} {:>10} {:>10} {:>14.1} {:>12.0} {:>12.0}",
                recorded,
                mib(hwm),
                mib(rss),
                s.retained,
                s.retained_bytes as f64 / (1 << 20) as f64,
                s.retained_bytes as f64 / s.retained.max(1) as f64,
                per(rss),
            );
        }
    }
    let at = |n: u64| hwm_at.iter().find(|(r, _)| *r == n).and_then(|(_, h)| *h);
    if let (Some(a), Some(b)) = (at(5_000_000), at(recorded)) {
        println!(
            "peak RSS from 5M to {recorded} events: {:+.1}% (goal: flat within 5%)",
            (b as f64 - a as f64) / a as f64 * 100.0
        );
    }
    let s = collector.stats();
    println!(
        "{:.1} s, {:.2} M events/s; stored {} = retained {} + pruned {}",
        start.elapsed().as_secs_f64(),
        recorded as f64 / start.elapsed().as_secs_f64() / 1e6,
        s.stored,
        s.retained,
        s.pruned.total()
    );
    Ok(())
}
