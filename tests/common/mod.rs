//! What the integration tests share: the one way they read `fixtures/` and `schemas/`
//! (paths, JSON lines, markers, the golden collector, MessagePack values and JSON
//! Schemas), and the collectors, events, exports, waits and the gated clock the
//! behaviour tests build on.
//!
//! Every test file pulls in the whole module, so some helpers are unused in some files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{
    AnonymizationKey, AnonymizationMode, Clock, Collector, Config, Cursor, Event, Export,
    ExportHeader, ExportRequest, FreeText, Gap, GapReason, ManualClock, Record, Rule, Stats,
    ThinkingBudgetUsed,
};
use serde_json::Value as Json;
use time::OffsetDateTime;

/// What the helpers return on failure: a message naming the file and line.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// A helper's result.
pub(crate) type Result<T> = std::result::Result<T, Error>;
/// What a test returns.
pub(crate) type TestResult = Result<()>;

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
/// The wall clock the behaviour tests start at: 2023-11-14T22:13:20Z.
pub(crate) const T0: i64 = 1_700_000_000_000_000_000;
/// A bound on anything a behaviour test waits for; never reached when things work.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

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

/// The default configuration, changed by `edit`.
pub(crate) fn config_with(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    edit(&mut config);
    config
}

/// A collector with `config` that takes its times from `clock` and pseudonymizes with
/// the key made of the bytes `key`.
pub(crate) fn build_collector(
    clock: impl Clock,
    config: Config,
    key: [u8; 32],
) -> Result<Collector> {
    Ok(Collector::builder()
        .config(config)
        .clock(clock)
        .key(AnonymizationKey::from_bytes(key))
        .build()?)
}

/// A `thinking_budget_used` event of `task` whose token counts carry `marker`, so a test
/// can tell records apart.
pub(crate) fn used_by(task: impl Into<String>, marker: u64) -> Event {
    Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
        task_id: task.into(),
        tokens_used: marker,
        tokens_allocated: marker,
    })
}

/// [`used_by`] for the task `task`.
pub(crate) fn used(marker: u64) -> Event {
    used_by("task", marker)
}

/// Records [`used`] for each marker and waits until they are stored.
pub(crate) fn record_all(
    collector: &Collector,
    markers: impl IntoIterator<Item = u64>,
) -> Result<()> {
    for m in markers {
        collector.record(used(m))?;
    }
    collector.flush(PATIENCE)?;
    Ok(())
}

/// Everything `collector` retains, exported from [`Cursor::START`].
pub(crate) fn export_all(collector: &Collector) -> Result<Export> {
    Ok(collector.export(&ExportRequest::after(Cursor::START))?)
}

/// Waits until everything recorded so far is stored, then [`export_all`].
pub(crate) fn flushed_export(collector: &Collector) -> Result<Export> {
    collector.flush(PATIENCE)?;
    export_all(collector)
}

/// The records of `export`, decoded.
pub(crate) fn records(export: &Export) -> Result<Vec<Record>> {
    Ok(export
        .records()
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// The seqs of the records of `export`, in order.
pub(crate) fn seqs(export: &Export) -> Result<Vec<u64>> {
    Ok(records(export)?.iter().map(|r| r.seq).collect())
}

/// The UTC time `nanos` after the Unix epoch.
pub(crate) fn at(nanos: i64) -> Result<OffsetDateTime> {
    Ok(OffsetDateTime::from_unix_timestamp_nanos(i128::from(
        nanos,
    ))?)
}

/// The gap over `from_seq..=to_seq`, as [`Export::gap`] reports it.
pub(crate) fn gap(from_seq: u64, to_seq: u64, reason: GapReason) -> Option<Gap> {
    Some(Gap {
        from_seq,
        to_seq,
        reason,
    })
}

/// Reads the MessagePack form of `export` as a header and `export.len()` records; returns
/// the encoded size of the records and the bytes after them (the trailer, and anything
/// that follows it).
pub(crate) fn record_size_and_rest(export: &Export) -> Result<(u64, Vec<u8>)> {
    let bytes = export.to_msgpack();
    let mut input = std::io::Cursor::new(bytes.as_slice());
    let _: ExportHeader = rmp_serde::from_read(&mut input)?;
    let start = input.position();
    for _ in 0..export.len() {
        let _: serde::de::IgnoredAny = rmp_serde::from_read(&mut input)?;
    }
    let end = input.position();
    let rest = bytes
        .get(usize::try_from(end)?..)
        .ok_or("the records end past the export")?
        .to_vec();
    Ok((end - start, rest))
}

/// The encoded size of the records in `export`: the whole file minus header and trailer.
pub(crate) fn record_bytes(export: &Export) -> Result<u64> {
    Ok(record_size_and_rest(export)?.0)
}

/// Nothing in flight, and every submitted event stored, dropped or rejected.
#[track_caller]
pub(crate) fn assert_drained(s: &Stats) {
    assert_eq!(s.in_flight, 0, "{s:#?}");
    assert_eq!(
        s.submitted,
        s.stored + s.dropped.total() + s.rejected,
        "{s:#?}"
    );
}

/// [`assert_drained`], and every stored record retained or pruned.
#[track_caller]
pub(crate) fn assert_settled(s: &Stats) {
    assert_drained(s);
    assert_eq!(s.stored, s.retained + s.pruned.total(), "{s:#?}");
}

/// Polls `done` until it holds or `patience` runs out.
pub(crate) fn wait_until(
    what: &str,
    patience: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("gave up waiting for {what}").into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// A clock the test can stop: while its gate is closed every wall-clock reading on the
/// collector's threads blocks, which holds the ingest worker at its next commit.
#[derive(Debug, Clone)]
pub(crate) struct GatedClock {
    time: ManualClock,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    held: usize,
}

/// Opens the gate when dropped, so a failing test never leaves the worker stuck.
#[must_use]
pub(crate) struct Closed(Arc<Gate>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.lock().closed = false;
        self.0.changed.notify_all();
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(self: &Arc<Self>) -> Closed {
        self.lock().closed = true;
        Closed(Arc::clone(self))
    }

    fn pass(&self) {
        let mut state = self.lock();
        if state.closed {
            state.held += 1;
            self.changed.notify_all();
            while state.closed {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.held -= 1;
        }
    }

    /// Waits until some thread is held at the closed gate, for `patience` at the most.
    fn wait_for_holder(&self, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        let mut state = self.lock();
        while !(state.closed && state.held > 0) {
            let now = Instant::now();
            if now >= deadline {
                return Err("no thread reached the gate".into());
            }
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Ok(())
    }
}

impl GatedClock {
    /// An open gate before a [`ManualClock`] at `unix_nanos`.
    pub(crate) fn new(unix_nanos: i64) -> GatedClock {
        GatedClock {
            time: ManualClock::new(unix_nanos),
            gate: Arc::default(),
        }
    }

    /// Closes the gate and waits, for `patience` at the most, until a thread is held at
    /// it; the gate opens again when the result is dropped.
    pub(crate) fn hold(&self, patience: Duration) -> Result<Closed> {
        let closed = self.gate.close();
        self.gate.wait_for_holder(patience)?;
        Ok(closed)
    }
}

impl Clock for GatedClock {
    fn now_unix_nanos(&self) -> i64 {
        // Only the collector's own threads are held: producers read the clock in
        // `record()` to stamp events, and must not be stopped by the gate.
        let collector_thread = thread::current()
            .name()
            .is_some_and(|n| n.starts_with("arbiter-events-"));
        if collector_thread {
            self.gate.pass();
        }
        self.time.now_unix_nanos()
    }

    fn monotonic(&self) -> Duration {
        self.time.monotonic()
    }
}

/// A collector whose worker can be held, on a [`GatedClock`] at [`T0`] with the key made
/// of the bytes `key` and the default configuration changed by `edit`. Its worker wakes every
/// millisecond, so a closed gate catches it at once.
pub(crate) fn gated_collector(
    key: [u8; 32],
    edit: impl FnOnce(&mut Config),
) -> Result<(Collector, GatedClock)> {
    let clock = GatedClock::new(T0);
    let config = config_with(|c| {
        c.worker.tick_ms = 1;
        edit(c);
    });
    let collector = build_collector(clock.clone(), config, key)?;
    Ok((collector, clock))
}

/// The segment files of a data directory, by first seq.
pub(crate) fn segment_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.join("segments"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "seg") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The byte ranges of the frames of the segment at `path` (32-byte segment header,
/// 36-byte frame headers whose first 4 bytes are the payload length).
pub(crate) fn frame_ranges(path: &std::path::Path) -> Result<Vec<std::ops::Range<u64>>> {
    let bytes = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut at = 32u64;
    while at < bytes.len() as u64 {
        let start = usize::try_from(at)?;
        let len = u32::from_le_bytes(bytes[start..start + 4].try_into()?);
        let end = at + 36 + u64::from(len);
        out.push(at..end);
        at = end;
    }
    Ok(out)
}
