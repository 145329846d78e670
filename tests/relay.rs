//! The relay against a real `nats-server -js`: every (source, seq) reaches the stream
//! exactly once and in order per source, through kills, restarts, a second relay and a
//! broker that comes and goes; pruned ranges arrive as gap markers.
//!
//! Each test starts its own server on a free loopback port with a temporary store and
//! kills it on drop. Without `nats-server` on the PATH the tests say so loudly and
//! pass, unless `CI` is set: there a missing server fails them.

#![cfg(feature = "nats")]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{
    AnonymizationKey, Attributes, Collector, Config, Custom, Event, Gap, GapReason, MacKey, Puller,
    Relay, RelayConfig, RelayError, RunMode, read_export, read_export_verified,
};
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The longest any wait in these tests lasts before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `nats-server -js` on a loopback port with its own store; killed on drop.
struct Nats {
    child: Option<Child>,
    port: u16,
    store: TempDir,
    /// Further `nats-server` arguments: credentials, TLS.
    extra: Vec<PathBuf>,
    /// Servers started so far (each logs to a file of its own in the store).
    starts: u32,
    /// Whether a server was ever ready on `port`: then clients know it, and it stays.
    ready_once: bool,
}

impl Nats {
    /// Starts a server, or `None` (loudly) when `nats-server` is not installed and
    /// `CI` is unset.
    fn start() -> Result<Option<Nats>, Box<dyn std::error::Error>> {
        Nats::start_with(&[])
    }

    /// As [`Nats::start`], with further `nats-server` arguments.
    fn start_with(extra: &[&str]) -> Result<Option<Nats>, Box<dyn std::error::Error>> {
        if Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            if std::env::var_os("CI").is_some() {
                return Err("nats-server is not installed (CI is set: failing)".into());
            }
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return Ok(None);
        }
        let mut nats = Nats {
            child: None,
            port: free_port()?,
            store: tempfile::tempdir()?,
            extra: extra.iter().map(PathBuf::from).collect(),
            starts: 0,
            ready_once: false,
        };
        nats.restart()?;
        Ok(Some(nats))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port and store). It is ready once its own
    /// log says it listens: a connection alone could reach another test's server that
    /// took the port, while this one failed to bind and exited. A first start that
    /// cannot bind moves to another free port; a restart keeps its port (clients have
    /// its URL) and tries again until [`PATIENCE`] runs out.
    fn restart(&mut self) -> TestResult {
        self.kill();
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.starts += 1;
            let log = self
                .store
                .path()
                .join(format!("server-{}.log", self.starts));
            let child = Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .arg("-sd")
                .arg(self.store.path())
                .arg("-l")
                .arg(&log)
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            self.child = Some(child);
            while Instant::now() < deadline {
                let ready = std::fs::read_to_string(&log)
                    .is_ok_and(|text| text.contains("Server is ready"));
                let exited = match &mut self.child {
                    Some(child) => child.try_wait()?.is_some(),
                    None => true,
                };
                if exited {
                    break;
                }
                if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.ready_once = true;
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(20));
            }
            self.kill();
            if Instant::now() >= deadline {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(
                    format!("nats-server did not start on port {}: {said}", self.port).into(),
                );
            }
            if !self.ready_once {
                self.port = free_port()?;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server and waits for it to exit.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Kills a child process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay_config(nats: &Nats) -> RelayConfig {
    let mut config = RelayConfig::default();
    config.url = nats.url();
    config.flush_interval_ms = 10;
    config.backoff_initial_ms = 20;
    config.backoff_max_ms = 200;
    config.request_timeout_ms = 2_000;
    // Small messages: many of them, so every test crosses message boundaries.
    config.max_message_bytes = 16 * 1024;
    config
}

/// A collector writing `dir`, with `edit` applied.
fn collector(dir: &Path, edit: impl FnOnce(&mut Config)) -> Result<Collector, RelayError> {
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.to_owned());
    config.queue.overflow = arbiter_events::Overflow::Block;
    edit(&mut config);
    Collector::new(config).map_err(|e| RelayError::Config {
        field: "test",
        reason: e.to_string(),
    })
}

fn event(n: u64) -> Event {
    Event::Custom(Custom {
        name: format!("e-{n}"),
        attributes: Attributes::new().with("n", n as i64),
    })
}

/// Records `count` events and flushes them to disk.
fn record(collector: &Collector, count: u64) -> TestResult {
    for n in 0..count {
        collector.record(event(n))?;
    }
    collector.flush(PATIENCE)?;
    Ok(())
}

/// What the stream holds for one source: its records' seqs in stream order, its gaps,
/// and the messages' (first, last) ranges.
#[derive(Debug, Default)]
struct Received {
    seqs: Vec<u64>,
    gaps: Vec<Gap>,
    ranges: Vec<(u64, u64)>,
}

/// Reads every message of the stream, by stream sequence.
fn read_stream(
    url: &str,
    stream: &str,
) -> Result<BTreeMap<String, Received>, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        let mut handle = js.get_stream(stream).await?;
        let last = handle.info().await?.state.last_sequence;
        let mut out: BTreeMap<String, Received> = BTreeMap::new();
        for seq in 1..=last {
            let message = match handle.get_raw_message(seq).await {
                Ok(m) => m,
                Err(e) => return Err(format!("stream sequence {seq}: {e}").into()),
            };
            let file = read_export(message.payload.as_ref())?;
            let source = file
                .header
                .source
                .clone()
                .ok_or("a message without a source")?;
            assert_eq!(
                message.subject.as_str(),
                format!("arbiter.events.{source}"),
                "subject of stream sequence {seq}"
            );
            let got = out.entry(source).or_default();
            got.ranges
                .push((file.header.after + 1, file.header.next_cursor));
            got.gaps.extend(file.header.gap);
            got.seqs.extend(file.records.iter().map(|r| r.seq));
        }
        Ok::<_, Box<dyn std::error::Error>>(out)
    })
}

/// The stream holds `1..=last` of `source` exactly once, in order, in contiguous
/// messages (seqs in `gaps` excepted, which must be covered by gap markers).
fn assert_exactly_once(got: &Received, last: u64) {
    let mut expected_first = 1;
    for &(first, through) in &got.ranges {
        assert_eq!(
            first, expected_first,
            "messages not contiguous: {:?}",
            got.ranges
        );
        assert!(through >= first);
        expected_first = through + 1;
    }
    assert_eq!(expected_first, last + 1, "stream ends before seq {last}");
    let gapped: Vec<u64> = got
        .gaps
        .iter()
        .flat_map(|g| g.from_seq..=g.to_seq)
        .collect();
    let mut all: Vec<u64> = got.seqs.iter().chain(&gapped).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=last).collect::<Vec<_>>(), "not every seq once");
    assert!(
        got.seqs.windows(2).all(|w| w[0] < w[1]),
        "records out of order"
    );
}

/// Waits until the stream holds `source` through `last`.
fn wait_for(url: &str, source: &str, last: u64) -> TestResult {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(got) = read_stream(url, "ARBITER")
            && got
                .get(source)
                .and_then(|g| g.ranges.last())
                .is_some_and(|&(_, through)| through >= last)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{source} did not reach seq {last} in time").into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the pull files in `dir` hold, per source, in file order (each file read as a
/// merged export, its MAC verified under `mac_key` when given).
fn read_pulls(dir: &Path) -> Result<BTreeMap<String, Received>, Box<dyn std::error::Error>> {
    read_pulls_verified(dir, None)
}

fn read_pulls_verified(
    dir: &Path,
    mac_key: Option<&MacKey>,
) -> Result<BTreeMap<String, Received>, Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pull"))
        .collect();
    files.sort();
    let mut out: BTreeMap<String, Received> = BTreeMap::new();
    for path in files {
        let bytes = std::fs::read(&path)?;
        let file = match mac_key {
            Some(key) => read_export_verified(bytes.as_slice(), key)?,
            None => read_export(bytes.as_slice())?,
        };
        let sources = file
            .header
            .sources
            .ok_or("a pull file that is not a merge")?;
        for (source, range) in sources {
            let got = out.entry(source.clone()).or_default();
            got.ranges.push((range.after + 1, range.next_cursor));
            got.gaps.extend(range.gaps);
            got.seqs.extend(
                file.records
                    .iter()
                    .filter(|r| r.source.as_deref() == Some(source.as_str()))
                    .map(|r| r.seq),
            );
        }
    }
    Ok(out)
}

/// Pulls into `dir` (files `NNNN.pull`, numbered on from `next`) until every source of
/// `expected` reached its last seq.
fn pull_until(
    puller: &mut Puller,
    dir: &Path,
    next: &mut u32,
    expected: &BTreeMap<String, u64>,
) -> TestResult {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reached = expected
            .iter()
            .all(|(source, last)| puller.state().cursors.get(source) >= Some(last));
        if reached {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("pulls stopped at {:?}", puller.state()).into());
        }
        puller.pull(&dir.join(format!("{next:04}.pull")))?;
        *next += 1;
    }
}

fn puller(nats: &Nats, state: &Path) -> Result<Puller, RelayError> {
    let mut puller = Puller::new(relay_config(nats), "rl", state)?;
    puller.max_messages = 7;
    puller.wait = Duration::from_millis(100);
    puller.ack_wait = Duration::from_secs(1);
    Ok(puller)
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_arbiter-events"))
}

#[test]
fn smoke() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 1_000)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    let status = relay.run(RunMode::UntilCaughtUp)?;
    assert_eq!(status.relayed_through_seq, 1_000);
    assert!(status.messages > 1, "{status:?}");
    let got = read_stream(&nats.url(), "ARBITER")?;
    assert_eq!(got.len(), 1);
    assert_exactly_once(&got[relay.source()], 1_000);
    // A second run finds nothing new and publishes nothing.
    let again = Relay::new(dir.path(), relay_config(&nats))?.run(RunMode::UntilCaughtUp)?;
    assert_eq!((again.relayed_through_seq, again.messages), (1_000, 0));
    Ok(())
}

#[test]
fn three_sources_recording_concurrently_arrive_exactly_once() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    // One fleet, one key: the same pseudonyms on every machine, and one MAC key.
    let key = AnonymizationKey::from_bytes([0x5a; 32]);
    for d in &dirs {
        std::fs::write(d.path().join("key"), format!("{}\n", key.to_hex()))?;
    }
    let collectors = dirs
        .iter()
        .map(|d| collector(d.path(), |_| {}))
        .collect::<Result<Vec<_>, _>>()?;
    let relays = dirs
        .iter()
        .map(|d| Relay::new(d.path(), relay_config(&nats)))
        .collect::<Result<Vec<_>, _>>()?;
    let sources: Vec<String> = relays.iter().map(|r| r.source().to_owned()).collect();
    assert_eq!(
        sources
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
    let stoppers: Vec<_> = relays.iter().map(Relay::stopper).collect();
    let results = thread::scope(|scope| {
        let running: Vec<_> = relays
            .iter()
            .map(|r| scope.spawn(move || r.run(RunMode::Forever)))
            .collect();
        let recorded: Vec<_> = collectors
            .iter()
            .map(|c| {
                scope.spawn(move || {
                    for _ in 0..10 {
                        record(c, 300).map_err(|e| e.to_string())?;
                        thread::sleep(Duration::from_millis(5));
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        let mut outcome: Result<(), String> = Ok(());
        for handle in recorded {
            let r = handle
                .join()
                .map_err(|_| "a recording thread panicked".to_owned());
            outcome = outcome.and(r.and_then(|r| r));
        }
        for source in &sources {
            if outcome.is_ok() {
                outcome = wait_for(&nats.url(), source, 3_000).map_err(|e| e.to_string());
            }
        }
        stoppers.iter().for_each(|s| s.stop());
        let ran: Vec<_> = running.into_iter().map(|h| h.join()).collect();
        (outcome, ran)
    });
    let (outcome, ran) = results;
    outcome?;
    for r in ran {
        let status = r.map_err(|_| "a relay panicked")??;
        assert_eq!(status.relayed_through_seq, 3_000);
    }
    let got = read_stream(&nats.url(), "ARBITER")?;
    assert_eq!(got.len(), 3);
    for source in &sources {
        assert_exactly_once(&got[source], 3_000);
    }
    // One puller takes all three sources, merged, exactly once, each message's MAC
    // verified and each file signed.
    let pulls = tempfile::tempdir()?;
    let mut p = puller(&nats, &pulls.path().join("state.json"))?;
    p.mac_key = Some(key.mac_key());
    let expected = sources.iter().map(|s| (s.clone(), 3_000)).collect();
    pull_until(&mut p, pulls.path(), &mut 0, &expected)?;
    let pulled = read_pulls_verified(pulls.path(), Some(&key.mac_key()))?;
    assert_eq!(pulled.len(), 3);
    for source in &sources {
        assert_exactly_once(&pulled[source], 3_000);
    }
    Ok(())
}

#[test]
fn relay_killed_at_random_moments_loses_and_doubles_nothing() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    let source = Relay::new(dir.path(), relay_config(&nats))?
        .source()
        .to_owned();
    let config_file = dir.path().join("relay.toml");
    std::fs::write(
        &config_file,
        "[relay]\nmax_message_bytes = 8192\nflush_interval_ms = 5\n",
    )?;
    let mut rng = fastrand::Rng::with_seed(11);
    let rounds = 24;
    for _ in 0..rounds {
        record(&c, 200)?;
        let child = Command::new(bin())
            .args(["relay", "--nats", &nats.url(), "--config"])
            .arg(&config_file)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut child = ChildGuard(child);
        thread::sleep(Duration::from_millis(rng.u64(5..120)));
        // SIGKILL: no chance to finish a publish or write anything.
        child.0.kill()?;
        child.0.wait()?;
    }
    let last = rounds * 200;
    let status = Relay::new(dir.path(), relay_config(&nats))?.run(RunMode::UntilCaughtUp)?;
    assert_eq!(status.relayed_through_seq, last);
    let got = read_stream(&nats.url(), "ARBITER")?;
    assert_exactly_once(&got[&source], last);
    Ok(())
}

#[test]
fn a_second_relay_of_the_same_directory_refuses_to_start() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 500)?;
    let first = Relay::new(dir.path(), relay_config(&nats))?;
    let stop = first.stopper();
    thread::scope(|scope| {
        let running = scope.spawn(|| first.run(RunMode::Forever));
        wait_for(&nats.url(), first.source(), 500)?;
        let second = Relay::new(dir.path(), relay_config(&nats))?.run(RunMode::UntilCaughtUp);
        assert!(
            matches!(second, Err(RelayError::Locked { .. })),
            "{second:?}"
        );
        stop.stop();
        let status = running.join().map_err(|_| "the relay panicked")??;
        assert_eq!(status.relayed_through_seq, 500);
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let got = read_stream(&nats.url(), "ARBITER")?;
    assert_exactly_once(&got[first.source()], 500);
    Ok(())
}

#[test]
fn two_relays_racing_on_one_source_never_double_a_range() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    // Two copies of one directory (same source, same records) stand for two machines
    // relaying the same source: no lock is shared, only the broker's check decides.
    let original = tempfile::tempdir()?;
    {
        let c = collector(original.path(), |_| {})?;
        record(&c, 4_000)?;
        c.shutdown(PATIENCE)?;
    }
    let copy = tempfile::tempdir()?;
    copy_dir(original.path(), copy.path())?;
    let mut config = relay_config(&nats);
    config.max_message_bytes = 4096;
    let a = Relay::new(original.path(), config.clone())?;
    let b = Relay::new(copy.path(), config)?;
    assert_eq!(a.source(), b.source());
    let (ra, rb) = thread::scope(|scope| {
        let ha = scope.spawn(|| a.run(RunMode::UntilCaughtUp));
        let hb = scope.spawn(|| b.run(RunMode::UntilCaughtUp));
        (ha.join(), hb.join())
    });
    let ra = ra.map_err(|_| "relay a panicked")??;
    let rb = rb.map_err(|_| "relay b panicked")??;
    assert_eq!(
        (ra.relayed_through_seq, rb.relayed_through_seq),
        (4_000, 4_000)
    );
    let got = read_stream(&nats.url(), "ARBITER")?;
    assert_exactly_once(&got[a.source()], 4_000);
    // Both published or one did all of it; together they published each range once.
    assert_eq!(ra.records + rb.records, 4_000, "{ra:?} {rb:?}");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn relay_rides_out_a_broker_restart() -> TestResult {
    let Some(mut nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 1_000)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    let stop = relay.stopper();
    let status = thread::scope(|scope| {
        let running = scope.spawn(|| relay.run(RunMode::Forever));
        let outcome = (|| {
            wait_for(&nats.url(), relay.source(), 1_000)?;
            nats.kill();
            record(&c, 1_000)?;
            // Down longer than a request waits: the relay's publish fails and it backs off.
            thread::sleep(Duration::from_millis(2_500));
            nats.restart()?;
            record(&c, 1_000)?;
            wait_for(&nats.url(), relay.source(), 3_000)
        })();
        stop.stop();
        let ran = running.join().map_err(|_| "the relay panicked");
        outcome.map_err(|e| e.to_string())?;
        Ok::<_, Box<dyn std::error::Error>>(ran??)
    })?;
    assert!(
        status.retries > 0,
        "the relay never saw the broker go: {status:?}"
    );
    let got = read_stream(&nats.url(), "ARBITER")?;
    assert_exactly_once(&got[relay.source()], 3_000);
    Ok(())
}

#[test]
fn relay_waits_for_a_broker_that_is_down_at_start() -> TestResult {
    let Some(mut nats) = Nats::start()? else {
        return Ok(());
    };
    nats.kill();
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 800)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    let started = Arc::new(AtomicBool::new(false));
    let status = thread::scope(|scope| {
        let running = scope.spawn(|| relay.run(RunMode::UntilCaughtUp));
        thread::sleep(Duration::from_millis(500));
        started.store(true, Ordering::SeqCst);
        let restarted = nats.restart();
        let ran = running.join().map_err(|_| "the relay panicked");
        restarted?;
        Ok::<_, Box<dyn std::error::Error>>(ran??)
    })?;
    assert!(started.load(Ordering::SeqCst));
    assert!(status.retries > 0, "{status:?}");
    assert_eq!(status.relayed_through_seq, 800);
    let got = read_stream(&nats.url(), "ARBITER")?;
    assert_exactly_once(&got[relay.source()], 800);
    Ok(())
}

#[test]
fn records_pruned_before_they_were_relayed_arrive_as_a_gap_marker() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |c| {
        c.storage.segment_bytes = 4096;
        c.storage.max_disk_bytes = 2 * 4096;
    })?;
    record(&c, 400)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    let status = relay.run(RunMode::UntilCaughtUp)?;
    assert_eq!(status.relayed_through_seq, 400);
    assert_eq!(status.gaps, 1, "{status:?}");
    let got = read_stream(&nats.url(), "ARBITER")?;
    let got = &got[relay.source()];
    assert_eq!(got.gaps.len(), 1, "{got:?}");
    let gap = got.gaps[0];
    assert_eq!((gap.from_seq, gap.reason), (1, GapReason::Capacity));
    assert!(gap.to_seq > 1 && gap.to_seq < 400, "{gap:?}");
    assert_exactly_once(got, 400);
    Ok(())
}

#[test]
fn relay_status_reports_progress_and_lag() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 300)?;
    let status = |dir: &Path| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let out = Command::new(bin())
            .args(["relay", "--status", "--data-dir"])
            .arg(dir)
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let before = status(dir.path())?;
    assert_eq!(before["ran"], false);
    assert_eq!(before["lag_records"], 300);
    let out = Command::new(bin())
        .args(["relay", "--once", "--nats", &nats.url(), "--data-dir"])
        .arg(dir.path())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    record(&c, 50)?;
    let after = status(dir.path())?;
    assert_eq!(after["relayed_through_seq"], 300);
    assert_eq!(after["lag_records"], 50);
    assert!(after["lag_secs"].as_f64().is_some_and(|s| s >= 0.0));
    assert_eq!(after["records"], 300);
    Ok(())
}

#[test]
fn a_puller_killed_between_its_file_and_its_acks_writes_nothing_twice() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 2_000)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    relay.run(RunMode::UntilCaughtUp)?;
    let pulls = tempfile::tempdir()?;
    let state = pulls.path().join("state.json");
    let first = puller(&nats, &state)?.pull_and_die_before_ack(&pulls.path().join("0000.pull"))?;
    assert!(first.records > 0, "{first:?}");
    // A new puller (a restarted process) gets the unacked messages again after
    // ack_wait and drops them.
    let mut again = puller(&nats, &state)?;
    let expected = BTreeMap::from([(relay.source().to_owned(), 2_000)]);
    pull_until(&mut again, pulls.path(), &mut 1, &expected)?;
    let deadline = Instant::now() + PATIENCE;
    let mut duplicates = 0;
    while duplicates < first.messages && Instant::now() < deadline {
        let outcome = again.pull(&pulls.path().join("9999.pull"))?;
        assert_eq!(outcome.records, 0, "{outcome:?}");
        duplicates += outcome.duplicates;
    }
    assert_eq!(
        duplicates, first.messages,
        "the unacked messages never came back"
    );
    let pulled = read_pulls(pulls.path())?;
    assert_exactly_once(&pulled[relay.source()], 2_000);
    Ok(())
}

#[test]
fn pull_processes_killed_at_random_moments_write_each_record_once() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 3_000)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    relay.run(RunMode::UntilCaughtUp)?;
    let pulls = tempfile::tempdir()?;
    let state = pulls.path().join("state.json");
    let mut rng = fastrand::Rng::with_seed(5);
    let mut next = 0u32;
    for _ in 0..12 {
        let child = Command::new(bin())
            .args(["pull", "--nats", &nats.url(), "--consumer", "rl"])
            .args([
                "--max-messages",
                "3",
                "--wait-ms",
                "100",
                "--ack-wait-secs",
                "1",
            ])
            .arg("--state")
            .arg(&state)
            .arg("--out")
            .arg(pulls.path().join(format!("{next:04}.pull")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        next += 1;
        let mut child = ChildGuard(child);
        thread::sleep(Duration::from_millis(rng.u64(10..150)));
        child.0.kill()?;
        child.0.wait()?;
    }
    let mut p = puller(&nats, &state)?;
    let expected = BTreeMap::from([(relay.source().to_owned(), 3_000)]);
    pull_until(&mut p, pulls.path(), &mut next, &expected)?;
    let pulled = read_pulls(pulls.path())?;
    assert_exactly_once(&pulled[relay.source()], 3_000);
    Ok(())
}

#[test]
fn a_puller_with_the_mac_key_refuses_a_message_signed_under_another_key() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 50)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    relay.run(RunMode::UntilCaughtUp)?;
    let pulls = tempfile::tempdir()?;
    let mut p = puller(&nats, &pulls.path().join("state.json"))?;
    p.mac_key = Some(AnonymizationKey::from_bytes([0x11; 32]).mac_key());
    let out = pulls.path().join("0000.pull");
    let err = p
        .pull(&out)
        .err()
        .ok_or("a message signed under another key was taken")?;
    assert!(
        matches!(&err, RelayError::ForeignMessage { reason, .. } if reason.contains("mac")),
        "{err}"
    );
    assert!(!out.exists());
    assert!(p.state().cursors.is_empty());
    // Under the directory's own key the same messages are taken, and the file is
    // signed under it.
    let own = AnonymizationKey::from_file(dir.path().join("key"))?.mac_key();
    p.mac_key = Some(own.clone());
    let expected = BTreeMap::from([(relay.source().to_owned(), 50)]);
    pull_until(&mut p, pulls.path(), &mut 1, &expected)?;
    let pulled = read_pulls_verified(pulls.path(), Some(&own))?;
    assert_exactly_once(&pulled[relay.source()], 50);
    Ok(())
}

#[test]
fn puller_resumes_after_a_broker_restart() -> TestResult {
    let Some(mut nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 1_000)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    relay.run(RunMode::UntilCaughtUp)?;
    let pulls = tempfile::tempdir()?;
    let mut p = puller(&nats, &pulls.path().join("state.json"))?;
    let mut next = 0;
    let source = relay.source().to_owned();
    pull_until(
        &mut p,
        pulls.path(),
        &mut next,
        &BTreeMap::from([(source.clone(), 1_000)]),
    )?;
    nats.kill();
    nats.restart()?;
    record(&c, 1_000)?;
    relay.run(RunMode::UntilCaughtUp)?;
    pull_until(
        &mut p,
        pulls.path(),
        &mut next,
        &BTreeMap::from([(source.clone(), 2_000)]),
    )?;
    let pulled = read_pulls(pulls.path())?;
    assert_exactly_once(&pulled[&source], 2_000);
    Ok(())
}

#[test]
fn a_subject_holding_a_message_the_relay_did_not_write_is_refused() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 10)?;
    let relay = Relay::new(dir.path(), relay_config(&nats))?;
    // The stream exists (made by a first run), then something else publishes on the
    // source's subject.
    relay.run(RunMode::UntilCaughtUp)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        js.publish(relay.subject().to_owned(), "not an export".into())
            .await?
            .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    record(&c, 10)?;
    let outcome = relay.run(RunMode::UntilCaughtUp);
    assert!(
        matches!(outcome, Err(RelayError::ForeignMessage { .. })),
        "{outcome:?}"
    );
    Ok(())
}

/// Runs a relay in a thread until its status file shows a failure, then stops it:
/// the failure's message, and the status the stopped relay returned.
fn first_failure(
    dir: &Path,
    config: RelayConfig,
) -> Result<(String, arbiter_events::RelayStatus), Box<dyn std::error::Error>> {
    let relay = Relay::new(dir, config)?;
    let stopper = relay.stopper();
    let runner = thread::spawn(move || relay.run(RunMode::UntilCaughtUp));
    let deadline = Instant::now() + PATIENCE;
    let failure = loop {
        let status = arbiter_events::relay::read_status(dir, "ARBITER")?;
        if let Some(error) = status.and_then(|s| s.last_error) {
            break error;
        }
        if Instant::now() > deadline || runner.is_finished() {
            stopper.stop();
            return Err("the relay never failed".into());
        }
        thread::sleep(Duration::from_millis(20));
    };
    stopper.stop();
    let status = runner.join().map_err(|_| "the relay panicked")??;
    Ok((failure, status))
}

fn secret_file(dir: &Path, name: &str, secret: &str) -> Result<PathBuf, std::io::Error> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n"))?;
    Ok(path)
}

/// Against a server started with `server_args`: a relay configured by `wrong` fails to
/// connect (counted, retried, nothing published); configured by `right` it relays all.
fn credentials_are_checked(
    server_args: &[&str],
    wrong: impl FnOnce(&mut RelayConfig, &Path) -> std::io::Result<()>,
    right: impl FnOnce(&mut RelayConfig, &Path) -> std::io::Result<()>,
) -> TestResult {
    let Some(nats) = Nats::start_with(server_args)? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let secrets = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 200)?;
    let mut config = relay_config(&nats);
    wrong(&mut config, secrets.path())?;
    let (failure, status) = first_failure(dir.path(), config.clone())?;
    assert!(failure.contains("connect"), "{failure}");
    assert_eq!((status.relayed_through_seq, status.messages), (0, 0));
    assert!(status.retries >= 1, "{status:?}");

    right(&mut config, secrets.path())?;
    let status = Relay::new(dir.path(), config)?.run(RunMode::UntilCaughtUp)?;
    assert_eq!(status.relayed_through_seq, 200);
    assert!(status.messages > 1, "{status:?}");
    Ok(())
}

#[test]
fn user_and_password_from_a_file_are_sent_and_a_wrong_one_is_refused() -> TestResult {
    credentials_are_checked(
        &["--user", "relay", "--pass", "s3cret-pass"],
        |c, secrets| {
            c.user = Some("relay".to_owned());
            c.password_file = Some(secret_file(secrets, "wrong", "not-the-pass")?);
            Ok(())
        },
        |c, secrets| {
            c.password_file = Some(secret_file(secrets, "right", "s3cret-pass")?);
            Ok(())
        },
    )
}

#[test]
fn a_token_from_a_file_is_sent_and_a_wrong_one_is_refused() -> TestResult {
    credentials_are_checked(
        &["--auth", "t0ken-for-the-relay"],
        |c, secrets| {
            c.token_file = Some(secret_file(secrets, "wrong", "another-token")?);
            Ok(())
        },
        |c, secrets| {
            c.token_file = Some(secret_file(secrets, "right", "t0ken-for-the-relay")?);
            Ok(())
        },
    )
}

#[test]
fn tls_with_a_private_ca_and_a_client_certificate() -> TestResult {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let file = |name: &str| tls.join(name).to_string_lossy().into_owned();
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let args = [
        "--tls",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlscacert",
        &ca,
        "--tlsverify",
    ];
    let Some(nats) = Nats::start_with(&args)? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |_| {})?;
    record(&c, 300)?;
    let mut config = relay_config(&nats);
    config.tls_required = true;
    config.tls_ca_file = Some(tls.join("ca.pem"));
    // The server asks for a client certificate: without one the handshake fails.
    let (failure, status) = first_failure(dir.path(), config.clone())?;
    assert!(failure.contains("connect"), "{failure}");
    assert_eq!(status.relayed_through_seq, 0);

    config.tls_cert_file = Some(tls.join("client.pem"));
    config.tls_key_file = Some(tls.join("client.key"));
    let status = Relay::new(dir.path(), config.clone())?.run(RunMode::UntilCaughtUp)?;
    assert_eq!(status.relayed_through_seq, 300);

    // The puller speaks TLS the same way, and gets every record.
    let state = tempfile::tempdir()?;
    let mut puller = Puller::new(config, "rl", state.path().join("state.json"))?;
    puller.wait = Duration::from_millis(100);
    let pulls = tempfile::tempdir()?;
    let mut next = 0;
    let expected = BTreeMap::from([(c.source().to_owned(), 300)]);
    pull_until(&mut puller, pulls.path(), &mut next, &expected)?;
    Ok(())
}

#[test]
fn under_buffered_durability_only_what_was_synced_is_relayed() -> TestResult {
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), |c| {
        c.storage.durability = arbiter_events::Durability::Buffered;
    })?;
    record(&c, 400)?;
    // Written, not synced: a machine crash could take these back, so none goes out.
    let status = Relay::new(dir.path(), relay_config(&nats))?.run(RunMode::UntilCaughtUp)?;
    assert_eq!((status.relayed_through_seq, status.messages), (0, 0));
    assert_eq!(status.lag_records, 0, "{status:?}");
    assert!(read_stream(&nats.url(), "ARBITER")?.is_empty());
    // Closing syncs them: now every one is relayed.
    let source = c.source().to_owned();
    c.shutdown(PATIENCE)?;
    let status = Relay::new(dir.path(), relay_config(&nats))?.run(RunMode::UntilCaughtUp)?;
    assert_eq!(status.relayed_through_seq, 400);
    assert_eq!(status.synced_through_seq, 400);
    assert_exactly_once(&read_stream(&nats.url(), "ARBITER")?[&source], 400);
    Ok(())
}

#[cfg(feature = "serve")]
#[test]
fn serve_metrics_show_the_progress_of_the_directory_relays() -> TestResult {
    use std::io::BufRead;
    let Some(nats) = Nats::start()? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let c = collector(&dir, |_| {})?;
    record(&c, 300)?;
    let source = c.source().to_owned();
    c.shutdown(PATIENCE)?;
    let token = "test-export-token-0123456789";
    let mut child = ChildGuard(
        Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .env(
                "ARBITER_EVENTS_RECORD_TOKEN",
                "test-record-token-0123456789",
            )
            .env("ARBITER_EVENTS_EXPORT_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("serve did not say where it listens: {line:?}"))?
        .to_owned();
    let metrics = || -> Result<String, Box<dyn std::error::Error>> {
        let mut response = ureq::get(format!("{base}/metrics"))
            .header("Authorization", format!("Bearer {token}"))
            .call()?;
        Ok(response.body_mut().read_to_string()?)
    };
    let before = metrics()?;
    assert!(!before.contains("arbiter_events_relay_"), "{before}");

    let status = Relay::new(&dir, relay_config(&nats))?.run(RunMode::UntilCaughtUp)?;
    assert_eq!(status.relayed_through_seq, 300);
    let text = metrics()?;
    let labels = format!("{{stream=\"ARBITER\",source=\"{source}\"}}");
    for (name, value) in [
        (
            "arbiter_events_relay_relayed_through_seq",
            "300.0".to_owned(),
        ),
        ("arbiter_events_relay_lag_records", "0.0".to_owned()),
        ("arbiter_events_relay_records_total", "300.0".to_owned()),
        (
            "arbiter_events_relay_messages_total",
            format!("{}.0", status.messages),
        ),
        (
            "arbiter_events_relay_bytes_total",
            format!("{}.0", status.bytes),
        ),
        ("arbiter_events_relay_errors_total", "0.0".to_owned()),
        // The run is over: the relay disconnected.
        ("arbiter_events_relay_connected", "0.0".to_owned()),
    ] {
        let want = format!("{name}{labels} {value}");
        assert!(text.lines().any(|l| l == want), "no `{want}` in\n{text}");
    }
    Ok(())
}
