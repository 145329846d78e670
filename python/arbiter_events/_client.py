"""An HTTP client of `arbiter-events serve` (stdlib only: urllib and json).

The contract: `POST /v1/events` (NDJSON or a MessagePack array), `POST /v1/tasks/start`,
`POST /v1/tasks/{id}/complete`, `GET /v1/export`, `POST /v1/consumers/{name}/commit`,
`GET /v1/consumers`, `GET /v1/stats`, `GET /v1/report`, `GET /healthz`, `GET /metrics`,
with a bearer token. Every error answer becomes a typed :class:`ServerError`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import msgpack

from ._errors import (
    ConnectionFailedError,
    QueueFullError,
    ServerError,
    TooManyEventsError,
    server_error,
)
from ._events import Event
from ._export import ExportFile, read_export

DEFAULT_URL = "http://127.0.0.1:7474"
"""Where `arbiter-events serve` listens unless told otherwise."""

DEFAULT_BATCH = 1000
"""Events per `POST /v1/events` unless told otherwise."""

RECORD_TOKEN_ENV = "ARBITER_EVENTS_RECORD_TOKEN"
EXPORT_TOKEN_ENV = "ARBITER_EVENTS_EXPORT_TOKEN"


@dataclass(frozen=True)
class Rejection:
    """An event the server refused: its ``index`` in the caller's sequence, the error
    kind (``malformed``, or a validation error), the ``field`` and ``rule`` when the
    validation named them, and the message."""

    index: int
    error: str
    field: Optional[str] = None
    rule: Optional[str] = None
    message: Optional[str] = None


@dataclass
class RecordResult:
    """What the server did with a sequence of events: how many it ``accepted``, which it
    ``rejected`` (and why), how many its queue ``dropped``, and how many requests and
    retries after a full queue (``retries``) it took."""

    accepted: int = 0
    rejected: List[Rejection] = field(default_factory=list)
    dropped: int = 0
    requests: int = 0
    retries: int = 0


def _event_json(event: Union[Mapping[str, Any], Event]) -> Dict[str, Any]:
    if isinstance(event, Event):
        return event.to_event()
    if isinstance(event, Mapping):
        return dict(event)
    raise TypeError(f"an event is a dict in the event JSON form or an Event, not {type(event).__name__}")


def _time_param(value: Union[str, _dt.datetime, None]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("since/until need a timezone-aware datetime (e.g. UTC)")
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


class Client:
    """A client of one `arbiter-events serve`.

    ``token`` is the record token (recording only) or the export token (everything);
    when ``None``, ``$ARBITER_EVENTS_EXPORT_TOKEN`` then ``$ARBITER_EVENTS_RECORD_TOKEN``
    are used. Every call blocks until the answer (at most ``timeout`` seconds a request)
    and raises a :class:`ServerError` subclass on an error answer or
    :class:`ConnectionFailedError` when none came.
    """

    def __init__(self, url: str = DEFAULT_URL, token: Optional[str] = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        if token is None:
            token = os.environ.get(EXPORT_TOKEN_ENV) or os.environ.get(RECORD_TOKEN_ENV)
        self._token = token.strip() if token else None
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.url!r}, token={'..' if self._token else None})"

    # --- plumbing ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        query: Optional[Mapping[str, Any]] = None,
        body: Optional[bytes] = None,
        content_type: Optional[str] = None,
        ok: Sequence[int] = (),
    ) -> Tuple[int, Mapping[str, str], bytes]:
        """One request; returns (status, headers, body). Raises the typed error of any
        answer of 400 or more whose status is not in ``ok``."""
        url = self.url + path
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        request = urllib.request.Request(url, data=body, method=method)
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        what = f"{method} {path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as e:
            data = e.read()
            if e.code in ok:
                return e.code, e.headers, data
            raise server_error(e.code, _json_or_empty(data), what) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConnectionFailedError(f"{what}: no answer from {self.url}: {reason}") from None

    def _json(self, method: str, path: str, query=None, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        _, _, data = self.request(method, path, query, body, "application/json" if body else None)
        try:
            return json.loads(data)
        except ValueError:
            raise ServerError(f"{method} {path}: the answer is not json: {data[:80]!r}") from None

    # --- recording ---------------------------------------------------------------------

    def record(
        self,
        events: Iterable[Union[Mapping[str, Any], Event]],
        format: str = "jsonl",
        batch_size: int = DEFAULT_BATCH,
        max_retries: int = 100,
        max_wait: float = 5.0,
    ) -> RecordResult:
        """Records events: dicts in the event JSON form of ``fixtures/events/*.jsonl``
        (``{"type": "routing_decision", ...}``) or :class:`Event` instances.

        Sends them in requests of at most ``batch_size`` (``format`` ``"jsonl"`` as NDJSON
        or ``"msgpack"``), fewer when the server says its per-request limit is lower, and
        after a full queue (429) waits ``Retry-After`` (at most ``max_wait`` s) and sends
        the rest again from ``retry_from``, at most ``max_retries`` times overall
        (then :class:`QueueFullError`). Rejected events are reported with their index in
        ``events``; the others still go in.
        """
        if format not in ("jsonl", "msgpack"):
            raise ValueError(f"format is 'jsonl' or 'msgpack', not {format!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        items = [_event_json(e) for e in events]
        result = RecordResult()
        start = 0
        size = batch_size
        while start < len(items):
            chunk = items[start : start + size]
            try:
                taken = self._post_events(chunk, format, start, result)
            except TooManyEventsError as e:
                limit = e.limit
                if limit is None or limit < 1 or limit >= len(chunk):
                    raise
                size = limit  # nothing was stored: send the same events in smaller requests
                continue
            except QueueFullError as e:
                taken = e.retry_from
                if taken is None:  # what the server took: accepted, rejected and dropped
                    body = e.body
                    rejected = body.get("rejected")
                    taken = (_count(body.get("accepted")) + _count(body.get("dropped"))
                             + (len(rejected) if isinstance(rejected, list) else 0))
                taken = min(max(taken, 0), len(chunk))
                result.retries += 1
                if result.retries > max_retries:
                    raise
                wait = _retry_after(e.body.get("_retry_after"), max_wait)
                time.sleep(wait)
            start += taken
        return result

    def _post_events(self, chunk: List[Dict[str, Any]], format: str, offset: int, result: RecordResult) -> int:
        if format == "jsonl":
            body = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in chunk).encode()
            content_type = "application/x-ndjson"
        else:
            body = msgpack.packb(chunk, use_bin_type=True)
            content_type = "application/msgpack"
        result.requests += 1
        status, headers, data = self.request("POST", "/v1/events", None, body, content_type, ok=(429,))
        answer = _json_or_empty(data)
        result.accepted += _count(answer.get("accepted"))
        result.dropped += _count(answer.get("dropped"))
        for r in answer.get("rejected") or []:
            if isinstance(r, dict) and isinstance(r.get("index"), int):
                result.rejected.append(Rejection(
                    offset + r["index"], str(r.get("error")), r.get("field"), r.get("rule"),
                    r.get("message"),
                ))
        if status == 429:
            error = server_error(status, answer, "POST /v1/events")
            error.body["_retry_after"] = headers.get("Retry-After")
            raise error
        return len(chunk)

    def start_task(self, task_id: str, agent_id: str, **fields: Any) -> str:
        """Starts an execution (``POST /v1/tasks/start``); returns its ``execution_id``.
        ``fields`` are the other fields start_task takes (e.g. ``context={...}``)."""
        what = "POST /v1/tasks/start"
        answer = self._json("POST", "/v1/tasks/start", None, {"task_id": task_id, "agent_id": agent_id, **fields})
        return _get(answer, "execution_id", str, what)

    def complete_task(self, execution_id: str, status: str = "succeeded", **fields: Any) -> float:
        """Completes an execution; returns the duration the server measured, in ms.
        Raises :class:`NotFoundError` for an unknown id, :class:`ConflictError` twice."""
        path = f"/v1/tasks/{urllib.parse.quote(execution_id, safe='')}/complete"
        answer = self._json("POST", path, None, {"status": status, **fields})
        return float(_get(answer, "duration_ms", (int, float), f"POST {path}"))

    # --- exporting ---------------------------------------------------------------------

    def export_bytes(
        self,
        after: Optional[int] = None,
        since: Union[str, _dt.datetime, None] = None,
        until: Union[str, _dt.datetime, None] = None,
        kinds: Optional[Sequence[str]] = None,
        limit: Optional[int] = None,
        format: str = "msgpack",
        consumer: Optional[str] = None,
    ) -> Tuple[bytes, Mapping[str, str]]:
        """``GET /v1/export``: the export file's bytes and the answer's headers (the
        ``X-Arbiter-Next-Cursor`` and ``X-Arbiter-Records`` among them)."""
        query = {
            "after": after,
            "since": _time_param(since),
            "until": _time_param(until),
            "kinds": ",".join(kinds) if kinds else None,
            "limit": limit,
            "format": format,
            "consumer": consumer,
        }
        _, headers, data = self.request("GET", "/v1/export", query)
        return data, headers

    def export(self, mac_key: Union[bytes, str, None] = None, **query: Any) -> ExportFile:
        """``GET /v1/export`` read and verified (with ``mac_key``, its MAC too); the
        keywords are those of :meth:`export_bytes`."""
        data, _ = self.export_bytes(**query)
        return read_export(data, mac_key)

    def commit(self, consumer: str, cursor: int) -> int:
        """Commits a consumer's cursor; returns it. :class:`ConflictError` when it is past
        the synced position or goes back."""
        path = f"/v1/consumers/{urllib.parse.quote(consumer, safe='')}/commit"
        answer = self._json("POST", path, None, {"cursor": cursor})
        return _get(answer, "cursor", int, f"POST {path}")

    def consumers(self) -> Dict[str, int]:
        """Every consumer's committed cursor, by name (a consumer whose cursor file the
        server could not read is left out: the server names it with an ``error``)."""
        what = "GET /v1/consumers"
        consumers = _get(self._json("GET", "/v1/consumers"), "consumers", list, what)
        return {
            _get(c, "name", str, what): _get(c, "cursor", int, what)
            for c in consumers
            if not (isinstance(c, dict) and "error" in c and "cursor" not in c)
        }

    def stats(self) -> Dict[str, Any]:
        """The collector's stats (what `arbiter-events stats` prints)."""
        return self._json("GET", "/v1/stats")

    def report(self, last: str = "1h", by: str = "overall", agent: Optional[str] = None) -> Dict[str, Any]:
        """A report over the last window (``by``: agent, kind, strategy or overall)."""
        return self._json("GET", "/v1/report", {"last": last, "by": by, "agent": agent})

    def healthz(self) -> bool:
        """Whether the server answers ``/healthz`` with 200."""
        try:
            status, _, _ = self.request("GET", "/healthz")
        except ServerError:
            return False
        return status == 200

    def metrics(self) -> str:
        """The Prometheus text exposition of ``/metrics``."""
        _, _, data = self.request("GET", "/metrics")
        return data.decode("utf-8", "replace")


def _get(answer: Any, key: str, kind: Any, what: str) -> Any:
    """``answer[key]`` when ``answer`` is a dict holding a ``kind`` there; else a
    :class:`ServerError` saying the answer is not what the contract says."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ServerError(f"{what}: the answer has no `{key}` of the expected type: {answer!r:.200}")
    return value


def _json_or_empty(data: bytes) -> Dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _retry_after(value: Any, max_wait: float) -> float:
    try:
        wait = float(value)
    except (TypeError, ValueError):
        wait = 1.0
    return min(max(wait, 0.05), max_wait)
