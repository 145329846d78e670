"""Pulling increments for a named consumer, exactly once by seq, across crashes.

Two sources: a running `arbiter-events serve` (``GET /v1/export``, then
``POST /v1/consumers/{name}/commit``), or a data directory through the CLI
(``arbiter-events export --data-dir D --consumer NAME --out F``, which commits the
consumer's cursor once the file is durable).

The puller keeps its own state in ``state_dir/state.json`` (replaced atomically and
durably): the cursor of what the caller committed. A pull returns everything after that
cursor, checked (each file verified, seqs following on with no hole but a declared gap,
repeats recognized by seq and skipped); :meth:`Puller.commit` moves the cursor. A batch
not committed (the caller crashed) is pulled again, whole: CLI exports already written
are kept in ``state_dir`` until committed and read first next time.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from ._client import Client
from ._errors import ConflictError, PullError
from ._export import ExportFile, Gap, read_export
from ._tabular import Tabular

try:  # POSIX: one puller per state directory at a time
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STATE = "state.json"
LOCK = "LOCK"
SPOOL = re.compile(r"^pull-(\d{6,})\.msgpack$")
STATE_VERSION = 1
REPO_BINARY = pathlib.Path(__file__).resolve().parents[2] / "target" / "release" / "arbiter-events"


@dataclass
class Batch(Tabular):
    """What one pull brought: the ``records`` after the committed cursor ``after``
    (``None``: the first pull), each once, in seq order; the ``gaps`` (records gone
    before they were pulled, never to come); and ``next_cursor``, what
    :meth:`Puller.commit` will commit. ``redelivered`` counts records skipped as already
    committed; ``exports`` how many exports were read; ``files`` the spooled export
    files (data directory pulls)."""

    consumer: str
    after: Optional[int]
    next_cursor: Optional[int]
    records: List[Dict[str, Any]] = field(default_factory=list)
    gaps: List[Gap] = field(default_factory=list)
    redelivered: int = 0
    exports: int = 0
    files: List[pathlib.Path] = field(default_factory=list)
    sources: List[str] = field(default_factory=list)
    _next_file: int = field(default=1, repr=False)

    @property
    def first_seq(self) -> Optional[int]:
        """The seq of the first new record."""
        return self.records[0]["seq"] if self.records else None

    @property
    def last_seq(self) -> Optional[int]:
        """The seq of the last new record."""
        return self.records[-1]["seq"] if self.records else None

    @property
    def moved(self) -> bool:
        """Whether committing it moves the cursor (new records, or a gap passed over)."""
        return self.next_cursor is not None and self.next_cursor != self.after

    def __len__(self) -> int:
        return len(self.records)


def find_binary(given: Union[str, os.PathLike, None] = None) -> str:
    """The arbiter-events binary: ``given``, else ``$ARBITER_EVENTS_BIN``, else this
    repository's ``target/release/arbiter-events``, else ``arbiter-events`` on ``PATH``."""
    if given:
        return os.fspath(given)
    env = os.environ.get("ARBITER_EVENTS_BIN")
    if env:
        return env
    if REPO_BINARY.is_file() and os.access(REPO_BINARY, os.X_OK):
        return str(REPO_BINARY)
    on_path = shutil.which("arbiter-events")
    if on_path:
        return on_path
    raise PullError(
        "cannot find the arbiter-events binary: give bin=, set ARBITER_EVENTS_BIN, or put "
        "arbiter-events on PATH (cargo build --release builds target/release/arbiter-events)"
    )


def default_state_dir(server: str, consumer: str) -> pathlib.Path:
    """Where a puller of ``server`` keeps its state unless told:
    ``$XDG_STATE_HOME/arbiter-events/pulls/<host>_<port>/<consumer>`` (``XDG_STATE_HOME``
    defaults to ``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    where = re.sub(r"[^A-Za-z0-9._-]+", "_", re.sub(r"^[a-z]+://", "", server)).strip("_")
    return pathlib.Path(base) / "arbiter-events" / "pulls" / (where or "server") / consumer


class Puller:
    """Pulls what is new for the consumer ``consumer``, exactly once by seq.

    Exactly one of ``server`` (a URL of `arbiter-events serve`, with ``token``, the
    export token) or ``data_dir`` (through the CLI binary ``bin``, see
    :func:`find_binary`). ``state_dir`` holds the puller's state and spooled files;
    it defaults to ``<data_dir>/pulls/<consumer>``, and with a server to
    :func:`default_state_dir` (one directory per server and consumer).
    ``limit`` caps the records of one export; ``mac_key`` (bytes or hex) makes every
    file's MAC checked.

    The cursor in the state is the puller's own: an export starts after it, so another
    reader moving the consumer's cursor on the data directory is detected
    (:class:`PullError`) rather than silently skipped.
    """

    def __init__(
        self,
        consumer: str,
        *,
        server: Optional[str] = None,
        token: Optional[str] = None,
        data_dir: Union[str, os.PathLike, None] = None,
        bin: Union[str, os.PathLike, None] = None,
        state_dir: Union[str, os.PathLike, None] = None,
        limit: Optional[int] = None,
        mac_key: Union[bytes, str, None] = None,
        keep_files: bool = False,
        timeout: float = 120.0,
    ) -> None:
        if not consumer or not isinstance(consumer, str):
            raise ValueError("a consumer name is needed")
        if (server is None) == (data_dir is None):
            raise ValueError("give exactly one of server= and data_dir=")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.consumer = consumer
        self.limit = limit
        self.mac_key = mac_key
        self.keep_files = keep_files
        self.timeout = timeout
        self.client: Optional[Client] = None
        self.data_dir: Optional[pathlib.Path] = None
        if server is not None:
            if state_dir is None:
                state_dir = default_state_dir(server, consumer)
            self.client = Client(server, token, timeout)
            self._where = {"server": self.client.url}
        else:
            self.data_dir = pathlib.Path(data_dir).resolve()  # type: ignore[arg-type]
            self.bin = find_binary(bin)
            self._where = {"data_dir": str(self.data_dir)}
            if state_dir is None:
                state_dir = self.data_dir / "pulls" / consumer
        self.state_dir = pathlib.Path(state_dir)
        self._lock_fd: Optional[int] = None

    def __repr__(self) -> str:
        return f"Puller({self.consumer!r}, {self._where}, state_dir={str(self.state_dir)!r})"

    # --- state -------------------------------------------------------------------------

    @property
    def cursor(self) -> Optional[int]:
        """The committed cursor (``None`` before the first commit)."""
        return self._load()["cursor"]

    def state(self) -> Dict[str, Any]:
        """The state as stored: ``cursor``, ``pulled``, ``redelivered``, ``gaps``, ..."""
        return self._load()

    def _load(self) -> Dict[str, Any]:
        path = self.state_dir / STATE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return {"version": STATE_VERSION, "consumer": self.consumer, **self._where,
                    "cursor": None, "server_cursor": None, "next_file": 1, "pulled": 0,
                    "redelivered": 0, "gaps": []}
        try:
            state = json.loads(text)
            where = {k: state.get(k) for k in self._where}
            cursor = state["cursor"]
            ok = (state["version"] == STATE_VERSION and isinstance(state["next_file"], int)
                  and (cursor is None or isinstance(cursor, int)))
        except (ValueError, KeyError, TypeError):
            raise PullError(f"{path}: the state is damaged (not the state of a puller)") from None
        if not ok:
            raise PullError(f"{path}: the state is damaged or of another version")
        if state.get("consumer") != self.consumer or where != self._where:
            raise PullError(
                f"{self.state_dir} holds the state of consumer {state.get('consumer')!r} of "
                f"{ {k: state.get(k) for k in ('server', 'data_dir') if state.get(k)} }; "
                "give another state_dir"
            )
        return state

    def _save(self, state: Dict[str, Any]) -> None:
        """Atomically and durably: a temporary file, synced, renamed, the folder synced."""
        tmp = self.state_dir / f".{STATE}.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_dir / STATE)
        _sync_dir(self.state_dir)

    def _lock(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            return
        fd = os.open(self.state_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise PullError(f"{self.state_dir} is in use by another puller") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- pulling -----------------------------------------------------------------------

    def pull(self, max_exports: Optional[int] = None) -> Batch:
        """Everything after the committed cursor: exports until one brings nothing new
        (at most ``max_exports``), each verified, merged into one :class:`Batch`.

        Blocks while the exports run. Raises :class:`PullError` when seqs do not follow
        on, an :class:`ExportError` for a file that cannot be trusted, and a
        :class:`ServerError` when the server refuses. Nothing is committed: call
        :meth:`commit` once the batch is safely processed.
        """
        self._lock()
        try:
            return self._collect(max_exports)
        finally:
            self._unlock()

    def pull_once(self) -> Batch:
        """One export after the committed cursor (or, after a crash, the files already
        spooled and not committed)."""
        return self.pull(max_exports=1)

    def commit(self, batch: Batch) -> Optional[int]:
        """Commits ``batch``: the next pull starts after ``batch.next_cursor``. Durable
        when it returns (the state is synced), then tells the server (or deletes the
        spooled files). Returns the cursor.

        Raises :class:`PullError` for a batch that does not start at the committed
        cursor (an older one, or one of another puller).
        """
        self._lock()
        try:
            state = self._load()
            if batch.consumer != self.consumer or batch.after != state["cursor"]:
                raise PullError(
                    f"the batch starts after {batch.after}, the committed cursor is "
                    f"{state['cursor']}: commit batches in the order they were pulled"
                )
            if batch.next_cursor is None:
                return state["cursor"]
            state["cursor"] = batch.next_cursor
            state["next_file"] = max(state["next_file"], batch._next_file)
            state["pulled"] += len(batch.records)
            state["redelivered"] += batch.redelivered
            state["gaps"] += [g.to_dict() for g in batch.gaps]
            self._save(state)
            if self.client is not None:
                self._tell_server(state)
            elif not self.keep_files:
                self._clean_spool(state["next_file"])
            return state["cursor"]
        finally:
            self._unlock()

    def _tell_server(self, state: Dict[str, Any]) -> None:
        cursor = state["cursor"]
        if cursor is None or (state.get("server_cursor") or 0) >= cursor:
            return
        try:
            self.client.commit(self.consumer, cursor)  # type: ignore[union-attr]
        except ConflictError as e:
            raise PullError(
                f"committed seq {cursor} here, but the server refused the consumer's cursor: {e}"
            ) from None
        state["server_cursor"] = cursor
        self._save(state)

    def _collect(self, max_exports: Optional[int]) -> Batch:
        state = self._load()
        if self.client is not None and state["cursor"] is not None:
            self._tell_server(state)  # a commit the server did not hear of, before a crash
        batch = Batch(self.consumer, state["cursor"], state["cursor"], _next_file=state["next_file"])
        if self.client is None:
            for n, path in self._spooled(state["next_file"]):
                self._take(batch, read_export(path, self.mac_key), path.name)
                batch.files.append(path)
                batch._next_file = n + 1
            if batch.files and max_exports == 1:
                return batch
        while max_exports is None or batch.exports < max_exports:
            if self.client is not None:
                export, name = self._fetch(batch.next_cursor), "GET /v1/export"
            else:
                path = self.state_dir / f"pull-{batch._next_file:06d}.msgpack"
                self._run_export(path)
                export, name = read_export(path, self.mac_key), path.name
            batch.exports += 1
            new = self._take(batch, export, name)
            if self.client is None:
                if new == 0:
                    path.unlink()  # nothing new: the command committed nothing either
                else:
                    batch.files.append(path)
                    batch._next_file += 1
            if new == 0:
                break
        return batch

    def _fetch(self, cursor: Optional[int]) -> ExportFile:
        if cursor is None:
            data, _ = self.client.export_bytes(consumer=self.consumer, limit=self.limit)  # type: ignore[union-attr]
        else:
            data, _ = self.client.export_bytes(after=cursor, limit=self.limit)  # type: ignore[union-attr]
        return read_export(data, self.mac_key)

    def _run_export(self, path: pathlib.Path) -> None:
        command = [self.bin, "export", "--data-dir", str(self.data_dir), "--consumer",
                   self.consumer, "--out", str(path)]
        if self.limit:
            command += ["--limit", str(self.limit)]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PullError(f"cannot run {self.bin} export: {e}") from None
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise PullError(f"{' '.join(command)} exited with {done.returncode}: "
                            f"{lines[-1] if lines else 'no message'}")

    def _spooled(self, first: int):
        if not self.state_dir.is_dir():
            return []
        found = sorted((int(m[1]), p) for p in self.state_dir.iterdir()
                       if (m := SPOOL.match(p.name)) and int(m[1]) >= first)
        return found

    def _clean_spool(self, next_file: int) -> None:
        for p in self.state_dir.iterdir():
            m = SPOOL.match(p.name)
            if m and int(m[1]) < next_file:
                p.unlink(missing_ok=True)

    def _take(self, batch: Batch, export: ExportFile, name: str) -> int:
        """Adds the records of ``export`` after ``batch.next_cursor`` to the batch; returns
        how many records and gaps it held (0: nothing new)."""
        h = export.header
        cursor = batch.next_cursor
        if h.kinds is not None or h.since is not None or h.until is not None:
            raise PullError(f"{name}: a filtered export cannot be pulled from")
        if cursor is not None and h.after > cursor:
            raise PullError(
                f"{name}: the export starts after seq {h.after} but this puller's cursor is "
                f"{cursor}: seqs {cursor + 1}..={h.after} were taken by another reader of "
                f"consumer {self.consumer}"
            )
        if export.source and export.source not in batch.sources:
            batch.sources.append(export.source)
        expected = h.after + 1
        if h.gap is not None:
            expected = h.gap.to_seq + 1
            if cursor is None or h.gap.to_seq > cursor:
                lost = Gap(max(h.gap.from_seq, (cursor or 0) + 1), h.gap.to_seq, h.gap.reason)
                batch.gaps.append(lost)
        records = export.records
        if records and records[0]["seq"] != expected:
            # the reader checked seqs increase; they must also follow on, hole-free
            raise PullError(f"{name}: seq {records[0]['seq']} where {expected} was due: "
                            "seqs skipped, with no gap declared")
        if records and records[-1]["seq"] != expected + len(records) - 1:
            raise PullError(f"{name}: seqs {records[0]['seq']}..={records[-1]['seq']} hold "
                            f"{len(records)} records: seqs skipped, with no gap declared")
        skip = 0
        if cursor is not None and records and records[0]["seq"] <= cursor:
            skip = min(len(records), cursor - records[0]["seq"] + 1)
            batch.redelivered += skip
        batch.records.extend(records[skip:] if skip else records)
        reached = records[-1]["seq"] if records else expected - 1
        batch.next_cursor = max(cursor or 0, reached, h.after)
        return len(records) + (h.gap is not None)


def _sync_dir(path: pathlib.Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
