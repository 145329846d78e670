"""Read, verify and table arbiter-events exports; pull increments; record over HTTP.

Hello, world — pull what is new for the consumer ``rl`` into Parquet, one file per kind::

    from arbiter_events import Puller

    puller = Puller("rl", data_dir="./arbiter-data")   # or server="http://127.0.0.1:7474", token=...
    batch = puller.pull()                             # verified, exactly once by seq
    batch.write_parquet("parquet/")                   # or batch.to_arrow("routing_decision")
    puller.commit(batch)

The core needs only ``msgpack`` and ``blake3``; tables need the ``arrow`` extra
(pyarrow), DataFrames ``pandas``, and ``to_dataset`` the ``datasets`` extra.

It is not: a writer of exports (the Rust collector writes them), a server, or a way to
undo pseudonymization (the MAC key verifies files and computes no pseudonym).
"""

from ._client import Client, RecordResult, Rejection
from ._errors import (
    ArbiterEventsError,
    BadRequestError,
    ChecksumMismatchError,
    ConflictError,
    ConnectionFailedError,
    CorruptError,
    CountMismatchError,
    ExportError,
    ForbiddenError,
    HeaderMismatchError,
    InvalidMacKeyError,
    MacError,
    MacMismatchError,
    MacMissingError,
    NotAnExportError,
    NotFoundError,
    PayloadTooLargeError,
    PullError,
    QueueFullError,
    ServerError,
    TooManyEventsError,
    TruncatedError,
    UnauthorizedError,
    UnsupportedVersionError,
)
from ._events import (
    EVENT_CLASSES,
    KINDS,
    AgentRegistered,
    AgentStatusChanged,
    Alternative,
    Baseline,
    ConstitutionalValidation,
    Custom,
    EvaluationOutcome,
    Event,
    JudgmentRecorded,
    MinimalityEvaluated,
    Outcome,
    RlTrainingMetrics,
    RoutingDecision,
    TaskAbandoned,
    TaskCompleted,
    TaskStarted,
    ThinkingBudgetAllocated,
    ThinkingBudgetUsed,
    AnomalyDetected,
    UnknownRecord,
    Violation,
    typed,
)
from ._export import (
    FORMAT,
    VERSIONS,
    ExportFile,
    Gap,
    Header,
    SourceRange,
    Trailer,
    mac_key_from_hex,
    read_export,
    read_mac_key,
)
from ._puller import Batch, Puller, default_state_dir
from ._tabular import COLUMNS, ENVELOPE, Tabular, arrow_schema

__version__ = "0.1.0"

__all__ = [
    "AgentRegistered",
    "AgentStatusChanged",
    "Alternative",
    "ArbiterEventsError",
    "BadRequestError",
    "Baseline",
    "Batch",
    "COLUMNS",
    "ChecksumMismatchError",
    "Client",
    "ConflictError",
    "ConnectionFailedError",
    "ConstitutionalValidation",
    "CorruptError",
    "CountMismatchError",
    "Custom",
    "ENVELOPE",
    "EVENT_CLASSES",
    "EvaluationOutcome",
    "Event",
    "ExportError",
    "ExportFile",
    "FORMAT",
    "ForbiddenError",
    "Gap",
    "Header",
    "HeaderMismatchError",
    "InvalidMacKeyError",
    "JudgmentRecorded",
    "KINDS",
    "MacError",
    "MacMismatchError",
    "MacMissingError",
    "MinimalityEvaluated",
    "NotAnExportError",
    "NotFoundError",
    "Outcome",
    "PayloadTooLargeError",
    "PullError",
    "Puller",
    "QueueFullError",
    "RecordResult",
    "Rejection",
    "RlTrainingMetrics",
    "RoutingDecision",
    "ServerError",
    "SourceRange",
    "Tabular",
    "TaskAbandoned",
    "TaskCompleted",
    "TaskStarted",
    "ThinkingBudgetAllocated",
    "ThinkingBudgetUsed",
    "AnomalyDetected",
    "TooManyEventsError",
    "Trailer",
    "TruncatedError",
    "UnauthorizedError",
    "UnknownRecord",
    "UnsupportedVersionError",
    "VERSIONS",
    "Violation",
    "arrow_schema",
    "default_state_dir",
    "mac_key_from_hex",
    "read_export",
    "read_mac_key",
    "typed",
]
