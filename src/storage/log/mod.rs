//! The durable log: segment files of checksummed frames in a data directory, written by
//! the ingest worker, recovered when a collector opens the directory, pruned by whole
//! segments, and read by exports from this or another process.

pub(crate) mod dir;
mod error;
pub(crate) mod frame;
mod read;
mod resync;
pub(crate) mod segment;
pub(crate) mod state;
pub(crate) mod summary;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::contract::config::{Durability, OnDamage, StorageConfig};
use crate::contract::event::EventKind;
use crate::storage::export::GapReason;
use crate::storage::removal::RemovalLog;
use crate::storage::stats::Pruned;
use crate::storage::store::{Meta, Removal};
pub use error::StorageError;
use segment::{OpenSegmentError, Scan, ScanError, SegmentHeader, Step};
use state::{StateFile, SyncedState};
use summary::Summary;

pub use dir::KeyRotation;
pub use read::{DataDir, SegmentReport, VerifyReport};
pub(crate) use read::{Visit, export_from_disk};

/// What opening the data directory found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments: u64,
    /// Valid records found.
    pub records: u64,
    /// Bytes cut from a torn tail (a write the process did not finish).
    pub truncated_bytes: u64,
    /// Frames, whole or partial, in the cut tail.
    pub truncated_frames: u64,
    /// Damage before the end of a segment, set aside under `on_damage = "truncate"`.
    pub damage: Vec<Damage>,
}

/// Damaged bytes found by recovery and moved aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Damage {
    /// The segment.
    pub segment: PathBuf,
    /// Where the damage starts.
    pub offset: u64,
    /// The seq the frame there should have had.
    pub expected_seq: u64,
    /// What is wrong.
    pub reason: String,
    /// Bytes moved aside: the damaged span, from `offset` to where valid frames resume
    /// (`resumed_offset`) or to the end of the segment when none do (0 when seqs are
    /// missing between segments).
    pub set_aside_bytes: u64,
    /// Where they were moved, when any were.
    pub set_aside_to: Option<PathBuf>,
    /// Where valid frames resume after the damaged span, as an offset in `segment`
    /// (`None` when the damage runs to the end of the segment).
    pub resumed_offset: Option<u64>,
    /// The seq of the first frame kept after the span: the seqs from `expected_seq` up
    /// to this one (exclusive) are lost and exported as a `damaged` gap.
    pub resumed_seq: Option<u64>,
    /// The segment the frames after the span were moved to (named after
    /// `resumed_seq`); `segment` is cut at `offset`.
    pub resumed_in: Option<PathBuf>,
}

impl Damage {
    /// Damage at `offset` of `segment` with nothing moved aside (yet).
    fn at(segment: PathBuf, offset: u64, expected_seq: u64, reason: String) -> Damage {
        Damage {
            segment,
            offset,
            expected_seq,
            reason,
            set_aside_bytes: 0,
            set_aside_to: None,
            resumed_offset: None,
            resumed_seq: None,
            resumed_in: None,
        }
    }
}

/// The data directory's part of [`Stats`](crate::Stats).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StorageStats {
    /// The directory.
    pub data_dir: PathBuf,
    /// When writes are synced.
    pub durability: Durability,
    /// Segment files.
    pub segments: u64,
    /// Bytes of segment files.
    pub disk_bytes: u64,
    /// Records on disk.
    pub records: u64,
    /// The seq of the oldest record on disk.
    pub first_seq: Option<u64>,
    /// Every record up to this seq has been synced to disk (`None` before the first sync;
    /// never set under `buffered`).
    pub synced_through_seq: Option<u64>,
    /// Records on disk may not be synced: under `buffered` every record written since
    /// the directory was opened is in the page cache until the collector closes, and a
    /// machine crash can take it back (readers in other processes see it meanwhile).
    pub unsynced: bool,
    /// The highest seq ever made durable in this directory: the next writer starts
    /// above it, whatever happens to the segments.
    pub high_water_seq: u64,
    /// Records deleted from disk by this collector, by reason (whole segments).
    pub pruned: Pruned,
    /// Segment files deleted by this collector.
    pub pruned_segments: u64,
    /// Records that could not be written (they are in memory, not on disk).
    pub unpersisted: u64,
    /// Failed writes and syncs.
    pub write_errors: u64,
    /// The last write or sync error, with its path.
    pub last_error: Option<String>,
    /// What opening the directory found.
    pub recovery: RecoveryReport,
}

/// One segment file as the writer knows it.
#[derive(Debug, Clone)]
struct SegmentInfo {
    path: PathBuf,
    first_seq: u64,
    /// One past the last record's seq (`first_seq` when empty).
    next_seq: u64,
    bytes: u64,
    first_time: Option<i64>,
    last_time: Option<i64>,
    /// Where the last frame starts.
    last_frame: u64,
    /// Records per kind, in `EventKind::ALL` order.
    kinds: [u64; EventKind::ALL.len()],
}

impl SegmentInfo {
    fn new(path: PathBuf, first_seq: u64) -> SegmentInfo {
        SegmentInfo {
            path,
            first_seq,
            next_seq: first_seq,
            bytes: segment::HEADER_LEN as u64,
            first_time: None,
            last_time: None,
            last_frame: segment::HEADER_LEN as u64,
            kinds: [0; EventKind::ALL.len()],
        }
    }

    /// What a checked summary says of the segment at `path`.
    fn from_summary(path: PathBuf, s: &Summary) -> SegmentInfo {
        SegmentInfo {
            path,
            first_seq: s.first_seq,
            next_seq: s.next_seq,
            bytes: s.bytes,
            first_time: Some(s.first_time),
            last_time: Some(s.last_time),
            last_frame: s.last_frame,
            kinds: s.kinds,
        }
    }

    /// The summary of this segment once closed (`None` when it holds no record).
    fn summary(&self, key_id: Option<[u8; 8]>) -> Option<Summary> {
        Some(Summary {
            first_seq: self.first_seq,
            next_seq: self.next_seq,
            first_time: self.first_time?,
            last_time: self.last_time?,
            bytes: self.bytes,
            last_frame: self.last_frame,
            key_id,
            kinds: self.kinds,
        })
        .filter(|_| self.records() > 0)
    }

    /// Writes its summary, when it has records. A summary is a cache: a failure only
    /// means the next open reads the segment in full.
    fn write_summary(&self, key_id: Option<[u8; 8]>) {
        if let Some(s) = self.summary(key_id) {
            let _ = summary::write(&self.path, &s);
        }
    }

    fn add(&mut self, meta: &Meta, frame_len: u64) {
        self.next_seq = meta.seq + 1;
        self.last_frame = self.bytes;
        self.kinds[meta.kind.index()] += 1;
        self.bytes += frame_len;
        self.first_time.get_or_insert(meta.time);
        self.last_time = Some(meta.time);
    }

    fn records(&self) -> u64 {
        self.next_seq - self.first_seq
    }
}

/// A record's frame in the worker's batch buffer: its meta and byte range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRef {
    pub(crate) meta: Meta,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Appends the worker's frames to segment files, syncs per the durability policy and
/// deletes whole expired segments. Owned through a mutex shared with `clear` and
/// `stats`; only the worker appends.
#[derive(Debug)]
pub(crate) struct LogWriter {
    root: PathBuf,
    segments_dir: PathBuf,
    /// Released by [`LogWriter::close`], so the directory can be opened again.
    lock: Option<dir::DirLock>,
    durability: Durability,
    segment_bytes: u64,
    max_disk_bytes: u64,
    key_id: Option<[u8; 8]>,
    closed: VecDeque<SegmentInfo>,
    active: SegmentInfo,
    /// `None` after a failed write, until the next append opens a fresh segment.
    file: Option<File>,
    disk_bytes: u64,
    removed: RemovalLog,
    /// `removed` changed and the change is not on disk yet.
    pruned_unwritten: bool,
    last_sync: Instant,
    dirty: bool,
    synced_through: Option<u64>,
    pruned: Pruned,
    pruned_segments: u64,
    unpersisted: u64,
    write_errors: u64,
    last_error: Option<String>,
    /// An error since the last flush: the next flush reports it.
    unreported: Option<String>,
    recovery: RecoveryReport,
    /// The published synced position (`synced`).
    state: StateFile,
}

/// The key id bytes as segment headers keep them.
pub(crate) fn key_id_bytes(key_id: Option<&str>) -> Option<[u8; 8]> {
    let mut bytes = [0u8; 8];
    hex::decode_to_slice(key_id?, &mut bytes).ok()?;
    Some(bytes)
}

impl LogWriter {
    /// Locks and recovers the directory, handing every valid record to `load` in seq
    /// order, and opens a fresh segment for appending.
    ///
    /// Only the newest `keep` records (at least) are handed to `load`: a closed segment
    /// older than those, whose summary checks out, is not read (the memory window could
    /// not hold its records anyway).
    pub(crate) fn open(
        root: &Path,
        lock: dir::DirLock,
        config: &StorageConfig,
        keep: u64,
        key_id: Option<[u8; 8]>,
        load: impl FnMut(Meta, &[u8]),
    ) -> Result<LogWriter, StorageError> {
        let segments_dir = root.join(dir::SEGMENTS);
        let mut removed = dir::read_pruned(root)?;
        let published = state::read(root)?;
        let recovered = recover(
            root,
            config.on_damage,
            key_id,
            published.as_ref(),
            &mut removed,
            keep,
            load,
        )?;
        let mut closed = recovered.segments;
        let next_seq = recovered.next_seq;
        // An empty last segment is replaced: the new one may carry another key id.
        if closed.back().is_some_and(|s| s.records() == 0)
            && let Some(empty) = closed.pop_back()
        {
            std::fs::remove_file(&empty.path).map_err(StorageError::io("remove", &empty.path))?;
        }
        let disk_bytes = closed.iter().map(|s| s.bytes).sum();
        // What was recovered is made durable before it is published as synced: a
        // process that died left its last writes in the page cache only.
        if let Some(last) = closed.back() {
            File::open(&last.path)
                .and_then(|f| f.sync_all())
                .map_err(StorageError::io("sync segment", &last.path))?;
        }
        let syncs = config.durability != Durability::Buffered;
        let recovered_through = next_seq - 1;
        let state = StateFile::create(
            root,
            SyncedState {
                segment: next_seq,
                offset: segment::HEADER_LEN as u64,
                synced_through: recovered_through,
                high_water: recovered_through,
                syncs,
                ..SyncedState::default()
            },
        )?;
        let mut writer = LogWriter {
            root: root.to_owned(),
            active: SegmentInfo::new(segments_dir.join(segment::file_name(next_seq)), next_seq),
            segments_dir,
            lock: Some(lock),
            durability: config.durability,
            segment_bytes: config.segment_bytes,
            max_disk_bytes: config.max_disk_bytes,
            key_id,
            closed,
            file: None,
            disk_bytes,
            removed,
            pruned_unwritten: false,
            last_sync: Instant::now(),
            dirty: false,
            synced_through: next_seq
                .checked_sub(1)
                .filter(|&s| s > 0 && config.durability != Durability::Buffered),
            pruned: Pruned::default(),
            pruned_segments: 0,
            unpersisted: 0,
            write_errors: 0,
            last_error: None,
            unreported: None,
            recovery: recovered.report,
            state,
        };
        writer.file = Some(writer.create_segment(next_seq)?);
        writer.disk_bytes += writer.active.bytes;
        Ok(writer)
    }

    fn syncs(&self) -> bool {
        self.durability != Durability::Buffered
    }

    /// Creates the segment file for `first_seq` (header written, synced unless
    /// buffered) and makes it the active one.
    fn create_segment(&mut self, first_seq: u64) -> Result<File, StorageError> {
        let path = self.segments_dir.join(segment::file_name(first_seq));
        let header = SegmentHeader {
            first_seq,
            key_id: self.key_id,
        };
        let create = || -> std::io::Result<File> {
            // Never over an existing segment: its records would be lost.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            f.write_all(&header.encode())?;
            Ok(f)
        };
        let created = create().map_err(StorageError::io("create segment", &path));
        let synced = created.and_then(|file| {
            if self.syncs() {
                file.sync_all()
                    .map_err(StorageError::io("sync segment", &path))?;
                dir::sync_dir(&self.segments_dir)?;
            }
            Ok(file)
        });
        match synced {
            Ok(file) => {
                self.active = SegmentInfo::new(path, first_seq);
                Ok(file)
            }
            Err(e) => {
                // `create_new` made it ours: a file without its header must not stay.
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Closes the active segment (synced unless buffered) and starts one at `first_seq`.
    fn roll(&mut self, first_seq: u64) -> Result<(), StorageError> {
        if let Some(file) = self.file.take()
            && self.dirty
            && self.syncs()
        {
            file.sync_data()
                .map_err(StorageError::io("sync segment", &self.active.path))?;
            self.dirty = false;
            self.synced_through = self.active.next_seq.checked_sub(1);
        }
        // Until the new file exists, the active segment is a placeholder of no bytes.
        let placeholder = SegmentInfo {
            bytes: 0,
            ..SegmentInfo::new(PathBuf::new(), first_seq)
        };
        let done = std::mem::replace(&mut self.active, placeholder);
        if done.records() > 0 {
            done.write_summary(self.key_id);
            self.closed.push_back(done);
        } else {
            // Nothing in it: remove it rather than keep an empty file.
            self.disk_bytes = self.disk_bytes.saturating_sub(done.bytes);
            if !done.path.as_os_str().is_empty() {
                let _ = std::fs::remove_file(&done.path);
            }
        }
        let file = self.create_segment(first_seq)?;
        self.disk_bytes += self.active.bytes;
        self.file = Some(file);
        if self.syncs() {
            // The new segment's header is synced: it is the synced position now.
            self.publish(true);
        }
        Ok(())
    }

    /// Publishes the synced position for readers (after the data it names is synced),
    /// syncing the state file too when `durable`.
    fn publish(&mut self, durable: bool) {
        let last = self.state.last();
        let through = self.synced_through.unwrap_or(last.synced_through);
        let state = SyncedState {
            segment: self.active.first_seq,
            offset: match (self.dirty, last.segment == self.active.first_seq) {
                (false, _) => self.active.bytes,
                (true, true) => last.offset,
                // Created (and synced) since: its header is.
                (true, false) => segment::HEADER_LEN as u64,
            },
            synced_through: through,
            high_water: through,
            syncs: self.syncs(),
            ..SyncedState::default()
        };
        let published = self
            .state
            .publish(state)
            .and_then(|()| if durable { self.state.sync() } else { Ok(()) });
        if let Err(e) = published {
            self.failed(&e);
        }
    }

    fn failed(&mut self, error: &StorageError) {
        self.write_errors += 1;
        let text = error.to_string();
        self.last_error = Some(text.clone());
        self.unreported = Some(text);
    }

    /// Appends the frames (consecutive seqs) held in `buf`, rolling segments as they fill.
    /// On a write error the partial write is cut off, the records not written are
    /// counted as unpersisted, and the next append starts a fresh segment.
    pub(crate) fn append(&mut self, buf: &[u8], frames: &[FrameRef]) {
        if self.is_closed() {
            return;
        }
        // Records after a lost range reach disk only once the range is noted there: a
        // segment past a gap that `pruned.json` does not explain could not be reopened.
        // Until the note can be written (a full disk), they stay in memory only.
        if self.pruned_unwritten {
            self.write_pruned();
            if self.pruned_unwritten {
                self.file = None;
                if let (Some(first), Some(last)) = (frames.first(), frames.last()) {
                    self.unpersisted += frames.len() as u64;
                    self.removed
                        .note(first.meta.seq, last.meta.seq, GapReason::Unpersisted);
                }
                return;
            }
        }
        let mut i = 0;
        while i < frames.len() {
            let first = frames[i].meta.seq;
            if (self.file.is_none() || self.active.next_seq != first)
                && let Err(e) = self.roll(first)
            {
                self.lose(&frames[i..], &e);
                return;
            }
            let mut j = i;
            let mut size = self.active.bytes;
            while let Some(f) = frames.get(j) {
                let len = (f.end - f.start) as u64;
                if size + len > self.segment_bytes && (j > i || self.active.records() > 0) {
                    break;
                }
                size += len;
                j += 1;
            }
            if j == i {
                if let Err(e) = self.roll(first) {
                    self.lose(&frames[i..], &e);
                    return;
                }
                continue;
            }
            let bytes = &buf[frames[i].start..frames[j - 1].end];
            let written = match self.file.as_mut() {
                Some(file) => file.write_all(bytes),
                None => Ok(()),
            };
            if let Err(e) = written {
                let e = StorageError::io("write segment", &self.active.path)(e);
                // Cut the partial write so the segment ends on a whole frame, and sync
                // what was written before it (the file is abandoned).
                if let Some(file) = self.file.take() {
                    let _ = file.set_len(self.active.bytes);
                    if self.dirty && self.syncs() && file.sync_data().is_ok() {
                        self.dirty = false;
                    }
                }
                self.lose(&frames[i..], &e);
                return;
            }
            for f in &frames[i..j] {
                self.active.add(&f.meta, (f.end - f.start) as u64);
            }
            self.disk_bytes += bytes.len() as u64;
            self.dirty = true;
            i = j;
        }
    }

    fn lose(&mut self, frames: &[FrameRef], error: &StorageError) {
        self.failed(error);
        self.file = None;
        if let (Some(first), Some(last)) = (frames.first(), frames.last()) {
            self.unpersisted += frames.len() as u64;
            self.removed
                .note(first.meta.seq, last.meta.seq, GapReason::Unpersisted);
            self.pruned_unwritten = true;
            self.write_pruned();
        }
    }

    /// Writes the removal log if a change to it has not reached disk yet; kept for the
    /// next commit when it fails (the directory cannot be opened without it).
    fn write_pruned(&mut self) {
        if !self.pruned_unwritten {
            return;
        }
        match dir::write_pruned(&self.root, &self.removed) {
            Ok(()) => self.pruned_unwritten = false,
            Err(e) => self.failed(&e),
        }
    }

    /// Syncs per the policy; `flush` forces a sync of unsynced writes (except when
    /// buffered). Returns the error seen since the last flush, if any.
    pub(crate) fn commit(&mut self, flush: bool) -> Result<(), String> {
        self.write_pruned();
        let due = match self.durability {
            Durability::Buffered => false,
            Durability::EveryBatch => true,
            Durability::Interval(d) => flush || self.last_sync.elapsed() >= d,
        };
        if due && self.dirty {
            self.sync();
        }
        if flush {
            return self.unreported.take().map_or(Ok(()), Err);
        }
        Ok(())
    }

    fn sync(&mut self) {
        let Some(file) = self.file.as_ref() else {
            return;
        };
        match file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                self.last_sync = Instant::now();
                self.synced_through = self.active.next_seq.checked_sub(1).filter(|&s| s > 0);
                self.publish(matches!(self.durability, Durability::Interval(_)));
            }
            Err(e) => {
                let e = StorageError::io("sync segment", &self.active.path)(e);
                self.failed(&e);
            }
        }
    }

    /// Syncs unsynced writes whatever the policy, closes the segment and releases the
    /// directory's lock: the collector is shutting down. Nothing is written after.
    pub(crate) fn close(&mut self) {
        if self.dirty {
            self.sync();
        }
        self.write_pruned();
        if !self.is_closed() {
            self.publish(true);
            if self.file.is_some() {
                self.active.write_summary(self.key_id);
            }
        }
        self.file = None;
        self.lock = None;
    }

    fn is_closed(&self) -> bool {
        self.lock.is_none()
    }

    /// The seq the next record must have.
    pub(crate) fn next_seq(&self) -> u64 {
        self.active.next_seq
    }

    /// Deletes whole segments: those whose every record is older than `cutoff`, then the
    /// oldest while the directory is over `max_disk_bytes`. The active segment rolls
    /// once its first record expires, so it can go in its turn.
    pub(crate) fn prune(&mut self, cutoff: i64) {
        if self.is_closed() {
            return;
        }
        if self.active.first_time.is_some_and(|t| t < cutoff) {
            let next = self.active.next_seq;
            if let Err(e) = self.roll(next) {
                self.failed(&e);
            }
        }
        let mut doomed = Vec::new();
        let mut bytes = self.disk_bytes;
        for s in &self.closed {
            let why = if s.last_time.is_none_or(|t| t < cutoff) {
                Removal::Age
            } else if bytes > self.max_disk_bytes {
                Removal::Capacity
            } else {
                break;
            };
            bytes -= s.bytes;
            doomed.push(why);
        }
        self.delete_front(&doomed);
    }

    /// Deletes every record on disk (`clear`): the active segment rolls, then all
    /// closed segments go with reason `cleared`.
    pub(crate) fn clear(&mut self) {
        if self.is_closed() {
            return;
        }
        if self.active.records() > 0 {
            let next = self.active.next_seq;
            if let Err(e) = self.roll(next) {
                self.failed(&e);
                return;
            }
        }
        let doomed = vec![Removal::Cleared; self.closed.len()];
        self.delete_front(&doomed);
    }

    /// Deletes the first `reasons.len()` closed segments, noting why first.
    fn delete_front(&mut self, reasons: &[Removal]) {
        if reasons.is_empty() {
            return;
        }
        // Noted in a copy, kept only once it is on disk: a failure must not note the
        // same ranges again at the next prune.
        let mut removed = self.removed.clone();
        for (s, &why) in self.closed.iter().zip(reasons) {
            if s.records() > 0 {
                removed.note(s.first_seq, s.next_seq - 1, why.into());
            }
        }
        if let Err(e) = dir::write_pruned(&self.root, &removed) {
            self.failed(&e);
            return;
        }
        self.removed = removed;
        for &why in reasons {
            let Some(s) = self.closed.pop_front() else {
                break;
            };
            if let Err(e) = std::fs::remove_file(&s.path) {
                self.failed(&StorageError::io("remove segment", &s.path)(e));
                self.closed.push_front(s);
                break;
            }
            summary::remove(&s.path);
            self.disk_bytes = self.disk_bytes.saturating_sub(s.bytes);
            self.pruned_segments += 1;
            for _ in 0..s.records() {
                self.pruned.count(why);
            }
        }
        if self.syncs()
            && let Err(e) = dir::sync_dir(&self.segments_dir)
        {
            self.failed(&e);
        }
    }

    pub(crate) fn stats(&self) -> StorageStats {
        let first = self
            .closed
            .front()
            .filter(|s| s.records() > 0)
            .map_or(self.active.first_seq, |s| s.first_seq);
        let records: u64 =
            self.closed.iter().map(SegmentInfo::records).sum::<u64>() + self.active.records();
        StorageStats {
            data_dir: self.root.clone(),
            durability: self.durability,
            segments: self.closed.len() as u64 + 1,
            disk_bytes: self.disk_bytes,
            records,
            first_seq: (records > 0).then_some(first),
            synced_through_seq: self.synced_through,
            unsynced: !self.syncs() && self.dirty,
            high_water_seq: self.state.last().high_water,
            pruned: self.pruned,
            pruned_segments: self.pruned_segments,
            unpersisted: self.unpersisted,
            write_errors: self.write_errors,
            last_error: self.last_error.clone(),
            recovery: self.recovery.clone(),
        }
    }
}

/// The first seq of the oldest segment whose records the memory window may need: walking
/// back from the newest, until the summaries counted hold `keep` records (segments
/// without a readable summary, and the last one, count as none, so more is loaded, never
/// less).
fn skip_below(listed: &[(u64, PathBuf)], keep: u64) -> u64 {
    let Some(((newest, _), older)) = listed.split_last() else {
        return 0;
    };
    let mut need = keep;
    let mut below = *newest;
    for (first, path) in older.iter().rev() {
        if need == 0 {
            break;
        }
        below = *first;
        need = need.saturating_sub(summary::records(path));
    }
    below
}

struct Recovered {
    segments: VecDeque<SegmentInfo>,
    next_seq: u64,
    report: RecoveryReport,
}

/// Notes seqs lost to damage in the removal log and makes the note durable, before the
/// bytes that held them are touched.
fn note_damaged(
    root: &Path,
    removed: &mut RemovalLog,
    from: u64,
    to: u64,
) -> Result<(), StorageError> {
    removed.note(from, to, GapReason::Damaged);
    dir::write_pruned(root, removed)
}

/// Scans every segment: keeps each valid frame, cuts a torn tail off the last segment,
/// and meets damage elsewhere per `on_damage`. Frames of segments under `key_id` are
/// handed to `load` (others stay on disk, exported under their own key id).
fn recover(
    root: &Path,
    on_damage: OnDamage,
    key_id: Option<[u8; 8]>,
    published: Option<&SyncedState>,
    removed: &mut RemovalLog,
    keep: u64,
    mut load: impl FnMut(Meta, &[u8]),
) -> Result<Recovered, StorageError> {
    let segments_dir = &root.join(dir::SEGMENTS);
    let listed = segment::list(segments_dir).map_err(StorageError::io("list", segments_dir))?;
    let mut out = Recovered {
        segments: VecDeque::new(),
        next_seq: 1,
        report: RecoveryReport::default(),
    };
    // Seqs lost to damage in the previous segment, up to the next segment's first.
    let mut lost_from: Option<u64> = None;
    let skip_below = skip_below(&listed, keep);
    let mut queue: VecDeque<(u64, PathBuf)> = listed.iter().cloned().collect();
    while let Some((named_seq, path)) = queue.pop_front() {
        let (named_seq, path) = (&named_seq, &path);
        let last = queue.is_empty();
        out.report.segments += 1;
        let file_len = std::fs::metadata(path)
            .map_err(StorageError::io("read", path))?
            .len();
        let damaged = |offset: u64, reason: String, expected: u64| StorageError::Damaged {
            path: path.clone(),
            offset,
            expected_seq: expected,
            reason,
            bytes_after: file_len - offset.min(file_len),
        };
        let mut scan = match Scan::open(path) {
            Ok(scan) => scan,
            Err(OpenSegmentError::Io(e)) => return Err(StorageError::io("read", path)(e)),
            Err(OpenSegmentError::Short { .. }) if last => {
                // Created, header not yet written: a torn creation.
                std::fs::remove_file(path).map_err(StorageError::io("remove", path))?;
                out.report.truncated_bytes += file_len;
                continue;
            }
            Err(e) => {
                let reason = match e {
                    OpenSegmentError::Header(reason) => reason,
                    _ => "shorter than a segment header",
                };
                if on_damage == OnDamage::Fail {
                    return Err(damaged(0, reason.into(), out.next_seq));
                }
                // The whole file goes aside. Its seqs show as a gap at the next segment;
                // when it was the last, as many seqs as frames could have fitted.
                let aside = copy_aside(path, 0, file_len)?;
                std::fs::remove_file(path).map_err(StorageError::io("remove", path))?;
                out.report.damage.push(Damage {
                    set_aside_bytes: file_len,
                    set_aside_to: Some(aside),
                    ..Damage::at(path.clone(), 0, out.next_seq, reason.into())
                });
                let from = out.next_seq.min(*named_seq);
                if last {
                    let most = file_len.div_ceil(frame::HEADER_LEN as u64).max(1);
                    let end = named_seq.max(&out.next_seq).saturating_add(most);
                    note_damaged(root, removed, from, end)?;
                    out.next_seq = end + 1;
                } else {
                    lost_from.get_or_insert(from);
                }
                continue;
            }
        };
        let first = scan.header().first_seq;
        if first != *named_seq || first < out.next_seq {
            return Err(damaged(
                0,
                format!(
                    "the header's first seq {first} disagrees with the file name or overlaps the previous segment"
                ),
                out.next_seq,
            ));
        }
        if let Some(from) = lost_from.take()
            && from < first
        {
            note_damaged(root, removed, from, first - 1)?;
        } else if first > out.next_seq && !removed.covers(out.next_seq, first - 1) {
            // Seqs missing between segments that no deletion explains: a lost file, or
            // a segment cut short at a frame boundary.
            let reason = format!(
                "seqs {}..={} are missing before this segment and were never deleted",
                out.next_seq,
                first - 1
            );
            if on_damage == OnDamage::Fail {
                return Err(damaged(0, reason, out.next_seq));
            }
            note_damaged(root, removed, out.next_seq, first - 1)?;
            out.report
                .damage
                .push(Damage::at(path.clone(), 0, out.next_seq, reason));
        }
        // A closed segment older than the memory window, with a summary that checks
        // out: O(1) instead of a read of every frame (`verify` still reads them).
        if !last
            && first < skip_below
            && let Some(s) = summary::checked(path, scan.header(), file_len)
                .map_err(StorageError::io("read", path))?
        {
            out.report.records += s.records();
            out.next_seq = s.next_seq;
            out.segments
                .push_back(SegmentInfo::from_summary(path.clone(), &s));
            continue;
        }
        let segment_key = scan.header().key_id;
        let loads = segment_key == key_id;
        // The pieces of valid frames this segment keeps: the first stays in the file;
        // each one after a damaged span moves to a segment of its own, named after its
        // first seq. With each piece, where its frames start in this file.
        let mut pieces: Vec<(SegmentInfo, u64)> = Vec::new();
        let mut piece = (
            SegmentInfo::new(path.clone(), first),
            segment::HEADER_LEN as u64,
        );
        let mut reserved_next = first;
        // Where the first damaged span starts: the file is cut there once the pieces
        // after it are written.
        let mut cut_at: Option<u64> = None;
        loop {
            let (offset, error) = match scan.next_frame().map_err(StorageError::io("read", path))? {
                Step::Frame { meta, payload } => {
                    piece
                        .0
                        .add(&meta, (frame::HEADER_LEN + payload.len()) as u64);
                    if loads {
                        load(meta, payload);
                    }
                    continue;
                }
                Step::End => break,
                Step::Bad { offset, error } => (offset, error),
            };
            // Pieces an interrupted earlier recovery wrote were taken off the queue: the
            // file is the last one when nothing else is left.
            let last = queue.is_empty();
            let kind = classify(path, first, last, offset, &error, file_len, published)
                .map_err(StorageError::io("read", path))?;
            if kind == BadFrame::Torn {
                out.report.truncated_bytes += file_len - offset;
                out.report.truncated_frames +=
                    count_frames(path, offset, file_len).map_err(StorageError::io("read", path))?;
                cut_at.get_or_insert(offset);
                break;
            }
            let expected = scan.expected();
            if on_damage == OnDamage::Fail {
                return Err(damaged(offset, error.describe(), expected));
            }
            let resumed = resync::find(path, offset, expected, file_len)
                .map_err(StorageError::io("read", path))?
                // Never a piece named as this file (damage at its very first frame and
                // nothing lost): the rest goes aside instead.
                .filter(|r| r.seq != piece.0.first_seq || piece.0.records() > 0);
            let Some(resumed) = resumed else {
                if last {
                    // As many seqs as frames could have fitted: none is ever reused.
                    let most = (file_len - offset).div_ceil(frame::HEADER_LEN as u64);
                    let end = expected + most - 1;
                    note_damaged(root, removed, expected, end)?;
                    reserved_next = end + 1;
                } else {
                    lost_from = Some(expected);
                }
                let aside = copy_aside(path, offset, file_len)?;
                out.report.damage.push(Damage {
                    set_aside_bytes: file_len - offset,
                    set_aside_to: Some(aside),
                    ..Damage::at(path.clone(), offset, expected, error.describe())
                });
                cut_at.get_or_insert(offset);
                break;
            };
            // The seqs the span held are noted lost before its bytes are touched.
            if resumed.seq > expected {
                note_damaged(root, removed, expected, resumed.seq - 1)?;
            }
            let aside = copy_aside(path, offset, resumed.offset)?;
            let moved_to = segments_dir.join(segment::file_name(resumed.seq));
            out.report.damage.push(Damage {
                set_aside_bytes: resumed.offset - offset,
                set_aside_to: Some(aside),
                resumed_offset: Some(resumed.offset),
                resumed_seq: Some(resumed.seq),
                resumed_in: Some(moved_to.clone()),
                ..Damage::at(path.clone(), offset, expected, error.describe())
            });
            // A piece an interrupted recovery already wrote is written again.
            queue.retain(|(s, _)| *s != resumed.seq);
            cut_at.get_or_insert(offset);
            let (mut done, start) = std::mem::replace(
                &mut piece,
                (SegmentInfo::new(moved_to, resumed.seq), resumed.offset),
            );
            done.bytes = segment::HEADER_LEN as u64 + (offset - start);
            pieces.push((done, start));
            scan.resume_at(resumed.offset, resumed.seq)
                .map_err(StorageError::io("read", path))?;
        }
        piece.0.bytes = segment::HEADER_LEN as u64 + (scan.offset() - piece.1);
        pieces.push(piece);
        // Crash-safe order: each later piece is written whole and renamed into place,
        // the folder synced, and only then is this file cut. A crash in between leaves
        // this file as it was, and the next recovery splits it the same way again.
        for (p, start) in pieces.iter().skip(1) {
            let end = start + (p.bytes - segment::HEADER_LEN as u64);
            write_piece(path, p, segment_key, *start, end)?;
        }
        if pieces.len() > 1 {
            dir::sync_dir(segments_dir)?;
        }
        if let Some(at) = cut_at {
            cut(path, at)?;
        }
        for (p, _) in pieces {
            // Every recovered segment is closed (the writer starts a new one): its
            // summary is written, or rebuilt when it was missing or wrong.
            p.write_summary(segment_key);
            out.report.records += p.records();
            out.next_seq = p.next_seq.max(reserved_next);
            out.segments.push_back(p);
        }
    }
    // Deleted seqs are never given again, even when no segment is left to say so.
    out.next_seq = out.next_seq.max(removed.last_seq() + 1);
    if let Some(from) = lost_from
        && from < out.next_seq
    {
        note_damaged(root, removed, from, out.next_seq - 1)?;
    }
    // Seqs made durable (or pulled by a consumer) that no segment holds any more: the
    // tail was lost. They are never given again, and they are damage.
    let high_water = published
        .map_or(0, |s| s.high_water)
        .max(state::max_committed(root));
    if high_water >= out.next_seq {
        let (from, to) = (out.next_seq, high_water);
        // Named at the end of the last segment file (0 when it did not survive).
        let last_path = listed
            .last()
            .map_or_else(|| segments_dir.clone(), |(_, p)| p.clone());
        let offset = out
            .segments
            .back()
            .filter(|s| s.path == last_path)
            .map_or(0, |s| s.bytes);
        let reason = format!(
            "seqs {from}..={to} were made durable or pulled by a consumer, and no segment holds them"
        );
        if on_damage == OnDamage::Fail {
            return Err(StorageError::Damaged {
                path: last_path,
                offset,
                expected_seq: from,
                reason,
                bytes_after: 0,
            });
        }
        note_damaged(root, removed, from, to)?;
        out.report
            .damage
            .push(Damage::at(last_path, offset, from, reason));
        out.next_seq = to + 1;
    }
    Ok(out)
}

/// What a bad frame is: the one classification the writer's recovery, `verify` and
/// disk reads share, so they always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadFrame {
    /// A write a crash did not finish: cut it.
    Torn,
    /// Bytes that were whole once: refuse, or set aside.
    Damage,
}

/// Classifies a bad frame at `offset` of the segment starting at `segment_first`.
///
/// Only the last segment can end in a torn write. With a published synced position, a
/// torn write can only lie after it: anything before it was synced, so a bad frame
/// there is damage whatever it looks like. Without one (a directory written before the
/// position was published), a torn write is an incomplete frame, a frame announcing an
/// end at or past the end of the file, or a run of zeros to the end.
pub(crate) fn classify(
    path: &Path,
    segment_first: u64,
    last: bool,
    offset: u64,
    error: &ScanError,
    file_len: u64,
    published: Option<&SyncedState>,
) -> std::io::Result<BadFrame> {
    if !last {
        return Ok(BadFrame::Damage);
    }
    let torn = match published {
        Some(s) => s.unsynced_at(segment_first, offset),
        None => error.is_incomplete() || tail_is_torn(path, offset, file_len)?,
    };
    Ok(if torn {
        BadFrame::Torn
    } else {
        BadFrame::Damage
    })
}

/// Whether the bytes from `offset` are a torn final write: all zero (space the file
/// system allocated but never filled) or one frame whose announced end is at or past
/// the end of the file.
fn tail_is_torn(path: &Path, offset: u64, file_len: u64) -> std::io::Result<bool> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; frame::HEADER_LEN];
    let n = f.read(&mut head)?;
    if n == frame::HEADER_LEN {
        let end = offset + frame::HEADER_LEN as u64 + u64::from(frame::payload_len(&head));
        if end >= file_len {
            return Ok(true);
        }
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// Frames starting in `offset..file_len`, following announced lengths (at least one).
fn count_frames(path: &Path, offset: u64, file_len: u64) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    let mut at = offset;
    let mut count = 0;
    while at < file_len {
        count += 1;
        f.seek(SeekFrom::Start(at))?;
        let mut head = [0u8; frame::HEADER_LEN];
        if f.read(&mut head)? < frame::HEADER_LEN {
            break;
        }
        at += frame::HEADER_LEN as u64 + u64::from(frame::payload_len(&head));
    }
    Ok(count.max(1))
}

/// Truncates a segment at `offset` and syncs it.
fn cut(path: &Path, offset: u64) -> Result<(), StorageError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(offset)?;
            f.sync_all()
        })
        .map_err(StorageError::io("truncate", path))
}

/// Copies the bytes of `path` in `from..to` to `<path>.damaged` (or `.damaged.N`, never
/// over earlier damage set aside from the same segment), synced.
fn copy_aside(path: &Path, from: u64, to: u64) -> Result<PathBuf, StorageError> {
    let named = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(if n == 0 {
            ".damaged".to_owned()
        } else {
            format!(".damaged.{n}")
        });
        PathBuf::from(name)
    };
    let aside = (0..u32::MAX)
        .map(named)
        .find(|p| !p.exists())
        .unwrap_or_else(|| named(u32::MAX));
    let copy = || -> std::io::Result<()> {
        let mut src = File::open(path)?;
        src.seek(SeekFrom::Start(from))?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&aside)?;
        std::io::copy(&mut src.take(to.saturating_sub(from)), &mut dst)?;
        dst.sync_all()
    };
    copy().map_err(StorageError::io("set aside damaged bytes to", &aside))?;
    Ok(aside)
}

/// Writes the frames of `path` in `from..to` as the segment `piece` (a fresh header
/// under `key_id`): into a temporary file, synced, then renamed into place (over a
/// piece an interrupted recovery left). The caller syncs the folder.
fn write_piece(
    path: &Path,
    piece: &SegmentInfo,
    key_id: Option<[u8; 8]>,
    from: u64,
    to: u64,
) -> Result<(), StorageError> {
    let mut tmp = piece.path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let header = SegmentHeader {
        first_seq: piece.first_seq,
        key_id,
    };
    let write = || -> std::io::Result<()> {
        let mut src = File::open(path)?;
        src.seek(SeekFrom::Start(from))?;
        let mut dst = File::create(&tmp)?;
        dst.write_all(&header.encode())?;
        std::io::copy(&mut src.take(to.saturating_sub(from)), &mut dst)?;
        dst.sync_all()?;
        std::fs::rename(&tmp, &piece.path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StorageError::io("write the frames kept after damage to", &piece.path)(e)
    })
}
