use serde::{Deserialize, Serialize};

use crate::contract::analytics::{AlertKind, AlertScope};

/// An alert rule fired: the collector made this record itself, from its live aggregates
/// (see `[[alerts]]` in the README). Recording one is refused ([`Rule::Generated`]); it
/// is counted in `stats().generated`, not `submitted`.
///
/// [`Rule::Generated`]: crate::Rule::Generated
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyDetected {
    /// The rule's name.
    pub rule: String,
    /// What the rule watches.
    pub kind: AlertKind,
    /// Overall or per agent.
    pub scope: AlertScope,
    /// The agent, for a per-agent rule: as the collector's records name it (its
    /// pseudonym when identifiers are pseudonymized); `None` for an overall rule.
    pub agent_id: Option<String>,
    /// The figure that broke the limit (milliseconds for `latency_spike`, a ratio for
    /// the rates and utilization, a count for `caws_violations`).
    pub observed: f64,
    /// The limit it broke (for a baseline rule, the limit derived from the baseline).
    pub threshold: f64,
    /// The trailing baseline's figure, for a baseline rule.
    pub baseline: Option<f64>,
    /// The rule's sliding window, in seconds.
    pub window_secs: u64,
    /// Samples in the window.
    pub samples: u64,
}
