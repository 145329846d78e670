//! The one way tests read `fixtures/` and `schemas/`: paths, JSON lines, markers, the
//! golden collector, MessagePack values and JSON Schemas.
//!
//! Every test file pulls in the whole module, so some helpers are unused in some files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use arbiter_events::{
    AnonymizationKey, AnonymizationMode, Collector, Config, Cursor, Event, Export, ExportRequest,
    FreeText, ManualClock, Rule,
};
use serde_json::Value as Json;

/// What the helpers return on failure: a message naming the file and line.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// A helper's result.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// The key of the golden export.
pub(crate) const GOLDEN_KEY: [u8; 32] = [0x42; 32];
/// The wall clock of the golden export's first record: 2026-01-01T00:00:00Z.
pub(crate) const GOLDEN_START_NANOS: i64 = 1_767_225_600_000_000_000;
/// How far the clock moves between two records of the golden export.
pub(crate) const GOLDEN_STEP: Duration = Duration::from_millis(1);
/// How long a test waits for the worker.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Set to `1` to rewrite the golden files instead of comparing against them.
pub(crate) const UPDATE_GOLDEN_ENV: &str = "UPDATE_GOLDEN";

/// The crate root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path relative to the crate root, e.g. `fixtures/events/all_variants.jsonl`.
pub(crate) fn path(relative: &str) -> PathBuf {
    root().join(relative)
}

/// The text of a file relative to the crate root.
pub(crate) fn read_text(relative: &str) -> Result<String> {
    std::fs::read_to_string(path(relative))
        .map_err(|e| format!("cannot read {relative}: {e}").into())
}

/// The bytes of a file relative to the crate root.
pub(crate) fn read_bytes(relative: &str) -> Result<Vec<u8>> {
    std::fs::read(path(relative)).map_err(|e| format!("cannot read {relative}: {e}").into())
}

/// The non-empty lines of a JSON-lines file, each parsed, with their line numbers.
fn jsonl_lines(relative: &str) -> Result<Vec<(usize, Json)>> {
    let text = read_text(relative)?;
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line)
            .map_err(|e| format!("{relative}:{}: not JSON: {e}", index + 1))?;
        values.push((index + 1, value));
    }
    Ok(values)
}

/// The values of a JSON-lines file.
pub(crate) fn read_jsonl(relative: &str) -> Result<Vec<Json>> {
    Ok(jsonl_lines(relative)?.into_iter().map(|(_, v)| v).collect())
}

/// The events of a JSON-lines file of events (the serde form of [`Event`]).
pub(crate) fn read_events(relative: &str) -> Result<Vec<Event>> {
    jsonl_lines(relative)?
        .into_iter()
        .map(|(line, value)| {
            serde_json::from_value(value)
                .map_err(|e| format!("{relative}:{line}: not an event: {e}").into())
        })
        .collect()
}

/// The realistic event streams: `all_variants.jsonl`, then every `session_*.jsonl` by name.
pub(crate) fn event_stream_names() -> Result<Vec<String>> {
    let dir = path("fixtures/events");
    let mut sessions = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("cannot list {dir:?}: {e}"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("session_") && name.ends_with(".jsonl") {
            sessions.push(format!("fixtures/events/{name}"));
        }
    }
    if sessions.is_empty() {
        return Err("no fixtures/events/session_*.jsonl".into());
    }
    sessions.sort();
    let mut names = vec!["fixtures/events/all_variants.jsonl".to_owned()];
    names.extend(sessions);
    Ok(names)
}

/// Every realistic event stream, by file name.
pub(crate) fn event_streams() -> Result<Vec<(String, Vec<Event>)>> {
    event_stream_names()?
        .into_iter()
        .map(|name| {
            let events = read_events(&name)?;
            Ok((name, events))
        })
        .collect()
}

/// Expands the size markers of `fixtures/events/bad_events.jsonl`, which keep long
/// inputs readable:
///
/// - `{"$string": "é", "times": 129}`: the string repeated;
/// - `{"$array": item, "times": 257}`: a list of copies of `item`;
/// - `{"$object": value, "times": 257}`: a map of keys `k000`, `k001`, ... to `value`.
pub(crate) fn expand_markers(value: Json) -> Result<Json> {
    match value {
        Json::Array(items) => Ok(Json::Array(
            items
                .into_iter()
                .map(expand_markers)
                .collect::<Result<_>>()?,
        )),
        Json::Object(map) => {
            let times = map.get("times").and_then(Json::as_u64);
            let times = usize::try_from(times.unwrap_or(0))?;
            if let (Some(Json::String(s)), true) = (map.get("$string"), map.len() == 2) {
                return Ok(Json::String(s.repeat(times)));
            }
            if let (Some(item), true) = (map.get("$array"), map.len() == 2) {
                let item = expand_markers(item.clone())?;
                return Ok(Json::Array(vec![item; times]));
            }
            if let (Some(value), true) = (map.get("$object"), map.len() == 2) {
                let value = expand_markers(value.clone())?;
                let map = (0..times)
                    .map(|i| (format!("k{i:03}"), value.clone()))
                    .collect();
                return Ok(Json::Object(map));
            }
            if let Some(key) = map.keys().find(|k| k.starts_with('$')) {
                return Err(format!("unknown or malformed marker `{key}`").into());
            }
            Ok(Json::Object(
                map.into_iter()
                    .map(|(k, v)| Ok((k, expand_markers(v)?)))
                    .collect::<Result<_>>()?,
            ))
        }
        other => Ok(other),
    }
}

/// One case of `fixtures/events/bad_events.jsonl`.
#[derive(Debug, Clone)]
pub(crate) struct BadCase {
    /// What the case is about.
    pub(crate) name: String,
    /// The event, markers expanded.
    pub(crate) event: Event,
    /// The event as JSON, markers expanded.
    pub(crate) json: Json,
    /// The expected [`ValidationError::field`](arbiter_events::ValidationError::field).
    pub(crate) field: String,
    /// The expected rule, as named by [`rule_name`].
    pub(crate) rule: String,
}

/// The cases of `fixtures/events/bad_events.jsonl`.
pub(crate) fn bad_cases() -> Result<Vec<BadCase>> {
    const FILE: &str = "fixtures/events/bad_events.jsonl";
    let mut cases = Vec::new();
    for (line, value) in jsonl_lines(FILE)? {
        let text = |key: &str| -> Result<String> {
            value
                .get(key)
                .and_then(Json::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("{FILE}:{line}: `{key}` is not a string").into())
        };
        let json = value
            .get("event")
            .cloned()
            .ok_or_else(|| format!("{FILE}:{line}: no `event`"))?;
        let json = expand_markers(json).map_err(|e| format!("{FILE}:{line}: {e}"))?;
        let event = serde_json::from_value(json.clone())
            .map_err(|e| format!("{FILE}:{line}: not an event: {e}"))?;
        cases.push(BadCase {
            name: text("name")?,
            event,
            json,
            field: text("field")?,
            rule: text("rule")?,
        });
    }
    Ok(cases)
}

/// One case of `fixtures/events/undecodable.jsonl`: JSON that must not deserialize.
#[derive(Debug, Clone)]
pub(crate) struct UndecodableCase {
    /// What the case is about.
    pub(crate) name: String,
    /// The would-be event.
    pub(crate) event: Json,
}

/// The cases of `fixtures/events/undecodable.jsonl`.
pub(crate) fn undecodable_cases() -> Result<Vec<UndecodableCase>> {
    const FILE: &str = "fixtures/events/undecodable.jsonl";
    jsonl_lines(FILE)?
        .into_iter()
        .map(|(line, value)| {
            let name = value.get("name").and_then(Json::as_str);
            let event = value.get("event");
            match (name, event) {
                (Some(name), Some(event)) => Ok(UndecodableCase {
                    name: name.to_owned(),
                    event: event.clone(),
                }),
                _ => Err(format!("{FILE}:{line}: needs `name` and `event`").into()),
            }
        })
        .collect()
}

/// The snake_case name of a rule, as used by the fixtures.
pub(crate) fn rule_name(rule: &Rule) -> &'static str {
    match rule {
        Rule::NotFinite => "not_finite",
        Rule::OutOfRange { .. } => "out_of_range",
        Rule::Negative { .. } => "negative",
        Rule::Empty => "empty",
        Rule::TooLong { .. } => "too_long",
        Rule::ControlCharacter { .. } => "control_character",
        Rule::TooMany { .. } => "too_many",
        Rule::TooDeep { .. } => "too_deep",
        _ => "unknown",
    }
}

/// The configurations the contract tests record under: pseudonyms with text redacted
/// (the default), pseudonyms with text kept and attribute keys pseudonymized, and off.
pub(crate) fn anonymization_configs() -> Vec<(&'static str, Config)> {
    let default = Config::default();
    let mut keep = Config::default();
    keep.anonymization.free_text = FreeText::Keep;
    keep.anonymization.attribute_keys = vec!["user_id".to_owned(), "repository".to_owned()];
    let mut off = Config::default();
    off.anonymization.mode = AnonymizationMode::Off;
    vec![
        ("pseudonymize_redact", default),
        ("pseudonymize_keep", keep),
        ("off", off),
    ]
}

/// A collector with the golden key and a manual clock at [`GOLDEN_START_NANOS`].
pub(crate) fn golden_collector(config: Config) -> Result<(Collector, ManualClock)> {
    golden_collector_with_key(config, AnonymizationKey::from_bytes(GOLDEN_KEY))
}

/// A collector with `key` and a manual clock at [`GOLDEN_START_NANOS`].
pub(crate) fn golden_collector_with_key(
    config: Config,
    key: AnonymizationKey,
) -> Result<(Collector, ManualClock)> {
    let clock = ManualClock::new(GOLDEN_START_NANOS);
    let collector = Collector::builder()
        .config(config)
        .key(key)
        .clock(clock.clone())
        .build()?;
    Ok((collector, clock))
}

/// Records `events` one at a time, each stored before the clock moves [`GOLDEN_STEP`]
/// on, so record times are reproducible.
pub(crate) fn record_stepped(
    collector: &Collector,
    clock: &ManualClock,
    events: &[Event],
) -> Result<()> {
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            clock.advance(GOLDEN_STEP);
        }
        collector
            .record(event.clone())
            .map_err(|e| format!("event {index} refused: {e}"))?;
        collector.flush(FLUSH_TIMEOUT)?;
    }
    Ok(())
}

/// Everything a golden collector built with `config` exports after recording `events`.
pub(crate) fn export_stream(config: Config, events: &[Event]) -> Result<Export> {
    let (collector, clock) = golden_collector(config)?;
    record_stepped(&collector, &clock, events)?;
    Ok(collector.export(&ExportRequest::after(Cursor::START))?)
}

/// The golden export: `all_variants.jsonl` under the golden key, clock and default config.
pub(crate) fn golden_export() -> Result<Export> {
    export_stream(
        Config::default(),
        &read_events("fixtures/events/all_variants.jsonl")?,
    )
}

/// Every MessagePack value in `bytes`, decoded to JSON.
pub(crate) fn msgpack_values(bytes: &[u8]) -> Result<Vec<Json>> {
    let mut input = std::io::Cursor::new(bytes);
    let mut values = Vec::new();
    while input.position() < bytes.len() as u64 {
        let offset = input.position();
        let value = serde::Deserialize::deserialize(&mut rmp_serde::Deserializer::new(&mut input))
            .map_err(|e| format!("value {} at byte {offset}: {e}", values.len()))?;
        values.push(value);
    }
    Ok(values)
}

/// The byte range of every MessagePack value in `bytes`, in order.
pub(crate) fn msgpack_ranges(bytes: &[u8]) -> Result<Vec<std::ops::Range<usize>>> {
    let mut input = std::io::Cursor::new(bytes);
    let mut ranges = Vec::new();
    while input.position() < bytes.len() as u64 {
        let start = usize::try_from(input.position())?;
        let _: serde::de::IgnoredAny =
            serde::Deserialize::deserialize(&mut rmp_serde::Deserializer::new(&mut input))
                .map_err(|e| format!("value {} at byte {start}: {e}", ranges.len()))?;
        ranges.push(start..usize::try_from(input.position())?);
    }
    Ok(ranges)
}

/// An export split into its parts: header, records and trailer, each as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parts {
    /// The header map.
    pub(crate) header: Vec<u8>,
    /// The records, back to back.
    pub(crate) records: Vec<u8>,
    /// The trailer map.
    pub(crate) trailer: Vec<u8>,
}

/// Splits an export's bytes into header, records and trailer.
pub(crate) fn split_export(export: &Export) -> Result<Parts> {
    let header = rmp_serde::to_vec_named(export.header())?;
    let trailer = rmp_serde::to_vec_named(&export.trailer())?;
    let bytes = export.to_msgpack();
    let records = bytes
        .strip_prefix(header.as_slice())
        .and_then(|rest| rest.strip_suffix(trailer.as_slice()))
        .ok_or("the export does not start with its header and end with its trailer")?
        .to_vec();
    Ok(Parts {
        header,
        records,
        trailer,
    })
}

/// A compiled JSON Schema from `schemas/`.
pub(crate) struct Schema {
    name: String,
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
    document: Json,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("name", &self.name).finish()
    }
}

impl Schema {
    /// Loads and compiles `schemas/{name}`, e.g. `record.schema.json`.
    pub(crate) fn load(name: &str) -> Result<Schema> {
        let relative = format!("schemas/{name}");
        let document: Json = serde_json::from_str(&read_text(&relative)?)
            .map_err(|e| format!("{relative}: not JSON: {e}"))?;
        let location = path(&relative);
        let location = location
            .to_str()
            .ok_or_else(|| format!("{location:?} is not UTF-8"))?;
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        let index = compiler
            .compile(location, &mut schemas)
            .map_err(|e| format!("{relative}: does not compile: {e:#}"))?;
        Ok(Schema {
            name: relative,
            schemas,
            index,
            document,
        })
    }

    /// The schema document as JSON.
    pub(crate) fn document(&self) -> &Json {
        &self.document
    }

    /// Validates `instance`, describing every failure on error.
    pub(crate) fn validate(&self, instance: &Json) -> std::result::Result<(), String> {
        self.schemas
            .validate(instance, self.index)
            .map_err(|e| format!("{}: {e:#}", self.name))
    }
}

/// Compares `actual` with the golden file `relative`, or rewrites the file when
/// [`UPDATE_GOLDEN_ENV`] is `1`.
pub(crate) fn check_golden(relative: &str, actual: &[u8]) -> Result<()> {
    let file = path(relative);
    if std::env::var(UPDATE_GOLDEN_ENV).is_ok_and(|v| v == "1") {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&file, actual).map_err(|e| format!("cannot write {relative}: {e}"))?;
        return Ok(());
    }
    let expected = std::fs::read(&file).map_err(|e| {
        format!("cannot read {relative}: {e}; run with {UPDATE_GOLDEN_ENV}=1 to create it")
    })?;
    if expected == actual {
        return Ok(());
    }
    let at = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    Err(format!(
        "{relative} differs from what the code produces now: first difference at byte {at} \
         (golden {} bytes, actual {} bytes). The export format changed: if that is intended, \
         rerun with {UPDATE_GOLDEN_ENV}=1, review the diff of fixtures/golden/*.jsonl, note \
         the change in CHANGELOG.md and consider bumping EXPORT_VERSION",
        expected.len(),
        actual.len()
    )
    .into())
}

/// Counts events by `type`.
pub(crate) fn kinds_of(events: &[Event]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts.entry(event.kind().as_str()).or_default() += 1;
    }
    counts
}
