use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How serious a constitutional violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Cosmetic.
    Low,
    /// Should be fixed.
    Medium,
    /// Must be fixed.
    High,
    /// Blocks the result.
    Critical,
}

/// One rule a result broke.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Violation {
    /// How serious it is.
    pub severity: Severity,
    /// What was wrong (free text: redacted by default).
    pub message: String,
    /// The rule's identifier, if any.
    #[serde(default)]
    pub rule: Option<String>,
}

/// A constitutional (CAWS) validation ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstitutionalValidation {
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// The agent validated (pseudonymized as `agt_…`).
    pub agent_id: String,
    /// Whether the result passed.
    pub valid: bool,
    /// The rules broken.
    pub violations: Vec<Violation>,
    /// Compliance in `[0, 1]`.
    pub compliance_score: f64,
    /// Time the validation took in milliseconds (finite, `>= 0`).
    pub processing_time_ms: f64,
    /// How many rules were checked.
    pub rule_count: u32,
}

/// How hard a task looks when its thinking budget is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Complexity {
    /// Hardly any thinking.
    Trivial,
    /// The usual.
    Standard,
    /// Needs a large budget.
    Complex,
}

/// A thinking budget was allocated to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThinkingBudgetAllocated {
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// Tokens allocated.
    pub allocated_tokens: u64,
    /// The assessed complexity.
    pub complexity: Complexity,
    /// Confidence in the assessment, in `[0, 1]`.
    pub confidence: f64,
}

/// A task used (part of) its thinking budget. Utilization is derived, not stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThinkingBudgetUsed {
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// Tokens used.
    pub tokens_used: u64,
    /// Tokens that had been allocated.
    pub tokens_allocated: u64,
}

impl ThinkingBudgetUsed {
    /// `tokens_used / tokens_allocated`, or `None` when nothing was allocated.
    pub fn utilization(&self) -> Option<f64> {
        (self.tokens_allocated > 0).then(|| self.tokens_used as f64 / self.tokens_allocated as f64)
    }
}

/// A change was scored for minimality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinimalityEvaluated {
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// Overall minimality in `[0, 1]`.
    pub minimality_factor: f64,
    /// Similarity of the syntax trees before and after, in `[0, 1]`.
    pub ast_similarity: f64,
    /// Penalty for scaffolding, in `[0, 1]`.
    pub scaffolding_penalty: f64,
    /// Lines changed.
    pub lines_changed: u64,
    /// The evaluator's words (free text: redacted by default).
    pub quality_assessment: String,
}

/// A judge scored a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgmentRecorded {
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// Overall score in `[0, 1]`.
    pub overall_score: f64,
    /// Confidence in the judgment, in `[0, 1]`.
    pub overall_confidence: f64,
    /// Whether every criterion passed.
    pub all_criteria_pass: bool,
    /// Score per criterion, each in `[0, 1]`.
    pub criteria_scores: BTreeMap<String, f64>,
    /// Time the judgment took in milliseconds (finite, `>= 0`).
    pub evaluation_time_ms: f64,
}

/// An evaluation passed or failed a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationOutcome {
    /// The task's identifier (pseudonymized as `tsk_…`).
    pub task_id: String,
    /// Whether it passed.
    pub passed: bool,
    /// Score in `[0, 1]`.
    pub score: f64,
    /// Score per rubric item, each in `[0, 1]`.
    pub rubric_scores: BTreeMap<String, f64>,
    /// The evaluator's words (free text: redacted by default).
    #[serde(default)]
    pub feedback: Option<String>,
}
