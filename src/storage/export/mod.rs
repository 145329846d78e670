//! Incremental exports: a `seq` cursor, time and kind filters, explicit gaps, and a
//! self-checking MessagePack layout (header, named-map records, trailer).

mod error;
mod merge;

use std::io::{Read, Write};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::contract::clock::{datetime, unix_nanos};
use crate::contract::config::AnonymizationMode;
use crate::contract::event::{Event, EventKind};
use crate::contract::key::AnonymizationKey;
use crate::storage::store::{Meta, Store};
pub use error::ExportError;
pub use merge::{ExportMerger, SourceRange};

/// The `format` of every export header.
pub const EXPORT_FORMAT: &str = "arbiter-events/export";
/// The export layout version this crate writes: 2 (a source id, a checksum over header
/// and records, and a keyed MAC). Version 1 files still read.
pub const EXPORT_VERSION: u32 = 2;
/// The first layout version: its checksum covers the records only, and it has no MAC.
pub const EXPORT_VERSION_1: u32 = 1;
/// The `blake3::derive_key` context of the MAC key, derived from the collector's key.
pub(crate) const MAC_KEY_CONTEXT: &str = "arbiter-events 2026 export mac";
/// The most bytes read from a MAC key file.
const MAC_KEY_FILE_MAX_BYTES: u64 = 4096;
/// Records examined per hold of the store's lock while exporting.
const EXPORT_CHUNK: usize = 1024;

/// A position in the record stream: exports return the records with `seq` after it.
///
/// ```
/// use arbiter_events::Cursor;
/// assert_eq!(Cursor::START.seq(), 0);
/// assert_eq!(Cursor::after_seq(41).seq(), 41);
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cursor(u64);

impl Cursor {
    /// Before the first record.
    pub const START: Cursor = Cursor(0);

    /// The position just after the record `seq`.
    pub const fn after_seq(seq: u64) -> Cursor {
        Cursor(seq)
    }

    /// The last seq this cursor has passed (0 for [`Cursor::START`]).
    pub const fn seq(self) -> u64 {
        self.0
    }
}

/// What to export.
///
/// ```
/// use arbiter_events::{Cursor, EventKind, ExportRequest};
/// let request = ExportRequest::after(Cursor::START)
///     .kinds([EventKind::TaskCompleted, EventKind::JudgmentRecorded])
///     .limit(10_000);
/// assert_eq!(request.limit, Some(10_000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportRequest {
    /// Export records with `seq` after this (exclusive).
    pub after: Cursor,
    /// Only records with `time >= since`; earlier ones are passed over (the cursor moves past them).
    pub since: Option<OffsetDateTime>,
    /// Only records with `time < until`; the export stops before the first later one.
    pub until: Option<OffsetDateTime>,
    /// Only these kinds; others are passed over (the cursor moves past them).
    pub kinds: Option<Vec<EventKind>>,
    /// At most this many records.
    pub limit: Option<u64>,
}

impl ExportRequest {
    /// Everything after `cursor`.
    pub fn after(cursor: Cursor) -> ExportRequest {
        ExportRequest {
            after: cursor,
            ..ExportRequest::default()
        }
    }

    /// Only records at or after `time`.
    pub fn since(mut self, time: OffsetDateTime) -> ExportRequest {
        self.since = Some(time);
        self
    }

    /// Only records before `time`.
    pub fn until(mut self, time: OffsetDateTime) -> ExportRequest {
        self.until = Some(time);
        self
    }

    /// Only records of these kinds.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = EventKind>) -> ExportRequest {
        let mut kinds: Vec<EventKind> = kinds.into_iter().collect();
        kinds.sort();
        kinds.dedup();
        self.kinds = Some(kinds);
        self
    }

    /// At most `limit` records.
    pub fn limit(mut self, limit: u64) -> ExportRequest {
        self.limit = Some(limit);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ExportError> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            return Err(ExportError::InvalidRequest {
                reason: "`since` must be before `until`",
            });
        }
        if self.limit == Some(0) {
            return Err(ExportError::InvalidRequest {
                reason: "`limit` must be at least 1",
            });
        }
        if self.kinds.as_ref().is_some_and(Vec::is_empty) {
            return Err(ExportError::InvalidRequest {
                reason: "`kinds` must name at least one kind",
            });
        }
        Ok(())
    }
}

/// Why records between two exports are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GapReason {
    /// Pruned for age.
    Age,
    /// Pruned for `max_events` or `max_bytes`.
    Capacity,
    /// Removed by `clear`.
    Cleared,
    /// Damaged on disk and set aside when the data directory was opened.
    Damaged,
    /// Never written to the data directory: the write failed (see `storage.last_error`).
    Unpersisted,
    /// Several of these.
    Mixed,
}

/// Records the consumer had not pulled and will never get: `from_seq..=to_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The first missing seq.
    pub from_seq: u64,
    /// The last missing seq.
    pub to_seq: u64,
    /// Why they are missing.
    pub reason: GapReason,
}

impl Gap {
    /// How many records are missing.
    pub fn len(&self) -> u64 {
        self.to_seq.saturating_sub(self.from_seq).saturating_add(1)
    }

    /// Always false: a gap holds at least one seq.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The first value of an export file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExportHeader {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// The layout version, [`EXPORT_VERSION`].
    pub version: u32,
    /// Whether identifiers are pseudonyms.
    pub anonymization: AnonymizationMode,
    /// The fingerprint of the key that made the pseudonyms.
    pub key_id: Option<String>,
    /// The stable id of the collector or data directory that wrote the records
    /// (version 2; `None` in version 1 files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The request's cursor.
    pub after: u64,
    /// The cursor to pass to the next export.
    pub next_cursor: u64,
    /// Records after `after` that are gone.
    pub gap: Option<Gap>,
    /// The request's `since`, unix nanoseconds.
    pub since: Option<i64>,
    /// The request's `until`, unix nanoseconds.
    pub until: Option<i64>,
    /// The request's kinds.
    pub kinds: Option<Vec<EventKind>>,
    /// The request's limit.
    pub limit: Option<u64>,
    /// Records in this export.
    pub count: u64,
    /// The seq of the first record.
    pub first_seq: Option<u64>,
    /// The seq of the last record.
    pub last_seq: Option<u64>,
    /// The export holds records not known to be synced to disk (a data directory
    /// written under `durability = "buffered"`): a machine crash may take them back.
    /// Written only when true; files without it read as false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsynced: bool,
    /// A merged export ([`ExportMerger`]) of several sources' records: per source, the
    /// seq range the file moves it over and the gaps in it. Each record then carries its
    /// `source`, and `source`, `after`, `next_cursor`, `gap` and the seqs above are unset
    /// (zero or `None`): cursors are per source. Written only in merged exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<std::collections::BTreeMap<String, SourceRange>>,
}

/// The last value of an export file: lets a reader detect truncation and corruption,
/// and (with the MAC key) any change at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExportTrailer {
    /// Records in the file.
    pub count: u64,
    /// BLAKE3 of the header's and the records' bytes (version 1: of the records' bytes
    /// only), 64 hex digits.
    pub checksum: String,
    /// Keyed BLAKE3 of the header's and the records' bytes under the [`MacKey`], 64 hex
    /// digits; `None` when the export was made without an anonymization key (and always
    /// in version 1 files).
    #[serde(default)]
    pub mac: Option<String>,
}

/// The key that signs and verifies exports: derived from the collector's
/// [`AnonymizationKey`](AnonymizationKey) under its own context, so whoever holds
/// it can verify exports but cannot compute pseudonyms. `Debug` prints `MacKey(..)`.
///
/// ```
/// use arbiter_events::{AnonymizationKey, MacKey};
/// let mac_key = AnonymizationKey::from_bytes([7; 32]).mac_key();
/// assert_eq!(format!("{mac_key:?}"), "MacKey(..)");
/// assert_eq!(MacKey::from_hex(&mac_key.to_hex())?, mac_key);
/// # Ok::<(), arbiter_events::ExportError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MacKey([u8; 32]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl AnonymizationKey {
    /// The key that signs this collector's exports, derived under its own context: it
    /// verifies exports ([`read_export_verified`]) but cannot compute pseudonyms.
    pub fn mac_key(&self) -> MacKey {
        MacKey::from_bytes(blake3::derive_key(MAC_KEY_CONTEXT, self.secret()))
    }
}

impl MacKey {
    /// A MAC key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> MacKey {
        MacKey(bytes)
    }

    /// A MAC key from 64 hex digits (surrounding white space ignored), as
    /// `arbiter-events key mac` prints it.
    ///
    /// # Errors
    /// [`ExportError::InvalidMacKey`] for anything else.
    pub fn from_hex(text: &str) -> Result<MacKey, ExportError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|e| ExportError::InvalidMacKey {
            reason: format!("expected 64 hex digits (32 bytes): {e}"),
        })?;
        Ok(MacKey(bytes))
    }

    /// A MAC key read from a file of 64 hex digits.
    ///
    /// # Errors
    /// [`ExportError::InvalidMacKey`] naming the path when it cannot be read or holds
    /// no key.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<MacKey, ExportError> {
        let path = path.as_ref();
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAC_KEY_FILE_MAX_BYTES).read_to_string(&mut text))
            .map_err(|e| ExportError::InvalidMacKey {
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
        MacKey::from_hex(&text).map_err(|e| ExportError::InvalidMacKey {
            reason: format!("{}: {e}", path.display()),
        })
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Who wrote an export and the key that signs it, besides what the records carry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seal {
    /// The collector's or data directory's source id.
    pub(crate) source: Option<String>,
    /// The key id of the signing key and its MAC key: an export is signed only when
    /// its records were pseudonymized under that key.
    pub(crate) mac_key: Option<(String, MacKey)>,
}

/// One stored event with its place in the stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// Strictly increasing from 1, never reused.
    pub seq: u64,
    /// The ingest time: when `record()` took the event, UTC, from the collector's clock
    /// (kept non-decreasing in `seq` order, so it may be a little later than the clock
    /// read when producers race). With a [`ManualClock`](crate::ManualClock), events
    /// recorded before an `advance` carry the time before it.
    pub time: OffsetDateTime,
    /// When the thing happened, as the caller said
    /// ([`Collector::record_at`](crate::Collector::record_at)); `None` when not given.
    pub occurred_at: Option<OffsetDateTime>,
    /// The source that recorded it, in a merged export of several sources
    /// ([`ExportMerger`]); `None` in an export of one collector or data directory, whose
    /// header names the source.
    pub source: Option<String>,
    /// The event, anonymized per the collector's policy.
    pub event: Event,
}

#[derive(Serialize)]
struct RecordRef<'a> {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at: Option<i64>,
    #[serde(flatten)]
    event: &'a Event,
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RecordRef {
            seq: self.seq,
            source: self.source.as_deref(),
            time: unix_nanos(self.time),
            occurred_at: self.occurred_at.map(unix_nanos),
            event: &self.event,
        }
        .serialize(s)
    }
}

/// Records are read field by field: `seq`, `time` and `type` first (as every export
/// writes them), then the event's own fields straight into its struct, so nothing is
/// buffered on the way (serde's internally tagged enums buffer the whole map). A map in
/// another order (a sorted JSON object, say) is read through a buffer instead.
impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

/// A record whose fields come in another order: buffered as JSON, then read whole.
#[derive(Deserialize)]
struct BufferedRecord {
    seq: u64,
    #[serde(default)]
    source: Option<String>,
    time: i64,
    #[serde(default)]
    occurred_at: Option<i64>,
    #[serde(flatten)]
    event: Event,
}

/// The fields read before a record's event fields.
#[derive(Default)]
struct Prefix {
    seq: Option<u64>,
    source: Option<String>,
    time: Option<i64>,
    occurred_at: Option<i64>,
    kind: Option<EventKind>,
}

fn slow_record<'de, A: serde::de::MapAccess<'de>>(
    first: std::borrow::Cow<'de, str>,
    prefix: Prefix,
    mut map: A,
) -> Result<Record, A::Error> {
    use serde::de::Error;
    let Prefix {
        seq,
        source,
        time,
        occurred_at,
        kind,
    } = prefix;
    let mut fields = serde_json::Map::new();
    fields.extend(seq.map(|v| ("seq".to_owned(), v.into())));
    fields.extend(source.map(|v| ("source".to_owned(), v.into())));
    fields.extend(time.map(|v| ("time".to_owned(), v.into())));
    fields.extend(occurred_at.map(|v| ("occurred_at".to_owned(), v.into())));
    fields.extend(kind.map(|k| ("type".to_owned(), k.as_str().into())));
    fields.insert(first.into_owned(), map.next_value()?);
    while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
        fields.insert(k, v);
    }
    let r: BufferedRecord =
        serde_json::from_value(serde_json::Value::Object(fields)).map_err(A::Error::custom)?;
    Ok(Record {
        seq: r.seq,
        time: datetime(r.time),
        occurred_at: r.occurred_at.map(datetime),
        source: r.source,
        event: r.event,
    })
}

impl<'de> serde::de::Visitor<'de> for RecordVisitor {
    type Value = Record;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a record map starting with `seq`, `time` and `type`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
        use serde::de::Error;
        let mut p = Prefix::default();
        while p.seq.is_none() || p.time.is_none() || p.kind.is_none() {
            let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? else {
                return Err(A::Error::custom(
                    "record ends before `seq`, `time` and `type`",
                ));
            };
            match key.as_ref() {
                "seq" if p.seq.is_none() => p.seq = Some(map.next_value::<u64>()?),
                "source" if p.source.is_none() => p.source = Some(map.next_value::<String>()?),
                "time" if p.time.is_none() => p.time = Some(map.next_value::<i64>()?),
                "occurred_at" if p.occurred_at.is_none() => {
                    p.occurred_at = Some(map.next_value::<i64>()?);
                }
                "type" if p.kind.is_none() => {
                    let name = map.next_value::<std::borrow::Cow<'de, str>>()?;
                    let k = EventKind::from_name(&name)
                        .ok_or_else(|| A::Error::custom(format!("unknown event type `{name}`")))?;
                    p.kind = Some(k);
                }
                _ => return slow_record(key, p, map),
            }
        }
        let (Some(seq), Some(time), Some(kind)) = (p.seq, p.time, p.kind) else {
            return Err(A::Error::custom("record without `seq`, `time` or `type`"));
        };
        let event = Event::from_fields(kind, serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Record {
            seq,
            time: datetime(time),
            occurred_at: p.occurred_at.map(datetime),
            source: p.source,
            event,
        })
    }
}

/// The result of [`Collector::export`](crate::Collector::export): a header and the
/// encoded records, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    header: ExportHeader,
    /// The header as MessagePack: what the checksum and the MAC cover first.
    header_bytes: Vec<u8>,
    records: Vec<u8>,
    checksum: String,
    mac: Option<String>,
    /// Kept to sign the JSON Lines form, whose bytes differ.
    mac_key: Option<MacKey>,
}

impl Export {
    /// Marks the export as holding records not known to be synced.
    pub(crate) fn mark_unsynced(&mut self) {
        self.header.unsynced = true;
    }

    /// The header (cursors, gap, filters, counts).
    pub fn header(&self) -> &ExportHeader {
        &self.header
    }

    /// The cursor to pass to the next export.
    pub fn next_cursor(&self) -> Cursor {
        Cursor(self.header.next_cursor)
    }

    /// Records the consumer had not pulled that are gone, if any.
    pub fn gap(&self) -> Option<Gap> {
        self.header.gap
    }

    /// The number of records.
    pub fn len(&self) -> u64 {
        self.header.count
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    /// The trailer this export ends with.
    pub fn trailer(&self) -> ExportTrailer {
        ExportTrailer {
            count: self.header.count,
            checksum: self.checksum.clone(),
            mac: self.mac.clone(),
        }
    }

    /// Decodes the records.
    pub fn records(&self) -> impl Iterator<Item = Result<Record, ExportError>> + '_ {
        let mut input = std::io::Cursor::new(self.records.as_slice());
        (0..self.header.count).map(move |index| {
            let offset = input.position();
            Record::deserialize(&mut rmp_serde::Deserializer::new(&mut input)).map_err(|e| {
                ExportError::Corrupt {
                    index,
                    offset,
                    reason: e.to_string(),
                }
            })
        })
    }

    /// Streams the export to `out`: header, records, trailer.
    ///
    /// # Errors
    /// [`ExportError::Io`] when `out` fails.
    pub fn write_msgpack<W: Write>(&self, mut out: W) -> Result<(), ExportError> {
        out.write_all(&self.header_bytes)?;
        out.write_all(&self.records)?;
        write_value(&mut out, &self.trailer())?;
        out.flush()?;
        Ok(())
    }

    /// The export as one MessagePack byte string.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.records.len() + 512);
        // Writing to a Vec cannot fail.
        let _ = self.write_msgpack(&mut out);
        out
    }

    /// Streams the same export as JSON Lines: the header, one record a line, then the
    /// trailer, each a JSON object on its own line. The trailer's `checksum` and `mac`
    /// cover the exact bytes of the header and record lines (newlines included), as in
    /// the MessagePack form they cover the header's and records' bytes.
    ///
    /// ```
    /// use arbiter_events::{Collector, Config, Cursor, ExportRequest};
    /// let collector = Collector::new(Config::default())?;
    /// let mut out = Vec::new();
    /// collector.export(&ExportRequest::after(Cursor::START))?.write_jsonl(&mut out)?;
    /// assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ExportError::Io`] when `out` fails, [`ExportError::Corrupt`] if a record no
    /// longer decodes, [`ExportError::Encode`] if JSON cannot represent a value.
    pub fn write_jsonl<W: Write>(&self, mut out: W) -> Result<(), ExportError> {
        let mut sums = Sums::new(self.header.version, self.mac_key.as_ref());
        let mut line = Vec::with_capacity(512);
        json_line(&mut line, &self.header)?;
        sums.update(&line);
        out.write_all(&line)?;
        for record in self.records() {
            json_line(&mut line, &record?)?;
            sums.update(&line);
            out.write_all(&line)?;
        }
        let (checksum, mac) = sums.finish();
        let trailer = ExportTrailer {
            count: self.header.count,
            checksum,
            mac,
        };
        json_line(&mut line, &trailer)?;
        out.write_all(&line)?;
        out.flush()?;
        Ok(())
    }

    /// The export as JSON Lines text (see [`Export::write_jsonl`]).
    ///
    /// # Errors
    /// As [`Export::write_jsonl`], except that writing cannot fail.
    pub fn to_jsonl(&self) -> Result<Vec<u8>, ExportError> {
        let mut out = Vec::with_capacity(self.records.len() * 2 + 512);
        self.write_jsonl(&mut out)?;
        Ok(out)
    }
}

/// Replaces `line` with `value` as one JSON line.
fn json_line<T: Serialize>(line: &mut Vec<u8>, value: &T) -> Result<(), ExportError> {
    line.clear();
    serde_json::to_writer(&mut *line, value).map_err(|e| ExportError::Encode(e.to_string()))?;
    line.push(b'\n');
    Ok(())
}

/// The checksum over the signed bytes, and (with a key) the MAC: keyed BLAKE3 of the
/// checksum's 32 bytes, so the MAC covers everything the checksum does at the cost of
/// one block, not a second pass over the records (hash, then MAC).
struct Sums {
    checksum: blake3::Hasher,
    mac_key: Option<MacKey>,
}

impl Sums {
    fn new(version: u32, mac_key: Option<&MacKey>) -> Sums {
        Sums {
            checksum: blake3::Hasher::new(),
            mac_key: mac_key.filter(|_| version >= EXPORT_VERSION).cloned(),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.checksum.update(bytes);
    }

    fn finish(self) -> (String, Option<String>) {
        let checksum = self.checksum.finalize();
        let mac = self
            .mac_key
            .map(|k| mac_of(&k, &checksum).to_hex().to_string());
        (checksum.to_hex().to_string(), mac)
    }
}

/// The MAC of a file whose checksum is `checksum`.
fn mac_of(key: &MacKey, checksum: &blake3::Hash) -> blake3::Hash {
    blake3::keyed_hash(&key.0, checksum.as_bytes())
}

fn write_value<W: Write, T: Serialize>(out: &mut W, value: &T) -> Result<(), ExportError> {
    rmp_serde::encode::write_named(out, value).map_err(|e| match e {
        rmp_serde::encode::Error::InvalidValueWrite(
            rmp::encode::ValueWriteError::InvalidMarkerWrite(io),
        )
        | rmp_serde::encode::Error::InvalidValueWrite(
            rmp::encode::ValueWriteError::InvalidDataWrite(io),
        ) => ExportError::Io(io),
        other => ExportError::Encode(other.to_string()),
    })
}

/// Everything settings-wise an export needs besides the store.
pub(crate) struct ExportContext<'a> {
    pub(crate) store: &'a Mutex<Store>,
    pub(crate) now: i64,
    pub(crate) anonymization: AnonymizationMode,
    pub(crate) key_id: Option<String>,
    /// The data directory, for records no longer in memory.
    pub(crate) data_dir: Option<&'a std::path::Path>,
    /// The source id and the MAC key.
    pub(crate) seal: Seal,
}

/// Collects one export's records as a source (memory or segments) offers them in seq
/// order, applying the request's filters and moving the cursor.
#[derive(Debug)]
pub(crate) struct Builder<'r> {
    req: &'r ExportRequest,
    since: Option<i64>,
    until: Option<i64>,
    cursor: u64,
    gap: Option<Gap>,
    records: Vec<u8>,
    count: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// The key id of the records taken: set by the first source, `None` inside when
    /// they are not pseudonymized.
    key_id: Option<Option<String>>,
    done: bool,
}

impl<'r> Builder<'r> {
    pub(crate) fn new(req: &'r ExportRequest) -> Result<Builder<'r>, ExportError> {
        req.validate()?;
        Ok(Builder {
            req,
            since: req.since.map(unix_nanos),
            until: req.until.map(unix_nanos),
            cursor: req.after.seq(),
            gap: None,
            records: Vec::new(),
            count: 0,
            first_seq: None,
            last_seq: None,
            key_id: None,
            done: false,
        })
    }

    /// The last seq passed.
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether the export is complete (limit or `until` reached).
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Records up to `to_seq` that the cursor has not passed are gone, for `reason`.
    /// An export carries one gap, at its start: a gap after other records were passed
    /// ends the export (`false`), and the next export starts with it.
    pub(crate) fn gap_through(&mut self, to_seq: u64, reason: GapReason) -> bool {
        if to_seq <= self.cursor {
            return true;
        }
        match &mut self.gap {
            Some(gap) if gap.to_seq == self.cursor => {
                gap.to_seq = to_seq;
                if gap.reason != reason {
                    gap.reason = GapReason::Mixed;
                }
            }
            None if self.cursor == self.req.after.seq() => {
                self.gap = Some(Gap {
                    from_seq: self.cursor + 1,
                    to_seq,
                    reason,
                });
            }
            _ => {
                self.done = true;
                return false;
            }
        }
        self.cursor = to_seq;
        true
    }

    /// Moves the cursor past records before `since` without looking at them.
    pub(crate) fn skip_through(&mut self, seq: u64) {
        self.cursor = self.cursor.max(seq);
    }

    /// Takes the records' key id; `false` when records under another key were already
    /// taken (the export stops there; the next one continues under the new key).
    pub(crate) fn key(&mut self, key_id: Option<String>) -> bool {
        match &self.key_id {
            Some(k) if *k != key_id => {
                if self.count > 0 {
                    self.done = true;
                    return false;
                }
                self.key_id = Some(key_id);
                true
            }
            Some(_) => true,
            None => {
                self.key_id = Some(key_id);
                true
            }
        }
    }

    /// The key id of the records taken so far (`None` when none were offered, or they
    /// are not pseudonymized).
    pub(crate) fn key_id(&self) -> Option<&str> {
        self.key_id.as_ref().and_then(Option::as_deref)
    }

    /// Reserves room for about `bytes` more record bytes.
    pub(crate) fn reserve(&mut self, bytes: u64) {
        self.records.reserve(to_usize(bytes));
    }

    /// Offers the next record; `false` once the export is complete.
    pub(crate) fn offer(&mut self, meta: &Meta, bytes: &[u8]) -> bool {
        if self.done
            || self.until.is_some_and(|u| meta.time >= u)
            || self.req.limit.is_some_and(|l| self.count >= l)
        {
            self.done = true;
            return false;
        }
        self.cursor = meta.seq;
        if self.since.is_some_and(|s| meta.time < s)
            || self
                .req
                .kinds
                .as_ref()
                .is_some_and(|k| !k.contains(&meta.kind))
        {
            return true;
        }
        self.records.extend_from_slice(bytes);
        self.count += 1;
        self.first_seq.get_or_insert(meta.seq);
        self.last_seq = Some(meta.seq);
        true
    }

    /// The export, its records under `key_id` unless a source set another, signed
    /// with `seal`'s MAC key only when its records are pseudonymized.
    pub(crate) fn finish(self, key_id: Option<String>, seal: Seal) -> Export {
        let key_id = self.key_id.unwrap_or(key_id);
        let mac_key = seal
            .mac_key
            .filter(|(signer, _)| key_id.as_deref() == Some(signer.as_str()))
            .map(|(_, k)| k);
        let header = ExportHeader {
            format: EXPORT_FORMAT.to_owned(),
            version: EXPORT_VERSION,
            anonymization: if key_id.is_some() {
                AnonymizationMode::Pseudonymize
            } else {
                AnonymizationMode::Off
            },
            key_id,
            source: seal.source,
            after: self.req.after.seq(),
            next_cursor: self.cursor,
            gap: self.gap,
            since: self.since,
            until: self.until,
            kinds: self.req.kinds.clone(),
            limit: self.req.limit,
            count: self.count,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            unsynced: false,
            sources: None,
        };
        let mut header_bytes = Vec::with_capacity(256);
        // Writing plain fields to a Vec cannot fail.
        let _ = write_value(&mut header_bytes, &header);
        let mut sums = Sums::new(header.version, mac_key.as_ref());
        sums.update(&header_bytes);
        // One pass over the whole buffer lets BLAKE3 hash many chunks at once.
        sums.update(&self.records);
        let (checksum, mac) = sums.finish();
        Export {
            header,
            header_bytes,
            records: self.records,
            checksum,
            mac,
            mac_key,
        }
    }
}

/// The seal of an export read from the data directory `root` by another process: its
/// source id, and the MAC key of its `key` file when that key made the records
/// (`key_id`); records under a key from elsewhere (config, environment) stay unsigned.
pub(crate) fn dir_seal(root: &std::path::Path, key_id: Option<&str>) -> Result<Seal, ExportError> {
    let source = crate::storage::log::dir::source(root, None, false)?;
    let key_path = root.join(crate::storage::log::dir::KEY);
    let mac_key = match key_id {
        Some(id) if key_path.exists() => {
            let key =
                AnonymizationKey::from_file(&key_path).map_err(|e| ExportError::InvalidMacKey {
                    reason: e.to_string(),
                })?;
            (key.key_id() == id).then(|| (key.key_id(), key.mac_key()))
        }
        _ => None,
    };
    Ok(Seal { source, mac_key })
}

/// Builds an export, holding the store's lock for at most [`EXPORT_CHUNK`] records at a
/// time; records older than the memory window come from the data directory.
pub(crate) fn export(ctx: ExportContext<'_>, req: &ExportRequest) -> Result<Export, ExportError> {
    let mut b = Builder::new(req)?;
    let key_id = match ctx.anonymization {
        AnonymizationMode::Pseudonymize => ctx.key_id.clone(),
        AnonymizationMode::Off => None,
    };
    let lock = || {
        ctx.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let (end_seq, memory_first, cutoff) = {
        let mut store = lock();
        store.prune_expired(ctx.now);
        let next = store.next_seq();
        if b.cursor() >= next {
            return Err(ExportError::CursorAhead {
                after: b.cursor(),
                last_seq: next - 1,
            });
        }
        (next, store.first_seq(), store.cutoff(ctx.now))
    };
    let seal = ctx.seal;
    if b.cursor() + 1 < memory_first
        && let Some(root) = ctx.data_dir
    {
        crate::storage::log::export_from_disk(
            root,
            &mut b,
            Some(memory_first),
            Some(cutoff),
            None,
        )?;
        if b.done() || b.cursor() + 1 < memory_first {
            return Ok(b.finish(key_id, seal));
        }
    }
    if !b.key(key_id.clone()) {
        return Ok(b.finish(key_id, seal));
    }
    let mut first_pass = true;
    loop {
        let store = lock();
        let first = store.first_seq();
        if b.cursor() + 1 < first
            && let Some(root) = ctx.data_dir
        {
            // Pruned from memory since the look above: those records are on disk.
            drop(store);
            crate::storage::log::export_from_disk(root, &mut b, Some(first), Some(cutoff), None)?;
            if b.done() || b.cursor() + 1 < first {
                return Ok(b.finish(key_id, seal));
            }
            continue;
        }
        if b.cursor() + 1 < first {
            if !first_pass {
                // Records removed while the lock was released: stop here, the next
                // export reports them as a gap.
                break;
            }
            if !b.gap_through(first - 1, store.removal_reason(b.cursor() + 1, first - 1)) {
                break;
            }
        }
        if first_pass {
            first_pass = false;
            if req.kinds.is_none() {
                // The records ahead, at the store's mean size: one allocation, not a
                // series of doublings.
                let ahead = (end_seq - 1)
                    .saturating_sub(b.cursor())
                    .min(req.limit.unwrap_or(u64::MAX));
                let mean = store.bytes() / store.len().max(1);
                b.reserve(ahead.saturating_mul(mean).min(store.bytes()));
            }
            if let Some(since) = b.since {
                b.skip_through(store.first_seq_at(since) - 1);
            }
        }
        let mut finished = true;
        for (examined, entry) in store.starting_at(b.cursor() + 1).enumerate() {
            if entry.meta.seq >= end_seq || !b.offer(&entry.meta, store.bytes_of(entry)) {
                break;
            }
            if examined + 1 == EXPORT_CHUNK {
                finished = false;
                break;
            }
        }
        drop(store);
        if finished {
            break;
        }
    }
    Ok(b.finish(key_id, seal))
}

/// An export file read back and verified.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ExportFile {
    /// Its header.
    pub header: ExportHeader,
    /// Its records, in seq order.
    pub records: Vec<Record>,
    /// Its trailer (already checked against the header and the records).
    pub trailer: ExportTrailer,
}

impl ExportFile {
    /// The file's layout version: [`EXPORT_VERSION`], or [`EXPORT_VERSION_1`] for a
    /// file from before the MAC.
    pub fn version(&self) -> u32 {
        self.header.version
    }
}

fn is_eof(e: &rmp_serde::decode::Error) -> bool {
    use rmp_serde::decode::Error as E;
    matches!(e, E::InvalidMarkerRead(io) | E::InvalidDataRead(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// Reads an export and verifies everything it can without a key: format and version,
/// every record, the trailer's count and checksum (in version 2 over the header's and
/// the records' bytes), that the header agrees with the records (count, first and last
/// seq, seqs strictly increasing after `after`, `next_cursor`, the gap, the limit, the
/// kinds and the time filter), and that nothing follows the trailer. Version 1 files
/// read too; [`ExportFile::version`] says which a file is.
///
/// The checksum detects accidents, not tampering: anyone can recompute it. To know that
/// nobody changed a file, use [`read_export_verified`] with the MAC key.
///
/// ```
/// use arbiter_events::{read_export, Collector, Config, Cursor, ExportRequest};
/// let collector = Collector::new(Config::default())?;
/// let bytes = collector.export(&ExportRequest::after(Cursor::START))?.to_msgpack();
/// let file = read_export(bytes.as_slice())?;
/// assert_eq!(file.trailer.count, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`ExportError::Truncated`] when the input ends early, [`ExportError::Corrupt`] or
/// [`ExportError::ChecksumMismatch`] when it was damaged, [`ExportError::HeaderMismatch`]
/// when the header contradicts the records, [`ExportError::Unsupported`] for another
/// format or version.
pub fn read_export<R: Read>(mut input: R) -> Result<ExportFile, ExportError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    read(&bytes)
}

/// Reads an export as [`read_export`] does, then checks its MAC under `mac_key` (the
/// output of `arbiter-events key mac`, or [`AnonymizationKey::mac_key`]): a file that
/// passes was written by a holder of the collector's key and not changed since, header
/// (`source`, `key_id`, `after`, `next_cursor`, `gap`, filters, counts) and records alike.
///
/// [`AnonymizationKey::mac_key`]: AnonymizationKey::mac_key
///
/// ```
/// use arbiter_events::{read_export_verified, AnonymizationKey, Collector, Config, Cursor, ExportRequest};
/// let key = AnonymizationKey::from_bytes([7; 32]);
/// let collector = Collector::builder().config(Config::default()).key(key.clone()).build()?;
/// let bytes = collector.export(&ExportRequest::after(Cursor::START))?.to_msgpack();
/// let file = read_export_verified(bytes.as_slice(), &key.mac_key())?;
/// assert!(file.trailer.mac.is_some());
/// let other = AnonymizationKey::from_bytes([8; 32]).mac_key();
/// assert!(read_export_verified(bytes.as_slice(), &other).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`read_export`]; [`ExportError::MacMissing`] for a file without a MAC (version 1,
/// or made with anonymization off), [`ExportError::MacMismatch`] for a wrong one.
pub fn read_export_verified<R: Read>(
    input: R,
    mac_key: &MacKey,
) -> Result<ExportFile, ExportError> {
    let file = read_export(input)?;
    // The checksum was just recomputed from the bytes and found equal.
    let checksum =
        blake3::Hash::from_hex(&file.trailer.checksum).map_err(|_| ExportError::MacMismatch)?;
    check_mac(mac_key, &file.trailer, file.header.version, &checksum)?;
    Ok(file)
}

/// Reads the trailer at `cur`, the end of the records, and checks it against the file:
/// the header's `count`, the `checksum` of what precedes it, and that nothing follows.
fn read_trailer(
    cur: &mut std::io::Cursor<&[u8]>,
    count: u64,
    checksum: &blake3::Hash,
) -> Result<ExportTrailer, ExportError> {
    let trailer: ExportTrailer = decode(cur, "trailer", count, count)?;
    if trailer.count != count {
        return Err(ExportError::CountMismatch {
            header: count,
            trailer: trailer.count,
        });
    }
    if trailer.checksum != checksum.to_hex().as_str() {
        return Err(ExportError::ChecksumMismatch {
            expected: trailer.checksum,
            actual: checksum.to_hex().to_string(),
        });
    }
    if cur.position() != cur.get_ref().len() as u64 {
        return Err(ExportError::Corrupt {
            index: count,
            offset: cur.position(),
            reason: "bytes after the trailer".to_owned(),
        });
    }
    Ok(trailer)
}

/// Checks the trailer's MAC of a file whose checksum is `checksum` under `key`.
fn check_mac(
    key: &MacKey,
    trailer: &ExportTrailer,
    version: u32,
    checksum: &blake3::Hash,
) -> Result<(), ExportError> {
    let Some(mac) = trailer.mac.as_deref() else {
        return Err(ExportError::MacMissing { version });
    };
    // `blake3::Hash` compares in constant time.
    let expected = blake3::Hash::from_hex(mac).map_err(|_| ExportError::MacMismatch)?;
    if mac_of(key, checksum) != expected {
        return Err(ExportError::MacMismatch);
    }
    Ok(())
}

/// Reads and checks a file.
fn read(bytes: &[u8]) -> Result<ExportFile, ExportError> {
    let mut cur = std::io::Cursor::new(bytes);
    // Format and version first: another version's header may have other fields.
    let probe: HeaderProbe = decode(&mut cur.clone(), "header", 0, 0)?;
    if probe.format != EXPORT_FORMAT
        || !(EXPORT_VERSION_1..=EXPORT_VERSION).contains(&probe.version)
    {
        return Err(ExportError::Unsupported {
            format: probe.format,
            version: probe.version,
        });
    }
    let header: ExportHeader = decode(&mut cur, "header", 0, 0)?;
    let v1 = header.version == EXPORT_VERSION_1;
    let mut hasher = blake3::Hasher::new();
    if !v1 {
        hasher.update(&bytes[..to_usize(cur.position())]);
    }
    // Sized by what the input can hold, never by the header's claim alone.
    let fit = u64::try_from(bytes.len() / MIN_RECORD_BYTES).unwrap_or(u64::MAX);
    let mut records = Vec::with_capacity(to_usize(header.count.min(fit).min(MAX_PRESIZED_RECORDS)));
    for index in 0..header.count {
        let start = cur.position();
        let record: Record = decode(&mut cur, "record", index, header.count)?;
        hasher.update(&bytes[to_usize(start)..to_usize(cur.position())]);
        records.push(record);
    }
    let trailer = read_trailer(&mut cur, header.count, &hasher.finalize())?;
    if v1 && (header.source.is_some() || header.sources.is_some() || trailer.mac.is_some()) {
        return Err(ExportError::HeaderMismatch {
            field: "version",
            reason: "a version 1 file has no `source`, `sources` or `mac`".to_owned(),
        });
    }
    match &header.sources {
        Some(sources) => merge::check_merged(&header, sources, &records)?,
        None => check_header(&header, &records)?,
    }
    Ok(ExportFile {
        header,
        records,
        trailer,
    })
}

/// Checks what the header says against what can be derived from the records: damage
/// the checksum would not see when both were rewritten together, and a writer's bug.
fn check_header(h: &ExportHeader, records: &[Record]) -> Result<(), ExportError> {
    let refuse =
        |field: &'static str, reason: String| Err(ExportError::HeaderMismatch { field, reason });
    check_identity(h)?;
    if let Some(r) = records.iter().find(|r| r.source.is_some()) {
        return refuse(
            "sources",
            format!(
                "record seq {} names a source in an export of one source",
                r.seq
            ),
        );
    }
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    check_cursors(h, &seqs)?;
    if let Some(kinds) = &h.kinds {
        if kinds.is_empty() {
            return refuse("kinds", "an empty list of kinds".to_owned());
        }
        if let Some(r) = records.iter().find(|r| !kinds.contains(&r.event.kind())) {
            return refuse(
                "kinds",
                format!(
                    "record seq {} is a {}, not one of the kinds",
                    r.seq,
                    r.event.kind().as_str()
                ),
            );
        }
    }
    if let (Some(since), Some(until)) = (h.since, h.until)
        && since >= until
    {
        return refuse("since", format!("{since} is not before `until` {until}"));
    }
    for r in records {
        let time = unix_nanos(r.time);
        if h.since.is_some_and(|s| time < s) {
            return refuse(
                "since",
                format!("record seq {} at {time} is before it", r.seq),
            );
        }
        if h.until.is_some_and(|u| time >= u) {
            return refuse(
                "until",
                format!("record seq {} at {time} is not before it", r.seq),
            );
        }
    }
    Ok(())
}

/// Checks the header's seqs, cursors, gap and limit against the records' seqs.
fn check_cursors(h: &ExportHeader, seqs: &[u64]) -> Result<(), ExportError> {
    let refuse =
        |field: &'static str, reason: String| Err(ExportError::HeaderMismatch { field, reason });
    let first = seqs.first().copied();
    let last = seqs.last().copied();
    if h.first_seq != first {
        return refuse(
            "first_seq",
            format!(
                "header says {:?}, the first record has {first:?}",
                h.first_seq
            ),
        );
    }
    if h.last_seq != last {
        return refuse(
            "last_seq",
            format!("header says {:?}, the last record has {last:?}", h.last_seq),
        );
    }
    let mut previous = h.after;
    for &seq in seqs {
        if seq <= previous {
            return refuse(
                "after",
                format!(
                    "record seq {seq} does not follow {previous} (seqs must increase after `after`)"
                ),
            );
        }
        previous = seq;
    }
    if h.next_cursor < previous {
        return refuse(
            "next_cursor",
            format!(
                "{} is before seq {previous}, already exported",
                h.next_cursor
            ),
        );
    }
    if let Some(gap) = h.gap {
        if gap.from_seq > gap.to_seq {
            return refuse(
                "gap",
                format!("{}..={} ends before it starts", gap.from_seq, gap.to_seq),
            );
        }
        if gap.from_seq != h.after.saturating_add(1) {
            return refuse(
                "gap",
                format!(
                    "starts at {}, not right after `after` {}",
                    gap.from_seq, h.after
                ),
            );
        }
        if gap.to_seq > h.next_cursor || first.is_some_and(|f| f <= gap.to_seq) {
            return refuse(
                "gap",
                format!(
                    "ends at {}, past the next cursor or the first record",
                    gap.to_seq
                ),
            );
        }
    }
    // Only the kind and `since` filters pass records over; without them the cursor
    // stops at the last record taken, or the end of the gap.
    let reached = h.gap.map_or(h.after, |g| g.to_seq).max(previous);
    if h.kinds.is_none() && h.since.is_none() && h.next_cursor != reached {
        return refuse(
            "next_cursor",
            format!(
                "{} must be {reached}: no kind or time filter passed records over",
                h.next_cursor
            ),
        );
    }
    if let Some(limit) = h.limit {
        if limit == 0 || h.count > limit {
            return refuse("limit", format!("{limit} with {} records", h.count));
        }
        if h.count == limit && h.next_cursor != previous {
            return refuse(
                "next_cursor",
                format!(
                    "{} must be the last seq {previous} when the limit is reached",
                    h.next_cursor
                ),
            );
        }
    }
    Ok(())
}

/// Checks that the header's `key_id` goes with its anonymization mode and that its
/// source id is valid.
fn check_identity(h: &ExportHeader) -> Result<(), ExportError> {
    let refuse =
        |field: &'static str, reason: String| Err(ExportError::HeaderMismatch { field, reason });
    if h.key_id.is_some() != (h.anonymization == AnonymizationMode::Pseudonymize) {
        return refuse(
            "key_id",
            format!(
                "`key_id` must be given exactly when identifiers are pseudonyms (anonymization {:?})",
                h.anonymization
            ),
        );
    }
    if let Some(source) = &h.source
        && !crate::contract::config::is_valid_source(source)
    {
        return refuse("source", format!("{source:?} is not a valid source id"));
    }
    Ok(())
}

/// The fewest bytes any record takes (a map with `seq`, `time` and `type`).
const MIN_RECORD_BYTES: usize = 16;
/// The most records a reader reserves room for before it has read them.
const MAX_PRESIZED_RECORDS: u64 = 1 << 16;
/// How deep a reader follows nested values: attributes at their deepest, plus the record.
const MAX_DECODE_DEPTH: usize = crate::contract::config::MAX_ATTRIBUTE_DEPTH + 8;

#[derive(Deserialize)]
struct HeaderProbe {
    format: String,
    version: u32,
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Decodes one record's bytes (as segments hold them), with the export reader's limits.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_record(bytes: &[u8]) -> Result<Record, ExportError> {
    decode(&mut std::io::Cursor::new(bytes), "record", 0, 1)
}

fn decode<T: for<'de> Deserialize<'de>>(
    cur: &mut std::io::Cursor<&[u8]>,
    what: &'static str,
    index: u64,
    expected: u64,
) -> Result<T, ExportError> {
    let offset = cur.position();
    let mut de = rmp_serde::Deserializer::new(&mut *cur);
    de.set_max_depth(MAX_DECODE_DEPTH);
    T::deserialize(&mut de).map_err(|e| {
        if is_eof(&e) {
            ExportError::Truncated {
                what,
                records_read: index,
                expected,
                offset,
            }
        } else {
            ExportError::Corrupt {
                index,
                offset,
                reason: format!("{what}: {e}"),
            }
        }
    })
}
