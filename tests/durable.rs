//! The data directory: records survive close and reopen with seqs never reused, one
//! writer at a time, torn tails cut and damage refused or set aside, whole segments
//! pruned for age and capacity, exports from disk identical to exports from memory,
//! named consumers' cursors, `clear`, `verify`, and every durability policy.

mod common;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{
    AnonymizationKey, AnonymizationMode, BuildError, Collector, Config, Cursor, DataDir,
    Durability, Event, EventKind, Export, ExportError, ExportRequest, Gap, GapReason, KeyOrigin,
    ManualClock, OnDamage, Record, StorageError, StorageStats,
};
use tempfile::tempdir;

use common::{
    GOLDEN_START_NANOS, GOLDEN_STEP, PATIENCE, T0, TestResult, at, gap, read_events, record_all,
    record_stepped, records, seqs, used_by,
};

const KEY: [u8; 32] = [7; 32];
/// The smallest segment allowed: a few dozen small records each.
const SMALL_SEGMENT: u64 = 4096;
/// Bytes before the first frame of a segment file.
const SEGMENT_HEADER: u64 = 32;
/// Bytes before each frame's payload.
const FRAME_HEADER: u64 = 36;

/// The default configuration with records kept in `dir`, changed by `edit`.
fn durable(dir: &Path, edit: impl FnOnce(&mut Config)) -> Config {
    common::config_with(|c| {
        c.storage.data_dir = Some(dir.to_owned());
        edit(c);
    })
}

/// A collector on `clock` keeping its records in `dir`, under the key made of [`KEY`].
fn open(
    dir: &Path,
    clock: &ManualClock,
    edit: impl FnOnce(&mut Config),
) -> Result<Collector, BuildError> {
    Collector::builder()
        .config(durable(dir, edit))
        .clock(clock.clone())
        .key(AnonymizationKey::from_bytes(KEY))
        .build()
}

/// [`open`] without an explicit key: the directory's own key is used.
fn open_keyless(dir: &Path, clock: &ManualClock) -> Result<Collector, BuildError> {
    Collector::builder()
        .config(durable(dir, |_| {}))
        .clock(clock.clone())
        .build()
}

fn storage(collector: &Collector) -> common::Result<StorageStats> {
    Ok(collector
        .stats()
        .storage
        .ok_or("a collector with a data directory reports storage stats")?)
}

fn last_segment(dir: &Path) -> common::Result<PathBuf> {
    Ok(common::segment_files(dir)?.pop().ok_or("no segment file")?)
}

/// The byte ranges of the whole frames of a segment file, following announced lengths.
fn frames(path: &Path) -> common::Result<Vec<Range<u64>>> {
    let bytes = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER;
    while at + FRAME_HEADER <= bytes.len() as u64 {
        let start = usize::try_from(at)?;
        let len = u32::from_le_bytes(bytes[start..start + 4].try_into()?);
        let end = at + FRAME_HEADER + u64::from(len);
        if end > bytes.len() as u64 {
            break;
        }
        out.push(at..end);
        at = end;
    }
    Ok(out)
}

/// The seq a frame's header names.
fn frame_seq(path: &Path, frame: &Range<u64>) -> common::Result<u64> {
    let bytes = std::fs::read(path)?;
    let start = usize::try_from(frame.start)?;
    Ok(u64::from_le_bytes(bytes[start + 8..start + 16].try_into()?))
}

/// Flips every bit of the byte at `offset`.
fn flip(path: &Path, offset: u64) -> TestResult {
    let mut bytes = std::fs::read(path)?;
    bytes[usize::try_from(offset)?] ^= 0xff;
    std::fs::write(path, bytes)?;
    Ok(())
}

fn append(path: &Path, tail: &[u8]) -> TestResult {
    let mut bytes = std::fs::read(path)?;
    bytes.extend_from_slice(tail);
    std::fs::write(path, bytes)?;
    Ok(())
}

fn file_len(path: &Path) -> common::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

/// What successive exports from [`Cursor::START`], each from the last one's cursor,
/// delivered: the records and the gaps. Stops when the cursor stops moving.
fn pull(
    mut export: impl FnMut(&ExportRequest) -> Result<Export, ExportError>,
) -> common::Result<(Vec<Record>, Vec<Gap>)> {
    let (mut all, mut gaps) = (Vec::new(), Vec::new());
    let mut cursor = Cursor::START;
    for _ in 0..10_000 {
        let e = export(&ExportRequest::after(cursor))?;
        gaps.extend(e.gap());
        all.extend(records(&e)?);
        if e.next_cursor() == cursor {
            return Ok((all, gaps));
        }
        cursor = e.next_cursor();
    }
    Err("the cursor kept moving for 10 000 exports".into())
}

/// [`pull`] from the data directory `dir`.
fn pull_dir(dir: &Path) -> common::Result<(Vec<Record>, Vec<Gap>)> {
    let data = DataDir::open(dir)?;
    pull(|r| data.export(r))
}

fn seqs_of(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn marker(record: &Record) -> Option<u64> {
    match &record.event {
        Event::ThinkingBudgetUsed(e) => Some(e.tokens_used),
        _ => None,
    }
}

fn task_of(record: &Record) -> Option<&str> {
    match &record.event {
        Event::ThinkingBudgetUsed(e) => Some(&e.task_id),
        _ => None,
    }
}

/// `stored + recovered = retained + pruned`, and nothing in flight.
#[track_caller]
fn assert_identity(collector: &Collector) {
    let s = collector.stats();
    common::assert_drained(&s);
    assert_eq!(
        s.stored + s.recovered,
        s.retained + s.pruned.total(),
        "{s:#?}"
    );
}

/// Records `markers` and shuts the collector down.
fn write_and_close(collector: Collector, markers: impl IntoIterator<Item = u64>) -> TestResult {
    record_all(&collector, markers)?;
    collector.shutdown(PATIENCE)?;
    Ok(())
}

#[test]
fn smoke() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, |_| {})?, 1..=3)?;
    let collector = open(dir.path(), &clock, |_| {})?;
    assert_eq!(seqs(&common::export_all(&collector)?)?, [1, 2, 3]);
    Ok(())
}

#[test]
fn records_survive_reopen_and_seqs_continue() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let first = open(dir.path(), &clock, |_| {})?;
    record_all(&first, 1..=5)?;
    let before = common::export_all(&first)?.to_msgpack();
    first.shutdown(PATIENCE)?;

    let second = open(dir.path(), &clock, |_| {})?;
    let s = second.stats();
    assert_eq!((s.recovered, s.stored, s.retained), (5, 0, 5));
    assert_eq!((s.first_retained_seq, s.last_seq), (Some(1), Some(5)));
    assert_identity(&second);
    let recovery = s.storage.ok_or("no storage stats")?.recovery;
    assert_eq!((recovery.records, recovery.truncated_bytes), (5, 0));
    assert!(recovery.damage.is_empty());
    // The same records, the same bytes.
    assert_eq!(common::export_all(&second)?.to_msgpack(), before);

    record_all(&second, 6..=8)?;
    let export = common::export_all(&second)?;
    let got = records(&export)?;
    assert_eq!(seqs_of(&got), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(got.iter().all(|r| marker(r) == Some(r.seq)));
    assert!(got.windows(2).all(|w| w[0].time <= w[1].time));
    let s = second.stats();
    assert_eq!((s.recovered, s.stored, s.retained), (5, 3, 8));
    assert_identity(&second);
    second.shutdown(PATIENCE)?;

    // A third run over a window smaller than the directory: the newest records load.
    let third = open(dir.path(), &clock, |c| c.retention.max_events = 3)?;
    let s = third.stats();
    assert_eq!(
        (s.recovered, s.retained, s.first_retained_seq),
        (3, 3, Some(6))
    );
    assert_identity(&third);
    record_all(&third, 9..=10)?;
    let s = third.stats();
    assert_eq!((s.stored, s.retained, s.pruned.capacity), (2, 3, 2));
    assert_eq!(s.last_seq, Some(10));
    assert_identity(&third);
    Ok(())
}

#[test]
fn the_directory_key_is_made_once_and_pseudonyms_last_across_restarts() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let key_file = dir.path().join("key");

    let first = open_keyless(dir.path(), &clock)?;
    let s = first.stats();
    assert_eq!(s.key_origin, Some(KeyOrigin::DataDir));
    let text = std::fs::read_to_string(&key_file)?;
    let key = AnonymizationKey::from_hex(text.trim())?;
    assert_eq!(s.key_id, Some(key.key_id()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    first.record(used_by("task-a", 1))?;
    first.flush(PATIENCE)?;
    let before = records(&common::export_all(&first)?)?;
    first.shutdown(PATIENCE)?;

    let second = open_keyless(dir.path(), &clock)?;
    let s = second.stats();
    assert_eq!(s.key_origin, Some(KeyOrigin::DataDir));
    assert_eq!(s.key_id, Some(key.key_id()));
    assert_eq!(
        std::fs::read_to_string(&key_file)?,
        text,
        "the key is not remade"
    );
    second.record(used_by("task-a", 2))?;
    second.flush(PATIENCE)?;
    let after = records(&common::export_all(&second)?)?;
    assert_eq!(seqs_of(&after), [1, 2]);
    let pseudonym = task_of(&before[0]).ok_or("not a thinking_budget_used")?;
    assert!(pseudonym.starts_with("tsk_"), "{pseudonym}");
    assert_eq!(
        pseudonym,
        key.pseudonym(arbiter_events::IdKind::Task, "task-a")
    );
    assert_eq!(task_of(&after[0]), Some(pseudonym));
    assert_eq!(task_of(&after[1]), Some(pseudonym));
    Ok(())
}

#[test]
fn one_writer_at_a_time() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let first = open(dir.path(), &clock, |_| {})?;
    let err = open(dir.path(), &clock, |_| {}).unwrap_err();
    assert!(
        matches!(&err, BuildError::Storage(StorageError::Locked { path }) if path == dir.path()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("in use by another writer"),
        "{err}"
    );
    // Readers need no lock.
    assert!(
        DataDir::open(dir.path())?
            .export(&ExportRequest::default())?
            .is_empty()
    );

    record_all(&first, 1..=2)?;
    // Shut down but still held: the lock is released all the same.
    first.shutdown(PATIENCE)?;
    let second = open(dir.path(), &clock, |_| {})?;
    assert_eq!(second.stats().recovered, 2);
    drop(second);
    // Dropping the last handle releases it too.
    let third = open(dir.path(), &clock, |_| {})?;
    assert_eq!(third.stats().recovered, 2);
    // The first handle, shut down, was held all along.
    assert!(!first.is_active());
    Ok(())
}

#[test]
fn a_torn_partial_frame_is_cut_and_its_seq_never_shows() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, |_| {})?, 1..=5)?;
    let original = records(&DataDir::open(dir.path())?.export(&ExportRequest::default())?)?;

    // A write of a sixth frame that stopped halfway: its header and part of its payload.
    let segment = last_segment(dir.path())?;
    let bytes = std::fs::read(&segment)?;
    let first = frames(&segment)?.remove(0);
    let half = &bytes[usize::try_from(first.start)?..usize::try_from(first.end)?];
    let torn = half[..half.len() / 2].to_vec();
    append(&segment, &torn)?;

    let collector = open(dir.path(), &clock, |_| {})?;
    let recovery = storage(&collector)?.recovery;
    assert_eq!(recovery.truncated_bytes, torn.len() as u64);
    assert_eq!(recovery.truncated_frames, 1);
    assert!(recovery.damage.is_empty());
    assert_eq!(file_len(&segment)?, bytes.len() as u64);
    assert_eq!(collector.stats().recovered, 5);
    assert_identity(&collector);
    assert_eq!(records(&common::export_all(&collector)?)?, original);

    record_all(&collector, 6..=7)?;
    let got = records(&common::export_all(&collector)?)?;
    assert_eq!(seqs_of(&got), [1, 2, 3, 4, 5, 6, 7]);
    assert!(got.iter().all(|r| marker(r) == Some(r.seq)));
    assert_eq!(pull_dir(dir.path())?.0, got);
    Ok(())
}

#[test]
fn garbage_after_the_last_frame_is_cut() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, |_| {})?, 1..=4)?;
    let segment = last_segment(dir.path())?;
    let len = file_len(&segment)?;
    // An announced length past the end of the file: a frame that never finished.
    append(&segment, &[0xff; 100])?;

    let report = DataDir::open(dir.path())?.verify(|_| {})?;
    assert!(!report.is_damaged(), "{report:#?}");
    assert_eq!(
        report.segments.last().map(|s| s.incomplete_tail_bytes),
        Some(100)
    );

    let collector = open(dir.path(), &clock, |_| {})?;
    let recovery = storage(&collector)?.recovery;
    assert_eq!(
        (recovery.truncated_bytes, recovery.truncated_frames),
        (100, 1)
    );
    assert!(recovery.damage.is_empty());
    assert_eq!(file_len(&segment)?, len);
    record_all(&collector, 5..=5)?;
    let got = records(&common::export_all(&collector)?)?;
    assert_eq!(seqs_of(&got), [1, 2, 3, 4, 5]);
    assert!(got.iter().all(|r| marker(r) == Some(r.seq)));
    Ok(())
}

#[test]
fn a_last_frame_cut_in_half_is_cut_off() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, |_| {})?, 1..=4)?;
    // Seq 5 is written after the synced position the directory publishes: the state
    // file is put back as it was before, as if the writer died before syncing it.
    let state = dir.path().join("synced");
    let before = std::fs::read(&state)?;
    write_and_close(open(dir.path(), &clock, |_| {})?, 5..=5)?;
    std::fs::write(&state, before)?;
    let segment = last_segment(dir.path())?;
    let last = frames(&segment)?.pop().ok_or("no frame")?;
    assert_eq!(frame_seq(&segment, &last)?, 5);
    let cut_at = last.start + (last.end - last.start) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)?
        .set_len(cut_at)?;

    let collector = open(dir.path(), &clock, |_| {})?;
    let recovery = storage(&collector)?.recovery;
    assert_eq!(recovery.truncated_bytes, cut_at - last.start);
    assert_eq!((recovery.truncated_frames, recovery.records), (1, 4));
    assert!(recovery.damage.is_empty());
    assert_eq!(file_len(&segment)?, last.start);
    let s = collector.stats();
    assert_eq!((s.recovered, s.last_seq), (4, Some(4)));
    assert_identity(&collector);
    let got = records(&common::export_all(&collector)?)?;
    assert_eq!(seqs_of(&got), [1, 2, 3, 4]);
    assert!(got.iter().all(|r| marker(r) == Some(r.seq)));

    // New records number on after the last whole one (the cut record's seq was never
    // whole on disk, so it may be given again); none is the torn record.
    record_all(&collector, 100..=101)?;
    let (got, gaps) = pull_dir(dir.path())?;
    assert!(gaps.is_empty(), "{gaps:?}");
    let fresh: Vec<&Record> = got.iter().filter(|r| r.seq > 4).collect();
    assert_eq!(fresh.len(), 2);
    assert!(fresh.iter().all(|r| marker(r) >= Some(100)), "{fresh:?}");
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    Ok(())
}

#[test]
fn a_synced_last_frame_whose_length_runs_past_the_end_is_damage() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, |_| {})?, 1..=5)?;
    let segment = last_segment(dir.path())?;
    let last = frames(&segment)?.pop().ok_or("no frame")?;
    // The length's high byte flipped: the frame now runs past the end of the file, as a
    // torn write would, but it was synced.
    flip(&segment, last.start + 3)?;

    let report = DataDir::open(dir.path())?.verify(|_| {})?;
    assert!(report.is_damaged(), "{report:#?}");
    let refused = open(dir.path(), &clock, |_| {});
    assert!(
        matches!(&refused, Err(BuildError::Storage(StorageError::Damaged { offset, expected_seq: 5, .. })) if *offset == last.start),
        "{refused:?}"
    );
    let collector = open(dir.path(), &clock, |c| {
        c.storage.on_damage = OnDamage::Truncate
    })?;
    let recovery = storage(&collector)?.recovery;
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:#?}");
    assert_eq!(recovery.damage.len(), 1, "{recovery:#?}");
    record_all(&collector, 6..=6)?;
    // Seq 5 is never given to the new record.
    assert!(collector.stats().last_seq > Some(5));
    Ok(())
}

/// A directory of ten records in one segment with the payload of seq 3 damaged; returns
/// the segment, where the damaged frame starts, and the segment's length.
fn damaged_dir(dir: &Path, clock: &ManualClock) -> common::Result<(PathBuf, u64, u64)> {
    write_and_close(open(dir, clock, |_| {})?, 1..=10)?;
    let segment = last_segment(dir)?;
    let held = frames(&segment)?;
    let third = held[2].clone();
    assert_eq!(frame_seq(&segment, &third)?, 3);
    // Damage from the third frame to the end: no valid frame to resume at.
    for f in &held[2..] {
        flip(&segment, f.start + FRAME_HEADER + 4)?;
    }
    Ok((segment.clone(), third.start, file_len(&segment)?))
}

#[test]
fn damage_before_the_end_refuses_to_open_by_default() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let (segment, offset, len) = damaged_dir(dir.path(), &clock)?;
    let before = std::fs::read(&segment)?;

    let err = open(dir.path(), &clock, |_| {}).unwrap_err();
    assert!(
        matches!(
            &err,
            BuildError::Storage(StorageError::Damaged { path, offset: at, expected_seq: 3, bytes_after, .. })
                if *path == segment && *at == offset && *bytes_after == len - offset
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&segment.display().to_string()), "{text}");
    assert!(text.contains(&format!("byte {offset}")), "{text}");
    // Refusing changes nothing, and the lock is released.
    assert_eq!(std::fs::read(&segment)?, before);
    assert_eq!(common::segment_files(dir.path())?, [segment.as_path()]);
    let err = open(dir.path(), &clock, |c| c.storage.on_damage = OnDamage::Fail).unwrap_err();
    assert!(
        matches!(err, BuildError::Storage(StorageError::Damaged { .. })),
        "{err:?}"
    );
    // Readers refuse the damaged segment too.
    let err = DataDir::open(dir.path())?
        .export(&ExportRequest::default())
        .unwrap_err();
    assert!(
        matches!(&err, ExportError::Storage(StorageError::Damaged { offset: at, .. }) if *at == offset),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn damage_is_set_aside_under_truncate_and_its_seqs_are_never_reused() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let (segment, offset, len) = damaged_dir(dir.path(), &clock)?;
    let before = std::fs::read(&segment)?;
    let truncate = |c: &mut Config| c.storage.on_damage = OnDamage::Truncate;

    let collector = open(dir.path(), &clock, truncate)?;
    let st = storage(&collector)?;
    assert_eq!(st.recovery.records, 2);
    assert_eq!(st.recovery.truncated_bytes, 0);
    let [damage] = st.recovery.damage.as_slice() else {
        panic!("one damage expected: {:#?}", st.recovery);
    };
    let aside = PathBuf::from(format!("{}.damaged", segment.display()));
    assert_eq!(damage.segment, segment);
    assert_eq!((damage.offset, damage.expected_seq), (offset, 3));
    assert_eq!(damage.set_aside_bytes, len - offset);
    assert_eq!(damage.set_aside_to, Some(aside.clone()));
    assert!(!damage.reason.is_empty());
    let offset_usize = usize::try_from(offset)?;
    assert_eq!(std::fs::read(&aside)?, before[offset_usize..]);
    assert_eq!(std::fs::read(&segment)?, before[..offset_usize]);
    assert_identity(&collector);

    // From the start: seqs 1 and 2, then the lost seqs as a gap.
    let (got, gaps) = pull_dir(dir.path())?;
    assert_eq!(seqs_of(&got), [1, 2]);
    let [lost] = gaps.as_slice() else {
        panic!("one gap expected: {gaps:?}");
    };
    assert_eq!((lost.from_seq, lost.reason), (3, GapReason::Damaged));
    assert!(lost.to_seq >= 10, "{lost:?}");

    // New records never take a seq a damaged record may have had.
    record_all(&collector, 11..=12)?;
    let new = collector.stats().last_seq.ok_or("no last seq")?;
    assert!(new > 11, "seq {new} could be a lost record's");
    let (got, gaps) = pull_dir(dir.path())?;
    assert_eq!(seqs_of(&got), [1, 2, new - 1, new]);
    assert_eq!(
        gaps,
        [Gap {
            from_seq: 3,
            to_seq: new - 2,
            reason: GapReason::Damaged
        }]
    );
    assert_eq!(
        got.iter().map(marker).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(11), Some(12)]
    );
    collector.shutdown(PATIENCE)?;

    // Set aside for good: the next opening finds nothing wrong, even by default.
    let again = open(dir.path(), &clock, |_| {})?;
    let st = storage(&again)?;
    assert!(st.recovery.damage.is_empty(), "{:#?}", st.recovery);
    assert_eq!(st.recovery.records, 4);
    assert_eq!(pull_dir(dir.path())?.1, gaps);
    assert!(aside.exists());
    Ok(())
}

#[test]
fn damage_in_an_early_segment_loses_only_its_tail() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let small = |c: &mut Config| c.storage.segment_bytes = SMALL_SEGMENT;
    write_and_close(open(dir.path(), &clock, small)?, 1..=100)?;
    let files = common::segment_files(dir.path())?;
    assert!(files.len() >= 3, "{files:?}");
    let first = &files[0];
    let held = frames(first)?;
    let next_first = frame_seq(&files[1], &frames(&files[1])?[0])?;
    assert_eq!(next_first, held.len() as u64 + 1);
    // Damage from the fifth frame to the end of the segment: nothing to resume at
    // before the next segment.
    for f in &held[4..] {
        flip(first, f.start + FRAME_HEADER + 1)?;
    }

    let err = open(dir.path(), &clock, small).unwrap_err();
    assert!(
        matches!(&err, BuildError::Storage(StorageError::Damaged { path, offset, expected_seq: 5, .. })
            if path == first && *offset == held[4].start),
        "{err:?}"
    );

    let collector = open(dir.path(), &clock, |c| {
        small(c);
        c.storage.on_damage = OnDamage::Truncate;
    })?;
    let st = storage(&collector)?;
    assert_eq!(st.recovery.records, 100 - (next_first - 5));
    assert_eq!(st.recovery.damage.len(), 1);
    assert_eq!(st.recovery.damage[0].expected_seq, 5);
    // Only the damaged segment's tail is lost; numbering goes on after the last record.
    record_all(&collector, 101..=101)?;
    assert_eq!(collector.stats().last_seq, Some(101));
    let (got, gaps) = pull_dir(dir.path())?;
    let expected: Vec<u64> = (1..=4).chain(next_first..=101).collect();
    assert_eq!(seqs_of(&got), expected);
    assert!(got.iter().all(|r| marker(r) == Some(r.seq)));
    assert_eq!(
        gaps,
        gap(5, next_first - 1, GapReason::Damaged)
            .into_iter()
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn capacity_deletes_whole_segments() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let max_disk = 3 * SMALL_SEGMENT;
    let collector = open(dir.path(), &clock, |c| {
        c.storage.segment_bytes = SMALL_SEGMENT;
        c.storage.max_disk_bytes = max_disk;
    })?;
    record_all(&collector, 1..=300)?;
    let st = storage(&collector)?;
    assert!(st.pruned.capacity > 0, "{st:#?}");
    assert_eq!((st.pruned.age, st.pruned.cleared), (0, 0));
    assert!(st.pruned_segments > 0);
    assert!(st.disk_bytes <= max_disk, "{st:#?}");
    assert_eq!(st.records + st.pruned.total(), 300);
    let files = common::segment_files(dir.path())?;
    assert_eq!(files.len() as u64, st.segments);
    let on_disk: u64 = files
        .iter()
        .map(|f| file_len(f))
        .sum::<common::Result<u64>>()?;
    assert_eq!(on_disk, st.disk_bytes);
    let first = st.first_seq.ok_or("records on disk")?;
    assert_eq!(first, st.pruned.total() + 1);

    // Memory still holds everything.
    assert_eq!(
        seqs(&common::export_all(&collector)?)?,
        (1..=300).collect::<Vec<_>>()
    );
    assert_eq!(collector.stats().pruned.total(), 0);
    // The directory reports what it deleted.
    let data = DataDir::open(dir.path())?;
    let export = data.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), gap(1, first - 1, GapReason::Capacity));
    assert_eq!(seqs(&export)?, (first..=300).collect::<Vec<_>>());
    let export = data.export(&ExportRequest::after(Cursor::after_seq(first / 2)))?;
    assert_eq!(
        export.gap(),
        gap(first / 2 + 1, first - 1, GapReason::Capacity)
    );
    assert_eq!(export.header().first_seq, Some(first));

    // Recovery loads what is left.
    collector.shutdown(PATIENCE)?;
    let again = open(dir.path(), &clock, |c| {
        c.storage.segment_bytes = SMALL_SEGMENT;
        c.storage.max_disk_bytes = max_disk;
    })?;
    let s = again.stats();
    assert_eq!(
        (s.recovered, s.first_retained_seq, s.last_seq),
        (301 - first, Some(first), Some(300))
    );
    assert_identity(&again);
    Ok(())
}

#[test]
fn age_deletes_whole_expired_segments() -> TestResult {
    const MAX_AGE_SECS: u64 = 10;
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let collector = open(dir.path(), &clock, |c| {
        c.storage.segment_bytes = SMALL_SEGMENT;
        c.retention.max_age_secs = MAX_AGE_SECS;
    })?;
    record_all(&collector, 1..=30)?;
    clock.advance(Duration::from_secs(5));
    record_all(&collector, 31..=100)?;
    let files = common::segment_files(dir.path())?;
    let firsts: Vec<u64> = files
        .iter()
        .map(|f| frame_seq(f, &frames(f)?[0]))
        .collect::<common::Result<_>>()?;
    // The first segment holds only records of the first second; the second one both.
    assert!(
        firsts.len() >= 3 && firsts[1] <= 30 && firsts[2] > 31,
        "{firsts:?}"
    );

    // The first five seconds expire: only segments with nothing newer go.
    clock.advance(Duration::from_secs(MAX_AGE_SECS - 5) + Duration::from_nanos(1));
    collector.flush(PATIENCE)?;
    let st = storage(&collector)?;
    assert_eq!(st.pruned.age, firsts[1] - 1);
    assert_eq!((st.pruned.capacity, st.pruned_segments), (0, 1));
    assert_eq!(st.first_seq, Some(firsts[1]));
    assert!(!files[0].exists());
    let data = DataDir::open(dir.path())?;
    let export = data.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), gap(1, firsts[1] - 1, GapReason::Age));
    // The collector never returns an expired record, from memory or disk.
    let export = common::export_all(&collector)?;
    assert_eq!(export.gap(), gap(1, 30, GapReason::Age));
    assert_eq!(seqs(&export)?, (31..=100).collect::<Vec<_>>());

    // Everything expires: even the active segment goes.
    clock.advance(Duration::from_secs(MAX_AGE_SECS));
    collector.flush(PATIENCE)?;
    let st = storage(&collector)?;
    assert_eq!((st.pruned.age, st.records, st.first_seq), (100, 0, None));
    let export = data.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), gap(1, 100, GapReason::Age));
    assert!(export.is_empty());
    record_all(&collector, 101..=102)?;
    let export = data.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), gap(1, 100, GapReason::Age));
    assert_eq!(seqs(&export)?, [101, 102]);
    Ok(())
}

/// The requests the memory-versus-disk comparisons run.
fn requests() -> common::Result<Vec<ExportRequest>> {
    let step = i64::try_from(GOLDEN_STEP.as_nanos())?;
    Ok(vec![
        ExportRequest::default(),
        ExportRequest::after(Cursor::after_seq(3)),
        ExportRequest::after(Cursor::START).limit(4),
        ExportRequest::after(Cursor::START).since(at(GOLDEN_START_NANOS + 5 * step)?),
        ExportRequest::after(Cursor::START).until(at(GOLDEN_START_NANOS + 10 * step)?),
        ExportRequest::after(Cursor::after_seq(2))
            .kinds([EventKind::TaskCompleted, EventKind::RoutingDecision])
            .limit(3),
    ])
}

#[test]
fn exports_from_disk_are_byte_identical_to_exports_from_memory() -> TestResult {
    let events = read_events("fixtures/events/all_variants.jsonl")?;
    for (name, config) in common::anonymization_configs() {
        let dir = tempdir()?;
        let mut config = config;
        config.storage.data_dir = Some(dir.path().to_owned());
        let (collector, clock) = common::golden_collector(config)?;
        record_stepped(&collector, &clock, &events)?;
        let data = DataDir::open(dir.path())?;
        for request in requests()? {
            let memory = collector.export(&request)?;
            let disk = data.export(&request)?;
            assert!(!disk.is_empty(), "{name}: {request:?}");
            assert_eq!(
                disk.to_msgpack(),
                memory.to_msgpack(),
                "{name}: {request:?}"
            );
        }
        let full = data.export(&ExportRequest::default())?;
        assert_eq!(full.len(), events.len() as u64, "{name}");
        let off = name == "off";
        assert_eq!(
            full.header().anonymization == AnonymizationMode::Off,
            off,
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn the_collector_reads_records_no_longer_in_memory_from_disk() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let collector = open(dir.path(), &clock, |c| {
        c.storage.segment_bytes = SMALL_SEGMENT;
        c.retention.max_events = 5;
    })?;
    record_all(&collector, 1..=120)?;
    let s = collector.stats();
    assert_eq!(
        (s.retained, s.first_retained_seq, s.pruned.capacity),
        (5, Some(116), 115)
    );
    assert!(common::segment_files(dir.path())?.len() >= 3);

    let export = common::export_all(&collector)?;
    assert_eq!(export.gap(), None);
    let got = records(&export)?;
    assert_eq!(seqs_of(&got), (1..=120).collect::<Vec<_>>());
    assert!(got.iter().all(|r| marker(r) == Some(r.seq)));
    let data = DataDir::open(dir.path())?;
    for request in [
        ExportRequest::default(),
        ExportRequest::after(Cursor::after_seq(37)).limit(20),
        ExportRequest::after(Cursor::after_seq(100)),
        ExportRequest::after(Cursor::after_seq(116)),
    ] {
        assert_eq!(
            collector.export(&request)?.to_msgpack(),
            data.export(&request)?.to_msgpack(),
            "{request:?}"
        );
    }
    // Paging through with a limit crosses from disk to memory without a seam.
    let mut cursor = Cursor::START;
    let mut paged = Vec::new();
    while cursor.seq() < 120 {
        let page = collector.export(&ExportRequest::after(cursor).limit(7))?;
        assert_eq!(page.gap(), None);
        paged.extend(seqs(&page)?);
        cursor = page.next_cursor();
    }
    assert_eq!(paged, (1..=120).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn consumer_cursors_round_trip() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let err = DataDir::open(dir.path().join("nothing")).unwrap_err();
    assert!(matches!(err, StorageError::NotADataDir { .. }), "{err:?}");
    write_and_close(open(dir.path(), &clock, |_| {})?, 1..=5)?;

    let data = DataDir::open(dir.path())?;
    assert_eq!(data.path(), dir.path());
    assert_eq!(data.committed("rl")?, Cursor::START);
    assert!(data.consumers()?.is_empty());
    data.commit("rl", Cursor::after_seq(3))?;
    assert_eq!(data.committed("rl")?, Cursor::after_seq(3));
    data.commit("rl", Cursor::after_seq(5))?;
    assert_eq!(data.committed("rl")?, Cursor::after_seq(5));
    // Never past the last record on disk.
    let err = data.commit("rl", Cursor::after_seq(6)).unwrap_err();
    assert!(
        matches!(&err, StorageError::CursorAhead { consumer, after: 6, last_seq: 5 } if consumer == "rl"),
        "{err:?}"
    );
    assert_eq!(data.committed("rl")?, Cursor::after_seq(5));
    let long = "n".repeat(64);
    data.commit(&long, Cursor::after_seq(1))?;
    data.commit("a.b-c_d", Cursor::START)?;
    // Another handle, and a collector reopening the directory, see the same cursors.
    let other = DataDir::open(dir.path())?;
    assert_eq!(
        other.consumers()?,
        [
            ("a.b-c_d".to_owned(), Cursor::START),
            (long.clone(), Cursor::after_seq(1)),
            ("rl".to_owned(), Cursor::after_seq(5)),
        ]
    );
    let collector = open(dir.path(), &clock, |_| {})?;
    assert_eq!(other.committed("rl")?, Cursor::after_seq(5));
    assert_eq!(collector.stats().recovered, 5);
    Ok(())
}

#[test]
fn invalid_consumer_names_are_refused() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let _collector = open(dir.path(), &clock, |_| {})?;
    let data = DataDir::open(dir.path())?;
    let long = "n".repeat(65);
    for name in ["", "../x", ".hidden", long.as_str(), "a/b", "a b", "é"] {
        let err = data.committed(name).unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConsumer { name: n } if n == name),
            "{name:?}: {err:?}"
        );
        let err = data.commit(name, Cursor::START).unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConsumer { name: n } if n == name),
            "{name:?}: {err:?}"
        );
    }
    assert!(data.consumers()?.is_empty());
    assert!(!dir.path().join("x.json").exists());
    Ok(())
}

#[test]
fn export_and_commit_cycles_deliver_every_record_once_while_a_collector_writes() -> TestResult {
    const TOTAL: u64 = 400;
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let collector = open(dir.path(), &clock, |c| {
        c.storage.segment_bytes = SMALL_SEGMENT
    })?;
    let data = DataDir::open(dir.path())?;
    let writer = {
        let collector = collector.clone();
        thread::spawn(move || -> common::Result<()> {
            for start in (1..=TOTAL).step_by(20) {
                record_all(&collector, start..start + 20)?;
            }
            Ok(())
        })
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let mut cycles = 0;
    while seen.len() < TOTAL as usize {
        assert!(
            Instant::now() < deadline,
            "only {} records pulled",
            seen.len()
        );
        let after = data.committed("trainer")?;
        let export = data.export(&ExportRequest::after(after).limit(17))?;
        assert_eq!(export.gap(), None);
        assert_eq!(export.header().after, after.seq());
        seen.extend(records(&export)?);
        data.commit("trainer", export.next_cursor())?;
        cycles += 1;
    }
    writer.join().map_err(|_| "the writer panicked")??;
    assert!(cycles >= TOTAL / 17);
    assert_eq!(seqs_of(&seen), (1..=TOTAL).collect::<Vec<_>>());
    assert!(seen.iter().all(|r| marker(r) == Some(r.seq)));
    assert_eq!(data.committed("trainer")?, Cursor::after_seq(TOTAL));
    let rest = data.export(&ExportRequest::after(data.committed("trainer")?))?;
    assert!(rest.is_empty());
    Ok(())
}

#[test]
fn clear_deletes_what_is_on_disk() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let collector = open(dir.path(), &clock, |c| {
        c.storage.segment_bytes = SMALL_SEGMENT
    })?;
    record_all(&collector, 1..=60)?;
    assert!(common::segment_files(dir.path())?.len() >= 2);
    assert_eq!(collector.clear(), 60);
    let s = collector.stats();
    assert_eq!((s.retained, s.pruned.cleared), (0, 60));
    let st = s.storage.ok_or("no storage stats")?;
    assert_eq!((st.records, st.pruned.cleared, st.first_seq), (0, 60, None));
    let files = common::segment_files(dir.path())?;
    assert_eq!(files.len(), 1, "only the fresh active segment: {files:?}");
    assert_eq!(file_len(&files[0])?, SEGMENT_HEADER);

    let data = DataDir::open(dir.path())?;
    let export = data.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), gap(1, 60, GapReason::Cleared));
    assert!(export.is_empty());
    record_all(&collector, 61..=62)?;
    let export = data.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), gap(1, 60, GapReason::Cleared));
    assert_eq!(seqs(&export)?, [61, 62]);
    collector.shutdown(PATIENCE)?;

    // Remembered across restarts.
    let again = open(dir.path(), &clock, |_| {})?;
    assert_eq!(again.stats().recovered, 2);
    let export = data.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), gap(1, 60, GapReason::Cleared));
    assert_eq!(seqs(&export)?, [61, 62]);
    Ok(())
}

#[test]
fn verify_tells_intact_from_damaged() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(
        open(dir.path(), &clock, |c| {
            c.storage.segment_bytes = SMALL_SEGMENT
        })?,
        1..=80,
    )?;
    let data = DataDir::open(dir.path())?;
    let mut progress = Vec::new();
    let report = data.verify(|bytes| progress.push(bytes))?;
    assert!(!report.is_damaged(), "{report:#?}");
    assert_eq!((report.records, report.seqs), (80, Some((1, 80))));
    let files = common::segment_files(dir.path())?;
    assert_eq!(report.segments.len(), files.len());
    let sizes: u64 = files
        .iter()
        .map(|f| file_len(f))
        .sum::<common::Result<u64>>()?;
    assert_eq!(report.bytes, sizes);
    assert_eq!(progress.last(), Some(&sizes));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));
    let key_id = AnonymizationKey::from_bytes(KEY).key_id();
    let mut next = 1;
    for (segment, path) in report.segments.iter().zip(&files) {
        assert_eq!(&segment.path, path);
        assert_eq!(segment.first_seq, next);
        assert_eq!(segment.key_id.as_deref(), Some(key_id.as_str()));
        assert_eq!((segment.incomplete_tail_bytes, &segment.damage), (0, &None));
        next += segment.records;
    }
    assert_eq!(next, 81);
    let used = report
        .kinds
        .iter()
        .find(|(k, _)| *k == EventKind::ThinkingBudgetUsed);
    assert_eq!(used, Some(&(EventKind::ThinkingBudgetUsed, 80)));
    assert_eq!(report.kinds.iter().map(|(_, n)| n).sum::<u64>(), 80);

    let second = &files[1];
    let held = frames(second)?;
    let bad = held[1].clone();
    // Damage from its second frame to its end: the rest of the segment is not counted.
    for f in &held[1..] {
        flip(second, f.start + FRAME_HEADER + 2)?;
    }
    let report = data.verify(|_| {})?;
    assert!(report.is_damaged());
    let damaged: Vec<_> = report
        .segments
        .iter()
        .filter(|s| s.damage.is_some())
        .collect();
    assert_eq!(damaged.len(), 1);
    assert_eq!(&damaged[0].path, second);
    assert_eq!(damaged[0].records, 1);
    assert_eq!(damaged[0].damage.as_ref().map(|d| d.0), Some(bad.start));
    // Every other segment is still counted in full.
    let first_len = report.segments[0].records;
    assert_eq!(
        report.records,
        80 - (report.segments[2].first_seq - first_len - 2)
    );
    Ok(())
}

#[test]
fn every_durability_policy_stores_and_recovers_the_same_records() -> TestResult {
    let policies = [
        Durability::Buffered,
        Durability::EveryBatch,
        Durability::Interval(Duration::from_millis(50)),
    ];
    let mut exports = Vec::new();
    for durability in policies {
        let dir = tempdir()?;
        let clock = ManualClock::new(T0);
        let edit = |c: &mut Config| {
            c.storage.durability = durability;
            c.storage.segment_bytes = SMALL_SEGMENT;
            // Each directory has its own source id unless one is configured.
            c.source = Some("policies".to_owned());
        };
        let collector = open(dir.path(), &clock, edit)?;
        record_all(&collector, 1..=60)?;
        let st = storage(&collector)?;
        assert_eq!(st.durability, durability);
        assert_eq!(st.records, 60, "{durability:?}");
        let synced = match durability {
            Durability::Buffered => None,
            _ => Some(60),
        };
        assert_eq!(st.synced_through_seq, synced, "{durability:?}");
        let live = common::export_all(&collector)?.to_msgpack();
        collector.shutdown(PATIENCE)?;

        let again = open(dir.path(), &clock, edit)?;
        let s = again.stats();
        assert_eq!((s.recovered, s.last_seq), (60, Some(60)), "{durability:?}");
        let recovered = common::export_all(&again)?.to_msgpack();
        assert_eq!(recovered, live, "{durability:?}");
        assert_eq!(pull_dir(dir.path())?.0.len(), 60);
        exports.push(recovered);
    }
    assert!(exports.windows(2).all(|w| w[0] == w[1]));
    Ok(())
}

// The collector's own export, when the records just before its memory window are gone
// from disk as well. Each of these asks what `DataDir::export` already answers.

/// Pulls through the collector's exports and checks they say what the directory says.
fn assert_collector_agrees_with_dir(collector: &Collector, dir: &Path) -> TestResult {
    let (from_dir, dir_gaps) = pull_dir(dir)?;
    let (from_collector, gaps) = pull(|r| collector.export(r))?;
    assert_eq!(seqs_of(&from_collector), seqs_of(&from_dir));
    assert_eq!(gaps, dir_gaps);
    Ok(())
}

#[test]
fn collector_export_reports_records_cleared_from_disk() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let collector = open(dir.path(), &clock, |_| {})?;
    record_all(&collector, 1..=10)?;
    collector.clear();
    let export = common::export_all(&collector)?;
    assert_eq!(
        export.gap(),
        gap(1, 10, GapReason::Cleared),
        "{:?}",
        export.header()
    );
    assert_eq!(export.next_cursor(), Cursor::after_seq(10));
    record_all(&collector, 11..=12)?;
    assert_collector_agrees_with_dir(&collector, dir.path())
}

#[test]
fn collector_export_reports_seqs_lost_to_damage() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    damaged_dir(dir.path(), &clock)?;
    let collector = open(dir.path(), &clock, |c| {
        c.storage.on_damage = OnDamage::Truncate
    })?;
    record_all(&collector, 11..=12)?;
    let (got, gaps) = pull(|r| collector.export(r))?;
    assert_eq!(
        got.iter().map(marker).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(11), Some(12)]
    );
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].from_seq, gaps[0].reason), (3, GapReason::Damaged));
    assert_collector_agrees_with_dir(&collector, dir.path())
}

#[test]
fn collector_export_reports_records_the_disk_pruned_before_memory_did() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let collector = open(dir.path(), &clock, |c| {
        c.storage.segment_bytes = SMALL_SEGMENT;
        c.storage.max_disk_bytes = 2 * SMALL_SEGMENT;
        c.retention.max_events = 150;
    })?;
    record_all(&collector, 1..=200)?;
    let st = storage(&collector)?;
    let s = collector.stats();
    // Memory holds 51..=200, the disk less than that.
    assert_eq!(s.first_retained_seq, Some(51));
    assert!(st.first_seq > Some(51), "{st:#?}");
    let export = common::export_all(&collector)?;
    assert!(export.gap().is_some(), "{:?}", export.header());
    let (got, gaps) = pull(|r| collector.export(r))?;
    assert_eq!(seqs_of(&got), (51..=200).collect::<Vec<_>>());
    assert_eq!(
        gaps,
        gap(1, 50, GapReason::Capacity)
            .into_iter()
            .collect::<Vec<_>>()
    );
    Ok(())
}

// What a reopened directory holds from before: records under the key of their own
// segment, and seqs used up even when no segment is left to say so.

#[test]
fn records_recovered_under_another_key_keep_their_key_id() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, |_| {})?, 1..=3)?;
    let old_id = AnonymizationKey::from_bytes(KEY).key_id();
    let new_id = AnonymizationKey::from_bytes([8; 32]).key_id();
    let collector = Collector::builder()
        .config(durable(dir.path(), |_| {}))
        .clock(clock.clone())
        .key(AnonymizationKey::from_bytes([8; 32]))
        .build()?;
    record_all(&collector, 4..=5)?;
    let data = DataDir::open(dir.path())?;

    // The directory stops an export where the key changes.
    let first = data.export(&ExportRequest::default())?;
    assert_eq!(first.header().key_id.as_deref(), Some(old_id.as_str()));
    assert_eq!(seqs(&first)?, [1, 2, 3]);
    let second = data.export(&ExportRequest::after(first.next_cursor()))?;
    assert_eq!(second.header().key_id.as_deref(), Some(new_id.as_str()));
    assert_eq!(seqs(&second)?, [4, 5]);
    // The collector must not label the old pseudonyms with the new key.
    for request in [
        ExportRequest::default(),
        ExportRequest::after(Cursor::after_seq(3)),
    ] {
        let (memory, disk) = (collector.export(&request)?, data.export(&request)?);
        assert_eq!(memory.header(), disk.header(), "{request:?}");
        assert_eq!(memory.to_msgpack(), disk.to_msgpack(), "{request:?}");
    }
    Ok(())
}

#[test]
fn seqs_are_never_reused_when_no_segment_is_left() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    let collector = open(dir.path(), &clock, |_| {})?;
    record_all(&collector, 1..=10)?;
    collector.clear();
    collector.shutdown(PATIENCE)?;
    // Only the empty segment that names the next seq is left. Opening removes an empty
    // last segment before it creates the next one: a crash, or a failure to create it,
    // in between leaves no segment at all, as here. The removal log still says which
    // seqs were used.
    let files = common::segment_files(dir.path())?;
    assert_eq!(files.len(), 1);
    std::fs::remove_file(&files[0])?;

    let again = open(dir.path(), &clock, |_| {})?;
    record_all(&again, 11..=11)?;
    assert_eq!(again.stats().last_seq, Some(11), "a cleared seq was reused");
    let export = DataDir::open(dir.path())?.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), gap(1, 10, GapReason::Cleared));
    assert_eq!(seqs(&export)?, [11]);
    Ok(())
}

/// Small segments and a memory window of 10 records: most segments are older than it.
fn windowed(c: &mut Config) {
    c.storage.segment_bytes = SMALL_SEGMENT;
    c.retention.max_events = 10;
}

fn summary_of(segment: &Path) -> PathBuf {
    segment.with_extension("sum")
}

/// Every segment's summary, by segment.
fn summaries(dir: &Path) -> common::Result<Vec<(PathBuf, Vec<u8>)>> {
    common::segment_files(dir)?
        .into_iter()
        .map(|s| Ok((s.clone(), std::fs::read(summary_of(&s))?)))
        .collect()
}

#[test]
fn closed_segments_are_summarized_and_open_the_same_without_them() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, windowed)?, 1..=100)?;
    let written = summaries(dir.path())?;
    assert!(written.len() >= 3, "{written:?}");

    let opened = |expect_rebuilt: bool| -> common::Result<(StorageStats, Vec<u8>, u64)> {
        let collector = open(dir.path(), &clock, windowed)?;
        let st = storage(&collector)?;
        let export = common::export_all(&collector)?.to_msgpack();
        let recovered = collector.stats().recovered;
        collector.shutdown(PATIENCE)?;
        if expect_rebuilt {
            // Rebuilt byte for byte, for every segment that was there.
            for (segment, bytes) in &written {
                assert_eq!(&std::fs::read(summary_of(segment))?, bytes, "{segment:?}");
            }
        }
        Ok((st, export, recovered))
    };
    let (with, export_with, window_with) = opened(false)?;
    for (segment, _) in &written {
        std::fs::remove_file(summary_of(segment))?;
    }
    let (without, export_without, window_without) = opened(true)?;
    assert_eq!(with.records, 100);
    assert_eq!(
        (with.records, with.first_seq, with.segments, with.disk_bytes),
        (
            without.records,
            without.first_seq,
            without.segments,
            without.disk_bytes
        )
    );
    assert_eq!(window_with, 10);
    assert_eq!(window_with, window_without);
    assert_eq!(export_with, export_without);

    // `survey` (the CLI's `stats`) says what `verify` says of an intact directory.
    let data = DataDir::open(dir.path())?;
    assert_eq!(data.survey()?, data.verify(|_| {})?);
    Ok(())
}

#[test]
fn open_trusts_a_checked_summary_and_verify_still_reads_every_frame() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, windowed)?, 1..=100)?;
    let first = common::segment_files(dir.path())?.remove(0);
    let held = frames(&first)?;
    flip(&first, held[2].start + FRAME_HEADER + 1)?;

    // Older than the memory window, with a summary that checks out: not read at open.
    let collector = open(dir.path(), &clock, windowed)?;
    assert_eq!(storage(&collector)?.recovery.records, 100);
    collector.shutdown(PATIENCE)?;
    let data = DataDir::open(dir.path())?;
    assert!(!data.survey()?.is_damaged());
    let report = data.verify(|_| {})?;
    assert_eq!(
        report.segments[0].damage.as_ref().map(|d| d.0),
        Some(held[2].start)
    );

    // Without its summary the segment is read in full, and the damage is found.
    std::fs::remove_file(summary_of(&first))?;
    let err = open(dir.path(), &clock, windowed).unwrap_err();
    assert!(
        matches!(&err, BuildError::Storage(StorageError::Damaged { path, offset, expected_seq: 3, .. })
            if *path == first && *offset == held[2].start),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_summary_that_does_not_match_its_segment_is_not_trusted() -> TestResult {
    let dir = tempdir()?;
    let clock = ManualClock::new(T0);
    write_and_close(open(dir.path(), &clock, windowed)?, 1..=100)?;
    let written = summaries(dir.path())?;
    let (first, first_summary) = &written[0];
    let (_, second_summary) = &written[1];

    // Another segment's summary (a valid checksum, the wrong segment): rebuilt.
    std::fs::write(summary_of(first), second_summary)?;
    let collector = open(dir.path(), &clock, windowed)?;
    assert_eq!(storage(&collector)?.recovery.records, 100);
    collector.shutdown(PATIENCE)?;
    assert_eq!(&std::fs::read(summary_of(first))?, first_summary);
    // A flipped byte in a summary: rebuilt.
    let mut bad = first_summary.clone();
    bad[30] ^= 1;
    std::fs::write(summary_of(first), &bad)?;
    let data = DataDir::open(dir.path())?;
    assert_eq!(data.survey()?, data.verify(|_| {})?);
    write_and_close(open(dir.path(), &clock, windowed)?, [])?;
    assert_eq!(&std::fs::read(summary_of(first))?, first_summary);

    // The last frame changed behind the summary: the segment is read, the damage found.
    let held = frames(first)?;
    let last = held.last().ok_or("no frame")?;
    flip(first, last.start + FRAME_HEADER + 1)?;
    let err = open(dir.path(), &clock, windowed).unwrap_err();
    assert!(
        matches!(&err, BuildError::Storage(StorageError::Damaged { path, offset, .. })
            if path == first && *offset == last.start),
        "{err:?}"
    );
    Ok(())
}
