"""Arrow tables with an explicit schema per kind, pandas, datasets and Parquet."""

from __future__ import annotations

import json

import pytest

import arbiter_events as ae
from conftest import GOLDEN

pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def golden(golden_key):
    return ae.read_export(GOLDEN / "all_variants.msgpack", mac_key=golden_key)


def test_smoke_each_kind_has_its_explicit_schema(golden):
    for kind in ae.KINDS:
        table = golden.to_arrow(kind)
        assert table.schema == ae.arrow_schema(kind), kind
        assert table.schema.metadata == {b"arbiter_events.kind": kind.encode()}
        assert table.num_rows == golden.kinds().get(kind, 0), kind


def test_column_types_are_those_declared():
    s = ae.arrow_schema("routing_decision")
    assert s.field("seq").type == pa.uint64() and not s.field("seq").nullable
    assert s.field("time").type == pa.timestamp("ns", tz="UTC")
    assert s.field("occurred_at").nullable
    assert s.field("confidence").type == pa.float64()
    alt = s.field("alternatives").type
    assert pa.types.is_list(alt) and alt.value_type == pa.struct(
        [pa.field("agent_id", pa.string(), False), pa.field("score", pa.float64(), False),
         pa.field("reason", pa.string(), False)])
    assert ae.arrow_schema("judgment_recorded").field("criteria_scores").type == pa.map_(
        pa.string(), pa.float64())
    assert ae.arrow_schema("constitutional_validation").field("rule_count").type == pa.uint32()
    assert ae.arrow_schema("task_completed").field("outcome").type.field("tokens_consumed").type == pa.uint64()
    with pytest.raises(KeyError):
        ae.arrow_schema("no_such_kind")


def test_values_are_those_of_the_records(golden):
    for kind in ae.KINDS:
        table = golden.to_arrow(kind)
        records = golden.of_kind(kind)
        assert table.column("seq").to_pylist() == [r["seq"] for r in records]
        assert table.column("time").cast(pa.int64()).to_pylist() == [r["time"] for r in records]
        for name, typ, _ in ae.COLUMNS[kind]:
            got = table.column(name).to_pylist()
            want = [r[name] for r in records]
            if typ == "json":
                got = [json.loads(v) for v in got]
            elif isinstance(typ, tuple) and typ[0] == "map":
                got = [dict(v) for v in got]
            assert got == want, (kind, name)


def test_the_wide_table_holds_every_record(golden):
    table = golden.to_arrow()
    assert table.num_rows == len(golden.records)
    assert table.column("type").to_pylist() == [r["type"] for r in golden.records]
    names = table.schema.names
    assert names[:4] == ["seq", "time", "occurred_at", "type"]
    assert len(names) == len(set(names))
    decisions = table.filter(pa.compute.equal(table.column("type"), "routing_decision"))
    assert decisions.column("task_id").to_pylist() == [
        r["task_id"] for r in golden.of_kind("routing_decision")]
    assert golden.to_arrow().column("duration_ms").null_count == len(golden.records) - 5


def test_a_kind_with_no_records_is_an_empty_table_with_its_schema(golden):
    empty = ae.read_export(GOLDEN / "all_variants.msgpack")
    empty.records = empty.of_kind("custom")
    table = empty.to_arrow("task_abandoned")
    assert table.num_rows == 0 and table.schema == ae.arrow_schema("task_abandoned")


def test_an_unknown_kind_gets_an_inferred_table():
    f = ae.read_export(GOLDEN / "all_variants.msgpack")
    f.records = [{"seq": 40, "time": 5, "type": "future_kind", "rule": "r", "value": 1.5}]
    table = f.to_arrow("future_kind")
    assert table.schema.names == ["seq", "time", "occurred_at", "rule", "value"]
    assert table.column("value").to_pylist() == [1.5]


def test_parquet_round_trip(golden, tmp_path):
    written = golden.write_parquet(tmp_path / "pq")
    assert set(written) == set(golden.kinds())
    for kind, path in written.items():
        assert path.name == f"{kind}.parquet"
        back = pq.read_table(path)
        assert back.schema.remove_metadata() == ae.arrow_schema(kind).remove_metadata(), kind
        assert back.equals(golden.to_arrow(kind)), kind
    assert not list((tmp_path / "pq").glob(".*tmp"))


def test_pandas(golden):
    pd = pytest.importorskip("pandas", reason="the pandas extra is not installed")
    df = golden.to_pandas("routing_decision")
    assert len(df) == 4 and list(df.columns) == ae.arrow_schema("routing_decision").names
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["time"].iloc[0] == pd.Timestamp(golden.of_kind("routing_decision")[0]["time"], tz="UTC")
    assert df["alternatives"].iloc[0][0]["agent_id"].startswith("agt_")


def test_datasets(golden):
    pytest.importorskip("datasets", reason="the datasets extra is not installed")
    ds = golden.to_dataset("judgment_recorded")
    assert len(ds) == 2
    row = ds[0]
    record = golden.of_kind("judgment_recorded")[0]
    assert row["seq"] == record["seq"] and row["task_id"] == record["task_id"]
    assert {e["key"]: e["value"] for e in row["criteria_scores"]} == record["criteria_scores"]
    assert len(golden.to_dataset()) == len(golden.records)


def test_a_demo_run_tables_every_routing_decision(shared_demo, tmp_path):
    key = shared_demo.mac_key()
    total = 0
    for path in shared_demo.increments():
        f = ae.read_export(path, mac_key=key)
        table = f.to_arrow("routing_decision")
        assert table.num_rows == f.kinds().get("routing_decision", 0)
        total += table.num_rows
        written = f.write_parquet(tmp_path / path.stem)
        for kind, p in written.items():
            assert pq.read_table(p).num_rows == f.kinds()[kind]
    stats = json.loads(next(shared_demo.path.glob("exports/run-*/stats.json")).read_text())
    assert total == {k["kind"]: k["stored"] for k in stats["kinds"]}["routing_decision"] > 0


def test_an_anomaly_record_has_its_own_table_and_its_baseline_in_the_wide_one():
    line = (GOLDEN.parent / "events" / "generated.jsonl").read_text().splitlines()[0]
    anomaly = dict(json.loads(line), seq=41, time=6, baseline=1500.0)
    f = ae.read_export(GOLDEN / "all_variants.msgpack")
    f.records = [f.records[0], anomaly]  # an agent_registered (struct baseline) and the anomaly
    table = f.to_arrow("anomaly_detected")
    assert table.schema == ae.arrow_schema("anomaly_detected")
    assert table.column("baseline").to_pylist() == [anomaly["baseline"]]
    wide = f.to_arrow()
    assert wide.column("alert_baseline").to_pylist() == [None, anomaly["baseline"]]
    assert wide.column("baseline").to_pylist()[1] is None


def test_the_golden_alert_export_reads_verified_with_its_anomaly_record(golden_key):
    f = ae.read_export(GOLDEN / "alerts.msgpack", mac_key=golden_key)
    assert f.kinds() == {"constitutional_validation": 8, "anomaly_detected": 1}
    anomaly = f.records[-1]
    assert anomaly["type"] == "anomaly_detected"
    assert (anomaly["rule"], anomaly["kind"], anomaly["scope"]) == ("caws", "caws_violations", "per_agent")
    assert anomaly["agent_id"].startswith("agt_")
    assert (anomaly["observed"], anomaly["samples"]) == (16.0, 8)
    table = f.to_arrow("anomaly_detected")
    assert table.schema == ae.arrow_schema("anomaly_detected")
    assert table.column("observed").to_pylist() == [16.0]
    assert table.column("agent_id").to_pylist() == [anomaly["agent_id"]]
    # A flipped byte anywhere in the alert record is refused.
    data = bytearray((GOLDEN / "alerts.msgpack").read_bytes())
    data[len(data) - 200] ^= 0x01
    with pytest.raises(ae.ExportError):
        ae.read_export(bytes(data), mac_key=golden_key)
