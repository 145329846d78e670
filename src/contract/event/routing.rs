use serde::{Deserialize, Serialize};

/// How the arbiter chose an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    /// A multi-armed bandit over agents.
    MultiArmedBandit,
    /// The best capability match.
    CapabilityMatch,
    /// The least loaded agent.
    LoadBalance,
    /// Uniformly at random.
    Random,
}

/// An agent the arbiter considered and did not select.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    /// The agent's identifier (pseudonymized as `agt_…`).
    pub agent_id: String,
    /// Its score in `[0, 1]`.
    pub score: f64,
    /// Why it lost (free text: redacted by default).
    pub reason: String,
}

/// The arbiter routed a task to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingDecision {
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// The chosen agent (pseudonymized as `agt_…`).
    pub selected_agent: String,
    /// How it was chosen.
    pub strategy: RoutingStrategy,
    /// Confidence in the choice, in `[0, 1]`.
    pub confidence: f64,
    /// The agents considered and not chosen.
    pub alternatives: Vec<Alternative>,
    /// Why (free text: redacted by default).
    pub rationale: String,
}
