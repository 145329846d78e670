use serde::{Deserialize, Serialize};

/// An agent joined the registry, with its capabilities and baseline performance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRegistered {
    /// The agent's identifier (pseudonymized as `agt_…`).
    pub agent_id: String,
    /// What the agent can do, e.g. `"code-review"`.
    pub capabilities: Vec<String>,
    /// The agent's expected performance.
    pub baseline: Baseline,
}

/// An agent's expected performance at registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Expected latency in milliseconds (finite, `>= 0`).
    pub latency_ms: f64,
    /// Expected accuracy in `[0, 1]`.
    pub accuracy: f64,
    /// Expected cost of one task (finite, `>= 0`).
    pub cost_per_task: f64,
    /// Expected reliability in `[0, 1]`.
    pub reliability: f64,
}

/// An agent's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Ready for work.
    Available,
    /// Working at capacity.
    Busy,
    /// Not reachable.
    Offline,
    /// Deliberately out of rotation.
    Maintenance,
}

/// An agent's availability changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatusChanged {
    /// The agent's identifier (pseudonymized as `agt_…`).
    pub agent_id: String,
    /// The new status.
    pub status: AgentStatus,
    /// The status before, if known.
    #[serde(default)]
    pub previous: Option<AgentStatus>,
    /// Why it changed (free text: redacted by default).
    #[serde(default)]
    pub reason: Option<String>,
}
