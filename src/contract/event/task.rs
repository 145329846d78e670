use serde::{Deserialize, Serialize};

use super::Attributes;

/// An execution of a task began.
///
/// Usually recorded by [`Collector::start_task`](crate::Collector::start_task), which
/// also records the matching completion or abandonment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskStarted {
    /// This execution's identifier (pseudonymized as `exe_…`).
    pub execution_id: String,
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// The agent running it (pseudonymized as `agt_…`).
    pub agent_id: String,
    /// Application context; keys listed in `anonymization.attribute_keys` are pseudonymized.
    #[serde(default)]
    pub context: Attributes,
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Finished and succeeded.
    Succeeded,
    /// Finished and failed.
    Failed,
    /// Ran out of time.
    TimedOut,
    /// Stopped on request.
    Cancelled,
}

impl OutcomeStatus {
    /// Every status, in declaration order.
    pub const ALL: [OutcomeStatus; 4] = [
        OutcomeStatus::Succeeded,
        OutcomeStatus::Failed,
        OutcomeStatus::TimedOut,
        OutcomeStatus::Cancelled,
    ];
}

/// The result of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskOutcome {
    /// How it ended.
    pub status: OutcomeStatus,
    /// Quality of the result in `[0, 1]`.
    pub quality_score: f64,
    /// Efficiency of the run in `[0, 1]`.
    pub efficiency_score: f64,
    /// Tokens consumed.
    pub tokens_consumed: u64,
}

/// An execution finished with an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCompleted {
    /// This execution's identifier (pseudonymized as `exe_…`).
    pub execution_id: String,
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// The agent that ran it (pseudonymized as `agt_…`).
    pub agent_id: String,
    /// The result.
    pub outcome: TaskOutcome,
    /// Wall time of the execution in milliseconds (finite, `>= 0`).
    pub duration_ms: f64,
}

/// An execution was dropped without completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskAbandoned {
    /// This execution's identifier (pseudonymized as `exe_…`).
    pub execution_id: String,
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// The agent that ran it (pseudonymized as `agt_…`).
    pub agent_id: String,
    /// Time from start to abandonment in milliseconds (finite, `>= 0`).
    pub duration_ms: f64,
}
