"""Typed records: one dataclass per event kind, with the nested value types.

Each kind's class holds the event's fields (in the order of the file) and then the
record's ``seq``, ``time`` and ``occurred_at`` (Unix nanoseconds; ``None`` for an event
not yet recorded). ``from_record`` builds one from a decoded record map, ``to_record``
gives the map back and ``to_event`` the event's JSON form (``{"type": ..., fields}``,
what ``POST /v1/events`` takes). The classes mirror ``schemas/record.schema.json``; the
tests check them against it and against ``fixtures/golden/``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Type, TypeVar

T = TypeVar("T", bound="Event")

Attributes = Dict[str, Any]
"""An ordered map of string keys to null, bool, int, float, str, list or map values."""

Scores = Dict[str, float]
"""A score in [0, 1] per named criterion."""


@dataclass(frozen=True)
class Baseline:
    """An agent's expected performance at registration."""

    latency_ms: float
    accuracy: float
    cost_per_task: float
    reliability: float


@dataclass(frozen=True)
class Alternative:
    """An agent the arbiter considered and did not select."""

    agent_id: str
    score: float
    reason: str


@dataclass(frozen=True)
class Outcome:
    """The result of an execution (``status``: succeeded, failed, timed_out, cancelled)."""

    status: str
    quality_score: float
    efficiency_score: float
    tokens_consumed: int


@dataclass(frozen=True)
class Violation:
    """One rule a result broke (``severity``: low, medium, high, critical)."""

    severity: str
    message: str
    rule: Optional[str]


@dataclass(frozen=True)
class Event:
    """Base of the per-kind classes; ``KIND`` is the ``type`` tag."""

    KIND: ClassVar[str] = ""
    _NESTED: ClassVar[Dict[str, Any]] = {}

    @classmethod
    def from_record(cls: Type[T], record: Mapping[str, Any]) -> T:
        """The typed record of a decoded record map (or an event's JSON form).

        Raises ``ValueError`` when the map is of another kind or lacks a field.
        """
        if record.get("type") != cls.KIND:
            raise ValueError(f"a {record.get('type')!r} record is not a {cls.KIND}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in ("seq", "time", "occurred_at"):
                values[f.name] = record.get(f.name)
                continue
            if f.name not in record:
                raise ValueError(f"a {cls.KIND} record has no field `{f.name}`")
            value = record[f.name]
            nested = cls._NESTED.get(f.name)
            if nested is not None and value is not None:
                inner, many = nested
                value = [inner(**v) for v in value] if many else inner(**value)
            values[f.name] = value
        return cls(**values)

    def to_event(self) -> Dict[str, Any]:
        """The event's JSON form: ``type`` then the fields (no seq, time, occurred_at)."""
        out: Dict[str, Any] = {"type": self.KIND}
        for f in dataclasses.fields(self):
            if f.name in ("seq", "time", "occurred_at"):
                continue
            value = getattr(self, f.name)
            if f.name in self._NESTED and value is not None:
                _, many = self._NESTED[f.name]
                value = [dataclasses.asdict(v) for v in value] if many else dataclasses.asdict(value)
            out[f.name] = value
        return out

    def to_record(self) -> Dict[str, Any]:
        """The record map as the export writes it: seq, time, occurred_at when given,
        type, then the fields."""
        out: Dict[str, Any] = {"seq": self.seq, "time": self.time}  # type: ignore[attr-defined]
        if self.occurred_at is not None:  # type: ignore[attr-defined]
            out["occurred_at"] = self.occurred_at  # type: ignore[attr-defined]
        out.update(self.to_event())
        return out


def _kind(name: str, **nested: Any):
    def wrap(cls):
        cls.KIND = name
        cls._NESTED = nested
        return cls

    return wrap


@_kind("agent_registered", baseline=(Baseline, False))
@dataclass(frozen=True)
class AgentRegistered(Event):
    """An agent joined the registry."""

    agent_id: str
    capabilities: List[str]
    baseline: Baseline
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("agent_status_changed")
@dataclass(frozen=True)
class AgentStatusChanged(Event):
    """An agent's availability changed (``status``: available, busy, offline, maintenance)."""

    agent_id: str
    status: str
    previous: Optional[str]
    reason: Optional[str]
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("routing_decision", alternatives=(Alternative, True))
@dataclass(frozen=True)
class RoutingDecision(Event):
    """The arbiter routed a task to an agent (``strategy``: multi_armed_bandit,
    capability_match, load_balance, random)."""

    task_id: str
    selected_agent: str
    strategy: str
    confidence: float
    alternatives: List[Alternative]
    rationale: str
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("task_started")
@dataclass(frozen=True)
class TaskStarted(Event):
    """An execution of a task began."""

    execution_id: str
    task_id: str
    agent_id: str
    context: Attributes
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("task_completed", outcome=(Outcome, False))
@dataclass(frozen=True)
class TaskCompleted(Event):
    """An execution finished with an outcome."""

    execution_id: str
    task_id: str
    agent_id: str
    outcome: Outcome
    duration_ms: float
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("task_abandoned")
@dataclass(frozen=True)
class TaskAbandoned(Event):
    """An execution was dropped without completion."""

    execution_id: str
    task_id: str
    agent_id: str
    duration_ms: float
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("constitutional_validation", violations=(Violation, True))
@dataclass(frozen=True)
class ConstitutionalValidation(Event):
    """A constitutional (CAWS) validation ran."""

    task_id: str
    agent_id: str
    valid: bool
    violations: List[Violation]
    compliance_score: float
    processing_time_ms: float
    rule_count: int
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("thinking_budget_allocated")
@dataclass(frozen=True)
class ThinkingBudgetAllocated(Event):
    """A thinking budget was allocated to a task (``complexity``: trivial, standard, complex)."""

    task_id: str
    allocated_tokens: int
    complexity: str
    confidence: float
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("thinking_budget_used")
@dataclass(frozen=True)
class ThinkingBudgetUsed(Event):
    """A task used (part of) its thinking budget."""

    task_id: str
    tokens_used: int
    tokens_allocated: int
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("minimality_evaluated")
@dataclass(frozen=True)
class MinimalityEvaluated(Event):
    """A change was scored for minimality."""

    task_id: str
    minimality_factor: float
    ast_similarity: float
    scaffolding_penalty: float
    lines_changed: int
    quality_assessment: str
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("judgment_recorded")
@dataclass(frozen=True)
class JudgmentRecorded(Event):
    """A judge scored a task."""

    task_id: str
    overall_score: float
    overall_confidence: float
    all_criteria_pass: bool
    criteria_scores: Scores
    evaluation_time_ms: float
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("evaluation_outcome")
@dataclass(frozen=True)
class EvaluationOutcome(Event):
    """An evaluation passed or failed a task."""

    task_id: str
    passed: bool
    score: float
    rubric_scores: Scores
    feedback: Optional[str]
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("rl_training_metrics")
@dataclass(frozen=True)
class RlTrainingMetrics(Event):
    """Metrics of one RL training step."""

    trajectories_processed: int
    average_reward: float
    policy_loss: float
    value_loss: float
    kl_divergence: float
    training_time_ms: float
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("custom")
@dataclass(frozen=True)
class Custom(Event):
    """An application-defined event (typed variants are preferred)."""

    name: str
    attributes: Attributes
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@_kind("anomaly_detected")
@dataclass(frozen=True)
class AnomalyDetected(Event):
    """An alert rule fired: made by the collector from its live aggregates."""

    rule: str
    kind: str
    scope: str
    agent_id: Optional[str]
    observed: float
    threshold: float
    baseline: Optional[float]
    window_secs: int
    samples: int
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None


@dataclass(frozen=True)
class UnknownRecord:
    """A record of a kind this package does not know (written by a newer collector):
    its map as decoded."""

    type: str
    fields: Dict[str, Any]
    seq: Optional[int] = None
    time: Optional[int] = None
    occurred_at: Optional[int] = None

    def to_record(self) -> Dict[str, Any]:
        """The record map as it was read."""
        out: Dict[str, Any] = {"seq": self.seq, "time": self.time}
        if self.occurred_at is not None:
            out["occurred_at"] = self.occurred_at
        out["type"] = self.type
        out.update(self.fields)
        return out


EVENT_CLASSES: Dict[str, Type[Event]] = {
    cls.KIND: cls
    for cls in (
        AgentRegistered,
        AgentStatusChanged,
        RoutingDecision,
        TaskStarted,
        TaskCompleted,
        TaskAbandoned,
        ConstitutionalValidation,
        ThinkingBudgetAllocated,
        ThinkingBudgetUsed,
        MinimalityEvaluated,
        JudgmentRecorded,
        EvaluationOutcome,
        RlTrainingMetrics,
        Custom,
        AnomalyDetected,
    )
}
"""The class of each event kind, by its ``type`` tag, in the schema's order."""

KINDS = tuple(EVENT_CLASSES)
"""Every event kind this package knows, by ``type`` tag."""


def typed(record: Mapping[str, Any]):
    """The dataclass of one decoded record map (:class:`UnknownRecord` for a new kind)."""
    cls = EVENT_CLASSES.get(record.get("type"))  # type: ignore[arg-type]
    if cls is None:
        rest = {k: v for k, v in record.items() if k not in ("seq", "time", "occurred_at", "type")}
        return UnknownRecord(
            str(record.get("type")), rest, record.get("seq"), record.get("time"),
            record.get("occurred_at"),
        )
    return cls.from_record(record)
