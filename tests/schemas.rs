//! The JSON Schemas in `schemas/`, the fixtures and the code agree: every exported
//! value validates, every event kind has a schema branch, and the schemas reject what
//! the code rejects.

mod common;

use std::collections::BTreeSet;

use arbiter_events::{EventKind, read_export};
use serde_json::{Value as Json, json};

use common::{Result, Schema};

/// The three schemas, compiled.
struct Schemas {
    header: Schema,
    record: Schema,
    trailer: Schema,
}

fn schemas() -> Result<Schemas> {
    Ok(Schemas {
        header: Schema::load("export-header.schema.json")?,
        record: Schema::load("record.schema.json")?,
        trailer: Schema::load("export-trailer.schema.json")?,
    })
}

/// A valid exported record of each kind, from `all_variants.jsonl`, decoded from the wire.
fn exported_records() -> Result<Vec<Json>> {
    let export = common::golden_export()?;
    let mut values = common::msgpack_values(&export.to_msgpack())?;
    values.pop();
    values.remove(0);
    Ok(values)
}

fn record_of_kind(kind: &str) -> Result<Json> {
    exported_records()?
        .into_iter()
        .find(|r| r["type"] == kind)
        .ok_or_else(|| format!("no exported {kind}").into())
}

#[test]
fn smoke() -> Result<()> {
    let schemas = schemas()?;
    let export = common::golden_export()?;
    let values = common::msgpack_values(&export.to_msgpack())?;
    assert_eq!(values.len() as u64, export.len() + 2);
    schemas.header.validate(&values[0])?;
    schemas.record.validate(&values[1])?;
    schemas.trailer.validate(&values[values.len() - 1])?;
    Ok(())
}

#[test]
fn every_exported_value_of_every_stream_validates() -> Result<()> {
    let schemas = schemas()?;
    for (name, events) in common::event_streams()? {
        for (config_name, config) in common::anonymization_configs() {
            let context = format!("{name} recorded with {config_name}");
            let export = common::export_stream(config, &events)?;
            assert_eq!(export.len(), events.len() as u64, "{context}");
            let values = common::msgpack_values(&export.to_msgpack())?;
            let (header, rest) = values.split_first().ok_or("empty export")?;
            let (trailer, records) = rest.split_last().ok_or("no trailer")?;
            assert_eq!(records.len(), events.len(), "{context}");
            schemas
                .header
                .validate(header)
                .map_err(|e| format!("{context}: header: {e}"))?;
            schemas
                .trailer
                .validate(trailer)
                .map_err(|e| format!("{context}: trailer: {e}"))?;
            for (index, record) in records.iter().enumerate() {
                schemas
                    .record
                    .validate(record)
                    .map_err(|e| format!("{context}: record {index}: {e}\n{record}"))?;
            }
        }
    }
    Ok(())
}

#[test]
fn the_serde_json_form_of_read_records_validates() -> Result<()> {
    let schemas = schemas()?;
    for (name, events) in common::event_streams()? {
        for (config_name, config) in common::anonymization_configs() {
            let file = read_export(
                common::export_stream(config, &events)?
                    .to_msgpack()
                    .as_slice(),
            )?;
            schemas
                .header
                .validate(&serde_json::to_value(&file.header)?)?;
            schemas
                .trailer
                .validate(&serde_json::to_value(&file.trailer)?)?;
            for record in &file.records {
                let value = serde_json::to_value(record)?;
                schemas
                    .record
                    .validate(&value)
                    .map_err(|e| format!("{name} ({config_name}) seq {}: {e}", record.seq))?;
            }
        }
    }
    Ok(())
}

/// The keys of a MessagePack map, in the order they were written.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Keys, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[test]
fn records_are_named_maps_with_seq_time_type_then_fields_in_declaration_order() -> Result<()> {
    let export = common::golden_export()?;
    let bytes = export.to_msgpack();
    let mut input = std::io::Cursor::new(bytes.as_slice());
    let mut next = || -> Result<Keys> {
        Ok(serde::Deserialize::deserialize(
            &mut rmp_serde::Deserializer::new(&mut input),
        )?)
    };
    let header = next()?;
    assert_eq!(header.0[..2], ["format", "version"]);
    let values = common::msgpack_values(&bytes)?;
    let schema = Schema::load("record.schema.json")?;
    let branches = branches(&schema)?;
    for (index, record) in values[1..values.len() - 1].iter().enumerate() {
        let Keys(keys) = next()?;
        assert_eq!(keys[..3], ["seq", "time", "type"], "record {index}");
        assert_eq!(record["seq"], json!(index + 1));
        assert!(
            record["time"].is_i64(),
            "record {index}: time {}",
            record["time"]
        );
        // The rest in the order the schema lists them, which is the order of the structs.
        let kind = record["type"].as_str().ok_or("no type")?;
        let (_, branch) = branches
            .iter()
            .find(|(k, _)| k == kind)
            .ok_or("no branch")?;
        let required: Vec<&str> = branch["required"]
            .as_array()
            .ok_or("no required")?
            .iter()
            .filter_map(Json::as_str)
            .collect();
        assert_eq!(keys, required, "record {index}");
    }
    let trailer = next()?;
    assert_eq!(trailer.0, ["count", "checksum", "mac"]);
    Ok(())
}

/// The `oneOf` branches of the record schema, by their `type` constant.
fn branches(schema: &Schema) -> Result<Vec<(String, Json)>> {
    let one_of = schema.document()["oneOf"]
        .as_array()
        .ok_or("record schema has no oneOf")?;
    one_of
        .iter()
        .map(|branch| {
            let kind = branch["properties"]["type"]["const"]
                .as_str()
                .ok_or_else(|| format!("branch without a type constant: {branch}"))?;
            Ok((kind.to_owned(), branch.clone()))
        })
        .collect()
}

#[test]
fn every_event_kind_is_in_the_fixture_and_has_one_schema_branch() -> Result<()> {
    let schema = Schema::load("record.schema.json")?;
    let branches = branches(&schema)?;
    // Kinds only the collector makes (it refuses them from callers) have their line in
    // `generated.jsonl`: `all_variants.jsonl` is recorded through a collector.
    let mut events = common::read_events("fixtures/events/all_variants.jsonl")?;
    let generated = common::read_events("fixtures/events/generated.jsonl")?;
    assert!(
        generated
            .iter()
            .all(|e| e.kind() == EventKind::AnomalyDetected),
        "generated.jsonl holds only kinds the collector makes"
    );
    events.extend(generated);
    let in_fixture = common::kinds_of(&events);
    for kind in EventKind::ALL {
        let name = kind.as_str();
        assert!(
            in_fixture.contains_key(name),
            "{name} is missing from fixtures/events/all_variants.jsonl (or generated.jsonl)"
        );
        let matching = branches.iter().filter(|(k, _)| k == name).count();
        assert_eq!(
            matching, 1,
            "{name} needs exactly one oneOf branch in record.schema.json"
        );
    }
    assert_eq!(
        branches.len(),
        EventKind::COUNT,
        "a branch names no event kind"
    );
    Ok(())
}

#[test]
fn every_branch_lists_exactly_the_fields_the_encoder_writes() -> Result<()> {
    let schema = Schema::load("record.schema.json")?;
    let branches = branches(&schema)?;
    for record in exported_records()? {
        let kind = record["type"].as_str().ok_or("no type")?;
        let (_, branch) = branches
            .iter()
            .find(|(k, _)| k == kind)
            .ok_or_else(|| format!("no branch for {kind}"))?;
        let written: BTreeSet<&str> = record
            .as_object()
            .ok_or("not a map")?
            .keys()
            .map(String::as_str)
            .collect();
        let mut properties: BTreeSet<&str> = branch["properties"]
            .as_object()
            .ok_or("no properties")?
            .keys()
            .map(String::as_str)
            .collect();
        // The optional fields: `occurred_at` written only when the caller gave it,
        // `source` only in a merged export.
        for optional in ["occurred_at", "source"] {
            assert!(properties.contains(optional), "{kind}: no {optional}");
            if !written.contains(optional) {
                properties.remove(optional);
            }
        }
        let required: BTreeSet<&str> = branch["required"]
            .as_array()
            .ok_or("no required")?
            .iter()
            .filter_map(Json::as_str)
            .collect();
        assert_eq!(
            written, properties,
            "{kind}: written fields vs schema properties"
        );
        assert_eq!(
            written, required,
            "{kind}: written fields vs schema required"
        );
        assert_eq!(branch["additionalProperties"], json!(false), "{kind}");
    }
    Ok(())
}

#[test]
fn header_and_trailer_schemas_list_exactly_the_fields_written() -> Result<()> {
    let schemas = schemas()?;
    let export = common::golden_export()?;
    let values = common::msgpack_values(&export.to_msgpack())?;
    let (first, last) = (&values[0], &values[values.len() - 1]);
    for (schema, value) in [(&schemas.header, first), (&schemas.trailer, last)] {
        let written: BTreeSet<&str> = value
            .as_object()
            .ok_or("not a map")?
            .keys()
            .map(String::as_str)
            .collect();
        let document = schema.document();
        let mut properties: BTreeSet<&str> = document["properties"]
            .as_object()
            .ok_or("no properties")?
            .keys()
            .map(String::as_str)
            .collect();
        let mut required: BTreeSet<&str> = document["required"]
            .as_array()
            .ok_or("no required")?
            .iter()
            .filter_map(Json::as_str)
            .collect();
        // Written only when they apply: `unsynced` when true, `sources` (instead of
        // `source`, which the `oneOf` then requires) in a merged export.
        for optional in ["unsynced", "sources"] {
            if properties.remove(optional) {
                assert!(!written.contains(optional), "{schema:?}: {optional}");
            }
        }
        if document.get("oneOf").is_some() {
            required.insert("source");
        }
        assert_eq!(written, properties, "{schema:?}");
        assert_eq!(written, required, "{schema:?}");
        assert_eq!(document["additionalProperties"], json!(false));
    }
    Ok(())
}

#[test]
fn header_with_gap_filters_and_kinds_validates() -> Result<()> {
    let schemas = schemas()?;
    let events = common::read_events("fixtures/events/session_rl_batch.jsonl")?;
    let mut config = arbiter_events::Config::default();
    config.retention.max_events = 10;
    let (collector, clock) = common::golden_collector(config)?;
    common::record_stepped(&collector, &clock, &events)?;
    let since =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(common::GOLDEN_START_NANOS))?;
    let until = since + time::Duration::days(1);
    let request = arbiter_events::ExportRequest::after(arbiter_events::Cursor::START)
        .since(since)
        .until(until)
        .kinds([EventKind::TaskCompleted, EventKind::RlTrainingMetrics])
        .limit(3);
    let export = collector.export(&request)?;
    assert!(export.gap().is_some(), "max_events = 10 pruned the start");
    let values = common::msgpack_values(&export.to_msgpack())?;
    schemas.header.validate(&values[0])?;
    assert_eq!(values[0]["gap"]["reason"], json!("capacity"));
    assert_eq!(
        values[0]["kinds"],
        json!(["task_completed", "rl_training_metrics"])
    );
    schemas.trailer.validate(&values[values.len() - 1])?;
    for record in &values[1..values.len() - 1] {
        schemas.record.validate(record)?;
    }
    Ok(())
}

/// Applies `edit` to a copy of `record` and asserts the schema rejects the result.
fn assert_rejected(schema: &Schema, record: &Json, what: &str, edit: impl FnOnce(&mut Json)) {
    let mut mutated = record.clone();
    edit(&mut mutated);
    assert!(
        schema.validate(&mutated).is_err(),
        "the record schema accepted a record with {what}: {mutated}"
    );
}

#[test]
fn the_record_schema_rejects_mutated_records() -> Result<()> {
    let schema = Schema::load("record.schema.json")?;
    let routing = record_of_kind("routing_decision")?;
    schema.validate(&routing)?;
    assert_rejected(&schema, &routing, "an extra field", |r| {
        r["priority"] = json!(1);
    });
    assert_rejected(&schema, &routing, "an extra field in an alternative", |r| {
        r["alternatives"][0]["rank"] = json!(1);
    });
    assert_rejected(&schema, &routing, "a missing field", |r| {
        r.as_object_mut().map(|m| m.remove("rationale"));
    });
    assert_rejected(&schema, &routing, "a score as a string", |r| {
        r["confidence"] = json!("0.9");
    });
    assert_rejected(
        &schema,
        &routing,
        "an out-of-range alternative score",
        |r| {
            r["alternatives"][1]["score"] = json!(1.5);
        },
    );
    assert_rejected(&schema, &routing, "an unknown strategy", |r| {
        r["strategy"] = json!("round_robin");
    });
    assert_rejected(&schema, &routing, "an unknown type", |r| {
        r["type"] = json!("routing_decided");
    });
    assert_rejected(&schema, &routing, "seq 0", |r| r["seq"] = json!(0));
    assert_rejected(&schema, &routing, "a float time", |r| {
        r["time"] = json!(1.5)
    });
    assert_rejected(&schema, &routing, "an empty task id", |r| {
        r["task_id"] = json!("");
    });
    assert_rejected(&schema, &routing, "a control character in an id", |r| {
        r["selected_agent"] = json!("agent\u{7}");
    });

    let completed = record_of_kind("task_completed")?;
    assert_rejected(&schema, &completed, "a negative duration", |r| {
        r["duration_ms"] = json!(-1.0);
    });
    assert_rejected(&schema, &completed, "negative tokens", |r| {
        r["outcome"]["tokens_consumed"] = json!(-1);
    });
    assert_rejected(&schema, &completed, "fractional tokens", |r| {
        r["outcome"]["tokens_consumed"] = json!(1.5);
    });
    assert_rejected(&schema, &completed, "an unknown outcome status", |r| {
        r["outcome"]["status"] = json!("crashed");
    });

    let status = record_of_kind("agent_status_changed")?;
    assert_rejected(&schema, &status, "an unknown previous status", |r| {
        r["previous"] = json!("sleeping");
    });
    assert_rejected(&schema, &status, "a missing optional field", |r| {
        r.as_object_mut().map(|m| m.remove("reason"));
    });

    let judgment = record_of_kind("judgment_recorded")?;
    assert_rejected(&schema, &judgment, "a criterion above one", |r| {
        r["criteria_scores"]["correctness"] = json!(1.01);
    });
    assert_rejected(&schema, &judgment, "an empty criterion key", |r| {
        r["criteria_scores"][""] = json!(0.5);
    });

    let validation = record_of_kind("constitutional_validation")?;
    assert_rejected(&schema, &validation, "a rule count above u32", |r| {
        r["rule_count"] = json!(4_294_967_296_u64);
    });

    let custom = record_of_kind("custom")?;
    assert_rejected(
        &schema,
        &custom,
        "an attribute key with a control character",
        |r| {
            r["attributes"]["bad\nkey"] = json!(1);
        },
    );
    Ok(())
}

#[test]
fn the_header_and_trailer_schemas_reject_mutations() -> Result<()> {
    let schemas = schemas()?;
    let export = common::golden_export()?;
    let values = common::msgpack_values(&export.to_msgpack())?;
    let (header, trailer) = (&values[0], &values[values.len() - 1]);
    assert_rejected(&schemas.header, header, "another format", |h| {
        h["format"] = json!("other/export");
    });
    assert_rejected(&schemas.header, header, "version 3", |h| {
        h["version"] = json!(3);
    });
    assert_rejected(&schemas.header, header, "a missing source", |h| {
        h.as_object_mut().map(|m| m.remove("source"));
    });
    assert_rejected(&schemas.header, header, "a source with a space", |h| {
        h["source"] = json!("arbiter 1");
    });
    assert_rejected(&schemas.header, header, "an extra field", |h| {
        h["compressed"] = json!(false);
    });
    assert_rejected(&schemas.header, header, "a missing gap", |h| {
        h.as_object_mut().map(|m| m.remove("gap"));
    });
    assert_rejected(
        &schemas.header,
        header,
        "a gap with an unknown reason",
        |h| {
            h["gap"] = json!({"from_seq": 1, "to_seq": 2, "reason": "lost"});
        },
    );
    assert_rejected(&schemas.header, header, "an unknown kind", |h| {
        h["kinds"] = json!(["task_paused"]);
    });
    assert_rejected(&schemas.trailer, trailer, "a short checksum", |t| {
        t["checksum"] = json!("abc");
    });
    assert_rejected(&schemas.trailer, trailer, "a negative count", |t| {
        t["count"] = json!(-1);
    });
    assert_rejected(&schemas.trailer, trailer, "a missing mac", |t| {
        t.as_object_mut().map(|m| m.remove("mac"));
    });
    assert_rejected(&schemas.trailer, trailer, "a short mac", |t| {
        t["mac"] = json!("abc");
    });
    assert_rejected(&schemas.trailer, trailer, "an extra field", |t| {
        t["algorithm"] = json!("blake3");
    });
    Ok(())
}

#[test]
fn the_record_schema_rejects_what_validation_rejects() -> Result<()> {
    // Rules a JSON Schema can state exactly: ranges, signs, emptiness, control characters.
    let schema = Schema::load("record.schema.json")?;
    let mut checked = 0;
    for case in common::bad_cases()? {
        if !["out_of_range", "negative", "empty", "control_character"].contains(&case.rule.as_str())
        {
            continue;
        }
        let mut record = json!({"seq": 1, "time": common::GOLDEN_START_NANOS});
        let (Some(record_map), Some(event)) = (record.as_object_mut(), case.json.as_object())
        else {
            return Err(format!("{}: not an object", case.name).into());
        };
        record_map.extend(event.clone());
        assert!(
            schema.validate(&record).is_err(),
            "the record schema accepts the bad event `{}`",
            case.name
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} cases checked");
    Ok(())
}
