//! Merged exports: one version 2 export holding the records of several sources, each
//! record tagged with its `source`, with a cursor range and gaps per source in the
//! header, signed as a whole. A puller writes one from the exports relays published.
//!
//! Merging never decodes an event: each part's checksum (and MAC) is checked over its
//! bytes, its records are found by walking the MessagePack values, and each record is
//! copied with one more entry, `source`, right after its `seq`.

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::{
    EXPORT_FORMAT, EXPORT_VERSION, Export, ExportError, ExportHeader, Gap, HeaderProbe, MacKey,
    Record, Sums, check_cursors, check_identity, check_mac, decode, read_trailer, to_usize,
    write_value,
};
use crate::codec::msgpack::{record_head, splice_after_seq, value_len};
use crate::contract::config::{AnonymizationMode, is_valid_source};

/// The record field that names its source in a merged export.
const SOURCE_KEY: &str = "source";

/// Where one source stands in a merged export: the seq range the file moves it over.
///
/// ```
/// use arbiter_events::SourceRange;
/// let range = SourceRange::default();
/// assert_eq!((range.after, range.next_cursor, range.count), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SourceRange {
    /// Seqs up to this one were in earlier files.
    pub after: u64,
    /// Seqs up to this one are now in this file or an earlier one: the source's cursor
    /// for what comes next.
    pub next_cursor: u64,
    /// Records of this source in the file.
    pub count: u64,
    /// Seqs in `after + 1 ..= next_cursor` that are gone (pruned or damaged before they
    /// were relayed), in order.
    pub gaps: Vec<Gap>,
}

/// Merges version 2 exports of several sources into one export.
///
/// Each part must be an unfiltered export of one source (as [`DataDir::export`] and
/// the relay make them) that starts where that source stands: at the cursor given to
/// [`ExportMerger::new`] for it, else at the previous part's `next_cursor`, else at 0.
/// Its checksum is checked, and with [`ExportMerger::verify_with`] its MAC: a part
/// that fails is refused and nothing of it is taken. All parts must share one key id
/// (or all be unpseudonymized), since the merged header names one.
///
/// The merged export holds each source's records in seq order, the sources in
/// name order, so the same parts give the same bytes in whatever order sources
/// interleaved. Its header has `sources` (one [`SourceRange`] each) and no single
/// `source`, cursor or gap; each record names its `source`. With a MAC key it is
/// signed under it.
///
/// ```
/// use arbiter_events::{
///     read_export_verified, AnonymizationKey, Collector, Config, Custom, Cursor, Event,
///     ExportMerger, ExportRequest,
/// };
/// let key = AnonymizationKey::from_bytes([7; 32]);
/// let mut merger = ExportMerger::new([]).verify_with(key.mac_key());
/// for source in ["machine-a", "machine-b"] {
///     let mut config = Config::default();
///     config.source = Some(source.to_owned());
///     let collector = Collector::builder().config(config).key(key.clone()).build()?;
///     let tick = Custom { name: "tick".to_owned(), attributes: Default::default() };
///     collector.record(Event::Custom(tick))?;
///     collector.flush(std::time::Duration::from_secs(5))?;
///     merger.push(&collector.export(&ExportRequest::after(Cursor::START))?.to_msgpack())?;
/// }
/// let merged = merger.finish().to_msgpack();
/// let file = read_export_verified(merged.as_slice(), &key.mac_key())?;
/// assert_eq!(file.records.len(), 2);
/// assert_eq!(file.records[1].source.as_deref(), Some("machine-b"));
/// assert_eq!(file.header.sources.as_ref().map(|s| s["machine-a"].next_cursor), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`DataDir::export`]: crate::DataDir::export
#[derive(Debug, Default)]
pub struct ExportMerger {
    /// Where each source stands: moved on by each part taken.
    cursors: BTreeMap<String, u64>,
    /// Per source taken, its range in the merged file.
    ranges: BTreeMap<String, SourceRange>,
    /// Per source taken, its records as the merged file holds them.
    records: BTreeMap<String, Vec<u8>>,
    mac_key: Option<MacKey>,
    /// The anonymization and key id of the parts taken.
    identity: Option<(AnonymizationMode, Option<String>)>,
    unsynced: bool,
    count: u64,
}

impl ExportMerger {
    /// A merger whose sources stand at `cursors` (the last seq already merged into an
    /// earlier file, per source; a source not named stands at 0).
    pub fn new(cursors: impl IntoIterator<Item = (String, u64)>) -> ExportMerger {
        ExportMerger {
            cursors: cursors.into_iter().collect(),
            ..ExportMerger::default()
        }
    }

    /// Verifies each part's MAC under `mac_key` and signs the merged export with it.
    #[must_use]
    pub fn verify_with(mut self, mac_key: MacKey) -> ExportMerger {
        self.mac_key = Some(mac_key);
        self
    }

    /// Where `source` stands: the last seq merged, here or in an earlier file.
    pub fn cursor(&self, source: &str) -> u64 {
        self.cursors.get(source).copied().unwrap_or(0)
    }

    /// The key id of the parts taken: `None` before the first, `Some(None)` when they
    /// are not pseudonymized.
    pub fn key_id(&self) -> Option<Option<&str>> {
        self.identity.as_ref().map(|(_, key_id)| key_id.as_deref())
    }

    /// Records taken so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no record was taken (a part holding only a gap still moves its source).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Checks one export's bytes and takes its records. Nothing of a refused part is
    /// taken.
    ///
    /// # Errors
    /// - As [`read_export`](crate::read_export) for a damaged part: truncated, corrupt,
    ///   checksum or count mismatch, a header that disagrees with the records, another
    ///   format or version.
    /// - With [`ExportMerger::verify_with`]: [`ExportError::MacMissing`] for a part
    ///   without a MAC, [`ExportError::MacMismatch`] for one signed under another key or
    ///   changed since.
    /// - [`ExportError::NotMergeable`] for a part of no single source, a filtered or
    ///   already merged one, one that does not start where its source stands, or one
    ///   whose key id is not that of the parts taken.
    pub fn push(&mut self, part: &[u8]) -> Result<(), ExportError> {
        let mut cur = Cursor::new(part);
        let probe: HeaderProbe = decode(&mut cur.clone(), "header", 0, 0)?;
        if probe.format != EXPORT_FORMAT || probe.version != EXPORT_VERSION {
            return Err(ExportError::Unsupported {
                format: probe.format,
                version: probe.version,
            });
        }
        let header: ExportHeader = decode(&mut cur, "header", 0, 0)?;
        let header_end = to_usize(cur.position());
        let mut at = header_end;
        let mut spans = Vec::with_capacity(to_usize(header.count.min(1 << 16)));
        for index in 0..header.count {
            let rest = &part[at..];
            let len = value_len(rest).ok_or(ExportError::Truncated {
                what: "record",
                records_read: index,
                expected: header.count,
                offset: at as u64,
            })?;
            let head = record_head(&rest[..len]).ok_or_else(|| ExportError::Corrupt {
                index,
                offset: at as u64,
                reason: "record: not a map that starts with `seq`".to_owned(),
            })?;
            spans.push((at..at + len, head));
            at += len;
        }
        let mut cur = Cursor::new(part);
        cur.set_position(at as u64);
        let checksum = blake3::hash(&part[..at]);
        let trailer = read_trailer(&mut cur, header.count, &checksum)?;
        if let Some(key) = &self.mac_key {
            check_mac(key, &trailer, header.version, &checksum)?;
        }
        // Whole and signed: now, does it belong here?
        let refuse = |reason: String| ExportError::NotMergeable {
            source_id: header.source.clone(),
            reason,
        };
        let Some(source) = header.source.as_deref() else {
            return Err(refuse("the export names no source".to_owned()));
        };
        if header.sources.is_some() {
            return Err(refuse("the export is already a merge".to_owned()));
        }
        if header.kinds.is_some() || header.since.is_some() || header.until.is_some() {
            return Err(refuse(
                "the export is filtered by kind or time: its range is not whole".to_owned(),
            ));
        }
        check_identity(&header)?;
        let identity = (header.anonymization, header.key_id.clone());
        if let Some(taken) = &self.identity
            && *taken != identity
        {
            return Err(refuse(format!(
                "its key id {:?} is not the {:?} of the records merged",
                identity.1, taken.1
            )));
        }
        let cursor = self.cursor(source);
        if header.after != cursor {
            return Err(refuse(format!(
                "it starts after seq {}, the source stands at {cursor}",
                header.after
            )));
        }
        let seqs: Vec<u64> = spans.iter().map(|(_, head)| head.seq).collect();
        check_cursors(&header, &seqs)?;
        // Checked whole: take it.
        let out = self.records.entry(source.to_owned()).or_default();
        out.reserve(at - header_end + spans.len() * (source.len() + 8));
        for (span, head) in spans {
            splice_after_seq(&part[span], head, SOURCE_KEY, source, out);
        }
        let range = self
            .ranges
            .entry(source.to_owned())
            .or_insert_with(|| SourceRange {
                after: cursor,
                next_cursor: cursor,
                count: 0,
                gaps: Vec::new(),
            });
        range.next_cursor = header.next_cursor;
        range.count += header.count;
        range.gaps.extend(header.gap);
        self.cursors.insert(source.to_owned(), header.next_cursor);
        self.count += header.count;
        self.unsynced |= header.unsynced;
        self.identity = Some(identity);
        Ok(())
    }

    /// The merged export, signed under the MAC key when one was given.
    pub fn finish(self) -> Export {
        let (anonymization, key_id) = self.identity.unwrap_or((AnonymizationMode::Off, None));
        let header = ExportHeader {
            format: EXPORT_FORMAT.to_owned(),
            version: EXPORT_VERSION,
            anonymization,
            key_id,
            source: None,
            after: 0,
            next_cursor: 0,
            gap: None,
            since: None,
            until: None,
            kinds: None,
            limit: None,
            count: self.count,
            first_seq: None,
            last_seq: None,
            unsynced: self.unsynced,
            sources: Some(self.ranges),
        };
        let mut header_bytes = Vec::with_capacity(512);
        // Writing plain fields to a Vec cannot fail.
        let _ = write_value(&mut header_bytes, &header);
        let mut records = Vec::with_capacity(self.records.values().map(Vec::len).sum());
        for bytes in self.records.values() {
            records.extend_from_slice(bytes);
        }
        let mut sums = Sums::new(header.version, self.mac_key.as_ref());
        sums.update(&header_bytes);
        sums.update(&records);
        let (checksum, mac) = sums.finish();
        Export {
            header,
            header_bytes,
            records,
            checksum,
            mac,
            mac_key: self.mac_key,
        }
    }
}

/// Checks a merged export's header against its records: no single source, cursor,
/// gap or filter; every record names a source of the header; per source, seqs
/// increase after its `after`, up to its `next_cursor`, outside its gaps, and its
/// count and cursor agree with its records and gaps.
pub(super) fn check_merged(
    h: &ExportHeader,
    sources: &BTreeMap<String, SourceRange>,
    records: &[Record],
) -> Result<(), ExportError> {
    let refuse = |reason: String| {
        Err(ExportError::HeaderMismatch {
            field: "sources",
            reason,
        })
    };
    check_identity(h)?;
    if h.source.is_some()
        || h.after != 0
        || h.next_cursor != 0
        || h.gap.is_some()
        || h.first_seq.is_some()
        || h.last_seq.is_some()
        || h.since.is_some()
        || h.until.is_some()
        || h.kinds.is_some()
        || h.limit.is_some()
    {
        return refuse(
            "a merged export has no single `source`, cursor, gap, seq range or filter".to_owned(),
        );
    }
    // Per source: the last seq seen and the records counted.
    let mut reached: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (source, range) in sources {
        if !is_valid_source(source) {
            return refuse(format!("{source:?} is not a valid source id"));
        }
        if range.next_cursor < range.after {
            return refuse(format!(
                "{source}: next cursor {} is before `after` {}",
                range.next_cursor, range.after
            ));
        }
        let mut previous = range.after;
        for gap in &range.gaps {
            if gap.from_seq <= previous
                || gap.to_seq < gap.from_seq
                || gap.to_seq > range.next_cursor
            {
                return refuse(format!(
                    "{source}: gap {}..={} is out of order or outside {}..={}",
                    gap.from_seq,
                    gap.to_seq,
                    range.after + 1,
                    range.next_cursor
                ));
            }
            previous = gap.to_seq;
        }
        reached.insert(source, (range.after, 0));
    }
    for r in records {
        let Some(source) = r.source.as_deref() else {
            return refuse(format!("record seq {} names no source", r.seq));
        };
        let (Some(range), Some((previous, count))) = (sources.get(source), reached.get_mut(source))
        else {
            return refuse(format!(
                "record seq {} names source {source:?}, not in the header",
                r.seq
            ));
        };
        if r.seq <= *previous || r.seq > range.next_cursor {
            return refuse(format!(
                "{source}: record seq {} does not follow {previous} within its range to {}",
                r.seq, range.next_cursor
            ));
        }
        if let Some(gap) = range
            .gaps
            .iter()
            .find(|g| g.from_seq <= r.seq && r.seq <= g.to_seq)
        {
            return refuse(format!(
                "{source}: record seq {} is inside gap {}..={}",
                r.seq, gap.from_seq, gap.to_seq
            ));
        }
        *previous = r.seq;
        *count += 1;
    }
    for (source, range) in sources {
        let (last, count) = reached.get(source.as_str()).copied().unwrap_or_default();
        let end = range
            .gaps
            .last()
            .map_or(range.after, |g| g.to_seq)
            .max(last);
        if count != range.count || range.next_cursor != end {
            return refuse(format!(
                "{source}: header says {} records through seq {}, the file holds {count} through {end}",
                range.count, range.next_cursor
            ));
        }
    }
    Ok(())
}
