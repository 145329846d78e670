//! A full disk: segment writes and the removal log (`pruned.json`) fail, then space
//! comes back. The writer never leaves a directory it will not reopen, and `verify`
//! agrees with it. The failures are simulated by putting a directory where the writer
//! must create a file (a new segment, the removal log's temporary file), which fails
//! for every user, root too.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use arbiter_events::{Collector, Config, Cursor, DataDir, ExportRequest, GapReason};
use common::{FLUSH_TIMEOUT, TestResult, used};
use tempfile::tempdir;

fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.to_owned());
    config
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join("segments").join(format!("{first_seq:020}.seg"))
}

/// What blocks the removal log: its temporary file's name taken by a directory.
fn pruned_blocker(dir: &Path) -> PathBuf {
    dir.join(".pruned.json.tmp")
}

fn record(collector: &Collector, markers: std::ops::RangeInclusive<u64>) -> TestResult {
    for m in markers {
        collector.record(used(m))?;
    }
    // The failed writes are reported by the flush; the records are stored in memory.
    let _ = collector.flush(FLUSH_TIMEOUT);
    Ok(())
}

/// Records 1..=3 on disk, then 4..=6 lost (no segment can be created) while the removal
/// log cannot be written either.
fn lose_records_on_a_full_disk(dir: &Path) -> common::Result<Collector> {
    let collector = Collector::new(config(dir))?;
    record(&collector, 1..=3)?;
    fs::create_dir(segment_path(dir, 4))?;
    fs::create_dir(pruned_blocker(dir))?;
    // Rolls the active segment: the new one cannot be created.
    collector.clear();
    record(&collector, 4..=6)?;
    let storage = collector.stats().storage.ok_or("no storage stats")?;
    assert_eq!(storage.unpersisted, 3);
    assert!(storage.write_errors >= 2, "{storage:?}");
    // The segment could be created again; the removal log still cannot be written.
    fs::remove_dir(segment_path(dir, 4))?;
    Ok(collector)
}

#[test]
fn smoke() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    let collector = lose_records_on_a_full_disk(&dir)?;
    collector.shutdown(FLUSH_TIMEOUT)?;
    fs::remove_dir(pruned_blocker(&dir))?;
    drop(Collector::new(config(&dir))?);
    Ok(())
}

#[test]
fn records_after_an_unnoted_loss_wait_for_the_note_and_the_directory_reopens() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    let collector = lose_records_on_a_full_disk(&dir)?;
    // Still full for the removal log: these records must not reach a segment after an
    // unexplained gap.
    record(&collector, 7..=9)?;
    let storage = collector.stats().storage.ok_or("no storage stats")?;
    assert_eq!(storage.unpersisted, 6, "{storage:?}");
    collector.shutdown(FLUSH_TIMEOUT)?;
    fs::remove_dir(pruned_blocker(&dir))?;

    // Space is back: `verify` and the writer (under the default on_damage = "fail") agree.
    let report = DataDir::open(&dir)?.verify(|_| {})?;
    assert!(!report.is_damaged(), "{report:?}");
    for segment in common::segment_files(&dir)? {
        let name = segment
            .file_name()
            .ok_or("name")?
            .to_string_lossy()
            .into_owned();
        let first: u64 = name.trim_end_matches(".seg").parse()?;
        assert!(first <= 3, "a segment after the unnoted loss: {name}");
    }
    let reopened = Collector::new(config(&dir))?;
    reopened.shutdown(FLUSH_TIMEOUT)?;
    Ok(())
}

#[test]
fn once_space_is_back_the_writer_notes_the_loss_by_itself() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    let collector = lose_records_on_a_full_disk(&dir)?;
    fs::remove_dir(pruned_blocker(&dir))?;
    // The next batch writes the removal log first, then its records.
    record(&collector, 7..=9)?;
    let storage = collector.stats().storage.ok_or("no storage stats")?;
    assert_eq!(storage.unpersisted, 3, "{storage:?}");
    collector.shutdown(FLUSH_TIMEOUT)?;

    let data = DataDir::open(&dir)?;
    let report = data.verify(|_| {})?;
    assert!(!report.is_damaged(), "{report:?}");
    let export = data.export(&ExportRequest::after(Cursor::after_seq(3)))?;
    let gap = export.gap().ok_or("no gap")?;
    assert_eq!((gap.from_seq, gap.to_seq), (4, 6));
    assert_eq!(gap.reason, GapReason::Unpersisted);
    let seqs: Vec<u64> = arbiter_events::read_export(export.to_msgpack().as_slice())?
        .records
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [7, 8, 9]);

    let reopened = Collector::new(config(&dir))?;
    assert_eq!(reopened.stats().last_seq, Some(9));
    reopened.shutdown(FLUSH_TIMEOUT)?;
    Ok(())
}
