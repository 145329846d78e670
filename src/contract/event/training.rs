use serde::{Deserialize, Serialize};

use super::Attributes;

/// Metrics of one RL training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlTrainingMetrics {
    /// Trajectories consumed by the step.
    pub trajectories_processed: u64,
    /// Mean reward (finite).
    pub average_reward: f64,
    /// Policy loss (finite).
    pub policy_loss: f64,
    /// Value loss (finite, `>= 0`).
    pub value_loss: f64,
    /// KL divergence from the previous policy (finite, `>= 0`).
    pub kl_divergence: f64,
    /// Time the step took in milliseconds (finite, `>= 0`).
    pub training_time_ms: f64,
}

/// An application-defined event: the escape hatch when no typed variant fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Custom {
    /// The event's name (identifier rules apply; not pseudonymized).
    pub name: String,
    /// Its payload; keys listed in `anonymization.attribute_keys` are pseudonymized.
    #[serde(default)]
    pub attributes: Attributes,
}
