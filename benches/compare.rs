//! arbiter-events beside the floor and the peer, in one process, on one seeded stream.
//!
//! `cargo bench --bench compare` (options: `-- --events N --repeats R --threads 1,2,4,8
//! --only floor,peer,anonymized,plain`; `--only` runs a subset, for profiling one)
//!
//! - **floor**: a bare `crossbeam_channel::bounded` feeding a `VecDeque` ring on one
//!   consumer thread: no validation, no anonymization, no encoding, no stats.
//! - **peer**: `tracing-appender`'s `non_blocking` writer (not lossy, so nothing is
//!   dropped) fed the same events as JSON lines, into an in-memory sink.
//! - **arbiter-events**, anonymization on and off, `Overflow::Block`.
//!
//! Each contender records the same events (the total split over the producers) and is
//! timed until everything is stored (`flush`) or written (the peer's guard dropped, the
//! floor's consumer joined). Contenders alternate within each repeat; each figure is the
//! median with min–max over the repeats.

#[path = "support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{AnonymizationMode, Collector, Config, Event, Overflow};

/// The queue capacity every contender gets.
const CAPACITY: usize = 8192;
/// What the rings retain (records the floor and arbiter-events keep).
const RETAIN: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Floor,
    Peer,
    Arbiter(AnonymizationMode),
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Floor => "floor (channel + ring)",
            Contender::Peer => "peer (tracing-appender, JSON)",
            Contender::Arbiter(AnonymizationMode::Pseudonymize) => "arbiter-events, anonymized",
            Contender::Arbiter(_) => "arbiter-events, plain",
        }
    }
}

const CONTENDERS: [Contender; 4] = [
    Contender::Floor,
    Contender::Peer,
    Contender::Arbiter(AnonymizationMode::Pseudonymize),
    Contender::Arbiter(AnonymizationMode::Off),
];

/// Runs `produce` on one thread per batch and returns when all have finished.
fn produce<F>(batches: Vec<Vec<Event>>, produce: F)
where
    F: Fn(Vec<Event>) + Sync,
{
    thread::scope(|s| {
        for batch in batches {
            let produce = &produce;
            s.spawn(move || produce(batch));
        }
    });
}

fn run_floor(batches: Vec<Vec<Event>>) -> Result<u64, String> {
    let (tx, rx) = crossbeam_channel::bounded::<Event>(CAPACITY);
    let consumer = thread::spawn(move || {
        let mut ring = VecDeque::with_capacity(RETAIN);
        let mut received = 0u64;
        for event in rx {
            if ring.len() == RETAIN {
                ring.pop_front();
            }
            ring.push_back(event);
            received += 1;
        }
        received
    });
    produce(batches, |batch| {
        for event in batch {
            let _ = tx.send(event);
        }
    });
    drop(tx);
    consumer
        .join()
        .map_err(|_| "the floor's consumer panicked".to_owned())
}

/// An in-memory sink that keeps the last bytes written, bounded, and counts lines.
struct Sink {
    lines: Arc<AtomicU64>,
    buf: Vec<u8>,
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > 64 << 20 {
            self.buf.clear();
        }
        self.buf.extend_from_slice(bytes);
        self.lines.fetch_add(1, Ordering::Relaxed);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run_peer(batches: Vec<Vec<Event>>) -> Result<u64, String> {
    let lines = Arc::new(AtomicU64::new(0));
    let sink = Sink {
        lines: Arc::clone(&lines),
        buf: Vec::new(),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(CAPACITY)
        .finish(sink);
    produce(batches, |batch| {
        let mut writer = writer.clone();
        let mut line = Vec::with_capacity(512);
        for event in batch {
            line.clear();
            if serde_json::to_writer(&mut line, &event).is_ok() {
                line.push(b'\n');
                let _ = writer.write_all(&line);
            }
        }
    });
    drop(writer);
    drop(guard); // waits for the worker to write what is queued
    Ok(lines.load(Ordering::Relaxed))
}

fn run_arbiter(batches: Vec<Vec<Event>>, mode: AnonymizationMode) -> Result<u64, String> {
    let mut config = Config::default();
    config.anonymization.mode = mode;
    config.queue.capacity = CAPACITY;
    config.queue.overflow = Overflow::Block;
    config.retention.max_events = RETAIN as u64;
    config.retention.max_bytes = 1 << 34;
    let collector = Collector::new(config).map_err(|e| e.to_string())?;
    produce(batches, |batch| {
        for event in batch {
            let _ = collector.record(event);
        }
    });
    collector
        .flush(Duration::from_secs(600))
        .map_err(|e| e.to_string())?;
    Ok(collector.stats().stored)
}

/// Times one run; the batches are cloned before the clock starts.
fn time(contender: Contender, master: &[Vec<Event>]) -> Result<f64, String> {
    let batches: Vec<Vec<Event>> = master.to_vec();
    let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let start = Instant::now();
    let delivered = match contender {
        Contender::Floor => run_floor(batches),
        Contender::Peer => run_peer(batches),
        Contender::Arbiter(mode) => run_arbiter(batches, mode),
    }?;
    let elapsed = start.elapsed();
    if delivered != total {
        return Err(format!(
            "{}: delivered {delivered} of {total} events",
            contender.name()
        ));
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}

struct Args {
    events: usize,
    repeats: usize,
    threads: Vec<usize>,
    only: Option<Vec<Contender>>,
}

fn contender(name: &str) -> Result<Contender, String> {
    match name {
        "floor" => Ok(Contender::Floor),
        "peer" => Ok(Contender::Peer),
        "anonymized" => Ok(Contender::Arbiter(AnonymizationMode::Pseudonymize)),
        "plain" => Ok(Contender::Arbiter(AnonymizationMode::Off)),
        other => Err(format!("--only: unknown contender {other}")),
    }
}

fn args() -> Result<Args, String> {
    let mut parsed = Args {
        events: 400_000,
        repeats: 5,
        threads: vec![1, 2, 4, 8],
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--events" => parsed.events = value()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--repeats" => {
                parsed.repeats = value()?.parse().map_err(|e| format!("--repeats: {e}"))?
            }
            "--threads" => {
                parsed.threads = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--threads: {e}"))?;
            }
            "--only" => {
                parsed.only = Some(
                    value()?
                        .split(',')
                        .map(contender)
                        .collect::<Result<_, _>>()?,
                );
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(parsed)
}

fn median_min_max(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    let median = if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    };
    (median, xs[0], xs[xs.len() - 1])
}

fn main() -> Result<(), String> {
    let args = args()?;
    println!(
        "compare: {} events per run, {} repeats, median (min-max) in million events/s",
        args.events, args.repeats
    );
    for &threads in &args.threads {
        let per = args.events / threads.max(1);
        let master: Vec<Vec<Event>> = (0..threads)
            .map(|t| support::events(per, 1000 + t as u64))
            .collect();
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); CONTENDERS.len()];
        let runs = |c: &Contender| args.only.as_ref().is_none_or(|o| o.contains(c));
        for rep in 0..args.repeats {
            for i in 0..CONTENDERS.len() {
                let k = (i + rep) % CONTENDERS.len(); // rotate who goes first
                if runs(&CONTENDERS[k]) {
                    results[k].push(time(CONTENDERS[k], &master)?);
                }
            }
        }
        println!("\n{threads} producer(s)");
        let mut medians = Vec::new();
        for (c, r) in CONTENDERS.iter().zip(results) {
            if r.is_empty() {
                continue; // not in `--only`
            }
            let (med, min, max) = median_min_max(r);
            println!(
                "  {:<32} {:>6.2} ({:.2}-{:.2})",
                c.name(),
                med / 1e6,
                min / 1e6,
                max / 1e6
            );
            medians.push((med, min, max));
        }
        if medians.len() < CONTENDERS.len() {
            continue; // the ratios need every contender
        }
        let (floor, peer, anon, plain) = (medians[0].0, medians[1].0, medians[2].0, medians[3].0);
        println!(
            "  ratios: anonymized/floor {:.2}, anonymized/peer {:.2}, plain/floor {:.2}, plain/peer {:.2}",
            anon / floor,
            anon / peer,
            plain / floor,
            plain / peer
        );
    }
    Ok(())
}
