//! Relay and pull throughput against a real `nats-server -js` (file storage) on
//! loopback, and the end-to-end lag from `record()` to a pulled file at a paced rate.
//!
//! `cargo bench --bench relay` (needs `nats-server` on the PATH; says so and exits
//! otherwise). `RELAY_BENCH_RECORDS` sets the records relayed (default 400000).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arbiter_events::{
    AnonymizationKey, Attributes, Collector, Config, Custom, Durability, Event, Overflow, Puller,
    Relay, RelayConfig, RunMode, read_export,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nats(store: &Path) -> Result<(Nats, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-sd")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let nats = Nats(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("nats-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((nats, format!("nats://127.0.0.1:{port}")))
}

fn event(n: u64) -> Event {
    Event::Custom(Custom {
        name: "step".to_owned(),
        attributes: Attributes::new()
            .with("n", n as i64)
            .with("agent", "agent-7")
            .with("reward", 0.25),
    })
}

fn collector(dir: &Path, durability: Durability) -> Result<Collector> {
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.to_owned());
    config.storage.durability = durability;
    config.queue.overflow = Overflow::Block;
    config.retention.max_events = 10_000_000;
    // The default segment size unless told (to compare sizes).
    if let Some(bytes) = std::env::var("RELAY_BENCH_SEGMENT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.storage.segment_bytes = bytes;
    }
    Ok(Collector::new(config)?)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    if Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("nats-server is not installed: relay bench skipped");
        return Ok(());
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let records: u64 = std::env::var("RELAY_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 400_000 });

    let dir = tempfile::tempdir()?;
    let store = tempfile::tempdir()?;
    let (_nats, url) = start_nats(store.path())?;
    {
        let c = collector(dir.path(), Durability::EveryBatch)?;
        for n in 0..records {
            c.record(event(n))?;
        }
        c.shutdown(Duration::from_secs(120))?;
    }
    let mut config = RelayConfig::default();
    config.url = url.clone();

    // The reading alone: the exports the relay makes, without a broker.
    let data = arbiter_events::DataDir::open(dir.path())?;
    let started = Instant::now();
    let (mut cursor, mut exported, mut bytes) = (arbiter_events::Cursor::START, 0u64, 0u64);
    loop {
        let export = data.export(&arbiter_events::ExportRequest::after(cursor).limit(7_600))?;
        if export.next_cursor() == cursor {
            break;
        }
        cursor = export.next_cursor();
        exported += export.len();
        bytes += export.to_msgpack().len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "exports alone (the relay's reads): {exported} records, {bytes} bytes, {secs:.3} s: {:.0} records/s",
        exported as f64 / secs
    );

    // Relay: everything synced, into the stream.
    let relay = Relay::new(dir.path(), config.clone())?;
    let started = Instant::now();
    let status = relay.run(RunMode::UntilCaughtUp)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "relay: {} records in {} messages, {:.3} s: {:.0} records/s, {:.1} payload bytes/record",
        status.records,
        status.messages,
        secs,
        status.records as f64 / secs,
        status.bytes as f64 / status.records.max(1) as f64
    );

    // Pull: everything, into merged export files; with checksums only, and with the MAC
    // key (every message verified, every file signed), each its own consumer. The first
    // consumer also pays the broker's first reads of the stream: it is reported apart.
    let mac_key = AnonymizationKey::from_file(dir.path().join("key"))?.mac_key();
    let consumers = [
        ("first", None),
        ("bench", None),
        ("bench-mac", Some(mac_key)),
    ];
    for (consumer, key) in consumers {
        let pulls = tempfile::tempdir()?;
        let mut puller = Puller::new(config.clone(), consumer, pulls.path().join("state.json"))?;
        puller.max_messages = 64;
        puller.mac_key = key;
        let started = Instant::now();
        let (mut pulled, mut files) = (0u64, 0u32);
        while puller.state().cursors.get(relay.source()).copied() < Some(records) {
            let outcome = puller.pull(&pulls.path().join(format!("{files:05}.pull")))?;
            pulled += outcome.records;
            files += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "pull ({consumer}): {pulled} records into {files} files, {secs:.3} s: {:.0} records/s",
            pulled as f64 / secs
        );
    }

    // End to end at a paced rate: record() to the record in a pulled file.
    let rate: u64 = if quick { 20_000 } else { 100_000 };
    let run_secs = if quick { 1 } else { 3 };
    let e2e = tempfile::tempdir()?;
    let c = collector(e2e.path(), Durability::EveryBatch)?;
    let mut config2 = config.clone();
    config2.flush_interval_ms = 5;
    // A stream of its own, so the puller sees only these records.
    config2.stream = "E2E".to_owned();
    config2.subject_prefix = "e2e.events".to_owned();
    let relay2 = Relay::new(e2e.path(), config2.clone())?;
    let stop = relay2.stopper();
    let source2 = relay2.source().to_owned();
    let total = rate * run_secs;
    let lags = std::thread::scope(|scope| -> Result<Vec<f64>> {
        let running = scope.spawn(|| relay2.run(RunMode::Forever));
        let recording = scope.spawn(|| -> std::result::Result<(), String> {
            let start = Instant::now();
            for n in 0..total {
                // Paced: event n goes at n / rate seconds.
                let due = Duration::from_secs_f64(n as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed())
                    && wait > Duration::from_micros(200)
                {
                    std::thread::sleep(wait);
                }
                c.record(event(n)).map_err(|e| e.to_string())?;
            }
            c.flush(Duration::from_secs(30)).map_err(|e| e.to_string())
        });
        let out = tempfile::tempdir()?;
        let mut puller = Puller::new(config2.clone(), "e2e", out.path().join("state.json"))?;
        puller.wait = Duration::from_millis(20);
        let mut lags = Vec::with_capacity(total as usize);
        let mut n = 0u32;
        let deadline = Instant::now() + Duration::from_secs(run_secs * 10 + 30);
        while puller.state().cursors.get(&source2).copied() < Some(total)
            && Instant::now() < deadline
        {
            let path = out.path().join(format!("{n:05}.pull"));
            n += 1;
            if puller.pull(&path)?.file.is_none() {
                continue;
            }
            let now = time::OffsetDateTime::now_utc();
            let file = read_export(std::fs::File::open(&path)?)?;
            lags.extend(
                file.records
                    .iter()
                    .map(|r| (now - r.time).as_seconds_f64() * 1000.0),
            );
            std::fs::remove_file(&path)?;
        }
        stop.stop();
        recording.join().map_err(|_| "recording panicked")??;
        running.join().map_err(|_| "relay panicked")??;
        Ok(lags)
    })?;
    let mut lags = lags;
    lags.sort_by(f64::total_cmp);
    println!(
        "end to end at {rate} events/s for {run_secs} s: {} records pulled, lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lags.len(),
        pct(&lags, 0.50),
        pct(&lags, 0.99),
        pct(&lags, 1.0)
    );
    Ok(())
}
