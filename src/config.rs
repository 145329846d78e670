//! Configuration: a serde struct read from TOML, every default a named constant.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::anonymize::AnonymizationKey;
use crate::error::ConfigError;
use crate::event::validate::Limits;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionConfig {
    /// Records older than this many seconds are pruned and never returned.
    pub max_age_secs: u64,
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
            max_events: DEFAULT_MAX_EVENTS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
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
        Ok(())
    }

    pub(crate) fn max_age(&self) -> Duration {
        Duration::from_secs(self.retention.max_age_secs)
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
