//! Configuration: a serde struct read from TOML, every default a named constant.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::analytics::{AlertRule, AlertRuleError, AnalyticsConfig, validate_alerts};
use crate::contract::event::validate::Limits;
use crate::contract::key::{AnonymizationKey, KeyError};

/// The largest integer a TOML file can hold (`i64::MAX`): the bound of the unbounded
/// counts, so every valid configuration can be written back.
pub const MAX_TOML_INTEGER: u64 = i64::MAX as u64;

/// Default of `enabled`: the collector records.
pub const DEFAULT_ENABLED: bool = true;
/// Default of `queue.capacity`: events the channel holds before the overflow policy applies.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// The largest `queue.capacity` accepted.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 24;
/// Default of `queue.overflow`: drop the new event and count it; never block.
pub const DEFAULT_OVERFLOW: Overflow = Overflow::DropNewest;
/// Default of `retention.max_age_secs`: one day.
pub const DEFAULT_MAX_AGE_SECS: u64 = 86_400;
/// Default of `retention.max_events`.
pub const DEFAULT_MAX_EVENTS: u64 = 1_000_000;
/// Default of `retention.max_bytes`: 256 MiB of encoded records.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The smallest `retention.max_bytes` accepted.
pub const MIN_MAX_BYTES: u64 = 1024;
/// Default of `anonymization.mode`.
pub const DEFAULT_ANONYMIZATION_MODE: AnonymizationMode = AnonymizationMode::Pseudonymize;
/// Default of `anonymization.free_text`.
pub const DEFAULT_FREE_TEXT: FreeText = FreeText::Redact;
/// Default of `anonymization.memo_capacity`: pseudonyms remembered per identifier kind.
pub const DEFAULT_MEMO_CAPACITY: usize = 1024;
/// The largest `anonymization.memo_capacity` accepted.
pub const MAX_MEMO_CAPACITY: usize = 1 << 22;
/// Default (and largest allowed value) of `limits.max_id_bytes`.
pub const DEFAULT_MAX_ID_BYTES: usize = 256;
/// Default of `limits.max_string_bytes`.
pub const DEFAULT_MAX_STRING_BYTES: usize = 4096;
/// The largest `limits.max_string_bytes` accepted.
pub const MAX_STRING_BYTES: usize = 1 << 20;
/// Default of `limits.max_collection_len`.
pub const DEFAULT_MAX_COLLECTION_LEN: usize = 256;
/// The largest `limits.max_collection_len` accepted.
pub const MAX_COLLECTION_LEN: usize = 1 << 16;
/// Default of `limits.max_attribute_depth`.
pub const DEFAULT_MAX_ATTRIBUTE_DEPTH: usize = 4;
/// The largest `limits.max_attribute_depth` accepted.
pub const MAX_ATTRIBUTE_DEPTH: usize = 32;
/// Default of `limits.max_attribute_entries`: values in one attribute tree.
pub const DEFAULT_MAX_ATTRIBUTE_ENTRIES: usize = 256;
/// Default of `limits.max_occurred_past_secs`: an `occurred_at` may be up to a day
/// before the ingest time.
pub const DEFAULT_MAX_OCCURRED_PAST_SECS: u64 = 86_400;
/// Default of `limits.max_occurred_future_secs`: an `occurred_at` may be up to a minute
/// after the ingest time (clock skew between machines).
pub const DEFAULT_MAX_OCCURRED_FUTURE_SECS: u64 = 60;
/// The largest `limits.max_occurred_past_secs` and `limits.max_occurred_future_secs`
/// accepted: about 292 years, the reach of `i64` nanoseconds.
pub const MAX_OCCURRED_SKEW_SECS: u64 = i64::MAX as u64 / 1_000_000_000;
/// Default of `worker.batch_size`: events the worker commits per lock of the store.
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// The largest `worker.batch_size` accepted.
pub const MAX_BATCH_SIZE: usize = 1 << 16;
/// Default of `worker.tick_ms`: how often an idle worker wakes to prune by age.
pub const DEFAULT_TICK_MS: u64 = 250;
/// The largest `worker.tick_ms` accepted.
pub const MAX_TICK_MS: u64 = 60_000;

/// Default of `storage.durability`: `fsync` after every batch, so a completed `flush`
/// means the records are on disk.
pub const DEFAULT_DURABILITY: Durability = Durability::EveryBatch;
/// Default of `storage.segment_bytes`: segment files roll at 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest `storage.segment_bytes` accepted.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// The largest `storage.segment_bytes` accepted.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 32;
/// Default of `storage.max_disk_bytes`: 4 GiB of segment files.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Default of `storage.on_damage`: refuse to open a damaged directory.
pub const DEFAULT_ON_DAMAGE: OnDamage = OnDamage::Fail;

/// When segment writes are made durable with `fsync`.
///
/// In TOML: `durability = "buffered"`, `durability = "every_batch"`, or
/// `durability = { interval_ms = 200 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "DurabilityRepr", into = "DurabilityRepr")]
pub enum Durability {
    /// Written to the operating system after every batch, never synced: survives a
    /// crash of the process, not of the machine.
    Buffered,
    /// Synced after every batch: a completed [`flush`](crate::Collector::flush) means
    /// on disk.
    EveryBatch,
    /// Synced when this much time has passed since the last sync (checked after every
    /// batch and on the idle tick), and on `flush`.
    Interval(Duration),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum DurabilityRepr {
    Buffered,
    EveryBatch,
    IntervalMs(u64),
}

impl From<DurabilityRepr> for Durability {
    fn from(r: DurabilityRepr) -> Durability {
        match r {
            DurabilityRepr::Buffered => Durability::Buffered,
            DurabilityRepr::EveryBatch => Durability::EveryBatch,
            DurabilityRepr::IntervalMs(ms) => Durability::Interval(Duration::from_millis(ms)),
        }
    }
}

impl From<Durability> for DurabilityRepr {
    fn from(d: Durability) -> DurabilityRepr {
        match d {
            Durability::Buffered => DurabilityRepr::Buffered,
            Durability::EveryBatch => DurabilityRepr::EveryBatch,
            Durability::Interval(d) => DurabilityRepr::IntervalMs(whole_ms(d)),
        }
    }
}

/// A wait as whole milliseconds, rounded up so it stays valid, within TOML's integers.
fn whole_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms)
        .unwrap_or(MAX_TOML_INTEGER)
        .min(MAX_TOML_INTEGER)
}

/// What opening a data directory does when a segment is damaged before its end (a torn
/// tail at the very end is always cut back and reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDamage {
    /// Refuse to open, naming the segment and byte offset.
    Fail,
    /// Keep the valid frames, move the damaged bytes aside to `<segment>.damaged`, and
    /// report the lost seqs as a gap (reason `damaged`).
    Truncate,
}

/// What `record` does when the queue is full.
///
/// In TOML: `overflow = "drop_newest"`, `overflow = "block"`, or
/// `overflow = { block_for_ms = 5 }` (written back as a `[queue.overflow]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "OverflowRepr", into = "OverflowRepr")]
pub enum Overflow {
    /// Drop the new event, count it under `dropped.queue_full`; never block.
    DropNewest,
    /// Block the producer until there is room.
    Block,
    /// Block the producer up to this long, then drop and count as `DropNewest`.
    BlockFor(Duration),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum OverflowRepr {
    DropNewest,
    Block,
    BlockForMs(u64),
}

impl From<OverflowRepr> for Overflow {
    fn from(r: OverflowRepr) -> Overflow {
        match r {
            OverflowRepr::DropNewest => Overflow::DropNewest,
            OverflowRepr::Block => Overflow::Block,
            OverflowRepr::BlockForMs(ms) => Overflow::BlockFor(Duration::from_millis(ms)),
        }
    }
}

impl From<Overflow> for OverflowRepr {
    /// A wait that is not whole milliseconds is written rounded up, so it stays valid.
    fn from(o: Overflow) -> OverflowRepr {
        match o {
            Overflow::DropNewest => OverflowRepr::DropNewest,
            Overflow::Block => OverflowRepr::Block,
            Overflow::BlockFor(d) => OverflowRepr::BlockForMs(whole_ms(d)),
        }
    }
}

/// Whether identifiers are replaced by keyed pseudonyms at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnonymizationMode {
    /// Identifiers become keyed BLAKE3 pseudonyms (`agt_…`, `tsk_…`, `exe_…`, `atr_…`).
    Pseudonymize,
    /// Identifiers are stored as given.
    Off,
}

/// What happens to free text (`rationale`, `reason`, `feedback`, violation `message`,
/// `quality_assessment`) when anonymization is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreeText {
    /// Replaced by [`REDACTED`](crate::REDACTED).
    Redact,
    /// Kept as given.
    Keep,
}

/// A hex-encoded key in a config; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyHex(pub String);

impl fmt::Debug for KeyHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHex(..)")
    }
}

/// The whole configuration. Every field has a default; see the README's table.
///
/// ```
/// use arbiter_events::Config;
/// let config = Config::from_toml_str("[retention]\nmax_events = 5000\n")?;
/// assert_eq!(config.retention.max_events, 5000);
/// # Ok::<(), arbiter_events::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Whether events are recorded at all (disabled events are counted as dropped).
    pub enabled: bool,
    /// The stable id of this collector in exports' `source` (fixed at build): 1 to
    /// [`MAX_SOURCE_LEN`] letters, digits, `-`, `_` or `.`. `None`: the data directory's
    /// own id (its `source` file, generated once), or without a data directory
    /// `mem-` and the key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The channel between producers and the ingest worker.
    pub queue: QueueConfig,
    /// How long and how much the store keeps.
    pub retention: RetentionConfig,
    /// Pseudonyms and free-text redaction.
    pub anonymization: AnonymizationConfig,
    /// Validation limits for events.
    pub limits: LimitsConfig,
    /// The ingest worker.
    pub worker: WorkerConfig,
    /// The data directory (fixed at build).
    pub storage: StorageConfig,
    /// Live aggregates for reports and alert rules (fixed at build).
    pub analytics: AnalyticsConfig,
    /// Alert rules evaluated over the live aggregates (`[[alerts]]`; can change live).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRule>,
}

/// The data directory: segment files that survive crashes and restarts (fixed at build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StorageConfig {
    /// Where records are kept on disk; `None` keeps them in memory only.
    pub data_dir: Option<PathBuf>,
    /// When writes are synced to disk.
    pub durability: Durability,
    /// A segment file rolls when the next record would take it past this size.
    pub segment_bytes: u64,
    /// The most bytes of segment files kept; the oldest whole segments go first.
    pub max_disk_bytes: u64,
    /// What opening does with a segment damaged before its end.
    pub on_damage: OnDamage,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            data_dir: None,
            durability: DEFAULT_DURABILITY,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
            on_damage: DEFAULT_ON_DAMAGE,
        }
    }
}

/// The channel between producers and the ingest worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Events the channel holds (fixed at build).
    pub capacity: usize,
    /// What `record` does when the channel is full.
    pub overflow: Overflow,
}

/// How long and how much the store keeps; the oldest records go first.
///
/// The age limit is `max_age` when set (a duration string in TOML: `"100ms"`, `"30d"`),
/// else `max_age_secs`. A file may give one of the two; in code, set `max_age` and leave
/// `max_age_secs` at its default.
///
/// ```
/// use std::time::Duration;
/// use arbiter_events::Config;
/// let config = Config::from_toml_str("[retention]\nmax_age = \"250ms\"\n")?;
/// assert_eq!(config.retention.max_age, Some(Duration::from_millis(250)));
/// assert!(Config::from_toml_str("[retention]\nmax_age = \"1s\"\nmax_age_secs = 5\n").is_err());
/// # Ok::<(), arbiter_events::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    from = "RetentionRepr",
    into = "RetentionRepr"
)]
#[non_exhaustive]
pub struct RetentionConfig {
    /// Records older than this many seconds are pruned and never returned (unless
    /// `max_age` is set).
    pub max_age_secs: u64,
    /// Records older than this are pruned and never returned; takes the place of
    /// `max_age_secs` and allows sub-second ages. In TOML a duration string: a whole
    /// number and one unit of `ns`, `us`, `ms`, `s`, `m`, `h`, `d`.
    pub max_age: Option<Duration>,
    /// The most records retained.
    pub max_events: u64,
    /// The most encoded record bytes retained.
    pub max_bytes: u64,
}

/// Pseudonyms and free-text redaction (fixed at build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AnonymizationConfig {
    /// Whether identifiers are pseudonymized.
    pub mode: AnonymizationMode,
    /// What happens to free text.
    pub free_text: FreeText,
    /// The 32-byte key as 64 hex digits. Exclusive with `key_file`; either takes
    /// precedence over the `ARBITER_EVENTS_KEY` environment variable.
    pub key_hex: Option<KeyHex>,
    /// A file holding the key as 64 hex digits.
    pub key_file: Option<PathBuf>,
    /// Attribute keys (at any depth) whose values are pseudonymized as `atr_…`.
    pub attribute_keys: Vec<String>,
    /// Pseudonyms remembered per identifier kind (0 disables the memo).
    pub memo_capacity: usize,
}

/// Validation limits for events (applied live).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// The longest identifier in bytes (at most 256).
    pub max_id_bytes: usize,
    /// The longest free-text or attribute string in bytes.
    pub max_string_bytes: usize,
    /// The most items in one list or map.
    pub max_collection_len: usize,
    /// The deepest nesting of attribute lists and maps.
    pub max_attribute_depth: usize,
    /// The most values in one attribute tree.
    pub max_attribute_entries: usize,
    /// How far before the ingest time a caller's `occurred_at` may be, in seconds.
    pub max_occurred_past_secs: u64,
    /// How far after the ingest time a caller's `occurred_at` may be, in seconds.
    pub max_occurred_future_secs: u64,
}

/// The ingest worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The most events committed to the store per lock.
    pub batch_size: usize,
    /// How often an idle worker wakes to prune by age, in milliseconds.
    pub tick_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enabled: DEFAULT_ENABLED,
            source: None,
            queue: QueueConfig::default(),
            retention: RetentionConfig::default(),
            anonymization: AnonymizationConfig::default(),
            limits: LimitsConfig::default(),
            worker: WorkerConfig::default(),
            storage: StorageConfig::default(),
            analytics: AnalyticsConfig::default(),
            alerts: Vec::new(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            capacity: DEFAULT_QUEUE_CAPACITY,
            overflow: DEFAULT_OVERFLOW,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig {
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            max_age: None,
            max_events: DEFAULT_MAX_EVENTS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

// --- retention.max_age: duration strings ---

/// The smallest `retention.max_age` accepted.
pub const MIN_MAX_AGE: Duration = Duration::from_millis(1);
/// The largest `retention.max_age` accepted (record times are `i64` nanoseconds).
pub const MAX_MAX_AGE: Duration = Duration::from_nanos(i64::MAX as u64);

/// `[retention]` as written: `max_age` and `max_age_secs` are both optional, so a file
/// that gives both is caught (see [`Config::from_toml_str`]).
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RetentionRepr {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_age_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_age: Option<DurationStr>,
    max_events: u64,
    max_bytes: u64,
}

impl Default for RetentionRepr {
    fn default() -> RetentionRepr {
        RetentionConfig::default().into()
    }
}

impl From<RetentionRepr> for RetentionConfig {
    fn from(r: RetentionRepr) -> RetentionConfig {
        RetentionConfig {
            max_age_secs: r.max_age_secs.unwrap_or(DEFAULT_MAX_AGE_SECS),
            max_age: r.max_age.map(|d| d.0),
            max_events: r.max_events,
            max_bytes: r.max_bytes,
        }
    }
}

impl From<RetentionConfig> for RetentionRepr {
    /// Written with `max_age` when it is set, else with `max_age_secs`, never both.
    fn from(r: RetentionConfig) -> RetentionRepr {
        RetentionRepr {
            max_age_secs: r.max_age.is_none().then_some(r.max_age_secs),
            max_age: r.max_age.map(DurationStr),
            max_events: r.max_events,
            max_bytes: r.max_bytes,
        }
    }
}

/// A duration written as a string: `"100ms"`, `"30d"`.
struct DurationStr(Duration);

impl Serialize for DurationStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DurationStr, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(DurationStr)
            .map_err(serde::de::Error::custom)
    }
}

/// Units of a duration string, largest first, in nanoseconds.
const UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a whole number and one unit (`ns`, `us`, `ms`, `s`, `m`, `h`, `d`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(arbiter_events::parse_duration("100ms"), Ok(Duration::from_millis(100)));
/// assert_eq!(arbiter_events::parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
/// assert!(arbiter_events::parse_duration("1.5h").is_err());
/// ```
///
/// # Errors
/// A message saying what is wrong and what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a whole number and a unit (ns, us, ms, s, m, h, d), e.g. \"100ms\"";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let Some(&(_, nanos)) = UNITS.iter().find(|(u, _)| *u == unit.trim()) else {
        return Err(format!("invalid duration `{text}`: {expected}"));
    };
    let n: u128 = number
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: {expected}"))?;
    let total = n
        .checked_mul(nanos)
        .and_then(|v| u64::try_from(v / 1_000_000_000).ok().map(|secs| (secs, v)))
        .ok_or_else(|| format!("duration `{text}` is too long"))?;
    let (secs, all) = total;
    // `all % 1e9` is below 1e9, so it fits in u32.
    Ok(Duration::new(secs, (all % 1_000_000_000) as u32))
}

/// Writes `d` in the largest unit that holds it exactly (`"100ms"`, `"30d"`).
fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    UNITS
        .iter()
        .find(|(_, n)| nanos.is_multiple_of(*n))
        .map_or_else(
            || format!("{nanos}ns"),
            |(unit, n)| format!("{}{unit}", nanos / n),
        )
}

impl Default for AnonymizationConfig {
    fn default() -> AnonymizationConfig {
        AnonymizationConfig {
            mode: DEFAULT_ANONYMIZATION_MODE,
            free_text: DEFAULT_FREE_TEXT,
            key_hex: None,
            key_file: None,
            attribute_keys: Vec::new(),
            memo_capacity: DEFAULT_MEMO_CAPACITY,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_id_bytes: DEFAULT_MAX_ID_BYTES,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
            max_collection_len: DEFAULT_MAX_COLLECTION_LEN,
            max_attribute_depth: DEFAULT_MAX_ATTRIBUTE_DEPTH,
            max_attribute_entries: DEFAULT_MAX_ATTRIBUTE_ENTRIES,
            max_occurred_past_secs: DEFAULT_MAX_OCCURRED_PAST_SECS,
            max_occurred_future_secs: DEFAULT_MAX_OCCURRED_FUTURE_SECS,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            batch_size: DEFAULT_BATCH_SIZE,
            tick_ms: DEFAULT_TICK_MS,
        }
    }
}

/// Refuses a document whose `[retention]` gives both `max_age` and `max_age_secs`.
fn check_one_max_age(text: &str) -> Result<(), ConfigError> {
    let table: toml::Table = text.parse().map_err(|e| ConfigError::Parse(Box::new(e)))?;
    let both = table
        .get("retention")
        .and_then(toml::Value::as_table)
        .is_some_and(|r| r.contains_key("max_age") && r.contains_key("max_age_secs"));
    if both {
        return Err(ConfigError::ConflictingMaxAge);
    }
    Ok(())
}

fn range<T: Copy + PartialOrd + Into<u64>>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            field,
            value: value.into(),
            min: min.into(),
            max: max.into(),
        });
    }
    Ok(())
}

fn range_usize(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), ConfigError> {
    let wide = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    range(field, wide(value), wide(min), wide(max))
}

impl Config {
    /// Parses a TOML document and validates it.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for malformed TOML or unknown keys, or the first rule broken.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(Box::new(e)))?;
        check_one_max_age(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] naming the path, or as [`Config::from_toml_str`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// This configuration as a TOML document.
    ///
    /// # Errors
    /// [`ConfigError::Serialize`] if TOML cannot represent a value.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))
    }

    /// Checks every rule, returning the first one broken.
    ///
    /// # Errors
    /// One [`ConfigError`] variant per rule, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(source) = &self.source
            && !is_valid_source(source)
        {
            return Err(ConfigError::InvalidSource {
                value: source.clone(),
            });
        }
        range_usize("queue.capacity", self.queue.capacity, 1, MAX_QUEUE_CAPACITY)?;
        if let Overflow::BlockFor(d) = self.queue.overflow
            && d.is_zero()
        {
            return Err(ConfigError::OutOfRange {
                field: "queue.overflow.block_for_ms",
                value: 0,
                min: 1,
                max: MAX_TOML_INTEGER,
            });
        }
        let r = &self.retention;
        range(
            "retention.max_age_secs",
            r.max_age_secs,
            1,
            u64::MAX / 1_000_000_000,
        )?;
        if let Some(age) = r.max_age {
            if r.max_age_secs != DEFAULT_MAX_AGE_SECS {
                return Err(ConfigError::ConflictingMaxAge);
            }
            if !(MIN_MAX_AGE..=MAX_MAX_AGE).contains(&age) {
                return Err(ConfigError::DurationOutOfRange {
                    field: "retention.max_age",
                    value: age,
                    min: MIN_MAX_AGE,
                    max: MAX_MAX_AGE,
                });
            }
        }
        range("retention.max_events", r.max_events, 1, MAX_TOML_INTEGER)?;
        range(
            "retention.max_bytes",
            r.max_bytes,
            MIN_MAX_BYTES,
            MAX_TOML_INTEGER,
        )?;
        let a = &self.anonymization;
        if a.key_hex.is_some() && a.key_file.is_some() {
            return Err(ConfigError::ConflictingKeySources);
        }
        if let Some(hex) = &a.key_hex {
            AnonymizationKey::from_hex(&hex.0).map_err(ConfigError::InvalidKey)?;
        }
        if let Some(index) = a.attribute_keys.iter().position(|k| k.is_empty()) {
            return Err(ConfigError::EmptyAttributeKey { index });
        }
        range_usize(
            "anonymization.memo_capacity",
            a.memo_capacity,
            0,
            MAX_MEMO_CAPACITY,
        )?;
        let l = &self.limits;
        range_usize(
            "limits.max_id_bytes",
            l.max_id_bytes,
            1,
            DEFAULT_MAX_ID_BYTES,
        )?;
        range_usize(
            "limits.max_string_bytes",
            l.max_string_bytes,
            1,
            MAX_STRING_BYTES,
        )?;
        range_usize(
            "limits.max_collection_len",
            l.max_collection_len,
            1,
            MAX_COLLECTION_LEN,
        )?;
        range_usize(
            "limits.max_attribute_depth",
            l.max_attribute_depth,
            1,
            MAX_ATTRIBUTE_DEPTH,
        )?;
        range_usize(
            "limits.max_attribute_entries",
            l.max_attribute_entries,
            1,
            MAX_COLLECTION_LEN,
        )?;
        range(
            "limits.max_occurred_past_secs",
            l.max_occurred_past_secs,
            0,
            MAX_OCCURRED_SKEW_SECS,
        )?;
        range(
            "limits.max_occurred_future_secs",
            l.max_occurred_future_secs,
            0,
            MAX_OCCURRED_SKEW_SECS,
        )?;
        range_usize(
            "worker.batch_size",
            self.worker.batch_size,
            1,
            MAX_BATCH_SIZE,
        )?;
        range("worker.tick_ms", self.worker.tick_ms, 1, MAX_TICK_MS)?;
        let st = &self.storage;
        if let Durability::Interval(d) = st.durability
            && d.is_zero()
        {
            return Err(ConfigError::OutOfRange {
                field: "storage.durability.interval_ms",
                value: 0,
                min: 1,
                max: MAX_TOML_INTEGER,
            });
        }
        range(
            "storage.segment_bytes",
            st.segment_bytes,
            MIN_SEGMENT_BYTES,
            MAX_SEGMENT_BYTES,
        )?;
        range(
            "storage.max_disk_bytes",
            st.max_disk_bytes,
            st.segment_bytes,
            MAX_TOML_INTEGER,
        )?;
        if st
            .data_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(ConfigError::EmptyDataDir);
        }
        self.analytics.validate()?;
        validate_alerts(
            &self.alerts,
            self.analytics.bucket_secs,
            self.analytics.buckets,
        )?;
        Ok(())
    }

    /// Checks that `next` changes only what can change while a collector runs.
    pub(crate) fn check_live_change(&self, next: &Config) -> Result<(), ConfigError> {
        if self.queue.capacity != next.queue.capacity {
            return Err(ConfigError::NotLive {
                field: "queue.capacity",
            });
        }
        if self.anonymization != next.anonymization {
            return Err(ConfigError::NotLive {
                field: "anonymization",
            });
        }
        if self.storage != next.storage {
            return Err(ConfigError::NotLive { field: "storage" });
        }
        if self.source != next.source {
            return Err(ConfigError::NotLive { field: "source" });
        }
        if self.analytics != next.analytics {
            return Err(ConfigError::NotLive { field: "analytics" });
        }
        Ok(())
    }

    pub(crate) fn max_age(&self) -> Duration {
        self.retention
            .max_age
            .unwrap_or(Duration::from_secs(self.retention.max_age_secs))
    }

    pub(crate) fn event_limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            max_id_bytes: l.max_id_bytes,
            max_string_bytes: l.max_string_bytes,
            max_collection_len: l.max_collection_len,
            max_attribute_depth: l.max_attribute_depth,
            max_attribute_entries: l.max_attribute_entries,
        }
    }
}

// --- environment overrides ---

/// The prefix of the environment variables that override configuration keys:
/// `retention.max_events` is `ARBITER_EVENTS_RETENTION_MAX_EVENTS`.
pub const ENV_PREFIX: &str = "ARBITER_EVENTS_";

/// Every configuration key an environment variable can set, as `section.key` (`enabled`
/// at the top level). The variable is [`ENV_PREFIX`] and the key in upper case with `.`
/// as `_` (see [`Config::env_var`]).
pub const ENV_KEYS: &[&str] = &[
    "enabled",
    "source",
    "queue.capacity",
    "queue.overflow",
    "retention.max_age_secs",
    "retention.max_age",
    "retention.max_events",
    "retention.max_bytes",
    "anonymization.mode",
    "anonymization.free_text",
    "anonymization.key_hex",
    "anonymization.key_file",
    "anonymization.attribute_keys",
    "anonymization.memo_capacity",
    "limits.max_id_bytes",
    "limits.max_string_bytes",
    "limits.max_collection_len",
    "limits.max_attribute_depth",
    "limits.max_attribute_entries",
    "limits.max_occurred_past_secs",
    "limits.max_occurred_future_secs",
    "worker.batch_size",
    "worker.tick_ms",
    "storage.data_dir",
    "storage.durability",
    "storage.segment_bytes",
    "storage.max_disk_bytes",
    "storage.on_damage",
    "analytics.enabled",
    "analytics.bucket_secs",
    "analytics.buckets",
    "analytics.max_agents",
];

impl Config {
    /// The environment variable that overrides `key` (`"retention.max_events"` →
    /// `ARBITER_EVENTS_RETENTION_MAX_EVENTS`).
    ///
    /// ```
    /// use arbiter_events::Config;
    /// assert_eq!(Config::env_var("queue.capacity"), "ARBITER_EVENTS_QUEUE_CAPACITY");
    /// ```
    pub fn env_var(key: &str) -> String {
        format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
    }

    /// Reads the configuration the way a deployment does: the TOML file at `path`
    /// (defaults when `None`), then the process environment on top
    /// ([`with_env`](Self::with_env)). Precedence is code (what you change on the result)
    /// over environment over file over defaults. [`CollectorBuilder`](crate::CollectorBuilder)
    /// and [`Config::from_file`] never read the environment themselves.
    ///
    /// # Errors
    /// As [`Config::from_file`] and [`Config::with_env_iter`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.with_env()
    }

    /// [`with_env_iter`](Self::with_env_iter) over the process environment.
    ///
    /// # Errors
    /// As [`with_env_iter`](Self::with_env_iter), and [`ConfigError::Env`] for an
    /// override whose value is not UTF-8.
    pub fn with_env(self) -> Result<Config, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::Env {
                var: name.to_owned(),
                reason: "the value is not UTF-8".to_owned(),
            })?;
            vars.push((name.to_owned(), value));
        }
        self.with_env_iter(vars)
    }

    /// Applies environment overrides from `vars` (name, value pairs; the process
    /// environment in [`with_env`](Self::with_env), any list in tests) on top of this
    /// configuration, then validates the result.
    ///
    /// A variable `ARBITER_EVENTS_<SECTION>_<KEY>` sets that key (see [`ENV_KEYS`]). The
    /// value is read as a TOML value when it is one (`8192`, `true`, `["user_id"]`,
    /// `{ block_for_ms = 5 }`), else as a string (`block`, `100ms`, a path). Variables
    /// that do not start with a section name (such as [`KEY_ENV`](crate::KEY_ENV)) are
    /// left alone; an unknown key in a known section is an error. Setting
    /// `retention.max_age` replaces a `max_age_secs` from the file, and the other way
    /// round.
    ///
    /// ```
    /// use arbiter_events::Config;
    /// let config = Config::default().with_env_iter([
    ///     ("ARBITER_EVENTS_RETENTION_MAX_EVENTS", "5000"),
    ///     ("ARBITER_EVENTS_QUEUE_OVERFLOW", "block"),
    /// ])?;
    /// assert_eq!(config.retention.max_events, 5000);
    /// let bad = Config::default().with_env_iter([("ARBITER_EVENTS_QUEUE_CAPACITY", "0")]);
    /// assert!(bad.unwrap_err().to_string().starts_with("ARBITER_EVENTS_QUEUE_CAPACITY"));
    /// # Ok::<(), arbiter_events::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Env`] naming the variable: an unknown key, a value of the wrong
    /// type, or a rule the result breaks (the rule's error is its source).
    pub fn with_env_iter<I, K, V>(self, vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        // Deterministic whatever order the environment lists them in.
        vars.sort();
        let mut table =
            toml::Table::try_from(&self).map_err(|e| ConfigError::Serialize(e.to_string()))?;
        let mut applied: Vec<(&'static str, String)> = Vec::new();
        for (var, value) in vars {
            let Some(key) = env_key(&var)? else {
                continue;
            };
            table = set_from_env(table, key, &var, &value)?;
            applied.push((key, var));
        }
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Env {
                var: applied.last().map(|(_, v)| v.clone()).unwrap_or_default(),
                reason: e.message().to_owned(),
            })?;
        if let Err(error) = config.validate() {
            // Name the variable that set the field the rule is about, if one did.
            let field = error_field(&error);
            let var = applied
                .iter()
                .rev()
                .find(|(key, _)| {
                    field.is_some_and(|f| f == *key || f.starts_with(&format!("{key}.")))
                })
                .map(|(_, var)| var.clone());
            return match var {
                Some(var) => Err(ConfigError::EnvInvalid {
                    var,
                    source: Box::new(error),
                }),
                // The file or the code broke the rule, not the environment.
                None => Err(error),
            };
        }
        Ok(config)
    }
}

/// The key `var` sets; `None` when it names no section (not a configuration variable).
fn env_key(var: &str) -> Result<Option<&'static str>, ConfigError> {
    let suffix = var[ENV_PREFIX.len()..].to_ascii_lowercase();
    if let Some(key) = ENV_KEYS.iter().find(|k| k.replace('.', "_") == suffix) {
        return Ok(Some(key));
    }
    let in_section = ENV_KEYS
        .iter()
        .filter_map(|k| k.split_once('.').map(|(section, _)| section))
        .any(|section| suffix.starts_with(&format!("{section}_")));
    if in_section {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            reason: "no such configuration key (see the README's table)".to_owned(),
        });
    }
    Ok(None)
}

/// `table` with `key` set from the variable's `value`: as a TOML value if it is one and
/// the result reads as a [`Config`], else as a string.
fn set_from_env(
    table: toml::Table,
    key: &str,
    var: &str,
    value: &str,
) -> Result<toml::Table, ConfigError> {
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let mut first_error = None;
    for candidate in parsed
        .into_iter()
        .chain(std::iter::once(toml::Value::String(value.to_owned())))
    {
        let mut next = table.clone();
        let (section, name) = match key.split_once('.') {
            Some((section, name)) => {
                let entry = next
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry.as_table_mut() {
                    Some(t) => (Some(t), name),
                    None => (None, name),
                }
            }
            None => (None, key),
        };
        match section {
            Some(t) => {
                // One age limit at a time: the variable replaces the other form.
                match name {
                    "max_age" => drop(t.remove("max_age_secs")),
                    "max_age_secs" => drop(t.remove("max_age")),
                    _ => {}
                }
                t.insert(name.to_owned(), candidate);
            }
            None => {
                next.insert(name.to_owned(), candidate);
            }
        }
        match next.clone().try_into::<Config>() {
            Ok(_) => return Ok(next),
            Err(e) => {
                first_error.get_or_insert_with(|| e.message().to_owned());
            }
        }
    }
    Err(ConfigError::Env {
        var: var.to_owned(),
        reason: first_error.unwrap_or_default(),
    })
}

/// The field a validation error is about.
fn error_field(error: &ConfigError) -> Option<&'static str> {
    match error {
        ConfigError::OutOfRange { field, .. } | ConfigError::DurationOutOfRange { field, .. } => {
            Some(field)
        }
        ConfigError::ConflictingKeySources | ConfigError::InvalidKey(_) => {
            Some("anonymization.key_hex")
        }
        ConfigError::ConflictingMaxAge => Some("retention.max_age"),
        ConfigError::EmptyAttributeKey { .. } => Some("anonymization.attribute_keys"),
        ConfigError::EmptyDataDir => Some("storage.data_dir"),
        _ => None,
    }
}

/// The longest `source` id.
pub const MAX_SOURCE_LEN: usize = 64;

/// Whether `source` can be a source id: 1 to [`MAX_SOURCE_LEN`] ASCII letters, digits,
/// `-`, `_` or `.`.
pub(crate) fn is_valid_source(source: &str) -> bool {
    (1..=MAX_SOURCE_LEN).contains(&source.len())
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
/// A configuration broke a rule; nothing was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A number is outside its allowed range.
    #[error("{field} must be within [{min}, {max}], got {value}")]
    OutOfRange {
        /// The field, e.g. `retention.max_events`.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A duration is outside its allowed range.
    #[error("{field} must be within [{min:?}, {max:?}], got {value:?}")]
    DurationOutOfRange {
        /// The field, e.g. `retention.max_age`.
        field: &'static str,
        /// The value given.
        value: Duration,
        /// The shortest allowed.
        min: Duration,
        /// The longest allowed.
        max: Duration,
    },
    /// Both `retention.max_age` and `retention.max_age_secs` are set.
    #[error("retention.max_age and retention.max_age_secs are both set; keep one")]
    ConflictingMaxAge,
    /// Both `anonymization.key_hex` and `anonymization.key_file` are set.
    #[error("anonymization.key_hex and anonymization.key_file are both set; keep one")]
    ConflictingKeySources,
    /// `source` is not a valid source id.
    #[error("source must be 1 to 64 letters, digits, `-`, `_` or `.`, got {value:?}")]
    InvalidSource {
        /// The value given.
        value: String,
    },
    /// `anonymization.key_hex` is not a key.
    #[error("anonymization.key_hex is invalid: {0}")]
    InvalidKey(#[source] KeyError),
    /// An entry of `anonymization.attribute_keys` is empty.
    #[error("anonymization.attribute_keys[{index}] must not be empty")]
    EmptyAttributeKey {
        /// Its position.
        index: usize,
    },
    /// `update_config` tried to change something fixed at build.
    #[error("{field} cannot change while the collector runs; build a new collector")]
    NotLive {
        /// The field or section.
        field: &'static str,
    },
    /// An `[[alerts]]` entry breaks a rule.
    #[error(transparent)]
    Alert(#[from] AlertRuleError),
    /// `storage.data_dir` is an empty path.
    #[error("storage.data_dir must not be empty; leave it out to keep records in memory only")]
    EmptyDataDir,
    /// An environment override names no key or holds a value of the wrong type.
    #[error("{var}: {reason}")]
    Env {
        /// The variable, e.g. `ARBITER_EVENTS_RETENTION_MAX_EVENTS`.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment override gives a value that breaks a rule.
    #[error("{var}: {source}")]
    EnvInvalid {
        /// The variable that set the field.
        var: String,
        /// The rule broken.
        source: Box<ConfigError>,
    },
    /// The TOML is malformed or names an unknown key.
    #[error("invalid configuration: {0}")]
    Parse(#[source] Box<toml::de::Error>),
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration could not be written as TOML.
    #[error("cannot write configuration as TOML: {0}")]
    Serialize(String),
}
