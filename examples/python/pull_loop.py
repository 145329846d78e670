#!/usr/bin/env python3
"""Pull every new arbiter-events record for one consumer, as an RL pipeline would.

Usage:
    pull_loop.py --data-dir DIR [--consumer rl] [--bin PATH] [--limit N]
                 [--out-dir DIR] [--expect-total N]

The binary is, unless --bin names it: target/release/arbiter-events of this repository
(after `cargo build --release`), else `arbiter-events` on PATH.

Runs `arbiter-events export --data-dir DIR --consumer NAME --out OUT/pull-<n>.msgpack`
until an export brings nothing new. The command commits the consumer's cursor only once
the file is durable, so a pull is at least once: after a crash, the next export may
repeat records, which are recognized by their seq and skipped (`redelivered`).

Every export is read with msgpack and checked: the header against the trailer (count,
and the BLAKE3 checksum when the `blake3` package is installed), and the seqs, which
must follow on from the last seq pulled (kept in OUT/state.json, so checks hold across
invocations) with no hole other than a gap the header declares. Declared gaps (records
pruned before they were pulled) are reported, not fatal. Export files left by an
invocation that stopped before updating the state are read first.

Prints one line of JSON: what this invocation pulled (`pulled`, `files`, `first_seq`,
`last_seq`, `gaps`, `counts` per type) and `total_pulled` over all invocations. With
--expect-total N, exits 1 unless the pulls so far hold exactly the seqs 1..=N, each once.
Any inconsistency exits 1 with a one-line error on standard error.

OUT defaults to DIR/pulls/NAME.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections import Counter

import msgpack

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from read_export import ExportError, blake3, read_export  # noqa: E402

STATE = "state.json"
REPO_BINARY = pathlib.Path(__file__).resolve().parents[2] / "target" / "release" / "arbiter-events"
PULL = re.compile(r"^pull-(\d+)\.msgpack$")


class PullError(Exception):
    pass


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def load_state(out_dir, data_dir, consumer):
    path = out_dir / STATE
    if not path.exists():
        return {"data_dir": data_dir, "consumer": consumer, "cursor": None, "next_file": 1,
                "files": 0, "pulled": 0, "redelivered": 0, "ranges": [], "gaps": [],
                "counts": {}}
    state = json.loads(path.read_text())
    if (state["data_dir"], state["consumer"]) != (data_dir, consumer):
        raise PullError(f"{out_dir} holds the pulls of consumer {state['consumer']} from "
                        f"{state['data_dir']}; give another --out-dir")
    if state["pulled"] != sum(b - a + 1 for a, b in state["ranges"]):
        raise PullError(f"{path}: `pulled` disagrees with its seq ranges; the state is damaged")
    return state


def save_state(out_dir, state):
    """Atomically and durably: a temporary file, synced, renamed, the folder synced."""
    tmp = out_dir / f".{STATE}.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_dir / STATE)
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def take(state, path, run):
    """Reads and checks one export against the state and adds its new records to both;
    returns how many records and gaps it holds (0: nothing new)."""
    header, records, _ = read_export(path)
    after, gap, cursor = header["after"], header["gap"], state["cursor"]
    if cursor is not None and after > cursor:
        raise PullError(f"{path.name}: the export starts after seq {after} but the last seq "
                        f"pulled here is {cursor}: seqs {cursor + 1}..={after} were pulled by "
                        f"another reader of consumer {state['consumer']}")
    expected = after + 1
    if gap:
        if gap["from_seq"] != after + 1 or gap["to_seq"] < gap["from_seq"]:
            raise PullError(f"{path.name}: gap {gap} does not start right after seq {after}")
        expected = gap["to_seq"] + 1
        if cursor is None or gap["to_seq"] > cursor:
            lost = dict(gap, from_seq=max(gap["from_seq"], (cursor or 0) + 1))
            state["gaps"].append(lost)
            run["gaps"].append(lost)
            print(f"{path.name}: gap: seqs {lost['from_seq']}..={lost['to_seq']} are gone "
                  f"({lost['reason']}) and were never pulled", file=sys.stderr)
    for record in records:
        seq = record["seq"]
        if seq != expected:
            what = "repeated or out of order" if seq < expected else "skipped, with no gap declared"
            raise PullError(f"{path.name}: seq {seq} where {expected} was due: seqs {what}")
        expected += 1
        if cursor is not None and seq <= cursor:
            state["redelivered"] += 1  # at least once: pulled before, the commit was lost
            run["redelivered"] += 1
            continue
        ranges = state["ranges"]
        if ranges and ranges[-1][1] + 1 == seq:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
        state["pulled"] += 1
        state["counts"][record["type"]] = state["counts"].get(record["type"], 0) + 1
        run["pulled"] += 1
        run["counts"][record["type"]] += 1
        run["first_seq"] = run["first_seq"] or seq
        run["last_seq"] = seq
    seqs = (records[0]["seq"], records[-1]["seq"]) if records else (None, None)
    if (header["first_seq"], header["last_seq"]) != seqs:
        raise PullError(f"{path.name}: header says seqs {header['first_seq']}.."
                        f"={header['last_seq']}, the records hold {seqs[0]}..={seqs[1]}")
    if header["next_cursor"] != expected - 1:
        raise PullError(f"{path.name}: next cursor {header['next_cursor']} but the export "
                        f"accounts for seqs up to {expected - 1}")
    state["cursor"] = max(cursor or 0, expected - 1)
    if records or gap:
        state["files"] += 1
        run["files"] += 1
    return len(records) + bool(gap)


def find_binary(given):
    """The arbiter-events binary: --bin, else this repository's release build, else PATH."""
    if given:
        return given
    if REPO_BINARY.is_file() and os.access(REPO_BINARY, os.X_OK):
        return str(REPO_BINARY)
    on_path = shutil.which("arbiter-events")
    if on_path:
        return on_path
    raise PullError(f"cannot find the arbiter-events binary: not at {REPO_BINARY} nor on PATH; "
                    "build it with `cargo build --release`, or give it with --bin PATH")


def export(args, path):
    command = [args.bin, "export", "--data-dir", str(args.data_dir), "--consumer", args.consumer,
               "--out", str(path)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as e:
        raise PullError(f"cannot run {args.bin}: {e}; give the binary with --bin") from e
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0:
        raise PullError(f"{' '.join(command)} exited with {done.returncode}: "
                        f"{lines[-1] if lines else 'no message'}")
    if lines:
        print(f"{path.name}: {lines[-1]}", file=sys.stderr)


def expect_total(state, total):
    if state["ranges"] == [[1, total]] and state["pulled"] == total:
        return
    missing, next_seq = [], 1
    for a, b in state["ranges"] + [[total + 1, total + 1]]:
        if a > next_seq and next_seq <= total:
            missing.append(f"{next_seq}..={min(a - 1, total)}")
        next_seq = max(next_seq, b + 1)
    beyond = sum(max(0, b - max(a, total + 1) + 1) for a, b in state["ranges"])
    raise PullError(f"expected seqs 1..={total} pulled once each, got {state['pulled']} records"
                    f" over all runs; missing seqs: {', '.join(missing[:5]) or 'none'}"
                    f"{' ...' if len(missing) > 5 else ''}; seqs beyond {total}: {beyond}"
                    f"; declared gaps: {len(state['gaps'])}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=pathlib.Path)
    parser.add_argument("--consumer", default="rl")
    parser.add_argument("--bin", help="the arbiter-events binary (default: target/release/"
                        "arbiter-events of this repository, else arbiter-events on PATH)")
    parser.add_argument("--limit", type=positive, help="at most this many records per export")
    parser.add_argument("--out-dir", type=pathlib.Path, help="default: DATA_DIR/pulls/CONSUMER")
    parser.add_argument("--expect-total", type=int, metavar="N",
                        help="fail unless all pulls so far hold seqs 1..=N exactly once")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or args.data_dir / "pulls" / args.consumer
    run = {"pulled": 0, "files": 0, "first_seq": None, "last_seq": None, "gaps": [],
           "redelivered": 0, "counts": Counter()}
    try:
        args.bin = find_binary(args.bin)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = load_state(out_dir, str(args.data_dir.resolve()), args.consumer)
        # Files a previous invocation pulled (the cursor is committed) but never took.
        left = sorted((int(m[1]), p) for p in out_dir.iterdir()
                      if (m := PULL.match(p.name)) and int(m[1]) >= state["next_file"])
        for n, path in left:
            print(f"{path.name}: left by an earlier invocation, taking it first", file=sys.stderr)
            take(state, path, run)
            state["next_file"] = n + 1
            save_state(out_dir, state)
        while True:
            path = out_dir / f"pull-{state['next_file']:06d}.msgpack"
            export(args, path)
            if take(state, path, run) == 0:
                path.unlink()  # nothing new: the cursor was not committed
                break
            state["next_file"] += 1
            save_state(out_dir, state)
        if args.expect_total is not None:
            expect_total(state, args.expect_total)
    except (PullError, ExportError, OSError, ValueError, KeyError, TypeError,
            msgpack.UnpackException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    run["counts"] = dict(sorted(run["counts"].items()))
    run["total_pulled"] = state["pulled"]
    run["checksums_verified"] = blake3 is not None
    print(json.dumps(run))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
