//! What the benches share: a seeded, realistic event stream.

use std::collections::BTreeMap;

use arbiter_events::{
    Alternative, Event, JudgmentRecorded, OutcomeStatus, RoutingDecision, RoutingStrategy,
    TaskCompleted, TaskOutcome, ThinkingBudgetUsed,
};

/// A seeded mix of typical events: routing with alternatives, completions, judgments,
/// budget use. Task ids repeat across a few events each, as in a real arbiter.
pub(crate) fn events(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let task_id = format!("task-{}", i / 4);
            let agent = format!("agent-{:02}", rng.usize(..16));
            match i % 4 {
                0 => Event::RoutingDecision(RoutingDecision {
                    task_id,
                    selected_agent: agent,
                    strategy: RoutingStrategy::MultiArmedBandit,
                    confidence: rng.f64(),
                    alternatives: (0..2)
                        .map(|k| Alternative {
                            agent_id: format!("agent-{k:02}"),
                            score: rng.f64(),
                            reason: "lower score".into(),
                        })
                        .collect(),
                    rationale: "highest expected reward".into(),
                }),
                1 => Event::TaskCompleted(TaskCompleted {
                    execution_id: format!("exec-{i}"),
                    task_id,
                    agent_id: agent,
                    outcome: TaskOutcome {
                        status: OutcomeStatus::Succeeded,
                        quality_score: rng.f64(),
                        efficiency_score: rng.f64(),
                        tokens_consumed: rng.u64(..10_000),
                    },
                    duration_ms: rng.f64() * 1000.0,
                }),
                2 => Event::JudgmentRecorded(JudgmentRecorded {
                    task_id,
                    overall_score: rng.f64(),
                    overall_confidence: rng.f64(),
                    all_criteria_pass: rng.bool(),
                    criteria_scores: BTreeMap::from([
                        ("correctness".to_owned(), rng.f64()),
                        ("style".to_owned(), rng.f64()),
                    ]),
                    evaluation_time_ms: rng.f64() * 50.0,
                }),
                _ => Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
                    task_id,
                    tokens_used: rng.u64(..4096),
                    tokens_allocated: 4096,
                }),
            }
        })
        .collect()
}
