//! The export reader: round trips, and every way a file can be damaged — truncated,
//! flipped, re-labelled, padded, or with header and trailer out of step — is an error,
//! never a panic and never different records.

mod common;

use std::sync::OnceLock;

use arbiter_events::{
    Config, EXPORT_FORMAT, EXPORT_VERSION, Event, ExportError, ExportFile, read_export,
};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

use common::Result;

/// A small export (a few records of several kinds) and what it reads back as.
fn small() -> Result<(Vec<u8>, ExportFile)> {
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    let picked: Vec<Event> = events.into_iter().step_by(6).take(5).collect();
    let bytes = common::export_stream(Config::default(), &picked)?.to_msgpack();
    let file = read_export(bytes.as_slice())?;
    Ok((bytes, file))
}

/// [`small`], built once for the property tests.
fn small_cached() -> std::result::Result<&'static (Vec<u8>, ExportFile), String> {
    static SMALL: OnceLock<std::result::Result<(Vec<u8>, ExportFile), String>> = OnceLock::new();
    SMALL
        .get_or_init(|| small().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// An export's values as JSON: header, records, trailer.
fn values(bytes: &[u8]) -> Result<(Json, Vec<Json>, Json)> {
    let mut values = common::msgpack_values(bytes)?;
    let trailer = values.pop().ok_or("no trailer")?;
    if values.is_empty() {
        return Err("no header".into());
    }
    let header = values.remove(0);
    Ok((header, values, trailer))
}

/// Encodes header, records and trailer back into an export file.
fn assemble(header: &Json, records: &[u8], trailer: &Json) -> Result<Vec<u8>> {
    let mut bytes = rmp_serde::to_vec_named(header)?;
    bytes.extend_from_slice(records);
    bytes.extend(rmp_serde::to_vec_named(trailer)?);
    Ok(bytes)
}

/// The raw record bytes of `bytes`: everything between the header and the trailer.
fn record_bytes(bytes: &[u8]) -> Result<Vec<u8>> {
    let ranges = common::msgpack_ranges(bytes)?;
    let (Some(header), Some(trailer)) = (ranges.first(), ranges.last()) else {
        return Err("no values".into());
    };
    Ok(bytes[header.end..trailer.start].to_vec())
}

/// The length of the header of `bytes`.
fn header_len(bytes: &[u8]) -> Result<usize> {
    Ok(common::msgpack_ranges(bytes)?
        .first()
        .ok_or("no header")?
        .end)
}

#[test]
fn smoke() -> Result<()> {
    let (bytes, file) = small()?;
    assert_eq!(file.header.format, EXPORT_FORMAT);
    assert_eq!(file.header.version, EXPORT_VERSION);
    assert_eq!(file.records.len(), 5);
    assert_eq!(file.trailer.count, 5);
    assert_eq!(
        file.trailer.checksum,
        blake3::hash(&record_bytes(&bytes)?).to_hex().to_string()
    );
    Ok(())
}

#[test]
fn every_fixture_event_round_trips() -> Result<()> {
    for (name, events) in common::event_streams()? {
        for (config_name, config) in common::anonymization_configs() {
            let anonymized = config.anonymization.mode != arbiter_events::AnonymizationMode::Off;
            let export = common::export_stream(config, &events)?;
            let bytes = export.to_msgpack();
            let file = read_export(bytes.as_slice())?;
            let decoded: Vec<_> = export.records().collect::<std::result::Result<_, _>>()?;
            assert_eq!(file.records, decoded, "{name} with {config_name}");
            assert_eq!(&file.header, export.header());
            assert_eq!(file.trailer, export.trailer());
            assert_eq!(file.records.len(), events.len());
            for (i, (record, event)) in file.records.iter().zip(&events).enumerate() {
                assert_eq!(record.seq, i as u64 + 1);
                assert_eq!(record.event.kind(), event.kind());
                if !anonymized {
                    assert_eq!(&record.event, event, "{name}: event {i} changed");
                }
            }
            // Reading through any `Read` gives the same file.
            let mut reader = std::io::BufReader::with_capacity(7, bytes.as_slice());
            assert_eq!(read_export(&mut reader)?, file);
        }
    }
    Ok(())
}

#[test]
fn an_empty_export_round_trips() -> Result<()> {
    let export = common::export_stream(Config::default(), &[])?;
    let file = read_export(export.to_msgpack().as_slice())?;
    assert!(file.records.is_empty());
    assert_eq!(file.trailer.count, 0);
    assert_eq!(
        file.trailer.checksum,
        blake3::hash(b"").to_hex().to_string()
    );
    assert_eq!((file.header.first_seq, file.header.last_seq), (None, None));
    Ok(())
}

#[test]
fn truncation_at_every_byte_is_detected() -> Result<()> {
    let (bytes, _) = small()?;
    for cut in 0..bytes.len() {
        let result = read_export(&bytes[..cut]);
        assert!(
            matches!(result, Err(ExportError::Truncated { .. })),
            "cut at byte {cut} of {}: {result:?}",
            bytes.len()
        );
        if let Err(ExportError::Truncated { offset, .. }) = result {
            assert!(offset <= cut as u64, "cut at {cut}: offset {offset}");
        }
    }
    Ok(())
}

#[test]
fn truncation_says_what_is_missing() -> Result<()> {
    let (bytes, _) = small()?;
    let head = header_len(&bytes)?;
    let records = record_bytes(&bytes)?.len();
    let error = read_export(&bytes[..head / 2]).err();
    assert!(matches!(
        error,
        Some(ExportError::Truncated {
            what: "header",
            records_read: 0,
            offset: 0,
            ..
        })
    ));
    let error = read_export(&bytes[..head + records / 2]).err();
    assert!(matches!(
        error,
        Some(ExportError::Truncated {
            what: "record",
            expected: 5,
            ..
        })
    ));
    let error = read_export(&bytes[..head + records]).err();
    assert!(matches!(
        error,
        Some(ExportError::Truncated {
            what: "trailer",
            records_read: 5,
            expected: 5,
            ..
        })
    ));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn flipped_bytes_never_pass_as_different_records(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let (bytes, original) = small_cached().map_err(TestCaseError::fail)?;
        let mut damaged = bytes.clone();
        for (index, mask) in &flips {
            damaged[index.index(bytes.len())] ^= mask;
        }
        match read_export(damaged.as_slice()) {
            Ok(file) => prop_assert_eq!(&file.records, &original.records),
            Err(error) => prop_assert!(
                matches!(
                    error,
                    ExportError::Truncated { .. }
                        | ExportError::Corrupt { .. }
                        | ExportError::ChecksumMismatch { .. }
                        | ExportError::CountMismatch { .. }
                        | ExportError::Unsupported { .. }
                ),
                "{:?}",
                error
            ),
        }
    }

    #[test]
    fn arbitrary_bytes_are_an_error_not_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        prop_assert!(read_export(bytes.as_slice()).is_err());
    }
}

#[test]
fn flipping_any_record_byte_is_detected() -> Result<()> {
    let (bytes, _) = small()?;
    let head = header_len(&bytes)?;
    let records = record_bytes(&bytes)?.len();
    for at in head..head + records {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        let result = read_export(damaged.as_slice());
        assert!(
            result.is_err(),
            "flipped bit 0 of record byte {at} went unnoticed"
        );
    }
    Ok(())
}

#[test]
fn another_format_or_version_is_unsupported() -> Result<()> {
    let (bytes, _) = small()?;
    let (header, _, trailer) = values(&bytes)?;
    let records = record_bytes(&bytes)?;
    for (format, version) in [
        (json!("arbiter-events/snapshot"), json!(EXPORT_VERSION)),
        (json!(""), json!(EXPORT_VERSION)),
        (json!(EXPORT_FORMAT), json!(EXPORT_VERSION + 1)),
        (json!(EXPORT_FORMAT), json!(0)),
    ] {
        let mut other = header.clone();
        other["format"] = format.clone();
        other["version"] = version.clone();
        let result = read_export(assemble(&other, &records, &trailer)?.as_slice());
        assert!(
            matches!(&result, Err(ExportError::Unsupported { format: f, version: v })
                if json!(f) == format && json!(v) == version),
            "{format} {version}: {result:?}"
        );
    }
    // Unchanged, the parts reassemble into a valid file.
    assert!(read_export(assemble(&header, &records, &trailer)?.as_slice()).is_ok());
    Ok(())
}

#[test]
fn another_version_is_unsupported_whatever_its_header_holds() -> Result<()> {
    // A later version may lay its header out differently: the reader must say
    // "unsupported" from `format` and `version` alone, not "corrupt" because a field
    // of this version's header is missing.
    let (bytes, _) = small()?;
    let records = record_bytes(&bytes)?;
    let (_, _, trailer) = values(&bytes)?;
    for (format, version) in [
        (json!(EXPORT_FORMAT), json!(EXPORT_VERSION + 1)),
        (json!("parquet-bridge/export"), json!(EXPORT_VERSION)),
    ] {
        let header = json!({"format": format, "version": version, "records": 5});
        let result = read_export(assemble(&header, &records, &trailer)?.as_slice());
        assert!(
            matches!(&result, Err(ExportError::Unsupported { format: f, version: v })
                if json!(f) == format && json!(v) == version),
            "{format} {version}: {result:?}"
        );
    }
    Ok(())
}

#[test]
fn bytes_after_the_trailer_are_corrupt() -> Result<()> {
    let (bytes, _) = small()?;
    for extra in [&[0x00][..], &[0xc0], b"trailing garbage", &bytes[..1]] {
        let mut padded = bytes.clone();
        padded.extend_from_slice(extra);
        let result = read_export(padded.as_slice());
        assert!(
            matches!(&result, Err(ExportError::Corrupt { index: 5, offset, reason })
                if *offset == bytes.len() as u64 && reason.contains("after the trailer")),
            "{extra:?}: {result:?}"
        );
    }
    // A second export appended is not read as part of the first.
    let mut twice = bytes.clone();
    twice.extend_from_slice(&bytes);
    assert!(matches!(
        read_export(twice.as_slice()),
        Err(ExportError::Corrupt { .. })
    ));
    Ok(())
}

#[test]
fn a_trailer_count_that_disagrees_with_the_header_is_refused() -> Result<()> {
    let (bytes, _) = small()?;
    let (header, _, trailer) = values(&bytes)?;
    let records = record_bytes(&bytes)?;
    for count in [0, 4, 6, u64::MAX] {
        let mut other = trailer.clone();
        other["count"] = json!(count);
        let result = read_export(assemble(&header, &records, &other)?.as_slice());
        assert!(
            matches!(result, Err(ExportError::CountMismatch { header: 5, trailer }) if trailer == count),
            "trailer count {count}: {result:?}"
        );
    }
    Ok(())
}

#[test]
fn a_header_count_that_disagrees_with_the_records_is_refused() -> Result<()> {
    let (bytes, _) = small()?;
    let (header, _, trailer) = values(&bytes)?;
    let records = record_bytes(&bytes)?;
    // Too few: the next record is read as the trailer. Too many: the trailer is read
    // as a record, then the file ends.
    for count in [0, 4, 6, 7] {
        let mut other = header.clone();
        other["count"] = json!(count);
        let result = read_export(assemble(&other, &records, &trailer)?.as_slice());
        assert!(
            matches!(
                result,
                Err(ExportError::Corrupt { .. } | ExportError::Truncated { .. })
            ),
            "header count {count}: {result:?}"
        );
    }
    // Both counts lowered to match: the trailer's checksum no longer matches the
    // records read, or the rest is left over.
    let mut lower_header = header.clone();
    lower_header["count"] = json!(4);
    let mut lower_trailer = trailer.clone();
    lower_trailer["count"] = json!(4);
    let result = read_export(assemble(&lower_header, &records, &lower_trailer)?.as_slice());
    assert!(result.is_err(), "{result:?}");
    Ok(())
}

#[test]
fn a_wrong_checksum_is_refused() -> Result<()> {
    let (bytes, _) = small()?;
    let (header, _, trailer) = values(&bytes)?;
    let records = record_bytes(&bytes)?;
    let mut other = trailer.clone();
    other["checksum"] = json!(blake3::hash(b"something else").to_hex().to_string());
    let result = read_export(assemble(&header, &records, &other)?.as_slice());
    assert!(
        matches!(&result, Err(ExportError::ChecksumMismatch { expected, actual })
            if Some(expected.as_str()) == other["checksum"].as_str()
                && Some(actual.as_str()) == trailer["checksum"].as_str()),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn a_record_changed_but_still_decodable_is_a_checksum_mismatch() -> Result<()> {
    let (bytes, _) = small()?;
    // The first record's `seq: 1`: the key as a 3-byte fixstr, the value as a fixint.
    let at = bytes
        .windows(5)
        .position(|w| w == b"\xa3seq\x01")
        .ok_or("no seq 1 in the export")?;
    let mut changed = bytes.clone();
    changed[at + 4] = 0x09;
    let result = read_export(changed.as_slice());
    assert!(
        matches!(result, Err(ExportError::ChecksumMismatch { .. })),
        "{result:?}"
    );
    Ok(())
}

/// A change to one decoded record.
type Edit = fn(&mut Json);

#[test]
fn records_that_break_the_record_layout_are_corrupt() -> Result<()> {
    let (bytes, _) = small()?;
    let (header, records, _) = values(&bytes)?;
    let cases: [(&str, Edit); 5] = [
        ("an unknown field", |r| r["extra"] = json!(1)),
        ("no seq", |r| {
            r.as_object_mut().map(|m| m.remove("seq"));
        }),
        ("a string time", |r| {
            r["time"] = json!("2026-01-01T00:00:00Z")
        }),
        ("an unknown type", |r| r["type"] = json!("task_paused")),
        ("a missing field", |r| {
            let fields = ["seq", "time", "type"];
            let field = r
                .as_object()
                .and_then(|m| m.keys().find(|k| !fields.contains(&k.as_str())))
                .cloned();
            if let (Some(m), Some(field)) = (r.as_object_mut(), field) {
                m.remove(&field);
            }
        }),
    ];
    for (what, edit) in cases {
        let mut changed = records.clone();
        edit(&mut changed[2]);
        let mut encoded = Vec::new();
        for record in &changed {
            encoded.extend(rmp_serde::to_vec_named(record)?);
        }
        // A trailer that matches the damaged records, so only the layout is at fault.
        let trailer = json!({
            "count": changed.len(),
            "checksum": blake3::hash(&encoded).to_hex().to_string(),
        });
        let result = read_export(assemble(&header, &encoded, &trailer)?.as_slice());
        assert!(
            matches!(result, Err(ExportError::Corrupt { index: 2, .. })),
            "{what}: {result:?}"
        );
    }
    Ok(())
}

#[test]
fn a_record_rebuilt_from_its_json_form_reads_back_the_same() -> Result<()> {
    // The layout is self-describing: any MessagePack writer that writes the same named
    // maps produces a file this reader accepts.
    let (bytes, file) = small()?;
    let (header, records, _) = values(&bytes)?;
    let mut encoded = Vec::new();
    for record in &records {
        encoded.extend(rmp_serde::to_vec_named(record)?);
    }
    let trailer = json!({
        "count": records.len(),
        "checksum": blake3::hash(&encoded).to_hex().to_string(),
    });
    let rebuilt = read_export(assemble(&header, &encoded, &trailer)?.as_slice())?;
    assert_eq!(rebuilt.records, file.records);
    Ok(())
}

/// The process's peak virtual memory, in KiB, from `/proc/self/status`.
#[cfg(target_os = "linux")]
fn vm_peak_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .ok_or("no VmPeak in /proc/self/status")?;
    let kib = line.trim().trim_end_matches("kB").trim();
    Ok(kib.parse()?)
}

#[cfg(target_os = "linux")]
#[test]
fn a_huge_announced_count_reserves_no_memory_up_front() -> Result<()> {
    // A damaged or hostile header must not make the reader reserve memory for records
    // that are not in the input: a header announcing u64::MAX records followed by
    // nothing is a short, truncated file.
    const CHILD: &str = "ARBITER_EVENTS_MEASURE_ALONE";
    const NAME: &str = "a_huge_announced_count_reserves_no_memory_up_front";
    if std::env::var_os(CHILD).is_none() {
        // Measured in a process of its own, so no other test moves the peak.
        let output = std::process::Command::new(std::env::current_exe()?)
            .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .output()?;
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        return Ok(());
    }
    let header = json!({
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "anonymization": "pseudonymize",
        "key_id": null, "after": 0, "next_cursor": 0, "gap": null, "since": null,
        "until": null, "kinds": null, "limit": null, "count": u64::MAX,
        "first_seq": null, "last_seq": null,
    });
    let input = rmp_serde::to_vec_named(&header)?;
    let before = vm_peak_kib()?;
    let result = read_export(input.as_slice());
    let grown = vm_peak_kib()?.saturating_sub(before);
    assert!(
        matches!(result, Err(ExportError::Truncated { what: "record", .. })),
        "{result:?}"
    );
    assert!(
        grown < 16 * 1024,
        "reading a {}-byte header grew the peak virtual memory by {grown} KiB",
        input.len()
    );
    Ok(())
}

#[test]
fn an_attribute_list_no_collector_accepts_is_refused() -> Result<()> {
    let (bytes, _) = small()?;
    let (mut header, _, mut trailer) = values(&bytes)?;
    let long = vec![json!(null); arbiter_events::MAX_COLLECTION_LEN + 1];
    let record = json!({
        "seq": 1, "time": 0, "type": "custom", "name": "x", "attributes": { "l": long },
    });
    let record = rmp_serde::to_vec_named(&record)?;
    header["count"] = json!(1);
    header["first_seq"] = json!(1);
    header["last_seq"] = json!(1);
    header["next_cursor"] = json!(1);
    trailer["count"] = json!(1);
    trailer["checksum"] = json!(blake3::hash(&record).to_hex().to_string());
    let result = read_export(assemble(&header, &record, &trailer)?.as_slice());
    assert!(
        matches!(&result, Err(ExportError::Corrupt { index: 0, reason, .. }) if reason.contains("max_collection_len")),
        "{result:?}"
    );
    Ok(())
}
