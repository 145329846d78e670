//! Reading a data directory without its lock: exports, verification and committed
//! consumer cursors, from the writing process or any other.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::segment::{self, OpenSegmentError, Scan, Step};
use super::state::{self, SyncedState};
use super::summary::Summary;
use super::{BadFrame, classify, dir, resync, summary};
use crate::contract::event::EventKind;
use crate::storage::export::ExportError;
use crate::storage::export::{Builder, Cursor, Export, ExportRequest, GapReason};
use crate::storage::log::StorageError;
use crate::storage::removal::RemovalLog;
use crate::storage::store::Meta;

/// What a read of the segments hands records to, in seq order, from the one after its
/// cursor: an export's [`Builder`], or a fold over history that builds no export.
pub(crate) trait Visit {
    /// Whether closed segments are first offered whole to
    /// [`pass_over`](Visit::pass_over), through their summaries.
    const SUMMARIES: bool = false;

    /// The last seq passed.
    fn cursor(&self) -> u64;

    /// Seqs up to `to_seq` that the cursor has not passed are gone, for `reason`;
    /// `false` ends the read.
    fn gap_through(&mut self, to_seq: u64, reason: GapReason) -> bool;

    /// The records that follow were pseudonymized under `key_id`; `false` ends the read.
    fn key(&mut self, key_id: Option<String>) -> bool;

    /// The next record, its frame checked: `Ok(false)` ends the read, `Err` says why
    /// its payload cannot be used (the read fails, naming the frame).
    fn offer(&mut self, meta: &Meta, payload: &[u8]) -> Result<bool, String>;

    /// Whether the closed segment that `summary` describes (checked against the file)
    /// is passed over unread; the visitor then moves its cursor past it. Damage inside a
    /// segment passed over is not seen.
    fn pass_over(&mut self, summary: &Summary) -> bool {
        let _ = summary;
        false
    }
}

impl Visit for Builder<'_> {
    fn cursor(&self) -> u64 {
        Builder::cursor(self)
    }

    fn gap_through(&mut self, to_seq: u64, reason: GapReason) -> bool {
        Builder::gap_through(self, to_seq, reason)
    }

    fn key(&mut self, key_id: Option<String>) -> bool {
        Builder::key(self, key_id)
    }

    fn offer(&mut self, meta: &Meta, payload: &[u8]) -> Result<bool, String> {
        Ok(Builder::offer(self, meta, payload))
    }
}

/// Feeds the records after the builder's cursor (and before `upto`, when given) from the
/// segments to `b`. Records older than `cutoff` count as pruned for age. A gap between
/// segments is reported with the reason the pruned log gives. A frame still being
/// written at the end of the last segment ends the read; damage anywhere else is an
/// error.
pub(crate) fn export_from_disk(
    root: &Path,
    b: &mut Builder<'_>,
    upto: Option<u64>,
    cutoff: Option<i64>,
    hint: Option<&mut Option<ReadHint>>,
) -> Result<(), StorageError> {
    let removed = visit_segments(root, b, upto, cutoff, hint)?;
    // Seqs before `upto` that no segment holds are gone: say so, or the caller would
    // stand still at this cursor.
    if let Some(upto) = upto
        && !b.done()
        && b.cursor().saturating_add(1) < upto
    {
        let reason = removed.explain(b.cursor().saturating_add(1), upto - 1);
        b.gap_through(upto - 1, reason);
    }
    Ok(())
}

/// Hands the records of the segments after `v`'s cursor (and before `upto`, when given)
/// to `v` in seq order; records older than `cutoff` count as pruned for age. Returns the
/// pruned log read on the way, which explains the gaps.
fn visit_segments(
    root: &Path,
    v: &mut impl Visit,
    upto: Option<u64>,
    cutoff: Option<i64>,
    hint: Option<&mut Option<ReadHint>>,
) -> Result<RemovalLog, StorageError> {
    let removed = dir::read_pruned(root)?;
    let published = state::read(root)?;
    let mut unused = None;
    let hint = hint.unwrap_or(&mut unused);
    let ctx = ReadContext {
        root,
        upto,
        cutoff,
        removed: &removed,
        published: published.as_ref(),
    };
    read_segments(&ctx, v, hint)?;
    Ok(removed)
}

/// Where a read of the segments stopped: the next frame to read, so that the next read
/// after the same cursor seeks there instead of scanning the segment from its start.
/// It is only a hint: it is used when the frame found there is whole and has the seq
/// wanted, and dropped otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadHint {
    /// The first seq of the segment (its file name).
    segment_first: u64,
    /// The offset of the frame of `seq` (or the end of what was written).
    offset: u64,
    /// The seq of the frame at `offset`.
    seq: u64,
}

/// What every segment of one read shares.
struct ReadContext<'a> {
    root: &'a Path,
    upto: Option<u64>,
    cutoff: Option<i64>,
    removed: &'a RemovalLog,
    published: Option<&'a SyncedState>,
}

fn read_segments<V: Visit>(
    ctx: &ReadContext<'_>,
    b: &mut V,
    hint: &mut Option<ReadHint>,
) -> Result<(), StorageError> {
    let segments_dir = ctx.root.join(dir::SEGMENTS);
    let listed = segment::list(&segments_dir).map_err(StorageError::io("list", &segments_dir))?;
    // The last segment starting at or before the first seq wanted.
    let start = listed
        .iter()
        .rposition(|(first, _)| *first <= b.cursor().saturating_add(1))
        .unwrap_or(0);
    let wanted = hint
        .take()
        .filter(|h| h.seq == b.cursor().saturating_add(1));
    for (i, (_, path)) in listed.iter().enumerate().skip(start) {
        let last = i + 1 == listed.len();
        let Some(scan) = open_segment(path, last, b)? else {
            continue;
        };
        let first = scan.header().first_seq;
        if ctx.upto.is_some_and(|u| first >= u) {
            return Ok(());
        }
        if first > b.cursor().saturating_add(1) {
            let reason = ctx.removed.explain(b.cursor().saturating_add(1), first - 1);
            if !b.gap_through(first - 1, reason) {
                return Ok(());
            }
        }
        if !b.key(scan.header().key_id_hex()) {
            return Ok(());
        }
        if V::SUMMARIES && !last && passed_over(ctx, (path, &scan), b)? {
            continue;
        }
        let resume = wanted.filter(|h| h.segment_first == first);
        match read_frames(ctx, (path, scan), last, b, resume)? {
            Read::Next(end) => *hint = Some(end),
            Read::Stopped(at) => {
                *hint = Some(at);
                return Ok(());
            }
            // The hint was stale: read the segment from its start.
            Read::Stale => {
                let Some(scan) = open_segment(path, last, b)? else {
                    continue;
                };
                match read_frames(ctx, (path, scan), last, b, None)? {
                    Read::Next(end) => *hint = Some(end),
                    Read::Stale => {}
                    Read::Stopped(at) => {
                        *hint = Some(at);
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

type SegmentScan = Scan<std::io::BufReader<std::fs::File>>;

/// Whether `v` passes over the closed segment `scan` reads, when its summary checks out
/// and it ends before `ctx.upto`.
fn passed_over(
    ctx: &ReadContext<'_>,
    (path, scan): (&Path, &SegmentScan),
    v: &mut impl Visit,
) -> Result<bool, StorageError> {
    let Some(summary) = summary::checked(path, scan.header(), scan.len())
        .map_err(StorageError::io("read", path))?
    else {
        return Ok(false);
    };
    Ok(ctx.upto.is_none_or(|u| summary.next_seq <= u) && v.pass_over(&summary))
}

/// Opens a segment for reading: `None` when it is gone (pruned since it was listed, or
/// still being created by the writer as the last one).
fn open_segment(
    path: &Path,
    last: bool,
    b: &impl Visit,
) -> Result<Option<SegmentScan>, StorageError> {
    match Scan::open(path) {
        Ok(scan) => Ok(Some(scan)),
        // Pruned since it was listed: what it held shows as a gap at the next one.
        Err(OpenSegmentError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(OpenSegmentError::Io(e)) => Err(StorageError::io("read", path)(e)),
        // Being created by the writer right now.
        Err(OpenSegmentError::Short { .. }) if last => Ok(None),
        Err(OpenSegmentError::Short { .. }) => Err(damaged(
            path,
            0,
            b.cursor().saturating_add(1),
            "shorter than a segment header",
        )),
        Err(OpenSegmentError::Header(reason)) => {
            Err(damaged(path, 0, b.cursor().saturating_add(1), reason))
        }
    }
}

/// How reading one segment ended.
enum Read {
    /// At its end (where the next read resumes if no segment follows): go on with the
    /// next segment.
    Next(ReadHint),
    /// The read is over; the next one after the same cursor starts here.
    Stopped(ReadHint),
    /// The frame at the hint was not the one wanted; nothing was offered.
    Stale,
}

/// Hands the frames of one segment to `b`, from its start or from `resume`.
fn read_frames(
    ctx: &ReadContext<'_>,
    (path, mut scan): (&Path, SegmentScan),
    last: bool,
    b: &mut impl Visit,
    resume: Option<ReadHint>,
) -> Result<Read, StorageError> {
    let first = scan.header().first_seq;
    if let Some(h) = resume {
        if h.offset > scan.len() {
            return Ok(Read::Stale);
        }
        scan.resume_at(h.offset, h.seq)
            .map_err(StorageError::io("read", path))?;
    }
    let mut resumed = resume.is_some();
    loop {
        let at = scan.offset();
        let stop = |seq| {
            Ok(Read::Stopped(ReadHint {
                segment_first: first,
                offset: at,
                seq,
            }))
        };
        match scan.next_frame().map_err(StorageError::io("read", path))? {
            Step::Frame { meta, payload } => {
                resumed = false;
                if meta.seq <= b.cursor() {
                    continue;
                }
                if ctx.upto.is_some_and(|u| meta.seq >= u) {
                    return stop(meta.seq);
                }
                if ctx.cutoff.is_some_and(|c| meta.time < c) {
                    if !b.gap_through(meta.seq, GapReason::Age) {
                        return stop(meta.seq);
                    }
                    continue;
                }
                match b.offer(&meta, payload) {
                    Ok(true) => {}
                    Ok(false) => return stop(meta.seq),
                    Err(reason) => return Err(damaged(path, at, meta.seq, &reason)),
                }
            }
            Step::End => {
                return Ok(Read::Next(ReadHint {
                    segment_first: first,
                    offset: at,
                    seq: scan.expected(),
                }));
            }
            Step::Bad { offset, error } => {
                let len = std::fs::metadata(path).map_or(offset, |m| m.len());
                let kind = classify(path, first, last, offset, &error, len, ctx.published)
                    .map_err(StorageError::io("read", path))?;
                if kind == BadFrame::Torn {
                    return stop(scan.expected());
                }
                if resumed {
                    return Ok(Read::Stale);
                }
                return Err(damaged(path, offset, scan.expected(), &error.describe()));
            }
        }
    }
}

fn damaged(path: &Path, offset: u64, expected: u64, reason: &str) -> StorageError {
    let len = std::fs::metadata(path).map_or(offset, |m| m.len());
    StorageError::Damaged {
        path: path.to_owned(),
        offset,
        expected_seq: expected,
        reason: reason.to_owned(),
        bytes_after: len.saturating_sub(offset),
    }
}

/// A data directory opened for reading: no lock is taken, so a collector may be writing
/// it meanwhile.
///
/// ```
/// use arbiter_events::{Collector, Config, DataDir, ExportRequest};
/// # let tmp = std::env::temp_dir().join(format!("arbiter-doc-{}", std::process::id()));
/// let mut config = Config::default();
/// config.storage.data_dir = Some(tmp.clone());
/// let collector = Collector::new(config)?;
/// // ... record, flush ...
/// let dir = DataDir::open(&tmp)?;
/// let after = dir.committed("rl")?;
/// let export = dir.export(&ExportRequest::after(after))?;
/// // ... write the export somewhere durable, then:
/// dir.commit("rl", export.next_cursor())?;
/// # drop(collector);
/// # std::fs::remove_dir_all(&tmp)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    /// Where the last export stopped, so that the next one seeks there.
    hint: Arc<Mutex<Option<ReadHint>>>,
}

/// What [`DataDir::verify`] found in one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// The seq its header announces first.
    pub first_seq: u64,
    /// Valid records.
    pub records: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// The key id its records were pseudonymized under, if any.
    pub key_id: Option<String>,
    /// Bytes at the end of the last segment that are not (yet) a whole frame: a write in
    /// progress, or a torn tail the next writer will cut.
    pub incomplete_tail_bytes: u64,
    /// Damage: where, and what is wrong (the first damaged span when there are more).
    pub damage: Option<(u64, String)>,
    /// Where valid frames resume after the first damaged span: the offset and seq of
    /// the next frame that is whole and continues the sequence, as recovery finds it
    /// (`None` when the damage runs to the end of the segment). The records after it
    /// are counted in `records`; recovery keeps them.
    pub resumed: Option<(u64, u64)>,
    /// Seqs lost to damaged spans inside this segment that valid frames follow.
    pub lost_seqs: u64,
}

/// What [`DataDir::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The directory.
    pub data_dir: PathBuf,
    /// Every segment, in seq order.
    pub segments: Vec<SegmentReport>,
    /// Valid records in all.
    pub records: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// The first and last valid seq.
    pub seqs: Option<(u64, u64)>,
    /// Valid records per kind, in [`EventKind::ALL`] order.
    pub kinds: Vec<(EventKind, u64)>,
    /// The synced position the writer published: every record up to this seq is on
    /// disk (`None` in a directory that never published one).
    pub synced_through_seq: Option<u64>,
    /// The highest seq ever made durable, as the writer published it (0 when unknown).
    pub high_water_seq: u64,
    /// Seq ranges (inclusive) no segment holds and `pruned.json` does not explain: a
    /// segment deleted or renamed, a tail lost, or the log of removals deleted.
    pub missing: Vec<(u64, u64)>,
}

impl VerifyReport {
    /// Whether any segment is damaged or seqs are missing without a removal note (an
    /// incomplete tail after the synced position is not damage).
    pub fn is_damaged(&self) -> bool {
        !self.missing.is_empty() || self.segments.iter().any(|s| s.damage.is_some())
    }
}

impl DataDir {
    /// Opens `path` for reading.
    ///
    /// # Errors
    /// [`StorageError::NotADataDir`] when it has no `segments` folder.
    pub fn open(path: impl AsRef<Path>) -> Result<DataDir, StorageError> {
        let root = path.as_ref().to_owned();
        if !root.join(dir::SEGMENTS).is_dir() {
            return Err(StorageError::NotADataDir { path: root });
        }
        Ok(DataDir {
            root,
            hint: Arc::default(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Exports the records on disk per `request`, as [`Collector::export`] does from
    /// memory: same layout, same bytes for the same records. The export stops where the
    /// key changes; the next one continues under the new key id.
    ///
    /// [`Collector::export`]: crate::Collector::export
    ///
    /// # Errors
    /// [`ExportError::InvalidRequest`], or [`ExportError::Storage`] when a segment cannot
    /// be read or is damaged.
    pub fn export(&self, request: &ExportRequest) -> Result<Export, ExportError> {
        let published = state::read(&self.root)?;
        let bound = published.as_ref().and_then(SyncedState::reader_bound);
        let mut export = self.export_upto(request, bound)?;
        // Under `buffered` (or in a directory that never published a synced position)
        // the records past the synced position may be taken back by a machine crash.
        let synced = published.map_or(0, |s| s.synced_through);
        if bound.is_none() && export.header().last_seq.is_some_and(|l| l > synced) {
            export.mark_unsynced();
        }
        Ok(export)
    }

    /// Hands the records on disk to `v` in seq order, up to where
    /// [`export`](Self::export) would stop (the synced position, when the writer syncs):
    /// a read that builds no export. Blocks on file reads.
    ///
    /// # Errors
    /// [`StorageError::Io`] when a segment cannot be read, [`StorageError::Damaged`] for
    /// a damaged frame (or a payload `v` refuses) in a segment that is read.
    pub(crate) fn visit(&self, v: &mut impl Visit) -> Result<(), StorageError> {
        let bound = state::read(&self.root)?
            .as_ref()
            .and_then(SyncedState::reader_bound);
        visit_segments(&self.root, v, bound, None, None).map(drop)
    }

    /// The synced position the writer published: every record up to this seq is on
    /// disk, whatever the durability (0 when none was published). Reads one small file.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the file cannot be read.
    pub fn synced_through(&self) -> Result<u64, StorageError> {
        Ok(state::read(&self.root)?.map_or(0, |s| s.synced_through))
    }

    /// As [`export`](Self::export), but never past the synced position, whatever the
    /// directory's `durability`: only records a machine crash cannot take back. Under
    /// `every_batch` and `interval` this is what [`export`](Self::export) returns; under
    /// `buffered` the writer syncs only when it closes, so a directory being written
    /// under `buffered` offers nothing new until then. A directory that never published
    /// a synced position offers nothing. What a process that passes records on to
    /// another machine (a relay) must read: a record it passed on and the crash then
    /// took back would come back under the same seq with other content.
    ///
    /// # Errors
    /// As [`export`](Self::export).
    pub fn export_synced(&self, request: &ExportRequest) -> Result<Export, ExportError> {
        let bound = self.synced_through()?.saturating_add(1);
        self.export_upto(request, Some(bound))
    }

    /// The export of `request`, stopping before seq `bound` when given.
    fn export_upto(
        &self,
        request: &ExportRequest,
        bound: Option<u64>,
    ) -> Result<Export, ExportError> {
        let mut b = Builder::new(request)?;
        let mut hint = *self.hint.lock().unwrap_or_else(PoisonError::into_inner);
        export_from_disk(&self.root, &mut b, bound, None, Some(&mut hint))?;
        *self.hint.lock().unwrap_or_else(PoisonError::into_inner) = hint;
        let seal = crate::storage::export::dir_seal(&self.root, b.key_id())?;
        Ok(b.finish(None, seal))
    }

    /// The cursor `consumer` last committed, or [`Cursor::START`].
    ///
    /// # Errors
    /// [`StorageError::InvalidConsumer`] for a name that cannot be a file name,
    /// [`StorageError::BadCursor`] when the committed file is unreadable.
    pub fn committed(&self, consumer: &str) -> Result<Cursor, StorageError> {
        Ok(dir::read_cursor(&self.root, consumer)?.map_or(Cursor::START, Cursor::after_seq))
    }

    /// Commits `cursor` for `consumer`: written to a temporary file, synced, renamed
    /// over the old one, and the folder synced, so a crash leaves the old or the new
    /// cursor, never a torn one.
    ///
    /// # Errors
    /// [`StorageError::InvalidConsumer`], [`StorageError::CursorAhead`] for a cursor past
    /// the last record in the directory, or [`StorageError::Io`] when it cannot be written.
    pub fn commit(&self, consumer: &str, cursor: Cursor) -> Result<(), StorageError> {
        dir::check_consumer(consumer)?;
        // A consumer never commits past what a machine crash could take back.
        let last_seq = match state::read(&self.root)?.filter(|s| s.syncs) {
            Some(s) => s.synced_through,
            None => self.last_seq()?,
        };
        if cursor.seq() > last_seq {
            return Err(StorageError::CursorAhead {
                consumer: consumer.to_owned(),
                after: cursor.seq(),
                last_seq,
            });
        }
        dir::write_cursor(&self.root, consumer, cursor.seq())
    }

    /// The last seq in the directory (0 when none was ever written): the last valid
    /// frame of the newest segment that has one, or the seq before an empty segment's
    /// first.
    fn last_seq(&self) -> Result<u64, StorageError> {
        let segments_dir = self.root.join(dir::SEGMENTS);
        let listed =
            segment::list(&segments_dir).map_err(StorageError::io("list", &segments_dir))?;
        for (first, path) in listed.iter().rev() {
            let mut scan = match Scan::open(path) {
                Ok(scan) => scan,
                Err(OpenSegmentError::Io(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::io("read", path)(e));
                }
                Err(_) => continue,
            };
            while scan.skip_frame().map_err(StorageError::io("read", path))? {}
            return Ok(scan.expected().max(*first).saturating_sub(1));
        }
        Ok(0)
    }

    /// The consumers that committed a cursor, with it, by name.
    ///
    /// # Errors
    /// [`StorageError::Io`] or [`StorageError::BadCursor`].
    pub fn consumers(&self) -> Result<Vec<(String, Cursor)>, StorageError> {
        self.consumer_cursors()?
            .into_iter()
            .map(|(name, cursor)| cursor.map(|c| (name, c)))
            .collect()
    }

    /// Reads every frame of every segment and checks it; `progress` is called with the
    /// bytes read so far.
    ///
    /// # Errors
    /// [`StorageError::Io`] when a file cannot be read. Damage is not an error: it is
    /// in the report.
    pub fn verify(&self, progress: impl FnMut(u64)) -> Result<VerifyReport, StorageError> {
        self.check(progress, false)
    }

    /// What [`DataDir::verify`] reports, in O(segments): a closed segment whose summary
    /// checks out (its length, its header and its last frame) is counted from the
    /// summary; the last segment, and any segment without a valid summary, are read in
    /// full. Damage inside a summarized segment is not seen: [`DataDir::verify`] reads
    /// every frame.
    ///
    /// # Errors
    /// [`StorageError::Io`] when a file cannot be read.
    pub fn survey(&self) -> Result<VerifyReport, StorageError> {
        self.check(|_| {}, true)
    }

    fn check(
        &self,
        mut progress: impl FnMut(u64),
        summaries: bool,
    ) -> Result<VerifyReport, StorageError> {
        // The position first: a segment listed after it was published is newer.
        let published = state::read(&self.root)?;
        let removed = dir::read_pruned(&self.root)?;
        let segments_dir = self.root.join(dir::SEGMENTS);
        let listed =
            segment::list(&segments_dir).map_err(StorageError::io("list", &segments_dir))?;
        let mut report = VerifyReport {
            data_dir: self.root.clone(),
            segments: Vec::new(),
            records: 0,
            bytes: 0,
            seqs: None,
            kinds: EventKind::ALL.iter().map(|&k| (k, 0)).collect(),
            synced_through_seq: published
                .filter(|s| s.synced_through > 0)
                .map(|s| s.synced_through),
            high_water_seq: published.map_or(0, |s| s.high_water),
            missing: Vec::new(),
        };
        // The seq the next segment should start at, were nothing missing.
        let mut next = 1u64;
        let missing = |from: u64, to: u64, report: &mut VerifyReport| {
            if from <= to && !removed.covers(from, to) {
                report.missing.push((from, to));
            }
        };
        let mut done_bytes = 0;
        // Read after listing: a writer notes a deletion there before it deletes.
        let removed = dir::read_pruned(&self.root)?;
        // The seq the next segment should start at, checked as the writer's recovery
        // does (not after a damaged or vanished segment, which is reported already).
        let mut next_seq = Some(1);
        for (i, (named, path)) in listed.iter().enumerate() {
            let last = i + 1 == listed.len();
            let bytes = match std::fs::metadata(path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    next_seq = None;
                    continue;
                }
                Err(e) => return Err(StorageError::io("read", path)(e)),
            };
            let mut seg = SegmentReport {
                path: path.clone(),
                first_seq: *named,
                records: 0,
                bytes,
                key_id: None,
                incomplete_tail_bytes: 0,
                damage: None,
                resumed: None,
                lost_seqs: 0,
            };
            match Scan::open(path) {
                Ok(mut scan) => {
                    seg.key_id = scan.header().key_id_hex();
                    missing(next, named.saturating_sub(1), &mut report);
                    if scan.header().first_seq != *named {
                        seg.damage = Some((
                            0,
                            "the header's first seq disagrees with the file name".into(),
                        ));
                    }
                    let summarized = if summaries && !last && seg.damage.is_none() {
                        summary::checked(path, scan.header(), bytes)
                            .map_err(StorageError::io("read", path))?
                    } else {
                        None
                    };
                    if let Some(s) = &summarized {
                        seg.records = s.records();
                        for (k, n) in report.kinds.iter_mut().zip(s.kinds) {
                            k.1 += n;
                        }
                        let first = report.seqs.map_or(s.first_seq, |(f, _)| f);
                        report.seqs = Some((first, s.next_seq - 1));
                    }
                    let mut stopped = seg.damage.is_some() || summarized.is_some();
                    while !stopped {
                        match scan.next_frame().map_err(StorageError::io("read", path))? {
                            Step::Frame { meta, .. } => {
                                seg.records += 1;
                                report.kinds[meta.kind.index()].1 += 1;
                                let first = report.seqs.map_or(meta.seq, |(f, _)| f);
                                report.seqs = Some((first, meta.seq));
                                if seg.records.is_multiple_of(65_536) {
                                    progress(done_bytes + scan.offset());
                                }
                            }
                            Step::End => break,
                            Step::Bad { offset, error } => {
                                let kind = classify(
                                    path,
                                    *named,
                                    last,
                                    offset,
                                    &error,
                                    bytes,
                                    published.as_ref(),
                                )
                                .map_err(StorageError::io("read", path))?;
                                if kind == BadFrame::Torn {
                                    seg.incomplete_tail_bytes = bytes.saturating_sub(offset);
                                    break;
                                }
                                let expected = scan.expected();
                                let resumed = resync::find(path, offset, expected, bytes)
                                    .map_err(StorageError::io("read", path))?
                                    .filter(|r| r.seq != *named || seg.records > 0);
                                if seg.damage.is_none() {
                                    seg.damage = Some((offset, error.describe()));
                                    seg.resumed = resumed.map(|r| (r.offset, r.seq));
                                }
                                match resumed {
                                    Some(r) => {
                                        seg.lost_seqs += r.seq - expected;
                                        scan.resume_at(r.offset, r.seq)
                                            .map_err(StorageError::io("read", path))?;
                                    }
                                    None => stopped = true,
                                }
                            }
                        }
                    }
                    next = next.max(scan.expected());
                    if let Some(s) = &summarized {
                        next = next.max(s.next_seq);
                    }
                }
                Err(OpenSegmentError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    next_seq = None;
                    continue;
                }
                Err(OpenSegmentError::Io(e)) => return Err(StorageError::io("read", path)(e)),
                Err(OpenSegmentError::Short { len }) if last => seg.incomplete_tail_bytes = len,
                Err(OpenSegmentError::Short { .. }) => {
                    seg.damage = Some((0, "shorter than a segment header".into()));
                }
                Err(OpenSegmentError::Header(reason)) => seg.damage = Some((0, reason.into())),
            }
            let frames_ok = seg.damage.is_none();
            // Seqs missing before this segment that no deletion explains (its frames
            // are still read and counted).
            if frames_ok
                && let Some(next) = next_seq
                && *named > next
                && !removed.covers(next, named - 1)
            {
                seg.damage = Some((
                    0,
                    format!(
                        "seqs {next}..={} are missing before this segment and were never deleted",
                        named - 1
                    ),
                ));
            }
            next_seq = frames_ok.then(|| named.saturating_add(seg.records));
            done_bytes += bytes;
            progress(done_bytes);
            report.records += seg.records;
            report.bytes += bytes;
            report.segments.push(seg);
        }
        // Seqs made durable that no segment holds: the tail was lost.
        missing(next, report.high_water_seq, &mut report);
        Ok(report)
    }
}
