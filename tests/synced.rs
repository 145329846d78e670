//! Readers stop at the synced position: a reader in another process never sees a record
//! a machine crash could take back, and after any loss of the log's tail no seq a
//! reader or consumer saw is given to another record; the lost seqs are a `damaged` gap.
//!
//! The reader in another process is this test binary run again with
//! `--exact child_reader` and [`READER_ENV`] naming the directory; the writer killed
//! with SIGKILL is the same binary with `--exact child_writer` and [`WRITER_ENV`].
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbiter_events::{
    AnonymizationKey, BuildError, Collector, Config, Cursor, DataDir, Durability, ExportRequest,
    Gap, GapReason, ManualClock, OnDamage, Record, StorageError,
};
use tempfile::tempdir;

use common::{PATIENCE, T0, TestResult, record_all, records, used};

/// Names the directory a child reader reads; absent, `child_reader` returns at once.
const READER_ENV: &str = "ARBITER_SYNCED_READER_DIR";
/// Names the directory a child writer writes; absent, `child_writer` returns at once.
const WRITER_ENV: &str = "ARBITER_SYNCED_WRITER_DIR";
const KEY: [u8; 32] = [5; 32];
const SMALL_SEGMENT: u64 = 4096;
const SEGMENT_HEADER: u64 = 32;
/// A child writer stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

fn config(dir: &Path, edit: impl FnOnce(&mut Config)) -> Config {
    common::config_with(|c| {
        c.storage.data_dir = Some(dir.to_owned());
        c.storage.segment_bytes = SMALL_SEGMENT;
        edit(c);
    })
}

fn open(dir: &Path, edit: impl FnOnce(&mut Config)) -> Result<Collector, BuildError> {
    let config = config(dir, edit);
    let build = || {
        Collector::builder()
            .config(config.clone())
            .clock(ManualClock::new(T0))
            .key(AnonymizationKey::from_bytes(KEY))
            .build()
    };
    // Other tests here spawn child processes: between fork and exec a child holds a copy
    // of every open descriptor, the closed collector's lock among them, for a moment.
    for _ in 0..100 {
        match build() {
            Err(BuildError::Storage(StorageError::Locked { .. })) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
    build()
}

/// Every record and gap of `dir` from `after` on, by successive exports.
fn pull(dir: &Path, after: Cursor) -> common::Result<(Vec<Record>, Vec<Gap>, Cursor)> {
    let data = DataDir::open(dir)?;
    let (mut all, mut gaps, mut cursor) = (Vec::new(), Vec::new(), after);
    for _ in 0..10_000 {
        let e = data.export(&ExportRequest::after(cursor))?;
        gaps.extend(e.gap());
        all.extend(records(&e)?);
        if e.next_cursor() == cursor {
            return Ok((all, gaps, cursor));
        }
        cursor = e.next_cursor();
    }
    Err("the cursor kept moving for 10 000 exports".into())
}

/// The child reader: prints `SEEN <count> <last seq>` of what it can export.
#[test]
fn child_reader() -> TestResult {
    let Some(dir) = std::env::var_os(READER_ENV) else {
        return Ok(());
    };
    let (got, _, _) = pull(Path::new(&dir), Cursor::START)?;
    let last = got.last().map_or(0, |r| r.seq);
    println!("SEEN {} {last}", got.len());
    Ok(())
}

/// Runs [`child_reader`] on `dir` in another process; returns (count, last seq).
fn read_in_another_process(dir: &Path) -> common::Result<(u64, u64)> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--exact", "child_reader", "--nocapture", "--test-threads=1"])
        .env(READER_ENV, dir)
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split_once("SEEN ").map(|(_, rest)| rest))
        .ok_or_else(|| format!("no answer from the reader: {text} {:?}", out.status))?;
    let mut words = line.split_whitespace();
    let count = words.next().ok_or("no count")?.parse()?;
    let last = words.next().ok_or("no last seq")?.parse()?;
    Ok((count, last))
}

#[test]
fn smoke() -> TestResult {
    let dir = tempdir()?;
    let collector = open(dir.path(), |_| {})?;
    record_all(&collector, 1..=3)?;
    assert_eq!(read_in_another_process(dir.path())?, (3, 3));
    let st = collector.stats().storage.ok_or("no storage stats")?;
    assert!(!st.unsynced);
    assert_eq!(st.high_water_seq, 3);
    Ok(())
}

#[test]
fn an_unsynced_append_is_invisible_to_another_process_until_synced() -> TestResult {
    let dir = tempdir()?;
    // Synced only by a flush: the interval never comes during the test.
    let collector = open(dir.path(), |c| {
        c.storage.durability = Durability::Interval(Duration::from_secs(3600));
    })?;
    for m in 1..=10 {
        collector.record(used(m))?;
    }
    // Wait until the writer has appended them (without a flush, so without a sync).
    let started = Instant::now();
    while collector.stats().storage.map_or(0, |s| s.records) < 10 {
        if started.elapsed() > PATIENCE {
            return Err("the writer did not append the records".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = collector.stats().storage.ok_or("no storage stats")?;
    assert_eq!(st.synced_through_seq, None, "{st:#?}");
    assert_eq!(read_in_another_process(dir.path())?, (0, 0));
    // Nor can a consumer commit past the synced position.
    let data = DataDir::open(dir.path())?;
    assert!(matches!(
        data.commit("rl", Cursor::after_seq(5)),
        Err(StorageError::CursorAhead { .. })
    ));
    // Verify does not call the unsynced frames damage.
    assert!(!data.verify(|_| {})?.is_damaged());

    collector.flush(PATIENCE)?;
    assert_eq!(read_in_another_process(dir.path())?, (10, 10));
    data.commit("rl", Cursor::after_seq(10))?;
    Ok(())
}

#[test]
fn buffered_exports_and_stats_say_records_are_unsynced() -> TestResult {
    let dir = tempdir()?;
    let collector = open(dir.path(), |c| c.storage.durability = Durability::Buffered)?;
    record_all(&collector, 1..=4)?;
    let st = collector.stats().storage.ok_or("no storage stats")?;
    assert!(st.unsynced, "{st:#?}");
    let export = DataDir::open(dir.path())?.export(&ExportRequest::default())?;
    assert_eq!(export.header().count, 4);
    assert!(export.header().unsynced);
    collector.shutdown(PATIENCE)?;
    // Closing syncs: what is on disk now is synced.
    let export = DataDir::open(dir.path())?.export(&ExportRequest::default())?;
    assert!(!export.header().unsynced);
    // Under a syncing policy an export never holds unsynced records.
    let collector = open(dir.path(), |_| {})?;
    record_all(&collector, 5..=6)?;
    let export = DataDir::open(dir.path())?.export(&ExportRequest::default())?;
    assert_eq!(export.header().count, 6);
    assert!(!export.header().unsynced);
    Ok(())
}

#[test]
fn export_synced_never_goes_past_the_synced_position_whatever_the_durability() -> TestResult {
    let dir = tempdir()?;
    let collector = open(dir.path(), |c| c.storage.durability = Durability::Buffered)?;
    record_all(&collector, 1..=4)?;
    let data = DataDir::open(dir.path())?;
    assert_eq!(data.synced_through()?, 0);
    let export = data.export_synced(&ExportRequest::default())?;
    assert_eq!(
        (export.header().count, export.next_cursor()),
        (0, Cursor::START)
    );
    collector.shutdown(PATIENCE)?;
    assert_eq!(data.synced_through()?, 4);
    let export = data.export_synced(&ExportRequest::default())?;
    assert_eq!(export.header().count, 4);
    assert!(!export.header().unsynced);
    // Under a syncing policy it is the export itself, byte for byte.
    let collector = open(dir.path(), |_| {})?;
    record_all(&collector, 5..=9)?;
    let request = ExportRequest::after(Cursor::after_seq(2)).limit(5);
    let synced = data.export_synced(&request)?;
    assert_eq!(synced.to_msgpack(), data.export(&request)?.to_msgpack());
    assert_eq!(synced.next_cursor(), Cursor::after_seq(7));
    collector.shutdown(PATIENCE)?;
    Ok(())
}

/// The child writer: records batches under `every_batch`, flushing each, until killed.
#[test]
fn child_writer() -> TestResult {
    let Some(dir) = std::env::var_os(WRITER_ENV) else {
        return Ok(());
    };
    let collector = Collector::builder()
        .config(config(Path::new(&dir), |_| {}))
        .key(AnonymizationKey::from_bytes(KEY))
        .build()?;
    let started = Instant::now();
    let mut marker = 0;
    while started.elapsed() < CHILD_LIFETIME {
        for _ in 0..20 {
            marker += 1;
            collector.record(used(marker))?;
        }
        collector.flush(PATIENCE)?;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "FLUSHED {marker}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Killed (SIGKILL) when dropped, so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The published synced position (active segment's first seq, synced bytes): the
/// valid slot of `synced` with the highest generation.
fn synced_position(dir: &Path) -> common::Result<(u64, u64)> {
    let bytes = std::fs::read(dir.join("synced"))?;
    let word = |slot: &[u8], at: usize| -> common::Result<u64> {
        Ok(u64::from_le_bytes(slot[at..at + 8].try_into()?))
    };
    let mut best: Option<(u64, u64, u64)> = None;
    for slot in bytes.chunks_exact(64) {
        let crc = u32::from_le_bytes(slot[60..64].try_into()?);
        if &slot[0..8] != b"ARBEVSYN" || crc != crc32fast::hash(&slot[0..60]) {
            continue;
        }
        let generation = word(slot, 8)?;
        if best.is_none_or(|(g, _, _)| generation > g) {
            best = Some((generation, word(slot, 16)?, word(slot, 24)?));
        }
    }
    let (_, segment, offset) = best.ok_or("no valid slot")?;
    Ok((segment, offset))
}

#[test]
fn a_machine_crash_never_takes_back_a_seq_a_reader_saw() -> TestResult {
    let dir = tempdir()?;
    let mut child = Child(
        Command::new(std::env::current_exe()?)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // Read while it writes, in another process, until a few hundred records were seen.
    let mut seen: Vec<Record> = Vec::new();
    let mut cursor = Cursor::START;
    let started = Instant::now();
    while seen.len() < 300 {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("only {} records seen in 30 s", seen.len()).into());
        }
        // One flush at a time (the harness prints lines of its own).
        loop {
            match lines.next() {
                Some(line) => {
                    if line?.contains("FLUSHED") {
                        break;
                    }
                }
                None => return Err("the writer exited".into()),
            }
        }
        let (got, gaps, next) = pull(dir.path(), cursor)?;
        assert!(gaps.is_empty(), "{gaps:?}");
        seen.extend(got);
        cursor = next;
    }
    drop(child);

    // A machine crash loses what was not synced: everything after the synced position.
    let (segment, offset) = synced_position(dir.path())?;
    for path in common::segment_files(dir.path())? {
        let name = path.file_stem().and_then(|s| s.to_str()).ok_or("name")?;
        let first: u64 = name.parse()?;
        if first > segment {
            std::fs::remove_file(&path)?;
        } else if first == segment {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(offset)?;
        }
    }
    // Nothing a reader saw was lost: the directory opens under `fail` and holds it all.
    let collector = open(dir.path(), |c| c.storage.on_damage = OnDamage::Fail)?;
    let (after, _, _) = pull(dir.path(), Cursor::START)?;
    let last_seen = seen.last().map_or(0, |r| r.seq);
    let kept: Vec<&Record> = after.iter().filter(|r| r.seq <= last_seen).collect();
    assert_eq!(kept.len(), seen.len());
    assert!(kept.iter().zip(&seen).all(|(a, b)| *a == b));
    record_all(&collector, 1_000_000..=1_000_002)?;
    let (fresh, _, _) = pull(dir.path(), Cursor::after_seq(last_seen))?;
    assert!(fresh.iter().all(|r| r.seq > last_seen));
    Ok(())
}

/// Ways of losing the end of the log.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// The last segment cut at a frame boundary, three frames short.
    Boundary,
    /// The last segment cut inside its last frame.
    MidFrame,
    /// The last segment deleted.
    Deleted,
    /// The last segment's frames overwritten with zeros (its length kept).
    Zeroed,
}

fn lose_tail(dir: &Path, loss: Loss) -> TestResult {
    let last: PathBuf = common::segment_files(dir)?.pop().ok_or("no segment")?;
    let frames = common::frame_ranges(&last)?;
    let file = std::fs::OpenOptions::new().write(true).open(&last)?;
    match loss {
        Loss::Boundary => {
            let keep = frames.len().saturating_sub(3);
            file.set_len(frames.get(keep).ok_or("too few frames")?.start)?;
        }
        Loss::MidFrame => {
            let f = frames.last().ok_or("no frame")?;
            file.set_len(f.start + (f.end - f.start) / 2)?;
        }
        Loss::Deleted => {
            drop(file);
            std::fs::remove_file(&last)?;
        }
        Loss::Zeroed => {
            let len = std::fs::metadata(&last)?.len();
            file.set_len(SEGMENT_HEADER)?;
            file.set_len(len)?;
        }
    }
    Ok(())
}

#[test]
fn no_way_of_losing_the_tail_reuses_a_seq_a_consumer_saw() -> TestResult {
    for loss in [Loss::Boundary, Loss::MidFrame, Loss::Deleted, Loss::Zeroed] {
        let dir = tempdir()?;
        let collector = open(dir.path(), |_| {})?;
        record_all(&collector, 1..=120)?;
        // Both consumers pulled: `rl` everything, `late` the first ten.
        let data = DataDir::open(dir.path())?;
        let (seen, _, through) = pull(dir.path(), Cursor::START)?;
        assert_eq!(through, Cursor::after_seq(120));
        data.commit("rl", through)?;
        data.commit("late", Cursor::after_seq(10))?;
        collector.shutdown(PATIENCE)?;
        assert!(common::segment_files(dir.path())?.len() >= 2, "{loss:?}");

        lose_tail(dir.path(), loss)?;
        // `verify` and the writer agree: damaged, and refused by default.
        let report = data.verify(|_| {})?;
        assert!(report.is_damaged(), "{loss:?}: {report:#?}");
        let refused = open(dir.path(), |_| {});
        assert!(
            matches!(
                refused,
                Err(BuildError::Storage(StorageError::Damaged { .. }))
            ),
            "{loss:?}: {refused:?}"
        );

        let collector = open(dir.path(), |c| c.storage.on_damage = OnDamage::Truncate)?;
        let st = collector.stats().storage.ok_or("no storage stats")?;
        assert!(!st.recovery.damage.is_empty(), "{loss:?}: {st:#?}");
        record_all(&collector, 500..=502)?;
        // No seq `rl` saw is given to another record.
        let (fresh, gaps, _) = pull(dir.path(), Cursor::after_seq(120))?;
        // (Seqs reserved for set-aside bytes show as a damaged gap.)
        assert!(
            gaps.iter().all(|g| g.reason == GapReason::Damaged),
            "{loss:?}: {gaps:?}"
        );
        assert_eq!(fresh.len(), 3, "{loss:?}");
        assert!(fresh.iter().all(|r| r.seq > 120), "{loss:?}: {fresh:?}");
        // The records still there are the ones seen, and `late` hears of the lost ones
        // as damaged.
        let (again, gaps, _) = pull(dir.path(), Cursor::after_seq(10))?;
        let lost: Vec<u64> = seen
            .iter()
            .map(|r| r.seq)
            .filter(|s| *s > 10 && !again.iter().any(|r| r.seq == *s))
            .collect();
        assert!(!lost.is_empty(), "{loss:?}");
        for r in again.iter().filter(|r| r.seq <= 120) {
            assert_eq!(Some(r), seen.iter().find(|s| s.seq == r.seq), "{loss:?}");
        }
        for seq in lost {
            assert!(
                gaps.iter()
                    .any(|g| (g.from_seq..=g.to_seq).contains(&seq)
                        && g.reason == GapReason::Damaged),
                "{loss:?}: seq {seq} lost without a damaged gap: {gaps:?}"
            );
        }
        collector.shutdown(PATIENCE)?;
        // Once set aside, the directory is whole again.
        assert!(!data.verify(|_| {})?.is_damaged(), "{loss:?}");
    }
    Ok(())
}

#[test]
fn a_missing_segment_or_pruned_log_is_damage_and_its_gap_says_so() -> TestResult {
    // A segment renamed away from the middle.
    let dir = tempdir()?;
    let collector = open(dir.path(), |_| {})?;
    record_all(&collector, 1..=120)?;
    collector.shutdown(PATIENCE)?;
    let segments = common::segment_files(dir.path())?;
    assert!(segments.len() >= 3);
    let middle = &segments[1];
    std::fs::rename(middle, middle.with_extension("seg.old"))?;
    let data = DataDir::open(dir.path())?;
    let report = data.verify(|_| {})?;
    assert!(report.is_damaged(), "{report:#?}");
    assert_eq!(report.missing.len(), 1, "{report:#?}");
    let (_, gaps, _) = pull(dir.path(), Cursor::START)?;
    assert!(
        !gaps.is_empty() && gaps.iter().all(|g| g.reason == GapReason::Damaged),
        "{gaps:?}"
    );

    // pruned.json deleted after a clear: the cleared seqs are unexplained.
    let dir = tempdir()?;
    let collector = open(dir.path(), |_| {})?;
    record_all(&collector, 1..=20)?;
    collector.clear();
    record_all(&collector, 21..=25)?;
    collector.shutdown(PATIENCE)?;
    let data = DataDir::open(dir.path())?;
    assert!(!data.verify(|_| {})?.is_damaged());
    let (_, gaps, _) = pull(dir.path(), Cursor::START)?;
    assert!(
        gaps.iter().all(|g| g.reason == GapReason::Cleared),
        "{gaps:?}"
    );
    std::fs::remove_file(dir.path().join("pruned.json"))?;
    let report = data.verify(|_| {})?;
    assert!(report.is_damaged(), "{report:#?}");
    assert_eq!(report.missing, [(1, 20)]);
    let (_, gaps, _) = pull(dir.path(), Cursor::START)?;
    assert!(
        !gaps.is_empty() && gaps.iter().all(|g| g.reason == GapReason::Damaged),
        "{gaps:?}"
    );
    Ok(())
}
