//! The data directory: sustained durable ingest per durability policy, recovery time of
//! a large directory, and export throughput from disk.
//!
//! `cargo bench --bench durable` (options: `-- --events N` per ingest run, default
//! 2,000,000; `--recovery-gib G`, default 1; `--dir PATH` for the scratch directory,
//! default `target/bench-durable`; `--only NAME` runs one case: `memory`, `buffered`,
//! `every_batch`, `interval` or `open`; `--open-mb M` sizes the `open` directory,
//! default 500)
//!
//! Ingest: 2 producer threads, `Overflow::Block`, anonymization on, the events split
//! between them, a `flush` at the end, timed on the second of two runs into the same
//! collector (the first fills its memory window, as in a long run) (which under `every_batch` and `interval` means
//! synced to disk). Recovery: a directory of G GiB is written once, then a collector is
//! opened on it and timed until `build()` returns (every frame read and checked, the
//! memory window rebuilt). Export: `DataDir::export` of every record from the start,
//! in increments of 1,000,000 records. Open: a directory of M MB is written once, then
//! opened (and `survey`ed, as the CLI's `stats` does) twice: without the segment
//! summaries (deleted first: every frame read, as before summaries existed, and the
//! summaries rebuilt), then with them.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbiter_events::{
    Collector, Config, Cursor, DataDir, Durability, Event, ExportRequest, Overflow,
};

const PRODUCERS: usize = 2;
const FLUSH: Duration = Duration::from_secs(600);

fn config(dir: &Path, durability: Durability) -> Config {
    let mut config = Config::default();
    config.queue.overflow = Overflow::Block;
    config.storage.data_dir = Some(dir.to_owned());
    config.storage.durability = durability;
    config.storage.max_disk_bytes = 1 << 40;
    config
}

/// Records `events` from `PRODUCERS` threads and flushes; returns events per second.
/// The events are cloned and split before the clock starts, so the figure is the
/// pipeline's, not the cost of making events.
fn ingest(collector: &Collector, events: &[Event]) -> Result<f64, Box<dyn std::error::Error>> {
    let shares: Vec<Vec<Event>> = (0..PRODUCERS)
        .map(|t| events.iter().skip(t).step_by(PRODUCERS).cloned().collect())
        .collect();
    let started = Instant::now();
    let threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let collector = collector.clone();
            std::thread::spawn(move || {
                for e in share {
                    let _ = collector.record(e);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a producer panicked")?;
    }
    collector.flush(FLUSH)?;
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

/// A sink that counts what is written to it.
struct Counted(u64);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a directory of `mb` MB, then times opening it and surveying it without and
/// with the segment summaries.
fn open_case(base: &Path, events: &[Event], mb: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = scratch(base, "open")?;
    {
        let collector = Collector::new(config(&dir, Durability::Buffered))?;
        loop {
            ingest(&collector, events)?;
            let on_disk = collector.stats().storage.map_or(0, |s| s.disk_bytes);
            if on_disk >= mb * 1_000_000 {
                break;
            }
        }
        collector.shutdown(FLUSH)?;
    }
    // Read once so the page cache holds the files, as after a process crash.
    let report = DataDir::open(&dir)?.verify(|_| {})?;
    let open = |max_events: u64| -> Result<(f64, u64), Box<dyn std::error::Error>> {
        let mut config = config(&dir, Durability::EveryBatch);
        config.retention.max_events = max_events;
        let started = Instant::now();
        let collector = Collector::new(config)?;
        let took = started.elapsed().as_secs_f64();
        let window = collector.stats().recovered;
        collector.shutdown(FLUSH)?;
        Ok((took, window))
    };
    let stats = || -> Result<(f64, u64), Box<dyn std::error::Error>> {
        let started = Instant::now();
        let survey = DataDir::open(&dir)?.survey()?;
        Ok((started.elapsed().as_secs_f64(), survey.records))
    };
    let print = |label: &str, (open, window): (f64, u64), (stats, records): (f64, u64)| {
        println!(
            "  {label:<22} open {open:>6.3} s (window of {window} records)  stats {stats:>6.3} s ({records} records)"
        );
    };
    println!(
        "open: {:.0} MB, {} records in {} segments",
        report.bytes as f64 / 1e6,
        report.records,
        report.segments.len()
    );
    for entry in std::fs::read_dir(dir.join("segments"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sum") {
            std::fs::remove_file(path)?;
        }
    }
    // Without summaries `stats` reads every frame; the open then rebuilds them.
    let window = Config::default().retention.max_events;
    let stats_before = stats()?;
    let open_before = open(window)?;
    print("without summaries", open_before, stats_before);
    let open_after = open(window)?;
    let stats_after = stats()?;
    print("with summaries", open_after, stats_after);
    // The window is what is left to read: with a small one, open is O(segments) but
    // for the last segment.
    for entry in std::fs::read_dir(dir.join("segments"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sum") {
            std::fs::remove_file(path)?;
        }
    }
    let stats_before = stats()?;
    print("window 1,000, without", open(1_000)?, stats_before);
    let open_after = open(1_000)?;
    print("window 1,000, with", open_after, stats()?);
    Ok(())
}

fn scratch(base: &Path, name: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = base.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut events_per_run: usize = 2_000_000;
    let mut recovery_gib: f64 = 1.0;
    let mut base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-durable");
    let mut only: Option<String> = None;
    let mut open_mb: u64 = 500;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--events" => events_per_run = it.next().ok_or("--events needs a value")?.parse()?,
            "--recovery-gib" => {
                recovery_gib = it.next().ok_or("--recovery-gib needs a value")?.parse()?;
            }
            "--dir" => base = PathBuf::from(it.next().ok_or("--dir needs a value")?),
            "--only" => only = Some(it.next().ok_or("--only needs a value")?),
            "--open-mb" => open_mb = it.next().ok_or("--open-mb needs a value")?.parse()?,
            _ => {}
        }
    }
    std::fs::create_dir_all(&base)?;
    let events = support::events(events_per_run, 7);

    println!(
        "durable ingest: {events_per_run} events, {PRODUCERS} producers, anonymized, flush at the end"
    );
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.starts_with(o));
    if wanted("memory") {
        let mut memory = config(&base, Durability::Buffered);
        memory.storage.data_dir = None;
        let collector = Collector::new(memory)?;
        ingest(&collector, &events)?;
        let rate = ingest(&collector, &events)?;
        collector.shutdown(FLUSH)?;
        println!("  {:<16} {:>6.3} M events/s", "memory only", rate / 1e6);
    }
    let policies = [
        ("buffered", Durability::Buffered),
        ("every_batch", Durability::EveryBatch),
        (
            "interval 100 ms",
            Durability::Interval(Duration::from_millis(100)),
        ),
    ];
    for (name, durability) in policies {
        if !wanted(name) {
            continue;
        }
        let dir = scratch(&base, "ingest")?;
        let collector = Collector::new(config(&dir, durability))?;
        // Once to warm up (the memory window fills and starts pruning), once timed.
        ingest(&collector, &events)?;
        let rate = ingest(&collector, &events)?;
        let stats = collector.stats();
        collector.shutdown(FLUSH)?;
        let disk = stats.storage.as_ref().map_or(0, |s| s.disk_bytes);
        println!(
            "  {name:<16} {:>6.3} M events/s  ({} stored, {:.1} MB on disk)",
            rate / 1e6,
            stats.stored,
            disk as f64 / 1e6
        );
    }

    if wanted("open") {
        open_case(&base, &events, open_mb)?;
    }
    if only.is_some() {
        std::fs::remove_dir_all(&base)?;
        return Ok(());
    }
    let target = (recovery_gib * (1u64 << 30) as f64) as u64;
    let dir = scratch(&base, "recovery")?;
    {
        let collector = Collector::new(config(&dir, Durability::Buffered))?;
        loop {
            ingest(&collector, &events)?;
            let on_disk = collector.stats().storage.map_or(0, |s| s.disk_bytes);
            if on_disk >= target {
                break;
            }
        }
        collector.shutdown(FLUSH)?;
    }
    // Read once so the page cache holds the files, as after a process crash.
    let report = DataDir::open(&dir)?.verify(|_| {})?;
    let started = Instant::now();
    let collector = Collector::new(config(&dir, Durability::EveryBatch))?;
    let took = started.elapsed();
    let stats = collector.stats();
    collector.shutdown(FLUSH)?;
    let recovered = stats.storage.map(|s| s.recovery).unwrap_or_default();
    println!(
        "recovery: {:.2} GB, {} records in {} segments: {:.2} s ({:.2} GB/s), window of {} records rebuilt",
        report.bytes as f64 / 1e9,
        recovered.records,
        recovered.segments,
        took.as_secs_f64(),
        report.bytes as f64 / 1e9 / took.as_secs_f64(),
        stats.recovered
    );

    let data = DataDir::open(&dir)?;
    let started = Instant::now();
    let (mut cursor, mut records, mut bytes) = (Cursor::START, 0u64, 0u64);
    loop {
        let export = data.export(&ExportRequest::after(cursor).limit(1_000_000))?;
        if export.is_empty() {
            break;
        }
        records += export.len();
        let mut out = Counted(0);
        export.write_msgpack(&mut out)?;
        bytes += out.0;
        cursor = export.next_cursor();
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "export from disk: {records} records, {:.2} GB in {took:.2} s: {:.2} M records/s, {:.0} MB/s",
        bytes as f64 / 1e9,
        records as f64 / took / 1e6,
        bytes as f64 / took / 1e6
    );
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
