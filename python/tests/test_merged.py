"""Merged exports (what ``arbiter-events pull`` writes from JetStream): the records of
several sources in one export, each tagged with its source, a range per source in the
header, one MAC over the whole. Read against the golden merge the Rust side pins."""

from __future__ import annotations

import copy

import pytest

import arbiter_events as ae
from conftest import GOLDEN
from helpers import build, split

MERGED = GOLDEN / "merged.msgpack"
MERGED_JSONL = GOLDEN / "merged.export.jsonl"
SOURCES = ["machine-a", "machine-b", "machine-c"]


def test_smoke_the_golden_merge_verifies_with_its_mac(golden_key):
    f = ae.read_export(MERGED, mac_key=golden_key)
    assert f.mac_verified and f.merged and f.source is None
    assert list(f.sources) == SOURCES
    assert len(f) == 33
    for source, r in f.sources.items():
        seqs = [rec["seq"] for rec in f.records if rec["source"] == source]
        assert seqs == list(range(r.after + 1, r.next_cursor + 1))
        assert r.count == len(seqs) and r.gaps == []


def test_the_json_lines_form_holds_the_same_records(golden_key):
    a = ae.read_export(MERGED, mac_key=golden_key)
    b = ae.read_export(MERGED_JSONL, mac_key=golden_key)
    assert a.records == b.records and a.header == b.header and b.mac_verified


def test_its_records_are_the_golden_records_with_their_source(golden_key, golden_records):
    f = ae.read_export(MERGED, mac_key=golden_key)
    stripped = [{k: v for k, v in r.items() if k not in ("source", "seq", "time")} for r in f.records]
    golden = [{k: v for k, v in r.items() if k not in ("seq", "time")} for r in golden_records]
    # Each source recorded every third golden event: together, every one once.
    assert sorted(map(repr, stripped)) == sorted(map(repr, golden))


def test_a_merged_table_has_a_source_column(golden_key):
    pytest.importorskip("pyarrow")
    f = ae.read_export(MERGED, mac_key=golden_key)
    table = f.to_arrow("routing_decision")
    assert table.column_names[:3] == ["seq", "source", "time"]
    assert set(table.column("source").to_pylist()) <= set(SOURCES)
    assert table.num_rows == f.kinds()["routing_decision"]
    wide = f.to_arrow()
    assert wide.column("source").to_pylist() == [r["source"] for r in f.records]


def test_a_single_source_export_has_its_one_source_in_sources(golden_key):
    f = ae.read_export(GOLDEN / "all_variants.msgpack", mac_key=golden_key)
    assert not f.merged
    assert f.sources == {f.source: ae.SourceRange(0, 33, 33, [])}


def _edited(golden_key, edit):
    header, records, _ = split(MERGED.read_bytes())
    header, records = copy.deepcopy(header), copy.deepcopy(records)
    edit(header, records)
    return build(header, records, golden_key)


@pytest.mark.parametrize("what, edit", [
    ("a count", lambda h, r: h["sources"]["machine-a"].update(count=1)),
    ("a cursor", lambda h, r: h["sources"]["machine-b"].update(next_cursor=99)),
    ("an after", lambda h, r: h["sources"]["machine-c"].update(after=1)),
    ("a source dropped", lambda h, r: h["sources"].pop("machine-b")),
    ("a single source too", lambda h, r: h.update(source="machine-a")),
    ("a cursor of the file", lambda h, r: h.update(next_cursor=5)),
    ("a gap over records", lambda h, r: h["sources"]["machine-a"].update(
        gaps=[{"from_seq": 1, "to_seq": 2, "reason": "age"}])),
    ("a record moved to another source", lambda h, r: r[0].update(source="machine-b")),
    ("a record without its source", lambda h, r: r[0].pop("source")),
    ("records out of order", lambda h, r: r.__setitem__(slice(0, 2), [r[1], r[0]])),
])
def test_a_merged_header_disagreeing_with_its_records_is_refused_even_when_signed(golden_key, what, edit):
    with pytest.raises(ae.HeaderMismatchError):
        ae.read_export(_edited(golden_key, edit), mac_key=golden_key)


def test_a_source_in_a_record_of_a_single_source_export_is_refused(golden_key):
    header, records, _ = split((GOLDEN / "all_variants.msgpack").read_bytes())
    records[3]["source"] = "machine-a"
    with pytest.raises(ae.HeaderMismatchError):
        ae.read_export(build(header, records, golden_key), mac_key=golden_key)


def test_every_flipped_byte_of_a_merge_is_refused_with_the_mac(golden_key):
    data = MERGED.read_bytes()
    for at in range(0, len(data), 3):
        damaged = bytearray(data)
        damaged[at] ^= 0x01
        with pytest.raises(ae.ExportError):
            ae.read_export(bytes(damaged), mac_key=golden_key)
