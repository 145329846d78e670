//! Merged exports: the records of several sources in one version 2 export, each record
//! tagged with its `source`, a range and gaps per source in the header, one checksum
//! and one MAC over the whole; what a puller writes from what relays published.

mod common;

use std::collections::BTreeMap;

use arbiter_events::{
    AnonymizationKey, AnonymizationMode, Config, Cursor, Event, EventKind, ExportError,
    ExportMerger, ExportRequest, GapReason, read_export, read_export_verified,
};
use serde_json::Value as Json;

use common::{GOLDEN_KEY, GOLDEN_STEP, Result, Schema, TestResult};

const SOURCES: [&str; 3] = ["machine-a", "machine-b", "machine-c"];

fn key() -> AnonymizationKey {
    AnonymizationKey::from_bytes(GOLDEN_KEY)
}

fn config(source: &str) -> Config {
    common::config_with(|c| c.source = Some(source.to_owned()))
}

/// Per source, two increments (exports) of its third of `all_variants.jsonl`, recorded
/// on the golden clock under `key`.
fn increments(key: &AnonymizationKey) -> Result<Vec<(String, Vec<Vec<u8>>)>> {
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    let mut out = Vec::new();
    for (i, source) in SOURCES.iter().enumerate() {
        let (collector, clock) = common::golden_collector_with_key(config(source), key.clone())?;
        let mine: Vec<Event> = events.iter().skip(i).step_by(3).cloned().collect();
        let (early, late) = mine.split_at(mine.len() / 2);
        common::record_stepped(&collector, &clock, early)?;
        let first = collector.export(&ExportRequest::after(Cursor::START))?;
        clock.advance(GOLDEN_STEP);
        common::record_stepped(&collector, &clock, late)?;
        let second = collector.export(&ExportRequest::after(first.next_cursor()))?;
        out.push((
            (*source).to_owned(),
            vec![first.to_msgpack(), second.to_msgpack()],
        ));
    }
    Ok(out)
}

/// The increments pushed in the usual interleaving: every source's first, then every
/// source's second.
fn interleaved(increments: &[(String, Vec<Vec<u8>>)]) -> Vec<&[u8]> {
    (0..2)
        .flat_map(|round| increments.iter().map(move |(_, parts)| &parts[round][..]))
        .collect()
}

fn merge(parts: &[&[u8]], key: &AnonymizationKey) -> Result<Vec<u8>> {
    let mut merger = ExportMerger::new([]).verify_with(key.mac_key());
    for part in parts {
        merger.push(part)?;
    }
    Ok(merger.finish().to_msgpack())
}

#[test]
fn smoke() -> TestResult {
    let key = key();
    let increments = increments(&key)?;
    let merged = merge(&interleaved(&increments), &key)?;
    let file = read_export_verified(merged.as_slice(), &key.mac_key())?;
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    assert_eq!(file.records.len(), events.len());
    let sources = file.header.sources.as_ref().ok_or("no sources")?;
    assert_eq!(
        sources.keys().map(String::as_str).collect::<Vec<_>>(),
        SOURCES
    );
    assert_eq!(file.header.source, None);
    for (source, range) in sources {
        let seqs: Vec<u64> = file
            .records
            .iter()
            .filter(|r| r.source.as_deref() == Some(source.as_str()))
            .map(|r| r.seq)
            .collect();
        assert_eq!(range.after, 0);
        assert_eq!(range.count, seqs.len() as u64);
        assert_eq!(
            seqs,
            (1..=range.next_cursor).collect::<Vec<_>>(),
            "{source}"
        );
        assert!(range.gaps.is_empty());
    }
    Ok(())
}

#[test]
fn the_merged_export_is_pinned_by_golden_files() -> TestResult {
    let key = key();
    let mut merged = ExportMerger::new([]).verify_with(key.mac_key());
    for part in interleaved(&increments(&key)?) {
        merged.push(part)?;
    }
    let export = merged.finish();
    common::check_golden("fixtures/golden/merged.msgpack", &export.to_msgpack())?;
    common::check_golden("fixtures/golden/merged.export.jsonl", &export.to_jsonl()?)?;
    // The JSON Lines form holds the same records, one a line, between header and trailer.
    let jsonl = export.to_jsonl()?;
    let lines: Vec<Json> = jsonl
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(lines.len() as u64, export.len() + 2);
    assert!(lines[0]["sources"].is_object());
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|r| r["source"].is_string())
    );
    Ok(())
}

#[test]
fn the_same_parts_give_the_same_bytes_in_any_interleaving() -> TestResult {
    let key = key();
    let increments = increments(&key)?;
    let usual = merge(&interleaved(&increments), &key)?;
    // Source by source, last source first.
    let by_source: Vec<&[u8]> = increments
        .iter()
        .rev()
        .flat_map(|(_, parts)| parts.iter().map(Vec::as_slice))
        .collect();
    assert_eq!(merge(&by_source, &key)?, usual);
    Ok(())
}

#[test]
fn each_record_is_its_sources_record_with_the_source_added() -> TestResult {
    let key = key();
    let increments = increments(&key)?;
    let merged = read_export(merge(&interleaved(&increments), &key)?.as_slice())?;
    for (source, parts) in &increments {
        for part in parts {
            for mut record in read_export(part.as_slice())?.records {
                record.source = Some(source.clone());
                assert!(
                    merged.records.contains(&record),
                    "{source} seq {} is not in the merge as it was",
                    record.seq
                );
            }
        }
    }
    Ok(())
}

#[test]
fn every_value_of_a_merged_export_validates_against_the_schemas() -> TestResult {
    let key = key();
    let merged = merge(&interleaved(&increments(&key)?), &key)?;
    let values = common::msgpack_values(&merged)?;
    let (header, rest) = values.split_first().ok_or("empty")?;
    let (trailer, records) = rest.split_last().ok_or("no trailer")?;
    Schema::load("export-header.schema.json")?.validate(header)?;
    Schema::load("export-trailer.schema.json")?.validate(trailer)?;
    let record_schema = Schema::load("record.schema.json")?;
    for record in records {
        assert!(record["source"].is_string(), "{record}");
        record_schema.validate(record)?;
    }
    // The schema holds the two shapes apart: a header with both, or neither, fails.
    let header_schema = Schema::load("export-header.schema.json")?;
    let mut both = header.clone();
    both["source"] = Json::from("machine-a");
    assert!(header_schema.validate(&both).is_err());
    let mut neither = header.clone();
    neither
        .as_object_mut()
        .ok_or("not a map")?
        .remove("sources");
    assert!(header_schema.validate(&neither).is_err());
    Ok(())
}

#[test]
fn a_merger_starts_each_source_where_it_stands() -> TestResult {
    let key = key();
    let increments = increments(&key)?;
    let (source, parts) = &increments[0];
    let first = read_export(parts[0].as_slice())?;
    let mut merger =
        ExportMerger::new([(source.clone(), first.header.next_cursor)]).verify_with(key.mac_key());
    assert_eq!(merger.cursor(source), first.header.next_cursor);
    merger.push(&parts[1])?;
    let file = read_export_verified(merger.finish().to_msgpack().as_slice(), &key.mac_key())?;
    let range = &file.header.sources.as_ref().ok_or("no sources")?[source];
    assert_eq!(range.after, first.header.next_cursor);
    assert_eq!(
        file.records.first().map(|r| r.seq),
        Some(first.header.next_cursor + 1)
    );
    Ok(())
}

/// Pushing `part` fails as `check` says, and the merger is as it was.
fn refused(
    merger: &mut ExportMerger,
    part: &[u8],
    check: impl FnOnce(&ExportError) -> bool,
) -> TestResult {
    let (len, cursors): (u64, Vec<u64>) = (
        merger.len(),
        SOURCES.iter().map(|s| merger.cursor(s)).collect(),
    );
    match merger.push(part) {
        Ok(()) => return Err("a part that should be refused was taken".into()),
        Err(e) => assert!(check(&e), "unexpected error: {e}"),
    }
    assert_eq!(merger.len(), len);
    assert_eq!(
        SOURCES.iter().map(|s| merger.cursor(s)).collect::<Vec<_>>(),
        cursors
    );
    Ok(())
}

#[test]
fn parts_that_do_not_belong_are_refused_and_nothing_of_them_is_taken() -> TestResult {
    let key = key();
    let increments = increments(&key)?;
    let parts = &increments[0].1;
    let not_mergeable = |e: &ExportError| matches!(e, ExportError::NotMergeable { .. });
    let mut merger = ExportMerger::new([]).verify_with(key.mac_key());
    // The second increment before the first: a hole.
    refused(&mut merger, &parts[1], not_mergeable)?;
    merger.push(&parts[0])?;
    // The same increment again: it no longer starts where its source stands.
    refused(&mut merger, &parts[0], not_mergeable)?;
    // Every damaged byte of a part: nothing of it is taken.
    for at in 0..parts[1].len() {
        let mut damaged = parts[1].clone();
        damaged[at] ^= 0x01;
        refused(&mut merger, &damaged, |_| true)?;
    }
    merger.push(&parts[1])?;
    // Records pseudonymized under another key: another key id, and another MAC.
    let other = AnonymizationKey::from_bytes([0x24; 32]);
    let foreign = increments_of_one("machine-z", &other)?;
    refused(&mut merger, &foreign, |e| {
        matches!(e, ExportError::MacMismatch)
    })?;
    let mut unsigned_merger = ExportMerger::new([]);
    unsigned_merger.push(&increments[1].1[0])?;
    refused(&mut unsigned_merger, &foreign, not_mergeable)?;
    // Without anonymization there is no MAC to verify.
    let (plain, clock) = common::golden_collector_with_key(
        common::config_with(|c| {
            c.source = Some("machine-p".to_owned());
            c.anonymization.mode = AnonymizationMode::Off;
        }),
        key.clone(),
    )?;
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    common::record_stepped(&plain, &clock, &events[..3])?;
    let plain = plain
        .export(&ExportRequest::after(Cursor::START))?
        .to_msgpack();
    refused(&mut merger, &plain, |e| {
        matches!(e, ExportError::MacMissing { .. })
    })?;
    // A filtered export: its range is not whole.
    let (collector, clock) = common::golden_collector_with_key(config("machine-f"), key.clone())?;
    common::record_stepped(&collector, &clock, &events)?;
    let filtered = collector
        .export(&ExportRequest::after(Cursor::START).kinds([EventKind::TaskStarted]))?
        .to_msgpack();
    refused(&mut merger, &filtered, not_mergeable)?;
    // A merge is not a part.
    let merged = merge(&interleaved(&increments), &key)?;
    refused(&mut merger, &merged, not_mergeable)?;
    Ok(())
}

/// One export of `source` under `key`.
fn increments_of_one(source: &str, key: &AnonymizationKey) -> Result<Vec<u8>> {
    let (collector, clock) = common::golden_collector_with_key(config(source), key.clone())?;
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    common::record_stepped(&collector, &clock, &events[..4])?;
    Ok(collector
        .export(&ExportRequest::after(Cursor::START))?
        .to_msgpack())
}

#[test]
fn gaps_of_a_source_go_into_its_range() -> TestResult {
    let key = key();
    let (collector, clock) = common::golden_collector_with_key(
        common::config_with(|c| {
            c.source = Some("machine-g".to_owned());
            c.retention.max_events = 4;
        }),
        key.clone(),
    )?;
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    common::record_stepped(&collector, &clock, &events[..10])?;
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    let gap = export.gap().ok_or("no gap")?;
    assert_eq!(gap.reason, GapReason::Capacity);
    let mut merger = ExportMerger::new([]).verify_with(key.mac_key());
    merger.push(&export.to_msgpack())?;
    let file = read_export_verified(merger.finish().to_msgpack().as_slice(), &key.mac_key())?;
    let range = &file.header.sources.as_ref().ok_or("no sources")?["machine-g"];
    assert_eq!(range.gaps, vec![gap]);
    assert_eq!((range.after, range.next_cursor, range.count), (0, 10, 4));
    Ok(())
}

/// `merged` with its header replaced by `edit` of it, checksum recomputed, no MAC:
/// only the header checks can refuse it.
fn with_header(merged: &[u8], edit: impl FnOnce(&mut Json)) -> Result<Vec<u8>> {
    let ranges = common::msgpack_ranges(merged)?;
    let values = common::msgpack_values(merged)?;
    let mut header = values[0].clone();
    edit(&mut header);
    let mut out = rmp_serde::to_vec_named(&header)?;
    let last = ranges.last().ok_or("empty")?;
    out.extend_from_slice(&merged[ranges[0].end..last.start]);
    let trailer = BTreeMap::from([
        ("count", trailer_count(&values[values.len() - 1])?),
        (
            "checksum",
            Json::from(blake3::hash(&out).to_hex().to_string()),
        ),
        ("mac", Json::Null),
    ]);
    out.extend_from_slice(&rmp_serde::to_vec_named(&trailer)?);
    Ok(out)
}

/// A change made to a merged header.
type HeaderEdit = Box<dyn Fn(&mut Json)>;

fn trailer_count(trailer: &Json) -> Result<Json> {
    Ok(trailer.get("count").cloned().ok_or("no count")?)
}

#[test]
fn a_merged_header_that_disagrees_with_its_records_is_refused() -> TestResult {
    let key = key();
    let merged = merge(&interleaved(&increments(&key)?), &key)?;
    // Unchanged, with a recomputed checksum, it reads.
    read_export(with_header(&merged, |_| {})?.as_slice())?;
    let edits: Vec<(&str, HeaderEdit)> = vec![
        (
            "a count",
            Box::new(|h| h["sources"]["machine-a"]["count"] = 1.into()),
        ),
        (
            "a cursor",
            Box::new(|h| h["sources"]["machine-b"]["next_cursor"] = 99.into()),
        ),
        (
            "an after",
            Box::new(|h| h["sources"]["machine-c"]["after"] = 1.into()),
        ),
        (
            "a source dropped",
            Box::new(|h| {
                if let Some(s) = h["sources"].as_object_mut() {
                    s.remove("machine-b");
                }
            }),
        ),
        (
            "a single source",
            Box::new(|h| h["source"] = "machine-a".into()),
        ),
        (
            "a cursor of the file",
            Box::new(|h| h["next_cursor"] = 5.into()),
        ),
        (
            "a gap over records",
            Box::new(|h| {
                h["sources"]["machine-a"]["gaps"] =
                    serde_json::json!([{"from_seq": 1, "to_seq": 2, "reason": "age"}]);
            }),
        ),
    ];
    for (what, edit) in edits {
        match read_export(with_header(&merged, edit)?.as_slice()) {
            Err(ExportError::HeaderMismatch { field, .. }) => {
                assert_eq!(field, "sources", "{what}");
            }
            other => return Err(format!("{what}: {other:?}").into()),
        }
    }
    Ok(())
}

#[test]
fn a_record_naming_a_source_in_an_export_of_one_source_is_refused() -> TestResult {
    let export = common::golden_export()?;
    let parts = common::split_export(&export)?;
    // The merger's own splice, applied to a single-source export's records.
    let mut merger = ExportMerger::new([]);
    merger.push(&export.to_msgpack())?;
    let spliced = merger.finish().to_msgpack();
    let spliced_values = common::msgpack_values(&spliced)?;
    let mut out = parts.header.clone();
    let ranges = common::msgpack_ranges(&spliced)?;
    out.extend_from_slice(&spliced[ranges[1].start..ranges[ranges.len() - 1].start]);
    let trailer = BTreeMap::from([
        (
            "count",
            trailer_count(&spliced_values[spliced_values.len() - 1])?,
        ),
        (
            "checksum",
            Json::from(blake3::hash(&out).to_hex().to_string()),
        ),
        ("mac", Json::Null),
    ]);
    out.extend_from_slice(&rmp_serde::to_vec_named(&trailer)?);
    assert!(matches!(
        read_export(out.as_slice()),
        Err(ExportError::HeaderMismatch {
            field: "sources",
            ..
        })
    ));
    Ok(())
}

#[test]
fn the_cli_verifies_a_merged_export_and_names_each_sources_range() -> TestResult {
    let merged = common::path("fixtures/golden/merged.msgpack");
    let key = common::path("fixtures/golden/mac_key.hex");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .arg("verify-export")
        .arg(&merged)
        .arg("--mac-key-file")
        .arg(&key)
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("verified 33 records") && said.contains("mac ok"),
        "{said}"
    );
    assert!(said.contains("source merged"), "{said}");
    for source in SOURCES {
        assert!(
            said.contains(&format!("{source} 11 records after seq 0 to 11")),
            "{said}"
        );
    }
    // `pull --read` prints the header, sources and all.
    let pull_read = |key: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
            .args(["pull", "--read"])
            .arg(&merged)
            .arg("--mac-key-file")
            .arg(key)
            .output()
    };
    let out = pull_read(&key)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header: Json = serde_json::from_slice(&out.stdout)?;
    assert_eq!(header["sources"]["machine-b"]["count"], 11);
    // Under another key: refused.
    let tmp = tempfile::tempdir()?;
    let other = tmp.path().join("other.key");
    std::fs::write(&other, "17".repeat(32))?;
    let out = pull_read(&other)?;
    assert_eq!(out.status.code(), Some(1));
    Ok(())
}
