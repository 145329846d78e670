"""The dataclasses per kind against the schema and the golden records."""

from __future__ import annotations

import dataclasses
import json

import pytest

import arbiter_events as ae
from conftest import EVENTS, SCHEMAS, read_jsonl

ENVELOPE = ("seq", "source", "time", "occurred_at")


def schema_kinds():
    schema = json.loads((SCHEMAS / "record.schema.json").read_text())
    return {v["title"]: v for v in schema["oneOf"]}


def test_smoke_every_golden_record_round_trips(golden_records):
    for record in golden_records:
        event = ae.typed(record)
        assert type(event).KIND == record["type"]
        assert event.to_record() == record
        assert event.seq == record["seq"] and event.time == record["time"]


def test_the_golden_records_cover_every_kind(golden_records):
    # anomaly_detected is made by the collector's alert rules, never recorded, so the
    # golden stream (recorded through a collector) cannot hold one; the demo's can.
    assert {r["type"] for r in golden_records} == set(ae.KINDS) - {"anomaly_detected"}


def test_the_classes_have_the_schema_fields_in_order():
    kinds = schema_kinds()
    assert list(kinds) == list(ae.KINDS)
    for kind, variant in kinds.items():
        cls = ae.EVENT_CLASSES[kind]
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in ENVELOPE]
        expected = [p for p in variant["properties"] if p not in ("type", *ENVELOPE)]
        assert fields == expected, kind
        required = [p for p in variant["required"] if p not in ("type", *ENVELOPE)]
        assert fields == required, kind


def test_the_table_columns_have_the_schema_fields_in_order():
    # `source` is a column only of a merged export's tables (test_merged.py).
    for kind, variant in schema_kinds().items():
        expected = [p for p in variant["properties"] if p not in ("type", "source")]
        assert [c[0] for c in ae.ENVELOPE + ae.COLUMNS[kind]] == expected, kind


def test_nested_values_are_typed(golden_records):
    by_kind = {}
    for r in golden_records:
        by_kind.setdefault(r["type"], ae.typed(r))
    assert isinstance(by_kind["agent_registered"].baseline, ae.Baseline)
    routing = by_kind["routing_decision"]
    assert isinstance(routing, ae.RoutingDecision)
    assert all(isinstance(a, ae.Alternative) for a in routing.alternatives)
    assert isinstance(by_kind["task_completed"].outcome, ae.Outcome)
    validations = [ae.typed(r) for r in golden_records if r["type"] == "constitutional_validation"]
    assert any(v.violations for v in validations)
    assert all(isinstance(x, ae.Violation) for v in validations for x in v.violations)


def test_to_event_gives_the_json_form_of_the_fixtures(golden_records):
    # fixtures/events/all_variants.jsonl is what the golden export recorded, before
    # pseudonymization and redaction: the same kinds and keys, in the same order
    events = read_jsonl(EVENTS / "all_variants.jsonl")
    assert len(events) == len(golden_records)
    for event, record in zip(events, golden_records):
        assert list(ae.typed(record).to_event()) == list(event)
        assert ae.EVENT_CLASSES[event["type"]].from_record(event).to_event() == event


def test_unknown_kinds_are_kept_whole():
    record = {"seq": 9, "time": 1, "type": "future_kind", "rule": "r1", "value": 2.5}
    event = ae.typed(record)
    assert isinstance(event, ae.UnknownRecord) and event.type == "future_kind"
    assert event.to_record() == record


def test_a_record_of_another_kind_or_lacking_a_field_is_refused(golden_records):
    with pytest.raises(ValueError, match="not a routing_decision"):
        ae.RoutingDecision.from_record(golden_records[0])
    lacking = {k: v for k, v in golden_records[0].items() if k != "baseline"}
    with pytest.raises(ValueError, match="baseline"):
        ae.typed(lacking)


def test_typed_of_a_file(golden_key):
    from conftest import GOLDEN

    f = ae.read_export(GOLDEN / "all_variants.msgpack", golden_key)
    decisions = f.typed("routing_decision")
    assert len(decisions) == f.kinds()["routing_decision"] == 4
    assert all(isinstance(d, ae.RoutingDecision) for d in decisions)
    assert [d.seq for d in decisions] == [r["seq"] for r in f.of_kind("routing_decision")]
