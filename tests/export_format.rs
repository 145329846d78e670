//! The export reader: round trips, and every way a file can be damaged — truncated,
//! flipped, re-labelled, padded, or with header and trailer out of step — is an error,
//! never a panic and never different records.

mod common;

use std::sync::OnceLock;

use arbiter_events::{
    Config, EXPORT_FORMAT, EXPORT_VERSION, Event, ExportError, ExportFile, MacKey, read_export,
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

/// The version 2 checksum of a file made of `header` and `records`: BLAKE3 of the
/// header's MessagePack bytes, then the records' bytes.
fn checksum_of(header: &Json, records: &[u8]) -> Result<String> {
    let mut signed = rmp_serde::to_vec_named(header)?;
    signed.extend_from_slice(records);
    Ok(blake3::hash(&signed).to_hex().to_string())
}

/// Like [`assemble`], with a trailer whose count and checksum match `header` and
/// `records` and whose MAC is made with `mac_key` (none without one): a file only the
/// checks beyond the checksum can refuse.
fn assemble_sealed(header: &Json, records: &[u8], mac_key: Option<&MacKey>) -> Result<Vec<u8>> {
    let mut signed = rmp_serde::to_vec_named(header)?;
    signed.extend_from_slice(records);
    let mac = mac_key.map(|k| {
        let key: [u8; 32] = hex_bytes(&k.to_hex());
        blake3::keyed_hash(&key, blake3::hash(&signed).as_bytes())
            .to_hex()
            .to_string()
    });
    let trailer = json!({
        "count": header["count"],
        "checksum": blake3::hash(&signed).to_hex().to_string(),
        "mac": mac,
    });
    signed.extend(rmp_serde::to_vec_named(&trailer)?);
    Ok(signed)
}

/// 32 bytes from 64 hex digits (zeros for anything else: the tests pass valid keys).
fn hex_bytes(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = text
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
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
    let mut signed = bytes[..header_len(&bytes)?].to_vec();
    signed.extend(record_bytes(&bytes)?);
    assert_eq!(
        file.trailer.checksum,
        blake3::hash(&signed).to_hex().to_string()
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
    let bytes = export.to_msgpack();
    let file = read_export(bytes.as_slice())?;
    assert!(file.records.is_empty());
    assert_eq!(file.trailer.count, 0);
    assert_eq!(
        file.trailer.checksum,
        blake3::hash(&bytes[..header_len(&bytes)?])
            .to_hex()
            .to_string()
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
                        | ExportError::HeaderMismatch { .. }
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
    assert!(read_export(assemble_sealed(&header, &records, None)?.as_slice()).is_ok());
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
    let right = checksum_of(&header, &records)?;
    assert!(
        matches!(&result, Err(ExportError::ChecksumMismatch { expected, actual })
            if Some(expected.as_str()) == other["checksum"].as_str()
                && *actual == right),
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
        let result = read_export(assemble_sealed(&header, &encoded, None)?.as_slice());
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
    let rebuilt = read_export(assemble_sealed(&header, &encoded, None)?.as_slice())?;
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
    header["after"] = json!(0);
    trailer["count"] = json!(1);
    let result = read_export(assemble_sealed(&header, &record, None)?.as_slice());
    assert!(
        matches!(&result, Err(ExportError::Corrupt { index: 0, reason, .. }) if reason.contains("max_collection_len")),
        "{result:?}"
    );
    Ok(())
}

// ---- Version 2: the checksum covers the header, the header agrees with the records,
// ---- and a keyed MAC proves that nobody changed the file.

const GOLDEN_MSGPACK: &str = "fixtures/golden/all_variants.msgpack";
const GOLDEN_V1_MSGPACK: &str = "fixtures/golden/v1/all_variants.msgpack";
const GOLDEN_EXPORT_JSONL: &str = "fixtures/golden/all_variants.export.jsonl";
const GOLDEN_MAC_KEY: &str = "fixtures/golden/mac_key.hex";

/// The MAC key of the golden export's key.
fn golden_mac_key() -> MacKey {
    arbiter_events::AnonymizationKey::from_bytes(common::GOLDEN_KEY).mac_key()
}

/// The golden v2 file and its MAC key.
fn golden() -> Result<(Vec<u8>, MacKey)> {
    Ok((common::read_bytes(GOLDEN_MSGPACK)?, golden_mac_key()))
}

#[test]
fn the_golden_file_is_version_2_signed_by_the_golden_key() -> Result<()> {
    let (bytes, mac_key) = golden()?;
    let file = arbiter_events::read_export_verified(bytes.as_slice(), &mac_key)?;
    assert_eq!(file.version(), 2);
    assert_eq!(file.version(), EXPORT_VERSION);
    let source = file.header.source.as_deref().ok_or("no source")?;
    assert_eq!(
        source,
        format!("mem-{}", file.header.key_id.as_deref().unwrap_or_default())
    );
    // The MAC is keyed BLAKE3 of the checksum of everything before the trailer (hash,
    // then MAC), under a key derived from the collector's key by its own context.
    let trailer_start = common::msgpack_ranges(&bytes)?
        .last()
        .ok_or("no trailer")?
        .start;
    let derived = blake3::derive_key("arbiter-events 2026 export mac", &common::GOLDEN_KEY);
    assert_eq!(derived, hex_bytes(&mac_key.to_hex()));
    assert_eq!(
        file.trailer.mac.as_deref(),
        Some(
            blake3::keyed_hash(&derived, blake3::hash(&bytes[..trailer_start]).as_bytes())
                .to_hex()
                .as_str()
        )
    );
    assert_ne!(mac_key.to_hex(), hex_of(&common::GOLDEN_KEY));
    // The key handed to consumers, pinned for the Python reader's tests.
    let text = format!("{}\n", mac_key.to_hex());
    if let Err(e) = common::check_golden(GOLDEN_MAC_KEY, text.as_bytes()) {
        panic!("{e}");
    }
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_bit_of_the_golden_header_flipped_is_refused() -> Result<()> {
    let (bytes, mac_key) = golden()?;
    let head = header_len(&bytes)?;
    assert!(head > 100, "the header is {head} bytes");
    for at in 0..head {
        for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= mask;
            let plain = read_export(damaged.as_slice());
            assert!(
                plain.is_err(),
                "header byte {at} ^ {mask:#04x} passed as intact: {:?}",
                plain.map(|f| f.header)
            );
            let keyed = arbiter_events::read_export_verified(damaged.as_slice(), &mac_key);
            assert!(
                keyed.is_err(),
                "header byte {at} ^ {mask:#04x} passed the MAC"
            );
        }
    }
    Ok(())
}

#[test]
fn with_the_mac_key_a_flipped_byte_anywhere_is_refused() -> Result<()> {
    let (bytes, mac_key) = golden()?;
    let ranges = common::msgpack_ranges(&bytes)?;
    let trailer = ranges.last().ok_or("no trailer")?.clone();
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        let result = arbiter_events::read_export_verified(damaged.as_slice(), &mac_key);
        assert!(
            result.is_err(),
            "byte {at} of {} flipped went unnoticed",
            bytes.len()
        );
    }
    // A flip inside the MAC's digits is named as a MAC mismatch.
    let mac_at = bytes[trailer.clone()]
        .windows(3)
        .position(|w| w == b"mac")
        .ok_or("no mac in the trailer")?
        + trailer.start
        + 3
        + 2;
    let mut damaged = bytes.clone();
    damaged[mac_at + 10] = if damaged[mac_at + 10] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let result = arbiter_events::read_export_verified(damaged.as_slice(), &mac_key);
    assert!(
        matches!(result, Err(ExportError::MacMismatch)),
        "{result:?}"
    );
    // Without the key, the same file reads: the unkeyed checks cannot see it.
    assert!(read_export(damaged.as_slice()).is_ok());
    Ok(())
}

#[test]
fn a_file_re_signed_with_another_key_is_refused() -> Result<()> {
    let (bytes, mac_key) = golden()?;
    let (mut header, _, _) = values(&bytes)?;
    let records = record_bytes(&bytes)?;
    let other = arbiter_events::AnonymizationKey::from_bytes([0x17; 32]).mac_key();
    // Re-signed unchanged, and re-signed with a forged source and key id.
    let resigned = assemble_sealed(&header, &records, Some(&other))?;
    header["source"] = json!("another-machine");
    header["key_id"] = json!("0123456789abcdef");
    let forged = assemble_sealed(&header, &records, Some(&other))?;
    for file in [resigned, forged] {
        // The unkeyed checks pass: the checksum was recomputed too.
        assert!(read_export(file.as_slice()).is_ok());
        let result = arbiter_events::read_export_verified(file.as_slice(), &mac_key);
        assert!(
            matches!(result, Err(ExportError::MacMismatch)),
            "{result:?}"
        );
        assert!(arbiter_events::read_export_verified(file.as_slice(), &other).is_ok());
    }
    // A file whose MAC was removed is refused as unsigned.
    let stripped = assemble_sealed(&header, &records, None)?;
    let result = arbiter_events::read_export_verified(stripped.as_slice(), &mac_key);
    assert!(
        matches!(result, Err(ExportError::MacMissing { version: 2 })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn header_fields_rewritten_with_a_fresh_checksum_are_refused() -> Result<()> {
    // Damage the checksum cannot see, because it was recomputed: every field that the
    // records determine is checked against them.
    let (bytes, _) = golden()?;
    let (header, records_json, _) = values(&bytes)?;
    let records = record_bytes(&bytes)?;
    let n = records_json.len() as u64;
    assert_eq!(header["next_cursor"], json!(n));
    let first_time = records_json[0]["time"].as_i64().ok_or("no time")?;
    let cases: Vec<(&str, Json)> = vec![
        ("next_cursor", json!(n + 64)),
        ("next_cursor", json!(n - 1)),
        ("first_seq", json!(2)),
        ("first_seq", json!(null)),
        ("last_seq", json!(n + 1)),
        ("after", json!(1)),
        ("gap", json!({"from_seq": 1, "to_seq": 1, "reason": "age"})),
        ("limit", json!(n - 1)),
        ("kinds", json!(["custom"])),
        ("kinds", json!([])),
        ("since", json!(first_time + 1)),
        ("until", json!(first_time)),
        ("key_id", json!(null)),
        ("anonymization", json!("off")),
        ("source", json!("not a source id")),
    ];
    for (field, value) in cases {
        let mut changed = header.clone();
        changed[field] = value.clone();
        let result = read_export(assemble_sealed(&changed, &records, None)?.as_slice());
        assert!(
            matches!(&result, Err(ExportError::HeaderMismatch { .. })),
            "{field} = {value}: {result:?}"
        );
    }
    // A limit that was reached, with the next cursor where the last record is: fine.
    let mut limited = header.clone();
    limited["limit"] = json!(n);
    assert!(read_export(assemble_sealed(&limited, &records, None)?.as_slice()).is_ok());
    Ok(())
}

#[test]
fn the_version_1_golden_file_still_reads() -> Result<()> {
    let v1 = common::read_bytes(GOLDEN_V1_MSGPACK)?;
    let file = read_export(v1.as_slice())?;
    assert_eq!(file.version(), arbiter_events::EXPORT_VERSION_1);
    assert_eq!(file.header.source, None);
    assert_eq!(file.trailer.mac, None);
    // Its checksum covers the records only.
    assert_eq!(
        file.trailer.checksum,
        blake3::hash(&record_bytes(&v1)?).to_hex().to_string()
    );
    // The same records as the version 2 golden file.
    let (v2, mac_key) = golden()?;
    assert_eq!(file.records, read_export(v2.as_slice())?.records);
    // It has no MAC to verify.
    let result = arbiter_events::read_export_verified(v1.as_slice(), &mac_key);
    assert!(
        matches!(result, Err(ExportError::MacMissing { version: 1 })),
        "{result:?}"
    );
    // Its header flipped anywhere is still refused: version 1 headers are checked
    // against the records too, and v1 cannot be claimed by a v2 file.
    let (mut header, _, trailer) = values(&v1)?;
    header["source"] = json!("x");
    let result = read_export(assemble(&header, &record_bytes(&v1)?, &trailer)?.as_slice());
    assert!(
        matches!(
            result,
            Err(ExportError::HeaderMismatch {
                field: "version",
                ..
            })
        ),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn without_anonymization_there_is_no_mac_and_verification_refuses() -> Result<()> {
    let mut config = Config::default();
    config.anonymization.mode = arbiter_events::AnonymizationMode::Off;
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    let export = common::export_stream(config, &events[..3])?;
    assert_eq!(export.trailer().mac, None);
    assert_eq!(export.header().source.as_deref(), Some("mem"));
    let bytes = export.to_msgpack();
    assert!(read_export(bytes.as_slice()).is_ok());
    let result = arbiter_events::read_export_verified(bytes.as_slice(), &golden_mac_key());
    assert!(
        matches!(result, Err(ExportError::MacMissing { version: 2 })),
        "{result:?}"
    );
    Ok(())
}

/// Splits JSON Lines text into its lines, each with its newline.
fn jsonl_lines(text: &[u8]) -> Vec<&[u8]> {
    text.split_inclusive(|&b| b == b'\n').collect()
}

#[test]
fn the_json_lines_form_carries_the_same_records_and_integrity_fields() -> Result<()> {
    let export = common::golden_export()?;
    let text = export.to_jsonl()?;
    if let Err(e) = common::check_golden(GOLDEN_EXPORT_JSONL, &text) {
        panic!("{e}");
    }
    let lines = jsonl_lines(&text);
    assert_eq!(lines.len() as u64, export.len() + 2);
    let header: Json = serde_json::from_slice(lines[0])?;
    assert_eq!(header, serde_json::to_value(export.header())?);
    let file = read_export(export.to_msgpack().as_slice())?;
    for (line, record) in lines[1..lines.len() - 1].iter().zip(&file.records) {
        let parsed: arbiter_events::Record = serde_json::from_slice(line)?;
        assert_eq!(&parsed, record);
    }
    let trailer: Json = serde_json::from_slice(lines[lines.len() - 1])?;
    let signed = &text[..text.len() - lines[lines.len() - 1].len()];
    assert_eq!(trailer["count"], json!(export.len()));
    assert_eq!(
        trailer["checksum"],
        json!(blake3::hash(signed).to_hex().to_string())
    );
    let key = hex_bytes(&golden_mac_key().to_hex());
    assert_eq!(
        trailer["mac"],
        json!(
            blake3::keyed_hash(&key, blake3::hash(signed).as_bytes())
                .to_hex()
                .to_string()
        )
    );
    Ok(())
}

/// Runs the command line with `args`.
fn cli(args: &[&str]) -> std::io::Result<std::process::Output> {
    std::process::Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .args(args)
        .output()
}

#[test]
fn the_command_line_verifies_macs_prints_the_mac_key_and_writes_json_lines() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.clone());
    let collector = arbiter_events::Collector::new(config)?;
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    for event in events.iter().take(6) {
        collector.record(event.clone())?;
    }
    collector.shutdown(common::FLUSH_TIMEOUT)?;
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();

    let out = cli(&["key", "mac", "--data-dir", &s(&dir)])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mac_hex = String::from_utf8(out.stdout)?;
    let key = arbiter_events::AnonymizationKey::from_file(dir.join("key"))?;
    assert_eq!(mac_hex.trim(), key.mac_key().to_hex());
    let key_file = tmp.path().join("mac.key");
    std::fs::write(&key_file, &mac_hex)?;

    let file = tmp.path().join("out.msgpack");
    let out = cli(&["export", "--data-dir", &s(&dir), "--out", &s(&file)])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["verify-export", &s(&file), "--mac-key-file", &s(&key_file)])?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("verified 6 records") && said.contains("mac ok"),
        "{said}"
    );
    let source = std::fs::read_to_string(dir.join("source"))?;
    assert!(said.contains(source.trim()), "{said}");
    let out = cli(&["inspect", &s(&file)])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("format version 2"));

    // Changed, or checked against another key: refused with one line and exit 1.
    let mut bytes = std::fs::read(&file)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let damaged = tmp.path().join("damaged.msgpack");
    std::fs::write(&damaged, &bytes)?;
    let other_key = tmp.path().join("other.key");
    std::fs::write(&other_key, "17".repeat(32))?;
    for (f, k) in [(&damaged, &key_file), (&file, &other_key)] {
        let out = cli(&["verify-export", &s(f), "--mac-key-file", &s(k)])?;
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
        assert!(out.stdout.is_empty());
    }

    // JSON Lines: the same records, and the same MAC as the library makes.
    let jsonl = tmp.path().join("out.jsonl");
    let out = cli(&[
        "export",
        "--data-dir",
        &s(&dir),
        "--out",
        &s(&jsonl),
        "--format",
        "jsonl",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_lib = arbiter_events::DataDir::open(&dir)?.export(
        &arbiter_events::ExportRequest::after(arbiter_events::Cursor::START),
    )?;
    assert_eq!(std::fs::read(&jsonl)?, from_lib.to_jsonl()?);
    assert!(from_lib.trailer().mac.is_some());
    Ok(())
}

#[test]
fn with_a_data_directory_exports_are_signed_with_its_key_file_only() -> Result<()> {
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    let tmp = tempfile::tempdir()?;
    // The directory's own key: the collector and a reader sign alike.
    let own = tmp.path().join("own");
    let mut config = Config::default();
    config.storage.data_dir = Some(own.clone());
    let collector = arbiter_events::Collector::new(config.clone())?;
    for event in events.iter().take(4) {
        collector.record(event.clone())?;
    }
    collector.flush(common::FLUSH_TIMEOUT)?;
    let request = arbiter_events::ExportRequest::after(arbiter_events::Cursor::START);
    let memory = collector.export(&request)?;
    let disk = arbiter_events::DataDir::open(&own)?.export(&request)?;
    assert_eq!(memory.to_msgpack(), disk.to_msgpack());
    let mac_key = arbiter_events::AnonymizationKey::from_file(own.join("key"))?.mac_key();
    arbiter_events::read_export_verified(memory.to_msgpack().as_slice(), &mac_key)?;
    collector.shutdown(common::FLUSH_TIMEOUT)?;
    // A key given to the builder: no key file, so neither side signs.
    let given = tmp.path().join("given");
    config.storage.data_dir = Some(given.clone());
    let (collector, _) = common::golden_collector(config)?;
    collector.record(events[0].clone())?;
    collector.flush(common::FLUSH_TIMEOUT)?;
    let memory = collector.export(&request)?;
    let disk = arbiter_events::DataDir::open(&given)?.export(&request)?;
    assert_eq!(memory.trailer().mac, None);
    assert_eq!(memory.to_msgpack(), disk.to_msgpack());
    Ok(())
}
