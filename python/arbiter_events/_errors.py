"""The package's exceptions: one base, one family per concern, one class per failure."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class ArbiterEventsError(Exception):
    """Base of every error this package raises on purpose."""


# --- reading export files -------------------------------------------------------------


class ExportError(ArbiterEventsError):
    """An export file cannot be trusted: it is not one, it is damaged, or it is unsigned.

    ``path`` names the file when it was read from disk (``None`` for bytes).
    """

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)

    def _at(self, path: Optional[str]) -> "ExportError":
        """The same error, naming ``path`` (used when a file was read from disk)."""
        if path and not self.path:
            self.path = path
            self.args = (f"{path}: {self.reason}",)
        return self


class NotAnExportError(ExportError):
    """The bytes are empty or do not start with an arbiter-events export header."""


class UnsupportedVersionError(ExportError):
    """The header names a layout version this package does not read."""

    def __init__(self, message: str, version: Any = None, path: Optional[str] = None) -> None:
        super().__init__(message, path)
        self.version = version


class TruncatedError(ExportError):
    """The file ends before its trailer: the header, a record or the trailer is cut off."""


class CorruptError(ExportError):
    """The file's structure is wrong: an undecodable value, a trailer that is not one,
    bytes after the trailer, or a field of the wrong type."""


class CountMismatchError(ExportError):
    """The trailer's or the records' count differs from the header's ``count``."""


class ChecksumMismatchError(ExportError):
    """The BLAKE3 checksum in the trailer is not the checksum of the bytes: the file was
    damaged (an accident; a deliberate change is what the MAC detects)."""


class HeaderMismatchError(ExportError):
    """A header field disagrees with what the records determine (``field`` names it)."""

    def __init__(self, message: str, field: str, path: Optional[str] = None) -> None:
        super().__init__(message, path)
        self.field = field


class MacError(ExportError):
    """The file's MAC does not prove it was written, unchanged, by the key's holder."""


class MacMissingError(MacError):
    """A MAC key was given but the file carries no MAC (version 1, or anonymization off)."""


class MacMismatchError(MacError):
    """The MAC is wrong: the file was changed, or it was signed under another key."""


class InvalidMacKeyError(ArbiterEventsError, ValueError):
    """A MAC key is not 32 bytes (64 hex digits)."""


# --- pulling ---------------------------------------------------------------------------


class PullError(ArbiterEventsError):
    """A pull cannot go on without losing or repeating records: the state is damaged or
    belongs to another consumer, seqs do not follow on, or the export command failed."""


# --- the HTTP server -------------------------------------------------------------------


class ServerError(ArbiterEventsError):
    """``arbiter-events serve`` answered with an error, or could not be reached.

    ``status`` is the HTTP status (``None`` when no answer came), ``kind`` the body's
    ``error`` field, ``body`` the whole decoded error body (a dict, possibly empty).
    """

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        kind: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.body = dict(body or {})


class ConnectionFailedError(ServerError):
    """No HTTP answer: the server is not listening, or the connection broke."""


class BadRequestError(ServerError):
    """400: a parameter or a body is invalid (``parameter`` names it when the server did)."""

    @property
    def parameter(self) -> Optional[str]:
        """The parameter the server refused, if it named one."""
        value = self.body.get("parameter")
        return value if isinstance(value, str) else None


class UnauthorizedError(ServerError):
    """401: the token is missing or wrong."""


class ForbiddenError(ServerError):
    """403: the token is valid but not for this route (a record token on an export route)."""


class NotFoundError(ServerError):
    """404: an unknown path or an unknown execution id."""


class ConflictError(ServerError):
    """409: a task completed twice, or a cursor past the synced position or going back."""


class PayloadTooLargeError(ServerError):
    """413: the body is over the server's limit."""


class TooManyEventsError(PayloadTooLargeError):
    """413 ``too_many_events``: more events than the per-request limit; nothing was stored."""

    @property
    def limit(self) -> Optional[int]:
        """The server's per-request event limit."""
        value = self.body.get("limit")
        return value if isinstance(value, int) else None


class QueueFullError(ServerError):
    """429: the collector's queue is full; ``retry_from`` is the first index not taken."""

    @property
    def retry_from(self) -> Optional[int]:
        """The index of the first event of the batch the server did not take."""
        value = self.body.get("retry_from")
        return value if isinstance(value, int) else None


_BY_STATUS = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: QueueFullError,
}


def server_error(status: int, body: Mapping[str, Any], what: str) -> ServerError:
    """The typed error for an HTTP error answer to ``what`` (e.g. ``POST /v1/events``)."""
    kind = body.get("error") if isinstance(body.get("error"), str) else None
    message = body.get("message") if isinstance(body.get("message"), str) else None
    cls = _BY_STATUS.get(status, ServerError)
    if status == 413 and kind == "too_many_events":
        cls = TooManyEventsError
    text = f"{what}: http {status}"
    if kind:
        text += f" {kind}"
    if message:
        text += f": {message}"
    return cls(text, status=status, kind=kind, body=body)
