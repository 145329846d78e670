#!/usr/bin/env python3
"""The RL pipeline's loop over NATS JetStream: runs `arbiter-events pull` until nothing
new comes, reads every pull file, verifies each embedded export with read_export.py's
checks, and checks that every (source, seq) came exactly once, in seq order per source.

    python3 pull_nats.py --bin arbiter-events --nats nats://127.0.0.1:4222 \
        --consumer rl --out-dir pulls [--expect-total N] [--expect-sources K]
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import msgpack

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from read_export import ExportError, read_export  # noqa: E402


def read_pull_file(path):
    """Yields (header, records) of each export in a pull file, verified."""
    data = path.read_bytes()
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_bin_len=len(data))
    unpacker.feed(data)
    header = unpacker.unpack()
    if header.get("format") != "arbiter-events/pull" or header.get("version") != 1:
        raise ExportError(f"{path}: not an arbiter-events/pull version 1 file")
    with tempfile.TemporaryDirectory() as tmp:
        part_path = pathlib.Path(tmp) / "part.msgpack"
        for _ in range(header["parts"]):
            part_path.write_bytes(unpacker.unpack())
            export_header, records, _trailer = read_export(part_path)
            yield export_header, records
    trailer = unpacker.unpack()
    if trailer.get("parts") != header["parts"]:
        raise ExportError(f"{path}: trailer parts {trailer.get('parts')} != {header['parts']}")


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--nats", required=True)
    p.add_argument("--consumer", required=True)
    p.add_argument("--out-dir", required=True, type=pathlib.Path)
    p.add_argument("--expect-total", type=int)
    p.add_argument("--expect-sources", type=int)
    p.add_argument("--max-pulls", type=int, default=10000)
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    n = len(list(args.out_dir.glob("*.pull")))
    for _ in range(args.max_pulls):
        out = args.out_dir / f"{n:05d}.pull"
        result = subprocess.run(
            [args.bin, "pull", "--nats", args.nats, "--consumer", args.consumer,
             "--out", str(out), "--max-messages", "64", "--wait-ms", "300"],
            check=True, capture_output=True, text=True)
        if json.loads(result.stdout)["file"] is None:
            break
        n += 1
    cursors = {}
    records = 0
    for path in sorted(args.out_dir.glob("*.pull")):
        for header, recs in read_pull_file(path):
            source = header["source"]
            cursor = cursors.get(source, 0)
            if header["after"] != cursor:
                raise ExportError(f"{path}: {source} export after {header['after']} does not follow {cursor}")
            for r in recs:
                if r["seq"] <= cursor:
                    raise ExportError(f"{source} seq {r['seq']} twice or out of order")
                cursor = r["seq"]
            cursors[source] = header["next_cursor"]
            records += len(recs)
    print(f"pulled {records} records of {len(cursors)} sources in {n} pull files: {cursors}")
    if args.expect_sources is not None and len(cursors) != args.expect_sources:
        raise SystemExit(f"expected {args.expect_sources} sources, got {len(cursors)}")
    if args.expect_total is not None and records != args.expect_total:
        raise SystemExit(f"expected {args.expect_total} records, got {records}")


if __name__ == "__main__":
    main(sys.argv[1:])
