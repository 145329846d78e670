//! A writer killed with SIGKILL loses nothing a completed `flush` acknowledged: a child
//! process records continuously to a data directory under `Durability::EveryBatch` and
//! is killed at seeded random moments; after each kill the directory reopens with its
//! torn tail cut and reported, every acknowledged record present, seqs contiguous and
//! strictly increasing, nothing damaged, and the next writer numbering on from there.
//!
//! The child is this test binary run again with `--exact child_writer` and
//! [`CHILD_ENV`] naming the directory; `child_writer` does nothing without it.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arbiter_events::{
    Collector, Config, Cursor, DataDir, Durability, Event, Export, ExportRequest, MAX_TOML_INTEGER,
    Overflow, Record, VerifyReport,
};

use common::{PATIENCE, TestResult, config_with, used_by};

/// Names the data directory of a child writer; absent, `child_writer` returns at once.
const CHILD_ENV: &str = "ARBITER_CRASH_CHILD_DIR";
/// Seeds a child writer's batch sizes.
const CHILD_SEED_ENV: &str = "ARBITER_CRASH_CHILD_SEED";
/// Overrides [`SEED`], to replay or explore other kill schedules.
const SEED_ENV: &str = "ARBITER_CRASH_SEED";
/// The seed of the kill schedule.
const SEED: u64 = 0x00c0_ffee_5eed;
/// Kills in the main test.
const KILLS: usize = 60;
/// What a child's acknowledgement line starts with: `ACK <last_seq> <synced_through_seq>`.
const ACK: &str = "ACK";
/// Events a child records between two flushes.
const BATCH: std::ops::RangeInclusive<usize> = 50..=400;
/// The delay between a child's first acknowledgement and its kill, in milliseconds.
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 1..=40;
/// Every this many kills (and at the last) the whole directory is exported and decoded;
/// in between, only what follows the last record checked before (verification and
/// recovery still read every frame each time).
const FULL_CHECK_EVERY: usize = 10;
/// Events the parent records after each kill.
const PARENT_EVENTS: std::ops::RangeInclusive<u64> = 1..=20;
/// Small segments, so children roll segments (and get killed doing so) now and then.
const SEGMENT_BYTES: u64 = 128 * 1024;
/// A child stops by itself after this long, should its parent be gone without closing
/// the pipe.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);
/// How long the parent waits for a child's first acknowledgement.
const FIRST_ACK_PATIENCE: Duration = Duration::from_secs(30);

/// The configuration both the child and the parent open the directory with. Nothing is
/// ever pruned, from disk or memory: every record written stays, and the recovered
/// store serves the same records as the disk.
fn durable(dir: &Path) -> Config {
    config_with(|c| {
        c.storage.data_dir = Some(dir.to_owned());
        c.storage.durability = Durability::EveryBatch;
        c.storage.segment_bytes = SEGMENT_BYTES;
        c.retention.max_events = MAX_TOML_INTEGER;
        c.retention.max_bytes = MAX_TOML_INTEGER;
        c.queue.overflow = Overflow::Block;
    })
}

#[test]
fn smoke() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let summary = crash_cycles(tmp.path(), SEED, 1)?;
    assert_eq!(summary.kills, 1);
    assert!(summary.last_seq > summary.parent_records, "{summary:?}");
    Ok(())
}

#[test]
fn acknowledged_records_survive_sigkill_of_the_writer() -> TestResult {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => text
            .parse()
            .map_err(|e| format!("{SEED_ENV}={text}: {e}"))?,
        Err(_) => SEED,
    };
    let tmp = tempfile::tempdir()?;
    let started = Instant::now();
    let summary = crash_cycles(tmp.path(), seed, KILLS)?;
    eprintln!(
        "crash: seed {seed}: {} kills in {:.1?}; {} of {} reopens cut a torn tail \
         ({} bytes, {} frames in all); {} records on disk, the highest acknowledged seq {}",
        summary.kills,
        started.elapsed(),
        summary.truncations,
        summary.kills,
        summary.truncated_bytes,
        summary.truncated_frames,
        summary.last_seq,
        summary.highest_ack,
    );
    assert_eq!(summary.kills, KILLS);
    Ok(())
}

/// The child: records batches of varied events and flushes each, printing the last seq
/// stored after every successful flush, until it is killed.
#[test]
fn child_writer() -> TestResult {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return Ok(());
    };
    let seed = std::env::var(CHILD_SEED_ENV)?.parse()?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let events: Vec<Event> = common::event_streams()?
        .into_iter()
        .flat_map(|(_, events)| events)
        .collect();
    let collector = Collector::new(durable(Path::new(&dir)))?;
    let started = Instant::now();
    let mut next = rng.usize(..events.len());
    while started.elapsed() < CHILD_LIFETIME {
        for _ in 0..rng.usize(BATCH) {
            collector.record(events[next % events.len()].clone())?;
            next += 1;
        }
        collector.flush(PATIENCE)?;
        let stats = collector.stats();
        let last = stats.last_seq.ok_or("nothing stored after a flush")?;
        let synced = stats
            .storage
            .and_then(|s| s.synced_through_seq)
            .unwrap_or(0);
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{ACK} {last} {synced}")
            .and_then(|()| out.flush())
            .is_err()
        {
            // The parent is gone.
            break;
        }
    }
    Ok(())
}

/// What a run of crash cycles saw.
#[derive(Debug, Default)]
struct Summary {
    kills: usize,
    /// Reopens that reported `truncated_bytes > 0`.
    truncations: usize,
    truncated_bytes: u64,
    truncated_frames: u64,
    /// The highest seq any child acknowledged.
    highest_ack: u64,
    /// The last seq on disk at the end.
    last_seq: u64,
    /// Records the parent wrote itself.
    parent_records: u64,
}

/// What the directory must hold, whatever happens next.
#[derive(Debug, Default)]
struct Expected {
    /// Every seq up to this one was acknowledged by a child or stored by the parent's
    /// clean shutdown.
    durable_through: u64,
    /// The parent's records: seq and marker (`tokens_used`).
    parent: Vec<(u64, u64)>,
    /// The last record a reopen checked: every record up to it was decoded and found
    /// in order.
    checked: Option<Record>,
}

/// Opens `dir` as the parent, records a few events and shuts down; then `kills` times:
/// a child records until it is killed, and the parent reopens, checks and records.
fn crash_cycles(dir: &Path, seed: u64, kills: usize) -> common::Result<Summary> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut expected = Expected::default();
    let mut summary = Summary::default();
    // The parent creates the directory (and its key), so every child finds it whole.
    let collector = Collector::new(durable(dir))?;
    parent_turn(&collector, 0, &mut rng, &mut expected)?;
    drop(collector);
    for kill in 1..=kills {
        let mut child = ChildWriter::spawn(dir, rng.u64(..))?;
        let first = child
            .first_ack(FIRST_ACK_PATIENCE)
            .map_err(|e| format!("kill {kill}: {e}"))?;
        if first.last_seq <= expected.durable_through {
            return Err(format!(
                "kill {kill}: the child's first acknowledged seq {} does not follow the \
                 last seq already on disk, {}: seqs repeat",
                first.last_seq, expected.durable_through
            )
            .into());
        }
        thread::sleep(Duration::from_millis(rng.u64(KILL_DELAY_MS)));
        let acks = child.kill().map_err(|e| format!("kill {kill}: {e}"))?;
        let mut highest = 0;
        for ack in &acks {
            if ack.synced_through < ack.last_seq {
                return Err(format!(
                    "kill {kill}: after a completed flush the child had stored through seq \
                     {} but synced only through seq {}",
                    ack.last_seq, ack.synced_through
                )
                .into());
            }
            if ack.last_seq <= highest {
                return Err(format!(
                    "kill {kill}: the child acknowledged seq {} after seq {highest}",
                    ack.last_seq
                )
                .into());
            }
            highest = ack.last_seq;
        }
        expected.durable_through = expected.durable_through.max(highest);
        summary.highest_ack = summary.highest_ack.max(highest);

        let full = kill % FULL_CHECK_EVERY == 0 || kill == kills;
        let (collector, recovery) =
            reopen_and_check(dir, &mut expected, full).map_err(|e| format!("kill {kill}: {e}"))?;
        summary.kills += 1;
        if recovery.truncated_bytes > 0 {
            summary.truncations += 1;
        }
        summary.truncated_bytes += recovery.truncated_bytes;
        summary.truncated_frames += recovery.truncated_frames;
        parent_turn(&collector, kill, &mut rng, &mut expected)
            .map_err(|e| format!("kill {kill}: the parent's turn: {e}"))?;
        drop(collector);
    }
    summary.last_seq = expected.durable_through;
    summary.parent_records = expected.parent.len() as u64;
    Ok(summary)
}

/// The parent records a few events of its own, flushes, checks they follow on from what
/// is on disk, and shuts down cleanly.
fn parent_turn(
    collector: &Collector,
    kill: usize,
    rng: &mut fastrand::Rng,
    expected: &mut Expected,
) -> common::Result<()> {
    let before = collector.stats().last_seq.unwrap_or(0);
    let n = rng.u64(PARENT_EVENTS);
    let markers: Vec<u64> = (1..=n).map(|i| kill as u64 * 1_000 + i).collect();
    for &marker in &markers {
        collector.record(used_by("parent", marker))?;
    }
    collector.flush(PATIENCE)?;
    let stats = collector.stats();
    assert_eq!(
        stats.last_seq,
        Some(before + n),
        "the parent's records do not follow on from seq {before}"
    );
    let storage = stats.storage.ok_or("no storage stats")?;
    assert_eq!(
        storage.synced_through_seq,
        Some(before + n),
        "a completed flush did not sync the parent's records"
    );
    for (i, &marker) in markers.iter().enumerate() {
        expected.parent.push((before + 1 + i as u64, marker));
    }
    let report = collector.shutdown(PATIENCE)?;
    assert_eq!(report.unresolved, 0, "{report:?}");
    expected.durable_through = before + n;
    Ok(())
}

/// Reads the killed writer's directory, reopens it, and checks what recovery reports and
/// what is on disk against `expected`: every record when `full`, else those after
/// `expected.checked`. Returns the open collector and its recovery report.
fn reopen_and_check(
    dir: &Path,
    expected: &mut Expected,
    full: bool,
) -> common::Result<(Collector, arbiter_events::RecoveryReport)> {
    // As the killed writer left it: whole frames, then at most a torn tail.
    let before = DataDir::open(dir)?.verify(|_| {})?;
    if before.is_damaged() {
        return Err(
            format!("the killed writer left damage, not just a torn tail: {before:#?}").into(),
        );
    }
    let tail: u64 = before
        .segments
        .iter()
        .map(|s| s.incomplete_tail_bytes)
        .sum();

    let collector = Collector::new(durable(dir))?;
    let stats = collector.stats();
    let storage = stats.storage.clone().ok_or("no storage stats")?;
    let recovery = storage.recovery.clone();
    assert!(recovery.damage.is_empty(), "{recovery:#?}");
    assert_eq!(
        recovery.records, before.records,
        "recovery kept other records than the whole frames on disk: {recovery:#?}"
    );
    assert_eq!(
        recovery.truncated_bytes, tail,
        "recovery cut other bytes than the torn tail on disk: {recovery:#?}"
    );
    if recovery.truncated_frames > 0 {
        assert!(recovery.truncated_bytes > 0, "{recovery:#?}");
    }
    assert_eq!(stats.recovered, recovery.records, "{stats:#?}");

    let checked = if full { None } else { expected.checked.take() };
    let request = ExportRequest::after(
        checked
            .as_ref()
            .map_or(Cursor::START, |r| Cursor::after_seq(r.seq)),
    );
    let export = DataDir::open(dir)?.export(&request)?;
    assert_eq!(
        export.gap(),
        None,
        "nothing is pruned, yet: {:?}",
        export.gap()
    );
    assert_eq!(export.header().key_id, stats.key_id);
    let last = check_records(&export, checked.as_ref(), &expected.parent)?;
    let last_seq = last.as_ref().map_or(0, |r| r.seq);
    if last_seq < expected.durable_through {
        return Err(format!(
            "acknowledged records are missing: seqs {}..={} (the disk ends at seq {last_seq})",
            last_seq + 1,
            expected.durable_through
        )
        .into());
    }
    assert_eq!(recovery.records, last_seq, "{recovery:#?}");
    assert_eq!(stats.last_seq, Some(last_seq).filter(|&l| l > 0));
    assert_eq!(storage.records, last_seq, "{storage:#?}");
    assert_eq!(storage.first_seq, Some(1).filter(|_| last_seq > 0));

    // After recovery: no damage, no tail, every record where it was.
    let after = DataDir::open(dir)?.verify(|_| {})?;
    check_verified(&after, last_seq)?;
    // The recovered store serves the very records the disk does (the trailer holds the
    // count and a BLAKE3 of the records' bytes).
    let from_memory = collector.export(&request)?;
    assert_eq!(
        (from_memory.header(), from_memory.trailer()),
        (export.header(), export.trailer()),
        "the recovered collector exports other records than the data directory"
    );
    expected.checked = last;
    Ok((collector, recovery))
}

/// Decodes every record of `export` and checks they follow on from `previous` (or run
/// from seq 1) one seq at a time with non-decreasing times, and that each of the
/// parent's records among them is the one it wrote. Returns the last record, or
/// `previous` when there is none.
fn check_records(
    export: &Export,
    previous: Option<&Record>,
    parent: &[(u64, u64)],
) -> common::Result<Option<Record>> {
    let mut previous = previous.cloned();
    let first = previous.as_ref().map_or(1, |p| p.seq + 1);
    let mut parent = parent.iter().skip_while(|(seq, _)| *seq < first).peekable();
    for record in export.records() {
        let record = record.map_err(|e| format!("a record on disk does not decode: {e}"))?;
        let want = previous.as_ref().map_or(1, |p| p.seq + 1);
        if record.seq != want {
            return Err(format!(
                "seqs on disk are not contiguous: seq {} where seq {want} should be",
                record.seq
            )
            .into());
        }
        if let Some(p) = &previous
            && record.time < p.time
        {
            return Err(format!(
                "time goes back from seq {} ({}) to seq {} ({})",
                p.seq, p.time, record.seq, record.time
            )
            .into());
        }
        if let Some(&(seq, marker)) = parent.next_if(|(seq, _)| *seq == record.seq) {
            match &record.event {
                Event::ThinkingBudgetUsed(used) if used.tokens_used == marker => {}
                _ => {
                    return Err(format!(
                        "seq {seq} is not the parent's record {marker}: {record:?}"
                    )
                    .into());
                }
            }
        }
        previous = Some(record);
    }
    if let Some((seq, marker)) = parent.next() {
        return Err(format!("the parent's record {marker} (seq {seq}) is missing").into());
    }
    Ok(previous)
}

/// Checks a verification after recovery: undamaged, no tail, seqs `1..=last`.
fn check_verified(report: &VerifyReport, last: u64) -> common::Result<()> {
    if report.is_damaged() {
        return Err(format!("damage after recovery: {report:#?}").into());
    }
    if let Some(s) = report.segments.iter().find(|s| s.incomplete_tail_bytes > 0) {
        return Err(format!("a tail is left after recovery: {s:#?}").into());
    }
    assert_eq!(report.records, last, "{report:#?}");
    assert_eq!(report.seqs, Some((1, last)).filter(|_| last > 0));
    Ok(())
}

/// One line a child printed after a completed flush.
#[derive(Debug, Clone, Copy)]
struct Ack {
    last_seq: u64,
    synced_through: u64,
}

impl Ack {
    /// Reads `ACK <last_seq> <synced_through_seq>`; anything else (the test harness
    /// prints its own lines) is `None`.
    fn parse(line: &str) -> Option<Ack> {
        let mut words = line.split_whitespace();
        if words.next()? != ACK {
            return None;
        }
        let last_seq = words.next()?.parse().ok()?;
        let synced_through = words.next()?.parse().ok()?;
        words.next().is_none().then_some(Ack {
            last_seq,
            synced_through,
        })
    }
}

/// A child writer: this test binary running only `child_writer` on a directory. Killed
/// when dropped, so a failing test leaves no process behind.
struct ChildWriter {
    process: std::process::Child,
    /// Each acknowledgement as it is read.
    acks: Receiver<Ack>,
    /// Every acknowledgement, once stdout closes.
    stdout: Option<JoinHandle<Vec<Ack>>>,
    stderr: Option<JoinHandle<String>>,
}

impl ChildWriter {
    fn spawn(dir: &Path, seed: u64) -> common::Result<ChildWriter> {
        let exe: PathBuf = std::env::current_exe()?;
        let mut process = Command::new(exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .env(CHILD_SEED_ENV, seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = process.stdout.take().ok_or("no stdout")?;
        let mut stderr = process.stderr.take().ok_or("no stderr")?;
        let (tx, acks) = mpsc::channel();
        let stdout = thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ack) = Ack::parse(&line) {
                    all.push(ack);
                    let _ = tx.send(ack);
                }
            }
            all
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(ChildWriter {
            process,
            acks,
            stdout: Some(stdout),
            stderr: Some(stderr),
        })
    }

    /// Waits for the first acknowledgement.
    fn first_ack(&mut self, patience: Duration) -> common::Result<Ack> {
        match self.acks.recv_timeout(patience) {
            Ok(ack) => Ok(ack),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("no acknowledgement from the child in {patience:?}").into())
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.died()),
        }
    }

    /// Kills the child with SIGKILL; returns every acknowledgement it printed.
    fn kill(mut self) -> common::Result<Vec<Ack>> {
        if let Some(status) = self.process.try_wait()? {
            return Err(format!("the child exited by itself ({status}): {}", self.died()).into());
        }
        self.process.kill()?;
        let status = self.process.wait()?;
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "the child was not killed by SIGKILL: {status}"
        );
        let acks = self
            .stdout
            .take()
            .ok_or("stdout read twice")?
            .join()
            .map_err(|_| "the stdout reader panicked")?;
        Ok(acks)
    }

    /// Why the child is gone: its exit status and what it wrote to stderr.
    fn died(&mut self) -> common::Error {
        let _ = self.process.kill();
        let status = match self.process.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        let stderr = self
            .stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        format!("the child is gone ({status}); its stderr:\n{stderr}").into()
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
