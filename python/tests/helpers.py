"""Building export files in the tests: re-signing changed headers, records or trailers."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import blake3
import msgpack


def split(data: bytes) -> Tuple[Dict[str, Any], List[Dict[str, Any]], Dict[str, Any]]:
    """(header, records, trailer) of a MessagePack export, unverified."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    values = list(unpacker)
    return values[0], values[1:-1], values[-1]


def build(header: Dict[str, Any], records: List[Dict[str, Any]], key: Optional[bytes],
          trailer: Optional[Dict[str, Any]] = None, jsonl: bool = False) -> bytes:
    """An export of these values with a correct checksum (and MAC under ``key``);
    ``trailer`` overrides fields of the computed trailer."""
    if jsonl:
        signed = b"".join(json.dumps(v, separators=(",", ":")).encode() + b"\n"
                          for v in [header, *records])
    else:
        signed = msgpack.packb(header) + b"".join(msgpack.packb(r) for r in records)
    covered = signed if header.get("version") != 1 or jsonl else signed[len(msgpack.packb(header)):]
    digest = blake3.blake3(covered).digest()
    out = {"count": len(records), "checksum": digest.hex(),
           "mac": blake3.blake3(digest, key=key).hexdigest() if key else None}
    out.update(trailer or {})
    if jsonl:
        return signed + json.dumps(out).encode() + b"\n"
    return signed + msgpack.packb(out)
