//! Exports are pure functions of (records, request, key): the golden file, identical
//! collectors, different keys, and increments that concatenate to the whole.

mod common;

use arbiter_events::{
    AnonymizationKey, Config, Cursor, Event, EventKind, Export, ExportRequest, read_export,
};

use common::Result;

const GOLDEN_MSGPACK: &str = "fixtures/golden/all_variants.msgpack";
const GOLDEN_JSONL: &str = "fixtures/golden/all_variants.jsonl";

/// The golden export as JSON lines: one `Record` per line, as serde_json writes it.
fn as_json_lines(export: &Export) -> Result<String> {
    let file = read_export(export.to_msgpack().as_slice())?;
    let mut text = String::new();
    for record in &file.records {
        text.push_str(&serde_json::to_string(record)?);
        text.push('\n');
    }
    Ok(text)
}

fn all_variants() -> Result<Vec<Event>> {
    common::read_events("fixtures/events/all_variants.jsonl")
}

#[test]
fn smoke() -> Result<()> {
    let export = common::golden_export()?;
    assert_eq!(export.len(), all_variants()?.len() as u64);
    assert_eq!(export.to_msgpack(), common::golden_export()?.to_msgpack());
    Ok(())
}

#[test]
fn the_export_of_all_variants_matches_the_golden_files() -> Result<()> {
    let export = common::golden_export()?;
    let bytes = export.to_msgpack();
    if let Err(e) = common::check_golden(GOLDEN_MSGPACK, &bytes) {
        panic!("{e}");
    }
    if let Err(e) = common::check_golden(GOLDEN_JSONL, as_json_lines(&export)?.as_bytes()) {
        panic!("{e}");
    }
    Ok(())
}

#[test]
fn the_golden_file_reads_back_as_the_golden_json_lines() -> Result<()> {
    let bytes = common::read_bytes(GOLDEN_MSGPACK)?;
    let file = read_export(bytes.as_slice())?;
    let lines: Vec<serde_json::Value> = common::read_jsonl(GOLDEN_JSONL)?;
    assert_eq!(file.records.len(), lines.len());
    for (record, line) in file.records.iter().zip(&lines) {
        assert_eq!(&serde_json::to_value(record)?, line);
        let parsed: arbiter_events::Record = serde_json::from_value(line.clone())?;
        assert_eq!(&parsed, record, "seq {}", record.seq);
    }
    let key = AnonymizationKey::from_bytes(common::GOLDEN_KEY);
    assert_eq!(file.header.key_id, Some(key.key_id()));
    assert_eq!(file.header.first_seq, Some(1));
    let first = file.records.first().ok_or("empty golden file")?;
    assert_eq!(
        first.time.unix_timestamp_nanos(),
        i128::from(common::GOLDEN_START_NANOS)
    );
    for pair in file.records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(
            pair[1].time - pair[0].time,
            time::Duration::try_from(common::GOLDEN_STEP)?
        );
    }
    Ok(())
}

#[test]
fn identical_collectors_export_identical_bytes() -> Result<()> {
    for (name, events) in common::event_streams()? {
        for (config_name, config) in common::anonymization_configs() {
            let a = common::export_stream(config.clone(), &events)?;
            let b = common::export_stream(config, &events)?;
            assert_eq!(a.to_msgpack(), b.to_msgpack(), "{name} with {config_name}");
        }
    }
    Ok(())
}

#[test]
fn the_same_records_exported_twice_give_the_same_bytes() -> Result<()> {
    let (collector, clock) = common::golden_collector(Config::default())?;
    common::record_stepped(&collector, &clock, &all_variants()?)?;
    let request = ExportRequest::after(Cursor::after_seq(3))
        .kinds([EventKind::RoutingDecision, EventKind::Custom])
        .limit(4);
    let first = collector.export(&request)?.to_msgpack();
    let second = collector.export(&request)?.to_msgpack();
    assert_eq!(first, second);
    Ok(())
}

#[test]
fn a_batch_recorded_at_once_exports_like_any_other_run() -> Result<()> {
    // With a still clock, how the worker batches does not change the bytes.
    let events = common::read_events("fixtures/events/session_pr_review.jsonl")?;
    let export = |batch: bool| -> Result<Vec<u8>> {
        let (collector, _still_clock) = common::golden_collector(Config::default())?;
        for event in &events {
            collector.record(event.clone())?;
            if !batch {
                collector.flush(common::FLUSH_TIMEOUT)?;
            }
        }
        collector.flush(common::FLUSH_TIMEOUT)?;
        Ok(collector
            .export(&ExportRequest::after(Cursor::START))?
            .to_msgpack())
    };
    assert_eq!(export(true)?, export(false)?);
    Ok(())
}

#[test]
fn a_different_key_gives_different_bytes() -> Result<()> {
    let events = all_variants()?;
    let golden = common::golden_export()?;
    let (collector, clock) = common::golden_collector_with_key(
        Config::default(),
        AnonymizationKey::from_bytes([0x43; 32]),
    )?;
    common::record_stepped(&collector, &clock, &events)?;
    let other = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_ne!(golden.to_msgpack(), other.to_msgpack());
    assert_ne!(golden.header().key_id, other.header().key_id);
    let (a, b) = (
        read_export(golden.to_msgpack().as_slice())?,
        read_export(other.to_msgpack().as_slice())?,
    );
    for (x, y) in a.records.iter().zip(&b.records) {
        assert_eq!(
            (x.seq, x.time, x.event.kind()),
            (y.seq, y.time, y.event.kind())
        );
        // Training metrics hold no identifiers; custom attributes are pseudonymized only
        // under configured keys (none here).
        if !matches!(
            x.event.kind(),
            EventKind::RlTrainingMetrics | EventKind::Custom
        ) {
            assert_ne!(x.event, y.event, "seq {}: no pseudonym changed", x.seq);
        }
    }
    Ok(())
}

#[test]
fn anonymization_off_exports_do_not_depend_on_the_key() -> Result<()> {
    let events = all_variants()?;
    let mut config = Config::default();
    config.anonymization.mode = arbiter_events::AnonymizationMode::Off;
    let a = common::export_stream(config.clone(), &events)?;
    let (collector, clock) =
        common::golden_collector_with_key(config, AnonymizationKey::from_bytes([0x43; 32]))?;
    common::record_stepped(&collector, &clock, &events)?;
    let b = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(a.to_msgpack(), b.to_msgpack());
    assert_eq!(a.header().key_id, None);
    Ok(())
}

/// Exports everything after `Cursor::START` in increments of at most `limit` records.
fn increments(collector: &arbiter_events::Collector, limit: u64) -> Result<Vec<Export>> {
    let mut exports = Vec::new();
    let mut cursor = Cursor::START;
    loop {
        let export = collector.export(&ExportRequest::after(cursor).limit(limit))?;
        if export.is_empty() {
            assert_eq!(export.next_cursor(), cursor);
            return Ok(exports);
        }
        cursor = export.next_cursor();
        exports.push(export);
    }
}

#[test]
fn increments_concatenate_to_the_whole_export() -> Result<()> {
    for (name, events) in common::event_streams()? {
        let (collector, clock) = common::golden_collector(Config::default())?;
        common::record_stepped(&collector, &clock, &events)?;
        let whole = collector.export(&ExportRequest::after(Cursor::START))?;
        let whole_parts = common::split_export(&whole)?;
        let whole_file = read_export(whole.to_msgpack().as_slice())?;
        for limit in [1, 2, 7, 64] {
            let parts = increments(&collector, limit)?;
            let mut bytes = Vec::new();
            let mut records = Vec::new();
            for (i, export) in parts.iter().enumerate() {
                assert!(export.len() <= limit);
                assert!(export.gap().is_none(), "{name}: gap in increment {i}");
                bytes.extend(common::split_export(export)?.records);
                records.extend(read_export(export.to_msgpack().as_slice())?.records);
            }
            assert_eq!(
                bytes, whole_parts.records,
                "{name}: record bytes, limit {limit}"
            );
            assert_eq!(
                records, whole_file.records,
                "{name}: records, limit {limit}"
            );
            // The checksum covers the header's bytes, then the records'.
            let mut signed = whole_parts.header.clone();
            signed.extend_from_slice(&bytes);
            assert_eq!(
                blake3::hash(&signed).to_hex().to_string(),
                whole.trailer().checksum,
                "{name}: checksum, limit {limit}"
            );
        }
    }
    Ok(())
}

#[test]
fn increments_taken_while_recording_concatenate_to_the_whole_export() -> Result<()> {
    let events = common::read_events("fixtures/events/session_rl_batch.jsonl")?;
    let (collector, clock) = common::golden_collector(Config::default())?;
    let mut cursor = Cursor::START;
    let mut bytes = Vec::new();
    for chunk in events.chunks(5) {
        common::record_stepped(&collector, &clock, chunk)?;
        let export = collector.export(&ExportRequest::after(cursor))?;
        assert_eq!(export.len(), chunk.len() as u64);
        cursor = export.next_cursor();
        bytes.extend(common::split_export(&export)?.records);
    }
    let whole = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(bytes, common::split_export(&whole)?.records);
    assert_eq!(cursor, Cursor::after_seq(events.len() as u64));
    Ok(())
}
