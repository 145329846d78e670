#!/usr/bin/env python3
"""The RL pipeline's loop over NATS JetStream: runs `arbiter-events pull` until nothing
new comes, reads every pull file with the `arbiter_events` package (each is a merged
export of several sources: checksum, header against records and, with --mac-key-file,
the MAC verified), and checks that every (source, seq) came exactly once, in seq order
per source, each file taking every source on from where the files before left it.

    pip install ./python
    python3 pull_nats.py --bin arbiter-events --nats nats://127.0.0.1:4222 \
        --consumer rl --out-dir pulls [--mac-key-file mac.key] \
        [--expect-total N] [--expect-sources K]
"""

import argparse
import json
import pathlib
import subprocess
import sys

import arbiter_events as ae


def pull_all(args):
    """Pulls into numbered files until a pull brings nothing; returns how many exist."""
    n = len(list(args.out_dir.glob("*.pull")))
    key = ["--mac-key-file", str(args.mac_key_file)] if args.mac_key_file else []
    for _ in range(args.max_pulls):
        out = args.out_dir / f"{n:05d}.pull"
        result = subprocess.run(
            [args.bin, "pull", "--nats", args.nats, "--consumer", args.consumer,
             "--out", str(out), "--max-messages", "64", "--wait-ms", "300", *key],
            check=True, capture_output=True, text=True)
        if json.loads(result.stdout)["file"] is None:
            break
        n += 1
    return n


def check(files, mac_key):
    """(records, per-source cursors) of the pull files, each checked to follow on."""
    cursors = {}
    records = 0
    for path in files:
        f = ae.read_export(path, mac_key=mac_key)
        if not f.merged:
            raise ae.ExportError(f"{path}: not a merged export")
        for source, r in f.sources.items():
            cursor = cursors.get(source, 0)
            if r.after != cursor:
                raise ae.ExportError(f"{path}: {source} starts after {r.after}, not {cursor}")
            seqs = [rec["seq"] for rec in f.records if rec["source"] == source]
            if any(a >= b for a, b in zip([cursor, *seqs], seqs)):
                raise ae.ExportError(f"{path}: {source} seqs twice or out of order")
            cursors[source] = r.next_cursor
        records += len(f)
    return records, cursors


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--nats", required=True)
    p.add_argument("--consumer", required=True)
    p.add_argument("--out-dir", required=True, type=pathlib.Path)
    p.add_argument("--mac-key-file", type=pathlib.Path,
                   help="the fleet's MAC key (arbiter-events key mac): messages and files verified")
    p.add_argument("--expect-total", type=int)
    p.add_argument("--expect-sources", type=int)
    p.add_argument("--max-pulls", type=int, default=10000)
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    n = pull_all(args)
    mac_key = ae.read_mac_key(args.mac_key_file) if args.mac_key_file else None
    records, cursors = check(sorted(args.out_dir.glob("*.pull")), mac_key)
    print(f"pulled {records} records of {len(cursors)} sources in {n} pull files: {cursors}")
    if args.expect_sources is not None and len(cursors) != args.expect_sources:
        raise SystemExit(f"expected {args.expect_sources} sources, got {len(cursors)}")
    if args.expect_total is not None and records != args.expect_total:
        raise SystemExit(f"expected {args.expect_total} records, got {records}")


if __name__ == "__main__":
    main(sys.argv[1:])
