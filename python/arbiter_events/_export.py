"""Reading and verifying one export file (layout versions 1 and 2, MessagePack or JSON Lines).

The checks are those of the Rust reader (`read_export` / `arbiter-events inspect`): the
format and version, every value decodes, the trailer's count and BLAKE3 checksum (version
2: over the header's and the records' exact bytes; version 1: over the records' bytes),
that the header agrees with the records, and that nothing follows the trailer. With a MAC
key, the trailer's keyed BLAKE3 MAC over the checksum is verified too, and a file without
a MAC is refused.
"""

from __future__ import annotations

import hmac
import json
import operator
import os
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import blake3
import msgpack

from ._errors import (
    ChecksumMismatchError,
    CorruptError,
    CountMismatchError,
    ExportError,
    HeaderMismatchError,
    InvalidMacKeyError,
    MacMismatchError,
    MacMissingError,
    NotAnExportError,
    TruncatedError,
    UnsupportedVersionError,
)
from ._tabular import Tabular, no_gc

FORMAT = "arbiter-events/export"
"""The header's ``format`` field."""

VERSIONS = (1, 2)
"""The layout versions this package reads."""

GAP_REASONS = ("age", "capacity", "cleared", "damaged", "unpersisted", "mixed")
"""Why records after a cursor can be gone."""

MAC_KEY_BYTES = 32

Source = Union[str, os.PathLike, bytes, bytearray, memoryview]

# What decoding untrusted bytes may raise; each becomes a `CorruptError`.
_DECODE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    msgpack.UnpackException,
)


_SEQ = operator.itemgetter("seq")
_SOURCE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TIME = operator.itemgetter("time")
_TYPE = operator.itemgetter("type")


@dataclass(frozen=True)
class Gap:
    """Records after a cursor that are gone (pruned or damaged) and were never exported:
    seqs ``from_seq..=to_seq``."""

    from_seq: int
    to_seq: int
    reason: str

    @property
    def count(self) -> int:
        """How many seqs the gap spans."""
        return self.to_seq - self.from_seq + 1

    def to_dict(self) -> Dict[str, Any]:
        """The gap as the header writes it."""
        return {"from_seq": self.from_seq, "to_seq": self.to_seq, "reason": self.reason}


@dataclass(frozen=True)
class SourceRange:
    """Where one source stands in a merged export: its records after ``after`` up to
    ``next_cursor`` (its cursor for what comes next), ``count`` of them in the file, and
    the seqs of that range that are gone in ``gaps``."""

    after: int
    next_cursor: int
    count: int
    gaps: List[Gap]


@dataclass(frozen=True)
class Header:
    """An export's header: what was asked (``after``, filters, ``limit``), what the file
    holds (``count``, ``first_seq``, ``last_seq``, ``gap``) and where to go on from
    (``next_cursor``). Times are Unix nanoseconds.

    A merged export of several sources (what ``arbiter-events pull`` writes) has
    ``sources`` instead of ``source``: per source id, a :class:`SourceRange`; its own
    ``after`` and ``next_cursor`` are 0 and each record names its ``source``."""

    format: str
    version: int
    anonymization: str
    key_id: Optional[str]
    source: Optional[str]
    after: int
    next_cursor: int
    gap: Optional[Gap]
    since: Optional[int]
    until: Optional[int]
    kinds: Optional[List[str]]
    limit: Optional[int]
    count: int
    first_seq: Optional[int]
    last_seq: Optional[int]
    unsynced: bool = False
    sources: Optional[Dict[str, SourceRange]] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Trailer:
    """An export's trailer: ``count``, ``checksum`` (hex) and ``mac`` (hex, or ``None``)."""

    count: int
    checksum: str
    mac: Optional[str]


class ExportFile(Tabular):
    """One verified export file.

    ``records`` are the decoded record maps, in seq order (``seq``, ``source`` in a
    merged export, ``time`` in Unix nanoseconds, ``occurred_at`` when given, ``type``,
    then the event's fields); :meth:`typed` gives them as dataclasses and
    :meth:`to_arrow` as a table. A merged export holds each source's records in seq
    order, the sources one after another.
    """

    def __init__(
        self,
        header: Header,
        records: List[Dict[str, Any]],
        trailer: Trailer,
        mac_verified: bool,
        path: Optional[str] = None,
    ) -> None:
        self.header = header
        self.records = records
        self.trailer = trailer
        self.mac_verified = mac_verified
        self.path = path

    @property
    def version(self) -> int:
        """The layout version (1 or 2)."""
        return self.header.version

    @property
    def source(self) -> Optional[str]:
        """The stable id of the collector or data directory that wrote it (version 2);
        ``None`` in a merged export (see :attr:`sources`)."""
        return self.header.source

    @property
    def sources(self) -> Dict[str, SourceRange]:
        """Per source id, the range this file moves it over: the header's ``sources`` in
        a merged export; else the one source's ``after``, ``next_cursor`` and gap."""
        if self.header.sources is not None:
            return dict(self.header.sources)
        if self.header.source is None:
            return {}
        return {
            self.header.source: SourceRange(
                self.header.after, self.header.next_cursor, self.header.count, self.gaps
            )
        }

    @property
    def merged(self) -> bool:
        """Whether this is a merged export of several sources."""
        return self.header.sources is not None

    @property
    def next_cursor(self) -> int:
        """The cursor to ask the next export after."""
        return self.header.next_cursor

    @property
    def gaps(self) -> List[Gap]:
        """The records after ``header.after`` that are gone (at most one gap a file)."""
        return [self.header.gap] if self.header.gap is not None else []

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (
            f"ExportFile(version={self.version}, count={len(self.records)}, "
            f"after={self.header.after}, next_cursor={self.next_cursor}, "
            f"gaps={self.gaps!r}, mac_verified={self.mac_verified})"
        )


def mac_key_from_hex(text: Union[str, bytes]) -> bytes:
    """The 32-byte MAC key from its hex form (what `arbiter-events key mac` prints).

    Raises :class:`InvalidMacKeyError` unless it is 64 hex digits (surrounding
    whitespace is ignored).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidMacKeyError("a mac key is 64 hex digits: found non-ascii bytes") from None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise InvalidMacKeyError("a mac key is 64 hex digits: found other characters") from None
    if len(key) != MAC_KEY_BYTES:
        raise InvalidMacKeyError(f"a mac key is 64 hex digits: found {2 * len(key)}")
    return key


def read_mac_key(path: Union[str, os.PathLike]) -> bytes:
    """The MAC key in a file written from `arbiter-events key mac` (64 hex digits)."""
    try:
        return mac_key_from_hex(pathlib.Path(path).read_bytes())
    except InvalidMacKeyError as e:
        raise InvalidMacKeyError(f"{os.fspath(path)}: {e}") from None


def _mac_key(key: Union[bytes, bytearray, str]) -> bytes:
    if isinstance(key, str):
        return mac_key_from_hex(key)
    if isinstance(key, (bytes, bytearray)) and len(key) == MAC_KEY_BYTES:
        return bytes(key)
    if isinstance(key, (bytes, bytearray)) and len(key) == 2 * MAC_KEY_BYTES:
        return mac_key_from_hex(bytes(key))
    raise InvalidMacKeyError(
        f"a mac key is 32 bytes or 64 hex digits, not {type(key).__name__} of length "
        f"{len(key) if hasattr(key, '__len__') else '?'}"
    )


def read_export(source: Source, mac_key: Union[bytes, str, None] = None) -> ExportFile:
    """Reads and verifies one export file: a path, or the file's bytes.

    With ``mac_key`` (32 bytes, or 64 hex digits as `arbiter-events key mac` prints it)
    the MAC is verified too; a file without one raises :class:`MacMissingError`, a wrong
    one :class:`MacMismatchError`.

    Raises a subclass of :class:`ExportError` for any file that cannot be trusted, and
    ``OSError`` when the path cannot be read. Never returns a partly verified file.
    """
    key = _mac_key(mac_key) if mac_key is not None else None
    path: Optional[str] = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = os.fspath(source)
        with open(path, "rb") as f:
            data = f.read()
    try:
        return _verify(data, key, path)
    except ExportError as e:
        raise e._at(path) from None


def _verify(data: bytes, key: Optional[bytes], path: Optional[str]) -> ExportFile:
    if not data:
        raise NotAnExportError("empty: not an arbiter-events export")
    try:
        if data[:1] == b"{":
            raw_header, records, raw_trailer, signed = _split_jsonl(data)
        else:
            raw_header, records, raw_trailer, signed = _split_msgpack(data)
    except ExportError:
        raise
    except _DECODE_ERRORS as e:
        raise CorruptError(f"undecodable: {type(e).__name__}: {e}") from None
    trailer = _trailer(raw_trailer)
    if trailer.count != raw_header.get("count"):
        raise CountMismatchError(
            f"the trailer's count {trailer.count} is not the header's count "
            f"{raw_header.get('count')!r}"
        )
    hasher = blake3.blake3(signed)
    digest = hasher.digest()
    if not hmac.compare_digest(hasher.hexdigest().encode(), trailer.checksum.encode("utf-8")):
        raise ChecksumMismatchError("checksum mismatch: the file was damaged")
    try:
        header = _header(raw_header)
        _check_records(header, records)
    except ExportError:
        raise
    except _DECODE_ERRORS as e:
        raise CorruptError(f"a header field or record has the wrong shape: {type(e).__name__}: {e}") from None
    if header.version == 1 and (header.source is not None or trailer.mac is not None):
        raise CorruptError("a version 1 file has no source and no mac")
    if key is not None:
        if trailer.mac is None:
            raise MacMissingError(
                f"no mac (version {header.version}): cannot verify who wrote it; files are "
                "signed only when anonymization is on, under the data directory's key"
            )
        expected = blake3.blake3(digest, key=key).hexdigest().encode()
        if not hmac.compare_digest(expected, trailer.mac.encode("utf-8")):
            raise MacMismatchError("mac mismatch: the file was changed, or signed under another key")
    return ExportFile(header, records, trailer, key is not None, path)


def _check_format(header: Any) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise NotAnExportError("not an arbiter-events export: the header's format is wrong")
    version = header.get("version")
    if type(version) is not int or version not in VERSIONS:
        raise UnsupportedVersionError(
            f"unsupported export version {version!r} (this package reads {VERSIONS})",
            version=version,
        )


def _split_msgpack(data: bytes):
    """(header, records, trailer, signed bytes) of a MessagePack export."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1 << 20))
    unpacker.feed(data)
    try:
        header = unpacker.unpack()
    except msgpack.OutOfData:
        raise TruncatedError("truncated: the header is incomplete") from None
    _check_format(header)
    header_end = unpacker.tell()
    count = header.get("count")
    if type(count) is not int or count < 0:
        raise CorruptError(f"the header's count is {count!r}, not a count")
    records: List[Any] = []
    append, unpack = records.append, unpacker.unpack
    try:
        with no_gc():
            for _ in range(count):
                append(unpack())
    except msgpack.OutOfData:
        raise TruncatedError(f"truncated after {len(records)} of {count} records") from None
    records_end = unpacker.tell()
    try:
        trailer = unpack()
    except msgpack.OutOfData:
        raise TruncatedError("truncated: the trailer is missing") from None
    if unpacker.tell() != len(data):
        raise CorruptError(f"{len(data) - unpacker.tell()} bytes after the trailer")
    signed = data[header_end:records_end] if header["version"] == 1 else data[:records_end]
    return header, records, trailer, signed


def _split_jsonl(data: bytes):
    """(header, records, trailer, signed bytes) of a JSON Lines export."""
    if not data.endswith(b"\n"):
        raise TruncatedError("truncated: the last line is incomplete")
    body, _, last = data[:-1].rpartition(b"\n")
    if not body:
        raise TruncatedError("truncated: a header and a trailer line are needed")
    first_end = data.index(b"\n") + 1
    header = json.loads(data[:first_end])
    _check_format(header)
    count = header.get("count")
    if type(count) is not int or count < 0:
        raise CorruptError(f"the header's count is {count!r}, not a count")
    lines = body[first_end:].split(b"\n") if len(body) >= first_end else []
    if len(lines) != count:
        kind = TruncatedError if len(lines) < count else CountMismatchError
        raise kind(f"{len(lines)} record lines, the header says {count}")
    loads = json.loads
    with no_gc():
        records = [loads(line) for line in lines]
    trailer = loads(last)
    return header, records, trailer, data[: len(body) + 1]


def _trailer(raw: Any) -> Trailer:
    if not isinstance(raw, dict) or not {"count", "checksum"} <= raw.keys():
        raise CorruptError("the trailer is not a trailer: count and checksum are missing")
    count, checksum, mac = raw.get("count"), raw.get("checksum"), raw.get("mac")
    if type(count) is not int or not isinstance(checksum, str):
        raise CorruptError("the trailer is not a trailer: count or checksum of the wrong type")
    if mac is not None and not isinstance(mac, str):
        raise CorruptError("the trailer's mac is neither hex text nor nil")
    return Trailer(count, checksum, mac)


def _int(value: Any, name: str, optional: bool = False) -> Optional[int]:
    if value is None and optional:
        return None
    if type(value) is not int or value < 0 and name not in ("since", "until"):
        raise HeaderMismatchError(f"header field `{name}` is {value!r}, not an integer", name)
    return value


def _header(h: Dict[str, Any]) -> Header:
    gap = h["gap"]
    if gap is not None:
        gap = _gap(gap, "gap")
    kinds = h["kinds"]
    if kinds is not None and (
        not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds)
    ):
        raise HeaderMismatchError(f"header field `kinds` is {kinds!r}", "kinds")
    key_id, source, sources = h["key_id"], h.get("source"), h.get("sources")
    if key_id is not None and not isinstance(key_id, str):
        raise HeaderMismatchError(f"header field `key_id` is {key_id!r}", "key_id")
    if source is not None and not isinstance(source, str):
        raise HeaderMismatchError(f"header field `source` is {source!r}", "source")
    if sources is not None:
        sources = _sources(sources)
    return Header(
        format=h["format"],
        version=h["version"],
        anonymization=str(h["anonymization"]),
        key_id=key_id,
        source=source,
        after=_int(h["after"], "after"),
        next_cursor=_int(h["next_cursor"], "next_cursor"),
        gap=gap,
        since=_int(h["since"], "since", True),
        until=_int(h["until"], "until", True),
        kinds=kinds,
        limit=_int(h["limit"], "limit", True),
        count=_int(h["count"], "count"),
        first_seq=_int(h["first_seq"], "first_seq", True),
        last_seq=_int(h["last_seq"], "last_seq", True),
        unsynced=bool(h.get("unsynced", False)),
        sources=sources,
        raw=h,
    )


def _gap(raw: Any, name: str) -> Gap:
    if not isinstance(raw, dict):
        raise HeaderMismatchError(f"header field `{name}` holds the gap {raw!r}", name)
    return Gap(_int(raw["from_seq"], name), _int(raw["to_seq"], name), str(raw["reason"]))


def _sources(raw: Any) -> Dict[str, SourceRange]:
    if not isinstance(raw, dict):
        raise HeaderMismatchError(f"header field `sources` is {raw!r}", "sources")
    out: Dict[str, SourceRange] = {}
    for source, r in raw.items():
        if not isinstance(source, str) or not isinstance(r, dict) or not isinstance(r.get("gaps"), list):
            raise HeaderMismatchError(f"header field `sources` holds {source!r}: {r!r}", "sources")
        gaps = [_gap(g, "sources") for g in r["gaps"]]
        out[source] = SourceRange(
            _int(r["after"], "sources"), _int(r["next_cursor"], "sources"), _int(r["count"], "sources"), gaps
        )
    return out


def _refuse(name: str, why: str) -> None:
    raise HeaderMismatchError(f"header field `{name}` disagrees with the records: {why}", name)


def _check_merged(h: Header, records: Sequence[Any]) -> None:
    """A merged export: no single source, cursor, gap, seq range or filter; per source,
    seqs increase after its ``after`` up to its ``next_cursor``, outside its gaps, and
    its count and cursor agree with its records and gaps."""
    refuse = _refuse
    sources = h.sources or {}
    if (h.source is not None or h.after != 0 or h.next_cursor != 0 or h.gap is not None
            or h.first_seq is not None or h.last_seq is not None or h.since is not None
            or h.until is not None or h.kinds is not None or h.limit is not None):
        refuse("sources", "a merged export has no single source, cursor, gap, seq range or filter")
    reached: Dict[str, List[int]] = {}
    for source, r in sources.items():
        if not _SOURCE_ID.fullmatch(source):
            refuse("sources", f"{source!r} is not a valid source id")
        if r.next_cursor < r.after:
            refuse("sources", f"{source}: next cursor {r.next_cursor} is before after {r.after}")
        previous = r.after
        for g in r.gaps:
            if g.reason not in GAP_REASONS:
                refuse("sources", f"{source}: unknown gap reason {g.reason!r}")
            if g.from_seq <= previous or g.to_seq < g.from_seq or g.to_seq > r.next_cursor:
                refuse("sources", f"{source}: gap {g.from_seq}..={g.to_seq} out of order or range")
            previous = g.to_seq
        reached[source] = [r.after, 0]
    for rec in records:
        source, seq = rec.get("source"), rec["seq"]
        if type(seq) is not int:
            raise CorruptError("a record's `seq` is not an integer")
        if not isinstance(source, str) or source not in sources:
            refuse("sources", f"record seq {seq} names source {source!r}, not in the header")
        r, at = sources[source], reached[source]
        if seq <= at[0] or seq > r.next_cursor:
            refuse("sources", f"{source}: record seq {seq} does not follow {at[0]} within its range")
        if any(g.from_seq <= seq <= g.to_seq for g in r.gaps):
            refuse("sources", f"{source}: record seq {seq} is inside a gap")
        at[0] = seq
        at[1] += 1
    for source, r in sources.items():
        last, count = reached[source]
        end = max(r.gaps[-1].to_seq if r.gaps else r.after, last)
        if count != r.count or r.next_cursor != end:
            refuse("sources", f"{source}: the header says {r.count} records through {r.next_cursor}, "
                              f"the file holds {count} through {end}")


def _check_records(h: Header, records: Sequence[Any]) -> None:
    """What the header says, against what the records determine."""
    refuse = _refuse

    if (h.key_id is not None) != (h.anonymization == "pseudonymize"):
        refuse("key_id", "given exactly when identifiers are pseudonyms")
    if set(map(type, map(_TIME, records))) - {int} or set(map(type, map(_TYPE, records))) - {str}:
        raise CorruptError("a record's `time` or `type` is of the wrong type")
    if h.sources is not None:
        _check_merged(h, records)
        return
    if any("source" in r for r in records):
        refuse("sources", "a record names a source in an export of one source")
    seqs = list(map(_SEQ, records))
    if set(map(type, seqs)) - {int}:
        raise CorruptError("a record's `seq` is not an integer")
    if not all(map(operator.lt, [h.after, *seqs[:-1]], seqs)):
        at = next(i for i, (a, b) in enumerate(zip([h.after, *seqs[:-1]], seqs)) if a >= b)
        refuse("after", f"seq {seqs[at]} does not follow {[h.after, *seqs][at]}")
    previous = seqs[-1] if seqs else h.after
    first = records[0]["seq"] if records else None
    last = records[-1]["seq"] if records else None
    if h.first_seq != first:
        refuse("first_seq", f"{h.first_seq} vs the first record {first}")
    if h.last_seq != last:
        refuse("last_seq", f"{h.last_seq} vs the last record {last}")
    if h.next_cursor < previous:
        refuse("next_cursor", f"{h.next_cursor} is before seq {previous}")
    gap = h.gap
    if gap is not None:
        if gap.reason not in GAP_REASONS:
            refuse("gap", f"unknown reason {gap.reason!r}")
        if gap.from_seq > gap.to_seq or gap.from_seq != h.after + 1:
            refuse("gap", f"{gap.from_seq}..={gap.to_seq} after {h.after}")
        if gap.to_seq > h.next_cursor or (first is not None and first <= gap.to_seq):
            refuse("gap", f"ends at {gap.to_seq}, past the cursor or the first record")
    reached = max(gap.to_seq if gap else h.after, previous)
    if h.kinds is None and h.since is None and h.next_cursor != reached:
        refuse("next_cursor", f"{h.next_cursor} must be {reached}")
    if h.limit is not None:
        if h.limit < 1 or h.count > h.limit:
            refuse("limit", f"{h.limit} with {h.count} records")
        if h.count == h.limit and h.next_cursor != previous:
            refuse("next_cursor", "must be the last seq when the limit is reached")
    if h.kinds is not None:
        if not h.kinds:
            refuse("kinds", "an empty list")
        allowed = set(h.kinds)
        for r in records:
            if r["type"] not in allowed:
                refuse("kinds", f"seq {r['seq']} is a {r['type']}")
    since, until = h.since, h.until
    if since is not None and until is not None and since >= until:
        refuse("since", "not before `until`")
    if since is not None or until is not None:
        for r in records:
            t = r["time"]
            if (since is not None and t < since) or (until is not None and t >= until):
                refuse("since/until", f"seq {r['seq']} is outside the time filter")
