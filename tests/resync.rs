//! Damage inside a segment sets aside only the damaged span: recovery resynchronizes at
//! the next valid frame that continues the sequence, keeps every frame after it, and a
//! consumer sees a `damaged` gap for exactly the seqs the span held. `verify` finds the
//! same span and the same resumed position.

mod common;

use std::ops::Range;
use std::path::{Path, PathBuf};

use arbiter_events::{
    AnonymizationKey, BuildError, Collector, Config, Cursor, DataDir, ExportRequest, Gap,
    GapReason, ManualClock, OnDamage, StorageError,
};
use tempfile::tempdir;

use common::{PATIENCE, T0, TestResult, used_by};

const KEY: [u8; 32] = [21; 32];
const SEGMENT_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 36;
const RECORDS: u64 = 200;

fn config(dir: &Path, on_damage: OnDamage) -> Config {
    common::config_with(|c| {
        c.storage.data_dir = Some(dir.to_owned());
        c.storage.on_damage = on_damage;
    })
}

fn open(dir: &Path, on_damage: OnDamage) -> Result<Collector, BuildError> {
    Collector::builder()
        .config(config(dir, on_damage))
        .clock(ManualClock::new(T0))
        .key(AnonymizationKey::from_bytes(KEY))
        .build()
}

/// Writes `RECORDS` records into one segment of `dir`; returns its path.
fn write(dir: &Path) -> common::Result<PathBuf> {
    let collector = open(dir, OnDamage::Fail)?;
    for m in 1..=RECORDS {
        collector.record(used_by(format!("task-{m}"), m))?;
    }
    collector.flush(PATIENCE)?;
    collector.shutdown(PATIENCE)?;
    let [segment] = common::segment_files(dir)?
        .try_into()
        .map_err(|f| format!("{f:?}"))?;
    Ok(segment)
}

/// Flips one byte in the payload of the frame of `seq` (seq 1 is frame 0).
fn flip(path: &Path, frames: &[Range<u64>], seq: u64) -> TestResult {
    let frame = &frames[usize::try_from(seq - 1)?];
    let mut bytes = std::fs::read(path)?;
    bytes[usize::try_from(frame.start + FRAME_HEADER + 3)?] ^= 0x20;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Successive exports from the start: every seq and every gap.
fn pull(data: &DataDir) -> common::Result<(Vec<u64>, Vec<Gap>)> {
    let (mut seqs, mut gaps) = (Vec::new(), Vec::new());
    let mut cursor = Cursor::START;
    for _ in 0..1000 {
        let export = data.export(&ExportRequest::after(cursor))?;
        gaps.extend(export.gap());
        seqs.extend(common::seqs(&export)?);
        if export.next_cursor() == cursor {
            return Ok((seqs, gaps));
        }
        cursor = export.next_cursor();
    }
    Err("the exports never stopped".into())
}

fn all_but(lost: &[u64]) -> Vec<u64> {
    (1..=RECORDS).filter(|s| !lost.contains(s)).collect()
}

#[test]
fn smoke() -> TestResult {
    let root = tempdir()?;
    let segment = write(root.path())?;
    let frames = common::frame_ranges(&segment)?;
    flip(&segment, &frames, 100)?;
    let collector = open(root.path(), OnDamage::Truncate)?;
    let report = collector.stats().storage.ok_or("no storage")?.recovery;
    assert_eq!(report.records, RECORDS - 1, "{report:#?}");
    collector.shutdown(PATIENCE)?;
    Ok(())
}

#[test]
fn a_flipped_byte_loses_only_its_frame() -> TestResult {
    let root = tempdir()?;
    let segment = write(root.path())?;
    let frames = common::frame_ranges(&segment)?;
    let original = std::fs::read(&segment)?;
    flip(&segment, &frames, 100)?;
    let damaged = &frames[99];
    let resumed = frames[100].start;

    // `verify` finds the span and where valid frames resume, and counts what follows.
    let report = DataDir::open(root.path())?.verify(|_| {})?;
    assert!(report.is_damaged());
    let [seg] = report.segments.as_slice() else {
        panic!("one segment expected: {report:#?}");
    };
    assert_eq!(seg.damage.as_ref().map(|d| d.0), Some(damaged.start));
    assert_eq!(seg.resumed, Some((resumed, 101)));
    assert_eq!(seg.lost_seqs, 1);
    assert_eq!(report.records, RECORDS - 1);

    // The writer refuses under `fail`, naming the frame.
    let refused = open(root.path(), OnDamage::Fail);
    assert!(
        matches!(&refused, Err(BuildError::Storage(StorageError::Damaged { offset, expected_seq: 100, .. })) if *offset == damaged.start),
        "{refused:?}"
    );

    // Under `truncate` only the frame goes aside; the rest is kept.
    let collector = open(root.path(), OnDamage::Truncate)?;
    let st = collector.stats().storage.ok_or("no storage")?;
    let [damage] = st.recovery.damage.as_slice() else {
        panic!("one damage expected: {:#?}", st.recovery);
    };
    assert_eq!(damage.segment, segment);
    assert_eq!(damage.offset, damaged.start);
    assert_eq!(damage.expected_seq, 100);
    assert_eq!(damage.set_aside_bytes, damaged.end - damaged.start);
    assert_eq!(damage.resumed_offset, Some(resumed));
    assert_eq!(damage.resumed_seq, Some(101));
    assert_eq!(st.recovery.records, RECORDS - 1);
    // The set-aside file holds exactly the damaged span's bytes.
    let aside = std::fs::read(damage.set_aside_to.as_ref().ok_or("nothing set aside")?)?;
    let span = usize::try_from(damaged.start)?..usize::try_from(damaged.end)?;
    assert_eq!(aside.len(), span.len());
    assert_ne!(aside, original[span.clone()], "the flip is in the copy");
    let differing = aside
        .iter()
        .zip(&original[span])
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 1);
    assert_eq!(std::fs::metadata(&segment)?.len(), damaged.start);
    let moved = damage.resumed_in.as_ref().ok_or("nothing moved")?;
    assert_eq!(
        std::fs::read(moved)?[usize::try_from(SEGMENT_HEADER)?..],
        original[usize::try_from(resumed)?..]
    );

    // A consumer gets every other record, and a `damaged` gap for exactly seq 100.
    let (seqs, gaps) = pull(&DataDir::open(root.path())?)?;
    assert_eq!(seqs, all_but(&[100]));
    assert_eq!(
        gaps,
        common::gap(100, 100, GapReason::Damaged)
            .into_iter()
            .collect::<Vec<_>>()
    );
    // The collector's own exports agree.
    let export = collector.export(&ExportRequest::after(Cursor::after_seq(99)))?;
    assert_eq!(export.gap(), common::gap(100, 100, GapReason::Damaged));
    // The next record takes a fresh seq.
    collector.record(used_by("task-next", 0))?;
    collector.flush(PATIENCE)?;
    assert_eq!(collector.stats().last_seq, Some(RECORDS + 1));
    collector.shutdown(PATIENCE)?;

    // Afterwards the directory verifies intact, and reopens with nothing new to repair.
    let report = DataDir::open(root.path())?.verify(|_| {})?;
    assert!(!report.is_damaged(), "{report:#?}");
    assert_eq!(report.records, RECORDS);
    let again = open(root.path(), OnDamage::Fail)?;
    let st = again.stats().storage.ok_or("no storage")?;
    assert!(st.recovery.damage.is_empty(), "{:#?}", st.recovery);
    again.shutdown(PATIENCE)?;
    Ok(())
}

#[test]
fn two_damaged_spans_lose_only_their_frames() -> TestResult {
    let root = tempdir()?;
    let segment = write(root.path())?;
    let frames = common::frame_ranges(&segment)?;
    flip(&segment, &frames, 40)?;
    flip(&segment, &frames, 41)?;
    flip(&segment, &frames, 150)?;
    let report = DataDir::open(root.path())?.verify(|_| {})?;
    assert_eq!(report.records, RECORDS - 3);
    assert_eq!(report.segments.iter().map(|s| s.lost_seqs).sum::<u64>(), 3);

    let collector = open(root.path(), OnDamage::Truncate)?;
    let st = collector.stats().storage.ok_or("no storage")?;
    let spans: Vec<_> = st
        .recovery
        .damage
        .iter()
        .map(|d| (d.expected_seq, d.resumed_seq))
        .collect();
    assert_eq!(spans, [(40, Some(42)), (150, Some(151))]);
    collector.shutdown(PATIENCE)?;
    let (seqs, gaps) = pull(&DataDir::open(root.path())?)?;
    assert_eq!(seqs, all_but(&[40, 41, 150]));
    let expected: Vec<Gap> = [(40, 41), (150, 150)]
        .into_iter()
        .filter_map(|(f, t)| common::gap(f, t, GapReason::Damaged))
        .collect();
    assert_eq!(gaps, expected);
    Ok(())
}

/// A crash after the frames past the span were written to their own segment but before
/// the damaged one was cut: the next recovery splits it again, the same way, and no
/// record is loaded twice.
#[test]
fn an_interrupted_split_is_done_again() -> TestResult {
    let root = tempdir()?;
    let segment = write(root.path())?;
    let frames = common::frame_ranges(&segment)?;
    flip(&segment, &frames, 100)?;
    let damaged_copy = std::fs::read(&segment)?;

    let collector = open(root.path(), OnDamage::Truncate)?;
    let st = collector.stats().storage.ok_or("no storage")?;
    let moved = st.recovery.damage[0]
        .resumed_in
        .clone()
        .ok_or("nothing moved")?;
    collector.shutdown(PATIENCE)?;
    // Back to the moment before the cut: the damaged segment whole, the piece written.
    std::fs::write(&segment, &damaged_copy)?;
    for entry in std::fs::read_dir(root.path().join("segments"))? {
        let path = entry?.path();
        if path != segment && path != moved && path.extension().is_some_and(|e| e == "seg") {
            std::fs::remove_file(path)?;
        }
    }

    let collector = open(root.path(), OnDamage::Truncate)?;
    let st = collector.stats().storage.ok_or("no storage")?;
    assert_eq!(st.recovery.records, RECORDS - 1, "{:#?}", st.recovery);
    assert_eq!(st.recovery.damage.len(), 1, "{:#?}", st.recovery);
    collector.shutdown(PATIENCE)?;
    let (seqs, gaps) = pull(&DataDir::open(root.path())?)?;
    assert_eq!(seqs, all_but(&[100]));
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    Ok(())
}

/// Successive exports of `limit` records from the start, with one reader for all of
/// them (which seeks where the last one stopped) and a new reader for each (which
/// scans): the same bytes.
fn compare_chunked(dir: &Path, reused: &DataDir, limit: u64) -> common::Result<u64> {
    let mut cursor = Cursor::START;
    let mut records = 0;
    for _ in 0..10_000 {
        let request = ExportRequest::after(cursor).limit(limit);
        let seeking = reused.export(&request)?;
        let scanning = DataDir::open(dir)?.export(&request)?;
        assert_eq!(
            seeking.to_msgpack(),
            scanning.to_msgpack(),
            "after {cursor:?}"
        );
        records += seeking.len();
        if seeking.next_cursor() == cursor {
            return Ok(records);
        }
        cursor = seeking.next_cursor();
    }
    Err("the exports never stopped".into())
}

#[test]
fn a_reader_that_seeks_where_it_stopped_exports_what_a_scan_does() -> TestResult {
    let root = tempdir()?;
    write(root.path())?;
    let reused = DataDir::open(root.path())?;
    for limit in [1, 7, 64, 1_000] {
        assert_eq!(compare_chunked(root.path(), &reused, limit)?, RECORDS);
    }
    // More records while the reader holds its place; filters change nothing.
    let collector = open(root.path(), OnDamage::Fail)?;
    let kinds = [arbiter_events::EventKind::ThinkingBudgetUsed];
    let half = reused.export(&ExportRequest::after(Cursor::after_seq(RECORDS / 2)).kinds(kinds))?;
    assert_eq!(half.len(), RECORDS / 2);
    for m in 1..=50 {
        collector.record(used_by(format!("more-{m}"), m))?;
    }
    collector.flush(PATIENCE)?;
    assert_eq!(compare_chunked(root.path(), &reused, 9)?, RECORDS + 50);
    collector.shutdown(PATIENCE)?;
    Ok(())
}

#[test]
fn a_seek_into_a_segment_that_changed_under_the_reader_scans_instead() -> TestResult {
    let root = tempdir()?;
    let segment = write(root.path())?;
    let reused = DataDir::open(root.path())?;
    let first = reused.export(&ExportRequest::after(Cursor::START).limit(50))?;
    assert_eq!(first.next_cursor(), Cursor::after_seq(50));
    // The segment is replaced by one of other records, same seqs, larger (their token
    // counts take more bytes): where the reader stopped is now inside a frame.
    let other = tempdir()?;
    let collector = open(other.path(), OnDamage::Fail)?;
    for m in 1..=RECORDS {
        collector.record(used_by(format!("task-{m}"), m + 1_000_000))?;
    }
    collector.flush(PATIENCE)?;
    collector.shutdown(PATIENCE)?;
    let [replacement] = common::segment_files(other.path())?
        .try_into()
        .map_err(|f| format!("{f:?}"))?;
    std::fs::copy(replacement, &segment)?;
    let request = ExportRequest::after(first.next_cursor()).limit(20);
    let seeking = reused.export(&request)?;
    let scanning = DataDir::open(root.path())?.export(&request)?;
    assert_eq!(seeking.to_msgpack(), scanning.to_msgpack());
    assert_eq!(common::seqs(&seeking)?, (51..=70).collect::<Vec<_>>());
    Ok(())
}
