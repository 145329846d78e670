#!/usr/bin/env python3
"""Read arbiter-events MessagePack exports and count records per event type.

Usage:
    read_export.py PATH [PATH ...] [--stats STATS_JSON]

Each PATH is an export file or a directory of `*.msgpack` increments (read in name
order). Every file is checked: the header's format, the record count against the
trailer, the BLAKE3 checksum when the `blake3` package is installed, and that
increments follow one another (each starts after the previous cursor, with any gap
reported explicitly). With --stats, the counts are compared to the `stored` count of
each kind in a stats JSON written by `arbiter-events demo`; the exit status is 1 on
any mismatch.
"""

import argparse
import json
import pathlib
import sys
from collections import Counter

import msgpack

try:
    import blake3  # optional: verifies the trailer checksum
except ImportError:  # pragma: no cover - depends on the environment
    blake3 = None

FORMAT = "arbiter-events/export"


class ExportError(Exception):
    pass


def read_export(path):
    """Returns (header, records, trailer) of one export file, verified."""
    data = path.read_bytes()
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    header = next(unpacker, None)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ExportError(f"{path}: not an arbiter-events export")
    records = []
    hasher = blake3.blake3() if blake3 else None
    for _ in range(header["count"]):
        start = unpacker.tell()
        record = next(unpacker, None)
        if record is None:
            raise ExportError(f"{path}: truncated after {len(records)} of {header['count']} records")
        if hasher:
            hasher.update(data[start:unpacker.tell()])
        records.append(record)
    trailer = next(unpacker, None)
    if trailer is None:
        raise ExportError(f"{path}: truncated: trailer missing")
    if trailer["count"] != header["count"]:
        raise ExportError(f"{path}: trailer count {trailer['count']} != header count {header['count']}")
    if hasher and hasher.hexdigest() != trailer["checksum"]:
        raise ExportError(f"{path}: checksum mismatch")
    return header, records, trailer


def export_files(paths):
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            yield from sorted(p.glob("*.msgpack"))
        else:
            yield p


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--stats", help="stats JSON to compare the counts with")
    args = parser.parse_args(argv)

    counts = Counter()
    cursor, last_seq, gaps, files = None, 0, [], 0
    try:
        for path in export_files(args.paths):
            header, records, _ = read_export(path)
            files += 1
            if cursor is not None and header["after"] != cursor:
                raise ExportError(f"{path}: starts after {header['after']}, previous cursor was {cursor}")
            if header["gap"]:
                gaps.append(header["gap"])
            for record in records:
                if record["seq"] <= last_seq:
                    raise ExportError(f"{path}: seq {record['seq']} repeated or out of order")
                last_seq = record["seq"]
                counts[record["type"]] += 1
            cursor = header["next_cursor"]
    except (ExportError, OSError, msgpack.UnpackException, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    summary = {
        "files": files,
        "records": sum(counts.values()),
        "counts": dict(sorted(counts.items())),
        "gaps": gaps,
        "checksums_verified": blake3 is not None,
    }
    print(json.dumps(summary, indent=2))

    if args.stats:
        stats = json.loads(pathlib.Path(args.stats).read_text())
        expected = {k["kind"]: k["stored"] for k in stats["kinds"] if k["stored"]}
        missed = sum(g["to_seq"] - g["from_seq"] + 1 for g in gaps)
        if gaps or dict(counts) != expected:
            print(f"mismatch: exports {dict(sorted(counts.items()))} ({missed} records in gaps), "
                  f"stats {expected}", file=sys.stderr)
            return 1
        print(f"ok: {summary['records']} records in {files} files match the collector's stats",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
