"""Puller through the CLI: exactly once by seq across demo runs, crashes and other readers."""

from __future__ import annotations

import os

import pytest

import arbiter_events as ae
from conftest import run


def puller(demo_dir, **kw):
    return ae.Puller("rl", data_dir=demo_dir.path, bin=demo_dir.bin, **kw)


def seqs(batch):
    return [r["seq"] for r in batch.records]


def test_smoke_pull_everything_once(demo_dir):
    p = puller(demo_dir)
    batch = p.pull()
    total = demo_dir.records()
    assert seqs(batch) == list(range(1, total + 1))
    assert batch.after is None and batch.next_cursor == total and batch.gaps == []
    assert p.commit(batch) == total == p.cursor
    again = p.pull()
    assert again.records == [] and not again.moved and again.after == total


def test_exactly_once_across_two_demo_runs(demo_dir):
    p = puller(demo_dir, limit=5000)
    first = p.pull()
    assert first.exports > 2  # the limit splits the pull
    p.commit(first)
    demo_dir.demo(seed=8)
    second = puller(demo_dir, limit=5000).pull()  # a new process would do the same
    assert second.after == first.next_cursor
    p.commit(second)
    total = demo_dir.records()
    assert seqs(first) + seqs(second) == list(range(1, total + 1))
    assert p.state()["pulled"] == total and p.state()["redelivered"] == 0
    assert not list(p.state_dir.glob("pull-*.msgpack"))  # spooled files go once committed


def test_a_crash_before_the_commit_pulls_the_same_records_again(demo_dir):
    p = puller(demo_dir, limit=4000)
    lost = p.pull()  # the CLI wrote the files and committed its cursor; we never commit
    assert lost.files and all(f.exists() for f in lost.files)
    demo_dir.demo(seed=8)
    after_crash = puller(demo_dir, limit=4000)
    batch = after_crash.pull()
    total = demo_dir.records()
    assert seqs(batch)[: len(lost)] == seqs(lost)  # the spooled files are read first
    assert seqs(batch) == list(range(1, total + 1))
    after_crash.commit(batch)
    assert after_crash.pull().records == []


def test_a_file_written_but_not_committed_is_not_delivered_twice(demo_dir):
    p = puller(demo_dir)
    first = p.pull_once()
    p.commit(first)
    demo_dir.demo(seed=8)
    # the export command wrote its file and died before committing the consumer's cursor
    spooled = p.state_dir / f"pull-{p.state()['next_file']:06d}.msgpack"
    run(demo_dir.bin, "export", "--data-dir", str(demo_dir.path), "--after",
        str(first.next_cursor), "--out", str(spooled))
    batch = p.pull()
    total = demo_dir.records()
    assert seqs(batch) == list(range(first.next_cursor + 1, total + 1))
    assert batch.redelivered == total - first.next_cursor  # the next export repeated them
    p.commit(batch)
    assert p.state()["pulled"] == total


def test_a_crash_after_the_state_was_saved_is_harmless(demo_dir):
    p = puller(demo_dir, keep_files=True)
    batch = p.pull()
    p.commit(batch)  # the files are kept, as after a crash before they were deleted
    assert batch.files and all(f.exists() for f in batch.files)
    assert puller(demo_dir).pull().records == []


def test_another_reader_of_the_consumer_is_detected(demo_dir, tmp_path):
    p = puller(demo_dir)
    p.commit(p.pull())
    demo_dir.demo(seed=8)
    run(demo_dir.bin, "export", "--data-dir", str(demo_dir.path), "--consumer", "rl",
        "--out", str(tmp_path / "stolen.msgpack"))
    demo_dir.demo(seed=9)
    with pytest.raises(ae.PullError, match="another reader"):
        p.pull()


def test_the_mac_is_checked_when_a_key_is_given(demo_dir):
    batch = puller(demo_dir, mac_key=demo_dir.mac_key()).pull()
    assert len(batch) == demo_dir.records()
    with pytest.raises(ae.MacMismatchError):
        puller(demo_dir, mac_key=bytes(32), state_dir=demo_dir.path / "other").pull()


def test_a_commit_out_of_order_is_refused(demo_dir):
    p = puller(demo_dir)
    first = p.pull()
    p.commit(first)
    with pytest.raises(ae.PullError, match="order"):
        p.commit(first)


def test_a_state_of_another_consumer_or_damaged_is_refused(demo_dir, tmp_path):
    p = puller(demo_dir, state_dir=tmp_path / "state")
    p.commit(p.pull())
    other = ae.Puller("other", data_dir=demo_dir.path, bin=demo_dir.bin, state_dir=tmp_path / "state")
    with pytest.raises(ae.PullError, match="another state_dir"):
        other.pull()
    (tmp_path / "state" / "state.json").write_text("{not json")
    with pytest.raises(ae.PullError, match="damaged"):
        p.pull()


def test_one_puller_per_state_directory(demo_dir):
    fcntl = pytest.importorskip("fcntl")
    p = puller(demo_dir)
    p.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(p.state_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ae.PullError, match="in use"):
            p.pull()
    finally:
        os.close(fd)
    assert len(p.pull()) == demo_dir.records()


def test_a_failing_command_is_a_pull_error(demo_dir, tmp_path):
    p = ae.Puller("rl", data_dir=tmp_path / "missing", bin=demo_dir.bin)
    with pytest.raises(ae.PullError, match="exited"):
        p.pull()
    with pytest.raises(ae.PullError, match="cannot run"):
        ae.Puller("rl", data_dir=demo_dir.path, bin=str(tmp_path / "no-binary")).pull()


def test_arguments_are_checked(demo_dir):
    with pytest.raises(ValueError):
        ae.Puller("rl")
    with pytest.raises(ValueError):
        ae.Puller("rl", data_dir=demo_dir.path, server="http://127.0.0.1:1")
    assert ae.Puller("rl", server="http://127.0.0.1:7474/").state_dir.parts[-3:] == (
        "pulls", "127.0.0.1_7474", "rl")
    with pytest.raises(ValueError):
        ae.Puller("rl", data_dir=demo_dir.path, bin=demo_dir.bin, limit=0)


def test_a_pulled_batch_tables_like_a_file(demo_dir, tmp_path):
    pytest.importorskip("pyarrow")
    batch = puller(demo_dir, limit=3000).pull()
    table = batch.to_arrow("routing_decision")
    assert table.num_rows == batch.kinds()["routing_decision"]
    written = batch.write_parquet(tmp_path / "pq")
    assert set(written) == set(batch.kinds())


def test_records_pruned_before_they_were_pulled_are_reported_as_gaps(bin_path, tmp_path):
    from conftest import DemoDir

    config = tmp_path / "small.toml"
    config.write_text("[storage]\nsegment_bytes = 65536\nmax_disk_bytes = 1048576\n")
    d = DemoDir(bin_path, tmp_path / "data")
    run(bin_path, "demo", "--config", str(config), "--data-dir", str(d.path), "--tasks", "2000",
        "--threads", "2", "--seed", "3")
    p = puller(d)
    first = p.pull()
    assert first.gaps and first.gaps[0].from_seq == 1 and first.gaps[0].reason == "capacity"
    assert first.first_seq == first.gaps[0].to_seq + 1
    p.commit(first)
    run(bin_path, "demo", "--config", str(config), "--data-dir", str(d.path), "--tasks", "2000",
        "--threads", "2", "--seed", "4")
    second = p.pull()
    p.commit(second)
    seen = []
    for batch in (first, second):
        for gap in batch.gaps:
            seen.extend(range(gap.from_seq, gap.to_seq + 1))
        seen.extend(seqs(batch))
    assert sorted(seen) == seen == list(range(1, d.stats()["last_seq"] + 1))
    assert p.state()["gaps"] == [g.to_dict() for g in first.gaps + second.gaps]
