"""Records as tables: an explicit Arrow schema per event kind, built column by column.

pyarrow, pandas and datasets are optional (the ``arrow``, ``pandas`` and ``datasets``
extras); they are imported only when a table is asked for.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pathlib
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ._events import EVENT_CLASSES, KINDS, typed

# A column: (name, type, nullable). Types: "string", "f64", "u64", "u32", "bool",
# "json" (nested attribute values, as JSON text), ("list", T), ("struct", COLUMNS),
# ("map", "string", "f64").
Column = Tuple[str, Any, bool]

_BASELINE = ("struct", [("latency_ms", "f64", False), ("accuracy", "f64", False),
                        ("cost_per_task", "f64", False), ("reliability", "f64", False)])
_ALTERNATIVE = ("struct", [("agent_id", "string", False), ("score", "f64", False),
                           ("reason", "string", False)])
_OUTCOME = ("struct", [("status", "string", False), ("quality_score", "f64", False),
                       ("efficiency_score", "f64", False), ("tokens_consumed", "u64", False)])
_VIOLATION = ("struct", [("severity", "string", False), ("message", "string", False),
                         ("rule", "string", True)])
_SCORES = ("map", "string", "f64")

ENVELOPE: List[Column] = [
    ("seq", "u64", False),
    ("time", "timestamp", False),
    ("occurred_at", "timestamp", True),
]
"""The columns every table starts with: ``seq``, ``time`` and ``occurred_at`` (UTC,
nanoseconds)."""

COLUMNS: Dict[str, List[Column]] = {
    "agent_registered": [
        ("agent_id", "string", False),
        ("capabilities", ("list", "string"), False),
        ("baseline", _BASELINE, False),
    ],
    "agent_status_changed": [
        ("agent_id", "string", False),
        ("status", "string", False),
        ("previous", "string", True),
        ("reason", "string", True),
    ],
    "routing_decision": [
        ("task_id", "string", False),
        ("selected_agent", "string", False),
        ("strategy", "string", False),
        ("confidence", "f64", False),
        ("alternatives", ("list", _ALTERNATIVE), False),
        ("rationale", "string", False),
    ],
    "task_started": [
        ("execution_id", "string", False),
        ("task_id", "string", False),
        ("agent_id", "string", False),
        ("context", "json", False),
    ],
    "task_completed": [
        ("execution_id", "string", False),
        ("task_id", "string", False),
        ("agent_id", "string", False),
        ("outcome", _OUTCOME, False),
        ("duration_ms", "f64", False),
    ],
    "task_abandoned": [
        ("execution_id", "string", False),
        ("task_id", "string", False),
        ("agent_id", "string", False),
        ("duration_ms", "f64", False),
    ],
    "constitutional_validation": [
        ("task_id", "string", False),
        ("agent_id", "string", False),
        ("valid", "bool", False),
        ("violations", ("list", _VIOLATION), False),
        ("compliance_score", "f64", False),
        ("processing_time_ms", "f64", False),
        ("rule_count", "u32", False),
    ],
    "thinking_budget_allocated": [
        ("task_id", "string", False),
        ("allocated_tokens", "u64", False),
        ("complexity", "string", False),
        ("confidence", "f64", False),
    ],
    "thinking_budget_used": [
        ("task_id", "string", False),
        ("tokens_used", "u64", False),
        ("tokens_allocated", "u64", False),
    ],
    "minimality_evaluated": [
        ("task_id", "string", False),
        ("minimality_factor", "f64", False),
        ("ast_similarity", "f64", False),
        ("scaffolding_penalty", "f64", False),
        ("lines_changed", "u64", False),
        ("quality_assessment", "string", False),
    ],
    "judgment_recorded": [
        ("task_id", "string", False),
        ("overall_score", "f64", False),
        ("overall_confidence", "f64", False),
        ("all_criteria_pass", "bool", False),
        ("criteria_scores", _SCORES, False),
        ("evaluation_time_ms", "f64", False),
    ],
    "evaluation_outcome": [
        ("task_id", "string", False),
        ("passed", "bool", False),
        ("score", "f64", False),
        ("rubric_scores", _SCORES, False),
        ("feedback", "string", True),
    ],
    "rl_training_metrics": [
        ("trajectories_processed", "u64", False),
        ("average_reward", "f64", False),
        ("policy_loss", "f64", False),
        ("value_loss", "f64", False),
        ("kl_divergence", "f64", False),
        ("training_time_ms", "f64", False),
    ],
    "custom": [
        ("name", "string", False),
        ("attributes", "json", False),
    ],
    "anomaly_detected": [
        ("rule", "string", False),
        ("kind", "string", False),
        ("scope", "string", False),
        ("agent_id", "string", True),
        ("observed", "f64", False),
        ("threshold", "f64", False),
        ("baseline", "f64", True),
        ("window_secs", "u64", False),
        ("samples", "u64", False),
    ],
}
"""The event fields' columns of each kind, after :data:`ENVELOPE`."""


WIDE_RENAMES: Dict[str, Dict[str, str]] = {"anomaly_detected": {"baseline": "alert_baseline"}}
"""Fields that the wide table names otherwise, by kind: their name is another kind's
column of another type (``agent_registered.baseline`` is a struct, an anomaly's a number)."""


def _all_kinds_columns() -> List[Column]:
    """The wide table of every kind: the envelope, ``type``, then each field once, nullable."""
    seen: Dict[str, Any] = {}
    for event_kind, columns in COLUMNS.items():
        renames = WIDE_RENAMES.get(event_kind, {})
        for name, kind, _ in columns:
            name = renames.get(name, name)
            if seen.setdefault(name, kind) != kind:  # pragma: no cover - a schema defect
                raise AssertionError(f"column {name} has two types")
    return ENVELOPE + [("type", "string", False)] + [(n, t, True) for n, t in seen.items()]


WIDE_COLUMNS: List[Column] = _all_kinds_columns()


def _pa():
    try:
        import pyarrow
    except ImportError:
        raise ImportError(
            "tables need pyarrow: pip install 'arbiter-events[arrow]'"
        ) from None
    return pyarrow


def _arrow_type(pa, kind: Any):
    if kind == "string" or kind == "json":
        return pa.string()
    if kind == "f64":
        return pa.float64()
    if kind == "u64":
        return pa.uint64()
    if kind == "u32":
        return pa.uint32()
    if kind == "bool":
        return pa.bool_()
    if kind == "timestamp":
        return pa.timestamp("ns", tz="UTC")
    if kind[0] == "list":
        return pa.list_(pa.field("item", _arrow_type(pa, kind[1]), nullable=False))
    if kind[0] == "struct":
        return pa.struct([pa.field(n, _arrow_type(pa, t), nullable=o) for n, t, o in kind[1]])
    if kind[0] == "map":
        return pa.map_(_arrow_type(pa, kind[1]), _arrow_type(pa, kind[2]))
    raise AssertionError(f"unknown column type {kind!r}")  # pragma: no cover


def _columns(kind: Optional[str]) -> List[Column]:
    if kind is None:
        return WIDE_COLUMNS
    return ENVELOPE + COLUMNS[kind]


def arrow_schema(kind: Optional[str] = None):
    """The explicit ``pyarrow.Schema`` of a kind's table (``None``: every kind, wide).

    Raises ``KeyError`` for a kind this package does not know.
    """
    pa = _pa()
    if kind is not None and kind not in COLUMNS:
        raise KeyError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
    meta = {b"arbiter_events.kind": (kind or "*").encode()}
    return pa.schema(
        [pa.field(n, _arrow_type(pa, t), nullable=o) for n, t, o in _columns(kind)],
        metadata=meta,
    )


def _dumps(value: Any) -> Optional[str]:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@contextlib.contextmanager
def no_gc():
    """The cyclic garbage collector paused: building many small acyclic containers (the
    decoded records) otherwise triggers it again and again, for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build_table(records: Sequence[Dict[str, Any]], kind: Optional[str]):
    """The table of ``records`` (all of kind ``kind``, or of any kind when ``None``).

    Columns, not rows: the typed fields of every record are converted in one pass by
    pyarrow (a struct array over the record maps, split into its columns); only the JSON
    text columns go through Python. Raises ``ValueError`` when a record lacks a field its
    kind requires.
    """
    pa = _pa()
    if kind is None and any(r.get("type") in WIDE_RENAMES for r in records):
        records = [_wide_record(r) for r in records]
    schema = arrow_schema(kind)
    columns = _columns(kind)
    typed_fields = [f for f, (_, t, _) in zip(schema, columns) if t != "json"]
    with no_gc():
        # nullable here, checked below: a missing key converts to null
        loose = pa.struct([pa.field(f.name, f.type, nullable=True) for f in typed_fields])
        struct = pa.array(records, type=loose)
        parts = dict(zip((f.name for f in typed_fields), struct.flatten()))
        for f, (name, t, _) in zip(schema, columns):
            if t == "json":
                parts[name] = pa.array([_dumps(r.get(name)) for r in records], type=f.type)
    for f in schema:
        if not f.nullable and parts[f.name].null_count:
            raise ValueError(f"{parts[f.name].null_count} records lack the field `{f.name}` "
                             f"of their kind {kind}")
    return pa.Table.from_arrays([parts[f.name] for f in schema], schema=schema)


def _wide_record(record: Dict[str, Any]) -> Dict[str, Any]:
    renames = WIDE_RENAMES.get(record.get("type"))
    if not renames:
        return record
    return {renames.get(k, k): v for k, v in record.items()}


def _inferred_table(records: Sequence[Dict[str, Any]]):
    """A table of records of a kind this package does not know: envelope typed, the rest
    inferred by pyarrow."""
    pa = _pa()
    envelope = [pa.field(n, _arrow_type(pa, t), nullable=o) for n, t, o in ENVELOPE]
    arrays = [pa.array([r.get(f.name) for r in records], type=f.type) for f in envelope]
    names = []
    for r in records:
        for k in r:
            if k not in ("seq", "time", "occurred_at", "type") and k not in names:
                names.append(k)
    rest = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in records]) if names else None
    table = pa.Table.from_arrays(arrays, schema=pa.schema(envelope))
    for k in names:
        table = table.append_column(k, rest.column(k))  # type: ignore[union-attr]
    return table


def _datasets_compatible(pa, table):
    """Maps become lists of {key, value} structs: `datasets` has no map feature."""
    for i, f in enumerate(table.schema):
        if pa.types.is_map(f.type):
            chunks = []
            for chunk in table.column(i).chunks:
                entries = pa.StructArray.from_arrays(
                    [chunk.keys, chunk.items], names=["key", "value"]
                )
                chunks.append(pa.ListArray.from_arrays(chunk.offsets, entries, mask=chunk.is_null()))
            table = table.set_column(i, f.name, pa.chunked_array(chunks) if chunks else
                                     pa.chunked_array([], type=pa.list_(pa.struct(
                                         [("key", f.type.key_type), ("value", f.type.item_type)]))))
    return table


class Tabular:
    """What every set of records offers (an :class:`ExportFile`, a pulled batch):
    counts, typed records, Arrow, pandas, datasets and Parquet. Needs ``self.records``."""

    records: List[Dict[str, Any]]

    def kinds(self) -> Dict[str, int]:
        """How many records of each kind, by ``type`` tag, in first-seen order."""
        return dict(Counter(r["type"] for r in self.records))

    def of_kind(self, kind: str) -> List[Dict[str, Any]]:
        """The record maps of one kind."""
        return [r for r in self.records if r["type"] == kind]

    def typed(self, kind: Optional[str] = None) -> List[Any]:
        """The records as dataclasses (one class per kind, e.g. :class:`RoutingDecision`);
        only those of ``kind`` when given."""
        records: Iterable[Dict[str, Any]] = self.records if kind is None else self.of_kind(kind)
        return [typed(r) for r in records]

    def to_arrow(self, kind: Optional[str] = None):
        """A ``pyarrow.Table`` with the explicit schema of ``kind`` (:func:`arrow_schema`):
        ``seq``, ``time``, ``occurred_at``, then the event's fields; a merged export's
        table has ``source`` after ``seq``. With ``kind=None``,
        every record in one wide table: ``type`` and every kind's fields, null where a
        kind has no such field. Attribute maps (``context``, ``attributes``) are JSON text.
        A kind this package does not know gets its non-envelope columns inferred.

        Raises ``ImportError`` without pyarrow.
        """
        records = self.records if kind is None else self.of_kind(kind)
        if kind is None or kind in EVENT_CLASSES:
            table = build_table(records, kind)
        else:
            table = _inferred_table(records)
        if records and "source" in records[0]:
            # A merged export of several sources: which one recorded each record.
            pa = _pa()
            column = pa.array([r["source"] for r in records], type=pa.string())
            table = table.add_column(1, pa.field("source", pa.string(), nullable=False), column)
        return table

    def to_pandas(self, kind: Optional[str] = None):
        """:meth:`to_arrow` as a ``pandas.DataFrame`` (times as ``datetime64[ns, UTC]``)."""
        return self.to_arrow(kind).to_pandas()

    def to_dataset(self, kind: Optional[str] = None):
        """:meth:`to_arrow` as a Hugging Face ``datasets.Dataset`` (maps of scores become
        lists of ``{key, value}``, which ``datasets`` can represent).

        Raises ``ImportError`` without the ``datasets`` package.
        """
        try:
            import datasets
        except ImportError:
            raise ImportError("to_dataset needs datasets: pip install 'arbiter-events[datasets]'") from None
        pa = _pa()
        return datasets.Dataset(_datasets_compatible(pa, self.to_arrow(kind)))

    def write_parquet(self, directory, kinds: Optional[Iterable[str]] = None) -> Dict[str, pathlib.Path]:
        """Writes one Parquet file per kind present (``<directory>/<kind>.parquet``, each
        replaced atomically), or per kind of ``kinds``; returns the paths by kind.
        """
        _pa()
        import pyarrow.parquet as pq

        out = pathlib.Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        wanted = list(kinds) if kinds is not None else list(self.kinds())
        written: Dict[str, pathlib.Path] = {}
        for kind in wanted:
            path = out / f"{kind}.parquet"
            tmp = out / f".{kind}.parquet.tmp"
            pq.write_table(self.to_arrow(kind), tmp)
            os.replace(tmp, path)
            written[kind] = path
        return written
