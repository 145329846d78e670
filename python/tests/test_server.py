"""Client and Puller against a real `arbiter-events serve` on a free loopback port,
started by each test and stopped even on failure. Skipped, with the reason, when the
binary has no `serve` yet."""

from __future__ import annotations

import time

import pytest

import arbiter_events as ae
from conftest import EVENTS, EXPORT_TOKEN, RECORD_TOKEN, needs_serve, read_jsonl, run

pytestmark = needs_serve


def events(name="all_variants"):
    return read_jsonl(EVENTS / f"{name}.jsonl")


def expand_markers(value):
    """The size markers of bad_events.jsonl expanded, as tests/common/mod.rs does:
    ``{"$string": s, "times": n}``, ``{"$array": item, "times": n}``,
    ``{"$object": value, "times": n}`` (keys k000, k001, ...)."""
    if isinstance(value, list):
        return [expand_markers(v) for v in value]
    if isinstance(value, dict):
        times = value.get("times", 0)
        if len(value) == 2 and "$string" in value:
            return value["$string"] * times
        if len(value) == 2 and "$array" in value:
            return [expand_markers(value["$array"]) for _ in range(times)]
        if len(value) == 2 and "$object" in value:
            return {f"k{i:03}": expand_markers(value["$object"]) for i in range(times)}
        return {k: expand_markers(v) for k, v in value.items()}
    return value


def exporter(server):
    return ae.Client(server.url, EXPORT_TOKEN)


def recorder(server):
    return ae.Client(server.url, RECORD_TOKEN)


def pull_until(puller, count, seconds=30.0):
    """Pulls (without committing) until the batch holds ``count`` records: the server
    exports only what is synced."""
    deadline = time.monotonic() + seconds
    while True:
        batch = puller.pull()
        if len(batch) >= count or time.monotonic() > deadline:
            return batch
        time.sleep(0.1)


def test_smoke_record_then_pull(server, tmp_path):
    assert recorder(server).healthz()
    result = recorder(server).record(events())
    assert result.accepted == 33 and result.rejected == [] and result.dropped == 0
    p = ae.Puller("rl", server=server.url, token=EXPORT_TOKEN, state_dir=tmp_path / "state")
    batch = pull_until(p, 33)
    assert [r["seq"] for r in batch.records] == list(range(1, 34))
    assert [r["type"] for r in batch.records] == [e["type"] for e in events()]
    assert p.commit(batch) == 33
    assert exporter(server).consumers()["rl"] == 33


def test_exactly_once_across_recordings_and_a_crash(server, tmp_path):
    state = tmp_path / "state"
    p = ae.Puller("rl", server=server.url, token=EXPORT_TOKEN, state_dir=state, limit=10)
    recorder(server).record(events())
    first = pull_until(p, 33)
    p.commit(first)
    recorder(server).record(events("session_hotfix"))
    lost = pull_until(p, 26)  # pulled, then the process dies before committing
    assert [r["seq"] for r in lost.records] == list(range(34, 60))
    again = ae.Puller("rl", server=server.url, token=EXPORT_TOKEN, state_dir=state, limit=10)
    batch = again.pull()
    assert [r["seq"] for r in batch.records] == [r["seq"] for r in lost.records]
    again.commit(batch)
    assert again.pull().records == []
    assert exporter(server).consumers()["rl"] == 59


def test_the_mac_of_served_exports_verifies(server, tmp_path):
    recorder(server).record(events())
    key = bytes.fromhex(run(server_bin(), "key", "mac", "--data-dir", str(server.data_dir)).stdout.strip())
    p = ae.Puller("rl", server=server.url, token=EXPORT_TOKEN, state_dir=tmp_path / "s", mac_key=key)
    assert len(pull_until(p, 33)) == 33
    f = exporter(server).export(mac_key=key, after=0, format="jsonl")
    assert f.mac_verified and len(f) == 33
    with pytest.raises(ae.MacMismatchError):
        exporter(server).export(mac_key=bytes(32), after=0)


def server_bin():
    from conftest import binary_path

    return str(binary_path())


def test_invalid_events_are_rejected_by_index_and_the_others_go_in(server):
    bad = read_jsonl(EVENTS / "bad_events.jsonl")
    good = events()
    mixed, expected = [], {}
    for i, case in enumerate(bad):
        mixed.append(good[i % len(good)])
        expected[len(mixed)] = case
        mixed.append(expand_markers(case["event"]))
    result = recorder(server).record(mixed, batch_size=50)
    assert result.accepted == len(bad)
    assert sorted(r.index for r in result.rejected) == sorted(expected)
    for r in result.rejected:
        case = expected[r.index]
        if case.get("field"):
            assert r.field == case["field"], case["name"]
        if case.get("rule"):
            assert r.rule == case["rule"], case["name"]


def test_a_malformed_line_is_rejected_alone(server):
    body = b'{"type": "custom", "name": "a", "attributes": {}}\n{not json\n' \
           b'{"type": "custom", "name": "b", "attributes": {}}\n'
    _, _, data = recorder(server).request("POST", "/v1/events", None, body, "application/x-ndjson")
    import json

    answer = json.loads(data)
    assert answer["accepted"] == 2
    assert [(r["index"], r["error"]) for r in answer["rejected"]] == [(1, "malformed")]


def test_msgpack_batches_record(server):
    result = recorder(server).record(events(), format="msgpack")
    assert result.accepted == 33 and result.rejected == []


def test_tokens_are_checked(server):
    with pytest.raises(ae.UnauthorizedError):
        ae.Client(server.url, "wrong-token").record(events()[:1])
    with pytest.raises(ae.UnauthorizedError):
        ae.Client(server.url, "").stats()
    with pytest.raises(ae.ForbiddenError):
        recorder(server).export_bytes(after=0)
    assert exporter(server).record(events()[:2]).accepted == 2  # the export token records too


def test_executions_over_http(server):
    client = recorder(server)
    execution = client.start_task("task-http-1", "agent-http", context={"repo": "arbiter"})
    assert execution
    outcome = {"quality_score": 0.9, "efficiency_score": 0.8, "tokens_consumed": 1200}
    assert client.complete_task(execution, "succeeded", **outcome) >= 0.0
    with pytest.raises(ae.ConflictError):
        client.complete_task(execution, "succeeded", **outcome)
    with pytest.raises(ae.NotFoundError):
        client.complete_task("exe-unknown", "failed", **outcome)


def test_errors_are_typed(server):
    client = exporter(server)
    with pytest.raises(ae.BadRequestError) as e:
        client.request("GET", "/v1/export", {"after": "not-a-seq"})
    assert e.value.parameter == "after"
    with pytest.raises(ae.NotFoundError):
        client.request("GET", "/v1/no-such-path")
    with pytest.raises(ae.ConflictError):
        client.commit("rl", 10**12)  # past the synced position
    assert "# " in client.metrics() or client.metrics()
    assert isinstance(client.stats(), dict)


def test_batches_over_the_server_limit_are_split_and_nothing_is_lost(small_server, tmp_path):
    client = recorder(small_server)
    with pytest.raises(ae.TooManyEventsError) as e:
        client.request("POST", "/v1/events", None,
                       b"".join(b'{"type":"custom","name":"x","attributes":{}}\n' for _ in range(11)),
                       "application/x-ndjson")
    assert e.value.limit == 10
    result = client.record(events(), batch_size=1000)
    assert result.accepted == 33 and result.requests == 5  # one refused whole, then 4 of 10
    p = ae.Puller("rl", server=small_server.url, token=EXPORT_TOKEN, state_dir=tmp_path / "s")
    assert [r["type"] for r in pull_until(p, 33).records] == [e["type"] for e in events()]
