#!/usr/bin/env python3
"""Read arbiter-events exports (MessagePack or JSON Lines) and count records per event type.

Usage:
    read_export.py PATH [PATH ...] [--stats STATS_JSON] [--mac-key-file FILE]

Each PATH is an export file or a directory of `*.msgpack` / `*.jsonl` increments (read
in name order). Every file is checked as `arbiter-events inspect` checks it: the format
and version (1 or 2), every record, the trailer's count and BLAKE3 checksum (version 2:
over the header's and the records' bytes; version 1: over the records' bytes), that the
header agrees with the records (first and last seq, seqs increasing after `after`,
`next_cursor`, the gap, the limit, the kinds and the time filter), and that nothing
follows the trailer. With --mac-key-file (the output of `arbiter-events key mac`), each
file's MAC is verified too and a file without one is refused. Increments must follow one
another (each starts after the previous cursor, with any gap reported explicitly).

With --stats, the counts are compared to the `stored` count of each kind in a stats JSON
written by `arbiter-events demo`. Exit status: 0 when everything verified, 1 on any
corrupt file or mismatch, reported as one line on standard error.
"""

import argparse
import hmac
import json
import pathlib
import sys
from collections import Counter

import msgpack

try:
    import blake3  # verifies the checksum and the MAC
except ImportError:  # pragma: no cover - depends on the environment
    blake3 = None

FORMAT = "arbiter-events/export"
VERSIONS = (1, 2)


class ExportError(Exception):
    pass


def _blake3():
    if blake3 is None:
        raise ExportError("the `blake3` package is needed to verify exports: pip install blake3")
    return blake3.blake3()


def read_msgpack(data):
    """Splits a MessagePack export into (header, records, trailer, signed bytes)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    try:
        header = unpacker.unpack()
    except msgpack.OutOfData:
        raise ExportError("truncated: the header is incomplete")
    check_format(header)
    header_end = unpacker.tell()
    records = []
    for _ in range(int(header.get("count", 0))):
        try:
            records.append(unpacker.unpack())
        except msgpack.OutOfData:
            raise ExportError(f"truncated after {len(records)} of {header['count']} records")
    records_end = unpacker.tell()
    try:
        trailer = unpacker.unpack()
    except msgpack.OutOfData:
        raise ExportError("truncated: the trailer is missing")
    if unpacker.tell() != len(data):
        raise ExportError(f"corrupt: {len(data) - unpacker.tell()} bytes after the trailer")
    if header["version"] == 1:
        signed = data[header_end:records_end]
    else:
        signed = data[:records_end]
    return header, records, trailer, signed


def read_jsonl(data):
    """Splits a JSON Lines export into (header, records, trailer, signed bytes)."""
    lines = data.splitlines(keepends=True)
    if not lines or not lines[-1].endswith(b"\n"):
        raise ExportError("truncated: the last line is incomplete")
    values = [json.loads(line) for line in lines]
    header, trailer = values[0], values[-1]
    check_format(header)
    records = values[1:-1]
    if len(records) != header.get("count"):
        raise ExportError(f"truncated or padded: {len(records)} records, header says {header.get('count')}")
    signed = b"".join(lines[:-1])
    return header, records, trailer, signed


def check_format(header):
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ExportError("not an arbiter-events export")
    if header.get("version") not in VERSIONS:
        raise ExportError(f"unsupported export version {header.get('version')!r}")


def check_header(h, records):
    """What the header says, against what the records determine."""
    def refuse(field, why):
        raise ExportError(f"header field `{field}` disagrees with the records: {why}")

    if (h["key_id"] is not None) != (h["anonymization"] == "pseudonymize"):
        refuse("key_id", "given exactly when identifiers are pseudonyms")
    seqs = [r["seq"] for r in records]
    if h["first_seq"] != (seqs[0] if seqs else None):
        refuse("first_seq", f"{h['first_seq']} vs the first record")
    if h["last_seq"] != (seqs[-1] if seqs else None):
        refuse("last_seq", f"{h['last_seq']} vs the last record")
    previous = h["after"]
    for seq in seqs:
        if seq <= previous:
            refuse("after", f"seq {seq} does not follow {previous}")
        previous = seq
    if h["next_cursor"] < previous:
        refuse("next_cursor", f"{h['next_cursor']} is before seq {previous}")
    gap = h["gap"]
    if gap is not None:
        if gap["from_seq"] > gap["to_seq"] or gap["from_seq"] != h["after"] + 1:
            refuse("gap", f"{gap['from_seq']}..={gap['to_seq']} after {h['after']}")
        if gap["to_seq"] > h["next_cursor"] or (seqs and seqs[0] <= gap["to_seq"]):
            refuse("gap", f"ends at {gap['to_seq']}, past the cursor or the first record")
    reached = max(gap["to_seq"] if gap else h["after"], previous)
    if h["kinds"] is None and h["since"] is None and h["next_cursor"] != reached:
        refuse("next_cursor", f"{h['next_cursor']} must be {reached}")
    if h["limit"] is not None:
        if h["limit"] < 1 or h["count"] > h["limit"]:
            refuse("limit", f"{h['limit']} with {h['count']} records")
        if h["count"] == h["limit"] and h["next_cursor"] != previous:
            refuse("next_cursor", "must be the last seq when the limit is reached")
    if h["kinds"] is not None:
        if not h["kinds"]:
            refuse("kinds", "an empty list")
        for r in records:
            if r["type"] not in h["kinds"]:
                refuse("kinds", f"seq {r['seq']} is a {r['type']}")
    since, until = h["since"], h["until"]
    if since is not None and until is not None and since >= until:
        refuse("since", "not before `until`")
    for r in records:
        if (since is not None and r["time"] < since) or (until is not None and r["time"] >= until):
            refuse("since/until", f"seq {r['seq']} is outside the time filter")


def read_export(path, mac_key=None):
    """Returns (header, records, trailer) of one export file, verified."""
    data = path.read_bytes()
    if not data:
        raise ExportError("empty file")
    parts = read_jsonl(data) if data[:1] == b"{" else read_msgpack(data)
    header, records, trailer, signed = parts
    if not isinstance(trailer, dict) or "count" not in trailer or "checksum" not in trailer:
        raise ExportError("corrupt: the trailer is not a trailer")
    if trailer["count"] != header["count"]:
        raise ExportError(f"trailer count {trailer['count']} != header count {header['count']}")
    hasher = _blake3()
    hasher.update(signed)
    checksum = hasher.digest()
    if not hmac.compare_digest(hasher.hexdigest(), str(trailer["checksum"])):
        raise ExportError("checksum mismatch: the file was damaged")
    if header["version"] == 1 and (header.get("source") is not None or trailer.get("mac") is not None):
        raise ExportError("corrupt: a version 1 file has no source and no mac")
    check_header(header, records)
    if mac_key is not None:
        mac = trailer.get("mac")
        if mac is None:
            raise ExportError(f"no mac (version {header['version']}): cannot verify who wrote it")
        expected = blake3.blake3(checksum, key=mac_key).hexdigest()
        if not hmac.compare_digest(expected, str(mac)):
            raise ExportError("mac mismatch: the file was changed, or signed under another key")
    return header, records, trailer


def read_mac_key(path):
    text = pathlib.Path(path).read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ExportError(f"{path}: a MAC key is 64 hex digits")
    return key


def export_files(paths):
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            yield from sorted([*p.glob("*.msgpack"), *p.glob("*.jsonl")])
        else:
            yield p


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--stats", help="stats JSON to compare the counts with")
    parser.add_argument("--mac-key-file", help="verify each file's MAC with this key (hex)")
    args = parser.parse_args(argv)

    counts = Counter()
    cursor, last_seq, gaps, files, versions, sources = None, 0, [], 0, set(), set()
    path = "-"
    try:
        mac_key = read_mac_key(args.mac_key_file) if args.mac_key_file else None
        for path in export_files(args.paths):
            header, records, _ = read_export(path, mac_key)
            files += 1
            versions.add(header["version"])
            if header.get("source"):
                sources.add(header["source"])
            if cursor is not None and header["after"] != cursor:
                raise ExportError(f"starts after {header['after']}, previous cursor was {cursor}")
            if header["gap"]:
                gaps.append(header["gap"])
            for record in records:
                if record["seq"] <= last_seq:
                    raise ExportError(f"seq {record['seq']} repeated or out of order")
                last_seq = record["seq"]
                counts[record["type"]] += 1
            cursor = header["next_cursor"]
    except (ExportError, OSError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, msgpack.UnpackException) as e:
        what = type(e).__name__ if not isinstance(e, ExportError) else "corrupt export"
        print(f"error: {path}: {what}: {e}", file=sys.stderr)
        return 1

    summary = {
        "files": files,
        "records": sum(counts.values()),
        "counts": dict(sorted(counts.items())),
        "gaps": gaps,
        "versions": sorted(versions),
        "sources": sorted(sources),
        "checksums_verified": True,
        "macs_verified": args.mac_key_file is not None,
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
