//! Ingest over HTTP on loopback against the in-process path, in the same run.
//!
//! `cargo bench --bench serve` (options: `-- --batches N` per client, default 100;
//! `--clients C`, default 4; `--batch B` events per request, default 1000;
//! `--worker-batch W`, the collector's `worker.batch_size`, default 512)
//!
//! HTTP: a `serve` server in this process (its own runtime, as the binary runs it) over
//! a fresh data directory under the default `every_batch` durability, so each 200 means
//! the batch is synced; C client threads, each with its own keep-alive connection
//! (`ureq`), POST the same pre-built batch of B events (the fixture sessions cycled) N
//! times, as NDJSON, then as MessagePack. Every request's latency is kept: p50 and p99
//! are exact. In-process: C threads each `record()` B events (cloned from pre-parsed
//! events before the clock starts) then `flush`, N times, into another fresh data
//! directory under the same durability: the same work the server does per request,
//! minus HTTP and decoding. The ratio is in-process events/s over HTTP events/s, i.e.
//! what the HTTP path costs per event relative to the in-process path. Then the same
//! under `buffered` (no sync per request: a 200 means queued; in-process, no flush per
//! batch), which shows the cost of HTTP and decoding without the sync. `queue.overflow`
//! is `block` in both paths, so every event is stored.

use std::path::Path;
use std::time::{Duration, Instant};

use arbiter_events::serve::{Server, ServerConfig, Tokens};
use arbiter_events::{Collector, Config, Durability, Event, Overflow};

const RECORD_TOKEN: &str = "bench-record-token-0123456789";
const EXPORT_TOKEN: &str = "bench-export-token-0123456789";
const FLUSH: Duration = Duration::from_secs(600);
const FIXTURES: [&str; 3] = [
    "fixtures/events/session_pr_review.jsonl",
    "fixtures/events/session_hotfix.jsonl",
    "fixtures/events/session_rl_batch.jsonl",
];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `batch` events from the fixture sessions, cycled, as JSON lines.
fn fixture_lines(batch: usize) -> Result<Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut lines = Vec::new();
    for f in FIXTURES {
        let text = std::fs::read_to_string(root.join(f))?;
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    Ok(lines.iter().cycle().take(batch).cloned().collect())
}

fn config(dir: &Path, durability: Durability) -> Config {
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.to_owned());
    config.storage.durability = durability;
    // Producers wait for room rather than drop (the server then waits on its blocking
    // threads, never on the runtime): every event is stored in both paths.
    config.queue.overflow = Overflow::Block;
    config.worker.batch_size = arg("--worker-batch", arbiter_events::DEFAULT_BATCH_SIZE);
    config.storage.max_disk_bytes = 1 << 40;
    config.retention.max_events = 10_000_000;
    config.retention.max_bytes = 1 << 32;
    config
}

struct Run {
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn http(
    url: &str,
    body: &[u8],
    content_type: &str,
    clients: usize,
    batches: usize,
    batch: usize,
) -> Result<Run> {
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, body, content_type) =
                (url.to_owned(), body.to_vec(), content_type.to_owned());
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut latencies = Vec::with_capacity(batches);
                for _ in 0..batches {
                    let t = Instant::now();
                    let response = agent
                        .post(&url)
                        .header("Authorization", format!("Bearer {RECORD_TOKEN}"))
                        .header("Content-Type", &content_type)
                        .send(&body[..])?;
                    let status = response.status().as_u16();
                    let answer = response.into_body().read_to_string()?;
                    if status != 200 || !answer.starts_with(&format!("{{\"accepted\":{batch},")) {
                        return Err(format!("status {status}: {answer}").into());
                    }
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().map_err(|_| "a client panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Run {
        events_per_sec: (clients * batches * batch) as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        requests: latencies.len(),
    })
}

fn in_process(
    events: &[Event],
    clients: usize,
    batches: usize,
    durability: Durability,
) -> Result<Run> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::new(config(&tmp.path().join("data"), durability))?;
    let sync = durability == Durability::EveryBatch;
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (collector, events) = (collector.clone(), events.to_vec());
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut latencies = Vec::with_capacity(batches);
                for _ in 0..batches {
                    // Made before the clock of this batch starts, as the HTTP body is.
                    let batch = events.clone();
                    let t = Instant::now();
                    for e in batch {
                        collector.record(e)?;
                    }
                    if sync {
                        collector.flush(FLUSH)?;
                    }
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().map_err(|_| "a producer panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    collector.flush(FLUSH)?;
    let stats = collector.stats();
    let expected = (clients * batches * events.len()) as u64;
    if stats.stored != expected {
        return Err(format!("stored {} of {expected}", stats.stored).into());
    }
    collector.shutdown(FLUSH)?;
    Ok(Run {
        events_per_sec: expected as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        requests: latencies.len(),
    })
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo bench -- --list`
    }
    let clients = arg("--clients", 4);
    let batches = arg("--batches", 100);
    let batch = arg("--batch", 1000);
    let lines = fixture_lines(batch)?;
    let events: Vec<Event> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<std::result::Result<_, _>>()?;
    let ndjson = lines.join("\n").into_bytes();
    let msgpack = rmp_serde::to_vec_named(&events)?;
    println!("serve: {clients} clients x {batches} batches of {batch} events");
    println!("| durability | path | events/s | p50 request | p99 request | requests |");
    println!("|---|---|---|---|---|---|");
    for (durability, name) in [
        (Durability::EveryBatch, "every_batch (a 200 means synced)"),
        (Durability::Buffered, "buffered (a 200 means queued)"),
    ] {
        let (json_run, msgpack_run) =
            over_http(&ndjson, &msgpack, clients, batches, batch, durability)?;
        in_process(&events, clients, 5, durability)?;
        let local = in_process(&events, clients, batches, durability)?;
        for (path, r) in [
            ("HTTP, NDJSON", &json_run),
            ("HTTP, MessagePack", &msgpack_run),
            ("in-process record()", &local),
        ] {
            println!(
                "| {name} | {path} | {:.0} | {:.2} ms | {:.2} ms | {} |",
                r.events_per_sec, r.p50_ms, r.p99_ms, r.requests
            );
        }
        println!(
            "| {name} | cost per event, HTTP / in-process | NDJSON {:.2}x, MessagePack {:.2}x | | | |",
            local.events_per_sec / json_run.events_per_sec,
            local.events_per_sec / msgpack_run.events_per_sec
        );
    }
    Ok(())
}

/// A server over a fresh data directory; the NDJSON run, then the MessagePack run.
fn over_http(
    ndjson: &[u8],
    msgpack: &[u8],
    clients: usize,
    batches: usize,
    batch: usize,
    durability: Durability,
) -> Result<(Run, Run)> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::new(config(&tmp.path().join("data"), durability))?;
    let tokens = Tokens::new(RECORD_TOKEN, EXPORT_TOKEN)?;
    let mut server_config = ServerConfig::default();
    server_config.listen = "127.0.0.1:0".parse()?;
    server_config.max_events_per_request = batch.max(1);
    let server = Server::bind(collector.clone(), server_config, tokens)?;
    let url = format!("http://{}/v1/events", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::spawn(move || {
        server.run(async move {
            let _ = stop_rx.await;
        })
    });
    // Warm up: connections, the memo, the first segment.
    http(&url, ndjson, "application/x-ndjson", clients, 5, batch)?;
    let json_run = http(
        &url,
        ndjson,
        "application/x-ndjson",
        clients,
        batches,
        batch,
    )?;
    let msgpack_run = http(
        &url,
        msgpack,
        "application/msgpack",
        clients,
        batches,
        batch,
    )?;
    let _ = stop_tx.send(());
    serving.join().map_err(|_| "the server panicked")??;
    collector.flush(FLUSH)?;
    let stats = collector.stats();
    let expected = (clients * (batches * 2 + 5) * batch) as u64;
    if stats.stored != expected {
        return Err(format!("the server stored {} of {expected}", stats.stored).into());
    }
    collector.shutdown(FLUSH)?;
    Ok((json_run, msgpack_run))
}
