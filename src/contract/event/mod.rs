//! The wire contract: one [`Event`] enum, one struct per variant, grouped by family.
//!
//! Field names are snake_case and stable; renaming one is a breaking change. Every
//! event is validated by [`Collector::record`](crate::Collector::record) before it is
//! queued (see [`ValidationError`]).

mod agent;
mod anomaly;
mod attributes;
mod quality;
mod routing;
mod task;
mod training;
pub(crate) mod validate;

use serde::{Deserialize, Serialize};

pub use agent::{AgentRegistered, AgentStatus, AgentStatusChanged, Baseline};
pub use anomaly::AnomalyDetected;
pub use attributes::{Attributes, Value};
pub use quality::{
    Complexity, ConstitutionalValidation, EvaluationOutcome, JudgmentRecorded, MinimalityEvaluated,
    Severity, ThinkingBudgetAllocated, ThinkingBudgetUsed, Violation,
};
pub use routing::{Alternative, RoutingDecision, RoutingStrategy};
pub use task::{OutcomeStatus, TaskAbandoned, TaskCompleted, TaskOutcome, TaskStarted};
pub use training::{Custom, RlTrainingMetrics};
pub use validate::{Rule, ValidationError};

/// Something the arbiter decided or observed.
///
/// Serialized internally tagged: `{"type": "routing_decision", "task_id": ..., ...}`.
///
/// ```
/// use arbiter_events::{Event, ThinkingBudgetUsed};
/// let event = Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
///     task_id: "task-1".into(),
///     tokens_used: 900,
///     tokens_allocated: 1000,
/// });
/// assert_eq!(event.kind().as_str(), "thinking_budget_used");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// An agent joined the registry.
    AgentRegistered(AgentRegistered),
    /// An agent's availability changed.
    AgentStatusChanged(AgentStatusChanged),
    /// The arbiter routed a task to an agent.
    RoutingDecision(RoutingDecision),
    /// An execution of a task began.
    TaskStarted(TaskStarted),
    /// An execution finished with an outcome.
    TaskCompleted(TaskCompleted),
    /// An execution was dropped without completion.
    TaskAbandoned(TaskAbandoned),
    /// A constitutional (CAWS) validation ran.
    ConstitutionalValidation(ConstitutionalValidation),
    /// A thinking budget was allocated to a task.
    ThinkingBudgetAllocated(ThinkingBudgetAllocated),
    /// A task used (part of) its thinking budget.
    ThinkingBudgetUsed(ThinkingBudgetUsed),
    /// A change was scored for minimality.
    MinimalityEvaluated(MinimalityEvaluated),
    /// A judge scored a task.
    JudgmentRecorded(JudgmentRecorded),
    /// An evaluation passed or failed a task.
    EvaluationOutcome(EvaluationOutcome),
    /// Metrics of one RL training step.
    RlTrainingMetrics(RlTrainingMetrics),
    /// An application-defined event (typed variants are preferred).
    Custom(Custom),
    /// An alert rule fired (made by the collector; cannot be recorded).
    AnomalyDetected(AnomalyDetected),
}

macro_rules! kinds {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The kind of an [`Event`], without its payload.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum EventKind {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            /// The `type` tag of this kind on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// The kind named by a `type` tag.
            pub fn from_name(name: &str) -> Option<EventKind> {
                match name {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }

        impl Event {
            /// Reads the fields of an event of `kind` (everything but `type`).
            pub(crate) fn from_fields<'de, D: serde::Deserializer<'de>>(
                kind: EventKind,
                fields: D,
            ) -> Result<Event, D::Error> {
                match kind {
                    $(EventKind::$variant => $variant::deserialize(fields).map(Event::$variant),)*
                }
            }

            /// The kind of this event.
            pub const fn kind(&self) -> EventKind {
                match self {
                    $(Event::$variant(_) => EventKind::$variant,)*
                }
            }
        }
    };
}

kinds! {
    AgentRegistered => "agent_registered",
    AgentStatusChanged => "agent_status_changed",
    RoutingDecision => "routing_decision",
    TaskStarted => "task_started",
    TaskCompleted => "task_completed",
    TaskAbandoned => "task_abandoned",
    ConstitutionalValidation => "constitutional_validation",
    ThinkingBudgetAllocated => "thinking_budget_allocated",
    ThinkingBudgetUsed => "thinking_budget_used",
    MinimalityEvaluated => "minimality_evaluated",
    JudgmentRecorded => "judgment_recorded",
    EvaluationOutcome => "evaluation_outcome",
    RlTrainingMetrics => "rl_training_metrics",
    Custom => "custom",
    // Appended last: the data directory's frames store the kind's number.
    AnomalyDetected => "anomaly_detected",
}

impl EventKind {
    /// The number of kinds.
    pub const COUNT: usize = EventKind::ALL.len();

    /// A dense index in `0..EventKind::COUNT`.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::from_name(s).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// A string that names no [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind `{0}`")]
pub struct UnknownKind(pub String);

macro_rules! from_variants {
    ($($variant:ident),* $(,)?) => {
        $(
            impl From<$variant> for Event {
                fn from(value: $variant) -> Event {
                    Event::$variant(value)
                }
            }
        )*
    };
}

from_variants!(
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
);

/// The identifiers an event carries, by the field that holds them.
impl Event {
    /// The task this event is about, for every kind that names one.
    ///
    /// ```
    /// use arbiter_events::{Event, ThinkingBudgetUsed};
    /// let event = Event::from(ThinkingBudgetUsed {
    ///     task_id: "task-1".into(),
    ///     tokens_used: 900,
    ///     tokens_allocated: 1000,
    /// });
    /// assert_eq!(event.task_id(), Some("task-1"));
    /// assert_eq!(event.agent_id(), None);
    /// ```
    pub fn task_id(&self) -> Option<&str> {
        match self {
            Event::RoutingDecision(e) => Some(&e.task_id),
            Event::TaskStarted(e) => Some(&e.task_id),
            Event::TaskCompleted(e) => Some(&e.task_id),
            Event::TaskAbandoned(e) => Some(&e.task_id),
            Event::ConstitutionalValidation(e) => Some(&e.task_id),
            Event::ThinkingBudgetAllocated(e) => Some(&e.task_id),
            Event::ThinkingBudgetUsed(e) => Some(&e.task_id),
            Event::MinimalityEvaluated(e) => Some(&e.task_id),
            Event::JudgmentRecorded(e) => Some(&e.task_id),
            Event::EvaluationOutcome(e) => Some(&e.task_id),
            Event::AgentRegistered(_)
            | Event::AgentStatusChanged(_)
            | Event::RlTrainingMetrics(_)
            | Event::Custom(_)
            | Event::AnomalyDetected(_) => None,
        }
    }

    /// The agent this event is about, for every kind that names one: `agent_id`, or
    /// `selected_agent` for a [`RoutingDecision`] (its alternatives are not included).
    ///
    /// ```
    /// use arbiter_events::{Event, RoutingDecision, RoutingStrategy};
    /// let event = Event::from(RoutingDecision {
    ///     task_id: "task-1".into(),
    ///     selected_agent: "agent-a".into(),
    ///     strategy: RoutingStrategy::Random,
    ///     confidence: 0.5,
    ///     alternatives: vec![],
    ///     rationale: String::new(),
    /// });
    /// assert_eq!(event.agent_id(), Some("agent-a"));
    /// assert_eq!(event.execution_id(), None);
    /// ```
    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Event::AgentRegistered(e) => Some(&e.agent_id),
            Event::AgentStatusChanged(e) => Some(&e.agent_id),
            Event::RoutingDecision(e) => Some(&e.selected_agent),
            Event::TaskStarted(e) => Some(&e.agent_id),
            Event::TaskCompleted(e) => Some(&e.agent_id),
            Event::TaskAbandoned(e) => Some(&e.agent_id),
            Event::ConstitutionalValidation(e) => Some(&e.agent_id),
            Event::AnomalyDetected(e) => e.agent_id.as_deref(),
            Event::ThinkingBudgetAllocated(_)
            | Event::ThinkingBudgetUsed(_)
            | Event::MinimalityEvaluated(_)
            | Event::JudgmentRecorded(_)
            | Event::EvaluationOutcome(_)
            | Event::RlTrainingMetrics(_)
            | Event::Custom(_) => None,
        }
    }

    /// The execution this event belongs to: [`TaskStarted`], [`TaskCompleted`] and
    /// [`TaskAbandoned`] carry one.
    ///
    /// ```
    /// use arbiter_events::{Event, TaskAbandoned};
    /// let event = Event::from(TaskAbandoned {
    ///     execution_id: "exec-1".into(),
    ///     task_id: "task-1".into(),
    ///     agent_id: "agent-a".into(),
    ///     duration_ms: 12.0,
    /// });
    /// assert_eq!(event.execution_id(), Some("exec-1"));
    /// ```
    pub fn execution_id(&self) -> Option<&str> {
        match self {
            Event::TaskStarted(e) => Some(&e.execution_id),
            Event::TaskCompleted(e) => Some(&e.execution_id),
            Event::TaskAbandoned(e) => Some(&e.execution_id),
            _ => None,
        }
    }
}
