"""read_export against the files the Rust side wrote: the golden fixtures and demo runs;
every class of damaged file is refused with its own ExportError subclass."""

from __future__ import annotations

import json

import msgpack
import pytest

import arbiter_events as ae
from conftest import GOLDEN
from helpers import build, split

V2 = GOLDEN / "all_variants.msgpack"
JSONL = GOLDEN / "all_variants.export.jsonl"
V1 = GOLDEN / "v1" / "all_variants.msgpack"


def test_smoke_golden_v2_verifies_with_its_mac(golden_key, golden_records):
    f = ae.read_export(V2, mac_key=golden_key)
    assert f.version == 2 and f.mac_verified
    assert f.records == golden_records
    assert f.next_cursor == 33 and f.gaps == [] and len(f) == 33
    assert f.header.source and f.header.key_id and f.header.anonymization == "pseudonymize"
    assert f.trailer.count == 33 and f.trailer.mac


def test_every_form_holds_the_same_records(golden_key, golden_records):
    hexkey = (GOLDEN / "mac_key.hex").read_text()
    from_bytes = ae.read_export(V2.read_bytes(), mac_key=hexkey)
    from_jsonl = ae.read_export(str(JSONL), mac_key=golden_key)
    v1 = ae.read_export(V1)
    assert from_bytes.records == from_jsonl.records == v1.records == golden_records
    assert v1.version == 1 and v1.source is None and not v1.mac_verified
    assert from_jsonl.header == from_bytes.header


def test_without_a_key_the_checksum_is_still_verified():
    f = ae.read_export(V2)
    assert not f.mac_verified
    damaged = bytearray(V2.read_bytes())
    damaged[len(damaged) // 2] ^= 0x04
    with pytest.raises(ae.ChecksumMismatchError):
        ae.read_export(bytes(damaged))


def test_demo_increments_verify_and_count_as_the_stats_say(shared_demo):
    key = shared_demo.mac_key()
    files = shared_demo.increments()
    assert files, "the demo wrote no increments"
    counts, cursor = {}, 0
    for path in files:
        f = ae.read_export(path, mac_key=key)
        assert f.header.after == cursor and f.mac_verified
        cursor = f.next_cursor
        for kind, n in f.kinds().items():
            counts[kind] = counts.get(kind, 0) + n
    stats = json.loads((files[0].parent / "stats.json").read_text())
    assert counts == {k["kind"]: k["stored"] for k in stats["kinds"] if k["stored"]}
    assert cursor == stats["last_seq"]


def test_a_cli_export_in_json_lines_verifies(shared_demo, tmp_path):
    from conftest import run

    out = tmp_path / "all.jsonl"
    run(shared_demo.bin, "export", "--data-dir", str(shared_demo.path), "--format", "jsonl",
        "--limit", "3000", "--out", str(out))
    f = ae.read_export(out, mac_key=shared_demo.mac_key())
    assert len(f) == 3000 and f.header.limit == 3000 and f.next_cursor == 3000
    assert [r["seq"] for r in f.records] == list(range(1, 3001))


# --- damaged files ---------------------------------------------------------------------


@pytest.mark.parametrize("data, error", [
    (b"", ae.NotAnExportError),
    (msgpack.packb({"format": "something/else", "version": 2}), ae.NotAnExportError),
    (msgpack.packb([1, 2, 3]), ae.NotAnExportError),
    (b'{"format": "arbiter-events/export", "version": 2}', ae.TruncatedError),
    (b"\xc1\xc1\xc1", ae.CorruptError),
])
def test_what_is_not_an_export_is_refused(data, error):
    with pytest.raises(error):
        ae.read_export(data)


def test_an_unknown_version_is_refused_by_name(golden_key):
    header, records, _ = split(V2.read_bytes())
    with pytest.raises(ae.UnsupportedVersionError) as e:
        ae.read_export(build(dict(header, version=3), records, golden_key))
    assert e.value.version == 3 and "version 3" in str(e.value)


def test_truncation_anywhere_is_refused():
    data = V2.read_bytes()
    header_len = len(msgpack.packb(split(data)[0]))
    for cut in (1, header_len - 1, header_len, header_len + 5, len(data) // 2, len(data) - 1):
        with pytest.raises(ae.TruncatedError):
            ae.read_export(data[:cut])
    jsonl = JSONL.read_bytes()
    for cut in (len(jsonl) - 1, jsonl.index(b"\n") + 1, len(jsonl) // 2):
        with pytest.raises(ae.TruncatedError):
            ae.read_export(jsonl[:cut])


def test_bytes_after_the_trailer_are_refused():
    data = V2.read_bytes()
    for extra in (b"x", data, msgpack.packb(None)):
        with pytest.raises(ae.CorruptError, match="after the trailer"):
            ae.read_export(data + extra)


def test_a_trailer_that_is_not_one_is_refused(golden_key):
    header, records, _ = split(V2.read_bytes())
    body = msgpack.packb(header) + b"".join(msgpack.packb(r) for r in records)
    for trailer in ([1, 2], {"count": 33}, {"count": "33", "checksum": "00"}):
        with pytest.raises(ae.CorruptError, match="trailer"):
            ae.read_export(body + msgpack.packb(trailer))


def test_counts_that_disagree_are_refused(golden_key):
    header, records, _ = split(V2.read_bytes())
    with pytest.raises(ae.CountMismatchError):
        ae.read_export(build(header, records, golden_key, trailer={"count": 32}))
    jsonl = JSONL.read_bytes().splitlines(keepends=True)
    padded = b"".join(jsonl[:-1] + [jsonl[1]] + jsonl[-1:])
    with pytest.raises(ae.CountMismatchError):
        ae.read_export(padded)


def test_a_header_disagreeing_with_its_records_is_refused_even_when_signed(golden_key):
    header, records, _ = split(V2.read_bytes())
    cases = {
        "first_seq": dict(header, first_seq=2),
        "last_seq": dict(header, last_seq=99),
        "next_cursor": dict(header, next_cursor=40),
        "after": dict(header, after=5),
        "key_id": dict(header, key_id=None),
        "gap": dict(header, gap={"from_seq": 3, "to_seq": 4, "reason": "age"}),
        "kinds": dict(header, kinds=["custom"]),
        "limit": dict(header, limit=10),
    }
    for field, changed in cases.items():
        with pytest.raises(ae.HeaderMismatchError) as e:
            ae.read_export(build(changed, records, golden_key), mac_key=golden_key)
        assert e.value.field == field, (field, str(e.value))
    # seqs out of order
    swapped = [records[1], records[0], *records[2:]]
    with pytest.raises(ae.HeaderMismatchError):
        ae.read_export(build(header, swapped, golden_key))


def test_a_record_of_the_wrong_shape_is_corrupt_not_a_crash(golden_key):
    header, records, _ = split(V2.read_bytes())
    broken = [dict(records[0], time="noon"), *records[1:]]
    with pytest.raises(ae.CorruptError):
        ae.read_export(build(header, broken, golden_key))
    with pytest.raises(ae.CorruptError):
        ae.read_export(build(header, [[1, 2], *records[1:]], golden_key))


def test_every_flipped_byte_is_refused_with_the_mac(golden_key):
    for path in (V2, JSONL):
        data = path.read_bytes()
        for at in range(len(data)):
            damaged = bytearray(data)
            damaged[at] ^= 0x01
            with pytest.raises(ae.ExportError):
                ae.read_export(bytes(damaged), mac_key=golden_key)


def test_every_header_bit_is_covered_without_a_key():
    data = V2.read_bytes()
    header_len = len(msgpack.packb(split(data)[0]))
    for at in range(header_len):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[at] ^= 1 << bit
            with pytest.raises(ae.ExportError):
                ae.read_export(bytes(damaged))


# --- the MAC -----------------------------------------------------------------------------


def test_another_key_is_refused():
    with pytest.raises(ae.MacMismatchError):
        ae.read_export(V2, mac_key=bytes(range(32)))
    with pytest.raises(ae.MacMismatchError):
        ae.read_export(JSONL, mac_key="17" * 32)


def test_a_missing_mac_is_refused_when_a_key_is_given(golden_key):
    with pytest.raises(ae.MacMissingError):
        ae.read_export(V1, mac_key=golden_key)
    header, records, _ = split(V2.read_bytes())
    unsigned = build(header, records, None)  # a correct checksum, no mac
    assert not ae.read_export(unsigned).mac_verified
    with pytest.raises(ae.MacMissingError):
        ae.read_export(unsigned, mac_key=golden_key)


def test_a_change_re_checksummed_without_the_key_is_caught_by_the_mac(golden_key):
    header, records, _ = split(V2.read_bytes())
    changed = [dict(records[0], agent_id="agt_" + "0" * 32), *records[1:]]
    forged = build(header, changed, bytes(32))  # signed with a guessed key
    assert ae.read_export(forged).records[0]["agent_id"] == "agt_" + "0" * 32
    with pytest.raises(ae.MacMismatchError):
        ae.read_export(forged, mac_key=golden_key)


@pytest.mark.parametrize("key", [b"short", "zz" * 32, "ab" * 31, 42])
def test_a_malformed_key_is_refused(key):
    with pytest.raises(ae.InvalidMacKeyError):
        ae.read_export(V2, mac_key=key)


def test_read_mac_key_reads_the_cli_output(tmp_path, golden_key):
    assert ae.read_mac_key(GOLDEN / "mac_key.hex") == golden_key
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(ae.InvalidMacKeyError, match="bad.key"):
        ae.read_mac_key(bad)


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "cut.msgpack"
    path.write_bytes(V2.read_bytes()[:100])
    with pytest.raises(ae.TruncatedError) as e:
        ae.read_export(path)
    assert e.value.path == str(path) and str(path) in str(e.value)


def test_a_gap_is_reported(golden_key):
    header, records, _ = split(V2.read_bytes())
    rest = records[5:]
    gapped = dict(header, after=0, gap={"from_seq": 1, "to_seq": 5, "reason": "capacity"},
                  count=len(rest), first_seq=6)
    f = ae.read_export(build(gapped, rest, golden_key), mac_key=golden_key)
    assert f.gaps == [ae.Gap(1, 5, "capacity")] and f.gaps[0].count == 5
