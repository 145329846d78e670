//! Corruption: whatever happens to the bytes of one segment (a flipped byte, a cut, bytes
//! appended), reopening the data directory never panics; it builds or returns a typed
//! error, never returns a damaged or altered record, keeps the valid prefix of the
//! damaged segment and every other segment whole, and refuses damage before the end
//! unless told to set it aside. `DataDir::verify` reads the same prefix.

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arbiter_events::{
    AnonymizationKey, BuildError, Collector, Config, Cursor, DataDir, Durability, ExportRequest,
    Gap, GapReason, ManualClock, OnDamage, Record, RecoveryReport, StorageError,
};
use proptest::prelude::*;
use tempfile::tempdir;

use common::{PATIENCE, T0, TestResult, msgpack_ranges, records, split_export, used_by};

const KEY: [u8; 32] = [11; 32];
/// The smallest segment allowed, so a few dozen records fill several.
const SEGMENT_BYTES: u64 = 4096;
const SEGMENT_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 36;

/// Records by seq: decoded, and their bytes in an export.
type BySeq = BTreeMap<u64, (Record, Vec<u8>)>;

fn config(dir: &Path, on_damage: OnDamage) -> Config {
    common::config_with(|c| {
        c.storage.data_dir = Some(dir.to_owned());
        c.storage.segment_bytes = SEGMENT_BYTES;
        // No sync on every batch: the cases are many and the bytes are what matter.
        c.storage.durability = Durability::Buffered;
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

/// Writes `n` records (of a few sizes) into `dir` and shuts the collector down.
fn write(dir: &Path, n: u64) -> TestResult {
    let collector = open(dir, OnDamage::Fail)?;
    for m in 1..=n {
        let task = format!("task-{}", "x".repeat(usize::try_from(m % 5)? * 7));
        collector.record(used_by(task, m))?;
    }
    collector.flush(PATIENCE)?;
    collector.shutdown(PATIENCE)?;
    Ok(())
}

/// One segment file as written.
#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
    len: u64,
    /// The byte ranges of its frames.
    frames: Vec<Range<u64>>,
}

impl Segment {
    fn seqs(&self) -> Range<u64> {
        self.first_seq..self.first_seq + self.frames.len() as u64
    }
}

/// The segments of `dir`, by first seq, with their frames.
fn layout(dir: &Path) -> common::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for path in common::segment_files(dir)? {
        let bytes = std::fs::read(&path)?;
        let mut frames = Vec::new();
        let mut at = SEGMENT_HEADER;
        while at < bytes.len() as u64 {
            let start = usize::try_from(at)?;
            let len = u32::from_le_bytes(bytes[start..start + 4].try_into()?);
            let end = at + FRAME_HEADER + u64::from(len);
            frames.push(at..end);
            at = end;
        }
        assert_eq!(at, bytes.len() as u64, "{path:?} ends inside a frame");
        let first_seq = u64::from_le_bytes(bytes[16..24].try_into()?);
        segments.push(Segment {
            path,
            first_seq,
            len: bytes.len() as u64,
            frames,
        });
    }
    Ok(segments)
}

/// Every record of `dir`, by seq, decoded and as bytes (one export: nothing is missing).
fn originals(dir: &Path) -> common::Result<BySeq> {
    let export = DataDir::open(dir)?.export(&ExportRequest::default())?;
    assert_eq!(export.gap(), None);
    by_seq(&export)
}

fn by_seq(export: &arbiter_events::Export) -> common::Result<BySeq> {
    let bytes = split_export(export)?.records;
    let ranges = msgpack_ranges(&bytes)?;
    let records = records(export)?;
    assert_eq!(ranges.len(), records.len());
    Ok(records
        .into_iter()
        .zip(ranges)
        .map(|(r, range)| (r.seq, (r, bytes[range].to_vec())))
        .collect())
}

/// What is done to one segment; each number picks among what there is (a segment, a
/// frame, a byte) once the directory is written.
#[derive(Debug, Clone)]
enum Corruption {
    /// XOR the byte at `at` with `mask` (not zero).
    Flip { segment: u64, at: Spot, mask: u8 },
    /// Cut the file at `at`, shorter than it is.
    Cut { segment: u64, at: Spot },
    /// Append bytes.
    Append { segment: u64, bytes: Vec<u8> },
    /// Append the beginning of one of the segment's frames: a write that stopped early.
    Tear { segment: u64, frame: u64, keep: u64 },
}

/// A place in a segment file.
#[derive(Debug, Clone, Copy)]
enum Spot {
    /// Any byte.
    Anywhere(u64),
    /// A byte of the segment header.
    Header(u64),
    /// Where a frame starts.
    FrameStart(u64),
}

impl Spot {
    fn offset(self, s: &Segment) -> u64 {
        match self {
            Spot::Anywhere(c) => pick(c, s.len) as u64,
            Spot::Header(c) => pick(c, SEGMENT_HEADER) as u64,
            Spot::FrameStart(c) => s.frames[pick(c, s.frames.len() as u64)].start,
        }
    }
}

/// `choice` as an index below `size` (not zero). Shrinks towards the first.
fn pick(choice: u64, size: u64) -> usize {
    usize::try_from(choice % size).unwrap_or(0)
}

fn spot() -> impl Strategy<Value = Spot> {
    prop_oneof![
        4 => any::<u64>().prop_map(Spot::Anywhere),
        1 => any::<u64>().prop_map(Spot::Header),
        1 => any::<u64>().prop_map(Spot::FrameStart),
    ]
}

fn corruption() -> impl Strategy<Value = Corruption> {
    let tail = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..200),
        (1usize..200).prop_map(|n| vec![0; n]),
    ];
    prop_oneof![
        (any::<u64>(), spot(), 1..=255u8).prop_map(|(segment, at, mask)| Corruption::Flip {
            segment,
            at,
            mask
        }),
        (any::<u64>(), spot()).prop_map(|(segment, at)| Corruption::Cut { segment, at }),
        (any::<u64>(), tail).prop_map(|(segment, bytes)| Corruption::Append { segment, bytes }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(segment, frame, keep)| {
            Corruption::Tear {
                segment,
                frame,
                keep,
            }
        }),
    ]
}

/// What the corruption did to its segment, as recovery must see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// The segment header is damaged: nothing in the segment can be trusted.
    Header,
    /// The file is shorter than a segment header.
    Short { len: u64 },
    /// The file ends cleanly after `kept` whole frames.
    Clean { kept: usize },
    /// The bytes from `offset` on are not a valid frame; `kept` whole frames precede them.
    /// With `resumes`, the frames from that index on are intact (one flipped byte): only
    /// the damaged frame is lost.
    Bad {
        offset: u64,
        kept: usize,
        resumes: Option<usize>,
    },
}

impl Effect {
    /// Frames of the corrupted segment still readable.
    fn kept(self) -> usize {
        match self {
            Effect::Header | Effect::Short { .. } => 0,
            Effect::Clean { kept } | Effect::Bad { kept, .. } => kept,
        }
    }

    /// The seqs of `s` this corruption loses: the damaged frame alone when valid frames
    /// follow it, else everything from the first bad byte on.
    fn lost(self, s: &Segment) -> Vec<u64> {
        match self {
            Effect::Bad {
                kept,
                resumes: Some(_),
                ..
            } => vec![s.first_seq + kept as u64],
            _ => s.seqs().skip(self.kept()).collect(),
        }
    }
}

/// Applies `corruption` to one of `segments`; returns which and what it did.
fn apply(corruption: &Corruption, segments: &[Segment]) -> common::Result<(usize, Effect)> {
    let segment_count = segments.len() as u64;
    let (which, effect) = match corruption {
        Corruption::Flip { segment, at, mask } => {
            let which = pick(*segment, segment_count);
            let s = &segments[which];
            let at = at.offset(s);
            let mut bytes = std::fs::read(&s.path)?;
            bytes[usize::try_from(at)?] ^= mask;
            std::fs::write(&s.path, bytes)?;
            let effect = match s.frames.iter().position(|f| f.contains(&at)) {
                None => Effect::Header,
                Some(f) => Effect::Bad {
                    offset: s.frames[f].start,
                    kept: f,
                    resumes: (f + 1 < s.frames.len()).then_some(f + 1),
                },
            };
            (which, effect)
        }
        Corruption::Cut { segment, at } => {
            let which = pick(*segment, segment_count);
            let s = &segments[which];
            let len = at.offset(s);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&s.path)?
                .set_len(len)?;
            let kept = s.frames.iter().take_while(|f| f.end <= len).count();
            let boundary = s.frames.get(kept).map_or(s.len, |f| f.start);
            let effect = if len < SEGMENT_HEADER {
                Effect::Short { len }
            } else if len == boundary {
                Effect::Clean { kept }
            } else {
                Effect::Bad {
                    offset: boundary,
                    kept,
                    resumes: None,
                }
            };
            (which, effect)
        }
        Corruption::Append { segment, bytes } => {
            let which = pick(*segment, segment_count);
            (which, append(&segments[which], bytes)?)
        }
        Corruption::Tear {
            segment,
            frame,
            keep,
        } => {
            let which = pick(*segment, segment_count);
            let s = &segments[which];
            let f = &s.frames[pick(*frame, s.frames.len() as u64)];
            let bytes = std::fs::read(&s.path)?;
            let whole = &bytes[usize::try_from(f.start)?..usize::try_from(f.end)?];
            // At least one byte, never the whole frame.
            let part = &whole[..1 + pick(*keep, whole.len() as u64 - 1)];
            (which, append(s, part)?)
        }
    };
    Ok((which, effect))
}

fn append(s: &Segment, tail: &[u8]) -> common::Result<Effect> {
    let mut bytes = std::fs::read(&s.path)?;
    bytes.extend_from_slice(tail);
    std::fs::write(&s.path, bytes)?;
    Ok(Effect::Bad {
        offset: s.len,
        kept: s.frames.len(),
        resumes: None,
    })
}

fn copy_dir(from: &Path, to: &Path) -> TestResult {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Whether `err` is the damage of `path` at `offset`.
fn is_damage_at(err: &BuildError, path: &Path, offset: u64) -> bool {
    matches!(err, BuildError::Storage(StorageError::Damaged { path: p, offset: o, .. }) if p == path && *o == offset)
}

/// The report of a segment set aside whole (its header unreadable).
fn set_aside_whole(
    report: &RecoveryReport,
    segment: &Segment,
    len_now: u64,
) -> common::Result<bool> {
    assert_eq!(report.truncated_bytes, 0, "{report:#?}");
    let [damage] = report.damage.as_slice() else {
        panic!("one damage expected: {report:#?}");
    };
    assert_eq!(damage.segment, segment.path);
    assert_eq!(damage.offset, 0);
    assert_eq!(damage.set_aside_bytes, len_now);
    let aside = damage.set_aside_to.as_ref().ok_or("nothing set aside")?;
    assert_eq!(std::fs::metadata(aside)?.len(), len_now);
    assert!(!segment.path.exists(), "the damaged segment stayed");
    Ok(false)
}

/// What opening under `Truncate` must have reported, given the effect on the segment;
/// returns whether the damage was cut as a torn tail (rather than set aside).
fn check_report(
    report: &RecoveryReport,
    segment: &Segment,
    next: Option<&Segment>,
    effect: Effect,
    len_now: u64,
) -> common::Result<bool> {
    let last = next.is_none();
    match effect {
        // A segment whose header cannot be read goes aside whole.
        Effect::Header => set_aside_whole(report, segment, len_now),
        Effect::Short { .. } if !last => set_aside_whole(report, segment, len_now),
        // The last segment's header was synced: its records are lost, never reused.
        Effect::Short { len } => {
            assert_eq!(report.truncated_bytes, len);
            tail_lost(report, segment, 0, segment.first_seq)?;
            Ok(false)
        }
        Effect::Clean { kept } => {
            assert_eq!(report.truncated_bytes, 0, "{report:#?}");
            match next {
                // The synced tail is gone: damage, its seqs never given again.
                None if kept < segment.frames.len() => {
                    tail_lost(report, segment, len_now, segment.first_seq + kept as u64)?;
                }
                // Records missing before the next segment, and no deletion explains
                // them: damage, with nothing to set aside.
                Some(next) if kept < segment.frames.len() => {
                    let [damage] = report.damage.as_slice() else {
                        panic!("one damage expected: {report:#?}");
                    };
                    assert_eq!(damage.segment, next.path);
                    assert_eq!(damage.offset, 0);
                    assert_eq!(damage.expected_seq, segment.first_seq + kept as u64);
                    assert_eq!(damage.set_aside_bytes, 0);
                    assert_eq!(damage.set_aside_to, None);
                }
                _ => assert!(report.damage.is_empty(), "{report:#?}"),
            }
            Ok(false)
        }
        Effect::Bad {
            offset,
            kept,
            resumes,
        } => {
            // Only bytes after the synced position (the end of the last segment as
            // written) can be a torn write; anything before it is damage.
            if last && offset >= segment.len {
                assert!(report.damage.is_empty(), "{report:#?}");
                assert_eq!(report.truncated_bytes, len_now - offset, "{report:#?}");
                assert!(report.truncated_frames >= 1, "{report:#?}");
                return Ok(true);
            }
            assert_eq!(report.truncated_bytes, 0, "{report:#?}");
            // A cut inside a frame of the last segment may leave fewer bytes than the
            // frames it took: the rest of the synced tail is reported lost too.
            let (damage, rest) = report
                .damage
                .split_first()
                .ok_or_else(|| format!("damage expected: {report:#?}"))?;
            match rest {
                [] => {}
                [tail] if last => {
                    assert_eq!(tail.set_aside_bytes, 0, "{report:#?}");
                    assert!(tail.expected_seq > damage.expected_seq, "{report:#?}");
                }
                _ => panic!("one damage expected: {report:#?}"),
            }
            assert_eq!(damage.segment, segment.path);
            assert_eq!(damage.offset, offset);
            assert_eq!(damage.expected_seq, segment.first_seq + kept as u64);
            match resumes {
                // Valid frames after the damaged one: only it goes aside, the rest moves
                // to a segment named after the first seq kept.
                Some(r) => {
                    let resumed_at = segment.frames[r].start;
                    let resumed_seq = segment.first_seq + r as u64;
                    assert_eq!(damage.set_aside_bytes, resumed_at - offset, "{report:#?}");
                    assert_eq!(damage.resumed_offset, Some(resumed_at));
                    assert_eq!(damage.resumed_seq, Some(resumed_seq));
                    let moved = damage.resumed_in.as_ref().ok_or("no resumed segment")?;
                    assert_eq!(
                        std::fs::metadata(moved)?.len(),
                        SEGMENT_HEADER + len_now - resumed_at
                    );
                }
                None => {
                    assert_eq!(damage.set_aside_bytes, len_now - offset);
                    assert_eq!(damage.resumed_seq, None);
                }
            }
            if let Some(aside) = &damage.set_aside_to {
                assert_eq!(std::fs::metadata(aside)?.len(), damage.set_aside_bytes);
            }
            match std::fs::metadata(&segment.path) {
                Ok(m) => assert_eq!(m.len(), offset),
                // Nothing valid left in the last segment: it is replaced by a fresh one.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && last && kept == 0 => {}
                Err(e) => return Err(format!("{}: {e}", segment.path.display()).into()),
            }
            Ok(false)
        }
    }
}

/// The report of a lost synced tail of the last segment: one damage, nothing set aside.
fn tail_lost(
    report: &RecoveryReport,
    segment: &Segment,
    offset: u64,
    expected_seq: u64,
) -> TestResult {
    let [damage] = report.damage.as_slice() else {
        panic!("one damage expected: {report:#?}");
    };
    assert_eq!(damage.segment, segment.path);
    assert_eq!(damage.offset, offset);
    assert_eq!(damage.expected_seq, expected_seq);
    assert_eq!(damage.set_aside_bytes, 0);
    assert_eq!(damage.set_aside_to, None);
    Ok(())
}

fn run(n: u64, corruption: &Corruption) -> TestResult {
    let root = tempdir()?;
    let written = root.path().join("written");
    write(&written, n)?;
    let original = originals(&written)?;
    assert_eq!(original.len() as u64, n);
    let segments = layout(&written)?;
    assert!(segments.len() >= 2, "{segments:#?}");

    let (which, effect) = apply(corruption, &segments)?;
    let segment = &segments[which];
    let last = which + 1 == segments.len();
    let len_now = std::fs::metadata(&segment.path)?.len();
    let lost = effect.lost(segment);
    let kept: Vec<u64> = original
        .keys()
        .copied()
        .filter(|s| !lost.contains(s))
        .collect();

    // Verification reads every segment up to its first bad byte, and never panics.
    let report = DataDir::open(&written)?.verify(|_| {})?;
    assert_eq!(report.records, kept.len() as u64, "{report:#?}");

    let (fail_dir, truncate_dir) = (root.path().join("fail"), root.path().join("truncate"));
    copy_dir(&written, &fail_dir)?;
    copy_dir(&written, &truncate_dir)?;
    // The paths recovery names are those of the copy it opened.
    let in_copy_of = |dir: &Path, segment: &Segment| -> common::Result<Segment> {
        let name = segment.path.file_name().ok_or("no file name")?;
        Ok(Segment {
            path: dir.join("segments").join(name),
            ..segment.clone()
        })
    };
    let in_copy = |dir: &Path| in_copy_of(dir, segment);

    let truncated = open(&truncate_dir, OnDamage::Truncate);
    let unrecoverable = matches!(effect, Effect::Header | Effect::Short { .. });
    let torn = match truncated {
        Err(err) => {
            return Err(format!("{effect:?} refused under truncate: {err:?}").into());
        }
        Ok(collector) => {
            let st = collector.stats().storage.ok_or("no storage stats")?;
            let report = st.recovery;
            let next = match segments.get(which + 1) {
                Some(next) => Some(in_copy_of(&truncate_dir, next)?),
                None => None,
            };
            let torn = check_report(
                &report,
                &in_copy(&truncate_dir)?,
                next.as_ref(),
                effect,
                len_now,
            )?;
            assert_eq!(report.records, kept.len() as u64);
            let s = collector.stats();
            assert_eq!(
                s.stored + s.recovered,
                s.retained + s.pruned.total(),
                "{s:#?}"
            );
            let max_kept = kept.last().copied().unwrap_or(0);
            assert!(s.last_seq.unwrap_or(0) >= max_kept, "{s:#?}");

            // Every record still readable is the original one with that seq.
            let data = DataDir::open(&truncate_dir)?;
            let (got, gaps) = pull(&data)?;
            assert_eq!(got.keys().copied().collect::<Vec<_>>(), kept);
            for (seq, record) in &got {
                assert_eq!(Some(record), original.get(seq), "seq {seq}");
            }
            // Whatever was lost before a kept record is reported as a gap.
            for seq in lost.iter().filter(|&&s| s < max_kept) {
                assert!(
                    gaps.iter().any(|g| (g.from_seq..=g.to_seq).contains(seq)),
                    "seq {seq} lost without a gap: {gaps:?}"
                );
            }
            if !report.damage.is_empty() {
                assert!(
                    gaps.iter().all(|g| g.reason == GapReason::Damaged),
                    "{gaps:?}"
                );
            }
            if torn || lost.is_empty() {
                assert!(gaps.is_empty(), "{gaps:?}");
            }
            // A resynchronized span: the gap is exactly the damaged frame's seq.
            if let Effect::Bad {
                resumes: Some(_), ..
            } = effect
            {
                let [gap] = gaps.as_slice() else {
                    panic!("one gap expected: {gaps:?}");
                };
                assert_eq!((gap.from_seq, gap.to_seq), (lost[0], lost[0]), "{gaps:?}");
            }

            // The next record takes a fresh seq: never a kept one, nor a set-aside one.
            collector.record(used_by("task-next", 0))?;
            collector.flush(PATIENCE)?;
            let next = collector.stats().last_seq.ok_or("no last seq")?;
            assert!(next > max_kept);
            if !report.damage.is_empty() {
                assert!(next > n, "seq {next} may have been a set-aside record's");
            }
            collector.shutdown(PATIENCE)?;
            Some(torn)
        }
    };

    let failed = open(&fail_dir, OnDamage::Fail);
    // `verify` agrees with the writer: damaged exactly when the writer refuses.
    assert_eq!(
        report.is_damaged(),
        failed.is_err(),
        "verify: {report:#?}, writer: {failed:?}"
    );
    let fail_path = in_copy(&fail_dir)?.path;
    match (effect, failed) {
        (Effect::Bad { offset, kept, .. }, Err(err)) => {
            assert_eq!(
                torn,
                Some(false),
                "refused what truncate cut as torn: {err:?}"
            );
            assert!(is_damage_at(&err, &fail_path, offset), "{err:?}");
            let expected = segment.first_seq + kept as u64;
            assert!(
                matches!(&err, BuildError::Storage(StorageError::Damaged { expected_seq, .. }) if *expected_seq == expected),
                "{err:?}"
            );
        }
        (Effect::Bad { offset, .. }, Ok(collector)) => {
            assert!(last, "damage before the last segment opened");
            assert_eq!(torn, Some(true), "opened what truncate set aside");
            let report = collector
                .stats()
                .storage
                .ok_or("no storage stats")?
                .recovery;
            assert_eq!(report.truncated_bytes, len_now - offset);
            assert!(report.damage.is_empty());
            assert_eq!(report.records, kept.len() as u64);
        }
        (Effect::Clean { kept }, Err(err)) if last => {
            assert!(kept < segment.frames.len(), "a clean cut refused: {err:?}");
            assert!(is_damage_at(&err, &fail_path, len_now), "{err:?}");
        }
        (Effect::Clean { kept }, Err(err)) => {
            let next = segments
                .get(which + 1)
                .filter(|_| kept < segment.frames.len())
                .ok_or_else(|| format!("a clean cut refused: {err:?}"))?;
            let next_path = in_copy_of(&fail_dir, next)?.path;
            assert!(is_damage_at(&err, &next_path, 0), "{err:?}");
            let expected = segment.first_seq + kept as u64;
            assert!(
                matches!(&err, BuildError::Storage(StorageError::Damaged { expected_seq, .. }) if *expected_seq == expected),
                "{err:?}"
            );
        }
        (_, Err(err)) => {
            assert!(unrecoverable, "{effect:?} refused: {err:?}");
            assert!(is_damage_at(&err, &fail_path, 0), "{err:?}");
        }
        (_, Ok(collector)) => {
            assert!(!unrecoverable, "{effect:?} opened");
            let report = collector
                .stats()
                .storage
                .ok_or("no storage stats")?
                .recovery;
            assert!(report.damage.is_empty());
            assert_eq!(report.records, kept.len() as u64);
        }
    }
    Ok(())
}

/// Successive exports from the start: every record (by seq) and every gap.
fn pull(data: &DataDir) -> common::Result<(BySeq, Vec<Gap>)> {
    let (mut got, mut gaps) = (BTreeMap::new(), Vec::new());
    let mut cursor = Cursor::START;
    let mut previous = 0;
    loop {
        let export = data.export(&ExportRequest::after(cursor))?;
        gaps.extend(export.gap());
        for (seq, (record, bytes)) in by_seq(&export)? {
            assert!(seq > previous, "seq {seq} after {previous}");
            previous = seq;
            got.insert(seq, (record, bytes));
        }
        if export.next_cursor() == cursor {
            break;
        }
        cursor = export.next_cursor();
    }
    Ok((got, gaps))
}

#[test]
fn smoke() -> TestResult {
    let corruption = Corruption::Append {
        segment: 0,
        bytes: vec![0xff; 10],
    };
    run(80, &corruption)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_the_valid_prefix_and_never_returns_damage(
        n in 40u64..160,
        corruption in corruption(),
    ) {
        run(n, &corruption).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
