//! Reports over the aggregates: how long a report over the live window takes with 1,000
//! agents at 100k and 1M records (it should not depend on the record count), and how much
//! memory the aggregates hold with 10,000 distinct agents.
//!
//! `cargo bench --bench analytics`

use std::hint::black_box;
use std::time::{Duration, Instant};

use arbiter_events::{
    Aggregator, AnalyticsConfig, Event, Grouping, OutcomeStatus, ReportRequest, RoutingDecision,
    RoutingStrategy, TaskCompleted, TaskOutcome, ThinkingBudgetUsed, Trend,
};
use time::OffsetDateTime;

const T0: i64 = 1_700_000_000_000_000_000;

/// A stream of `n` events over an hour from `agents` agents: routing, completion, budget.
fn feed(aggregator: &mut Aggregator, n: u64, agents: u64) -> Duration {
    let mut rng = fastrand::Rng::with_seed(7);
    let step = 3_600_000_000_000 / n as i64;
    let started = Instant::now();
    for i in 0..n {
        let agent = format!("agt_{:032x}", i % agents);
        let task = format!("tsk_{:032x}", i / 3);
        let event = match i % 3 {
            0 => Event::RoutingDecision(RoutingDecision {
                task_id: task,
                selected_agent: agent,
                strategy: RoutingStrategy::MultiArmedBandit,
                confidence: rng.f64(),
                alternatives: vec![],
                rationale: String::new(),
            }),
            1 => Event::TaskCompleted(TaskCompleted {
                execution_id: format!("exe_{i:032x}"),
                task_id: task,
                agent_id: agent,
                outcome: TaskOutcome {
                    status: if rng.f64() < 0.9 {
                        OutcomeStatus::Succeeded
                    } else {
                        OutcomeStatus::Failed
                    },
                    quality_score: rng.f64(),
                    efficiency_score: rng.f64(),
                    tokens_consumed: rng.u64(100..5000),
                },
                duration_ms: 20.0 + rng.f64() * 2000.0,
            }),
            _ => Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
                task_id: task,
                tokens_used: rng.u64(100..1200),
                tokens_allocated: 1000,
            }),
        };
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(T0 + i as i64 * step))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        aggregator.add_event(time, &event);
    }
    started.elapsed()
}

fn median_report(aggregator: &Aggregator, request: &ReportRequest) -> Duration {
    let mut times: Vec<Duration> = (0..21)
        .map(|_| {
            let started = Instant::now();
            black_box(aggregator.report(request));
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = AnalyticsConfig::default();
    println!(
        "analytics: bucket {} s x {} buckets, max_agents {}",
        config.bucket_secs, config.buckets, config.max_agents
    );
    let hour = Duration::from_secs(3600);
    for n in [100_000u64, 1_000_000] {
        let mut aggregator = Aggregator::new(&config)?;
        let fold = feed(&mut aggregator, n, 1_000);
        println!(
            "{n:>9} records, 1000 agents: fold {:.0} ns/record, memory {:.1} MiB",
            fold.as_nanos() as f64 / n as f64,
            aggregator.memory_bytes() as f64 / (1 << 20) as f64
        );
        for (label, request) in [
            ("overall, trend", ReportRequest::last(hour)),
            (
                "overall, no trend",
                ReportRequest::last(hour).trend(Trend::None),
            ),
            (
                "by_agent, no trend",
                ReportRequest::last(hour)
                    .by(Grouping::ByAgent)
                    .trend(Trend::None),
            ),
            (
                "by_agent, trend",
                ReportRequest::last(hour).by(Grouping::ByAgent),
            ),
            (
                "one agent, trend",
                ReportRequest::last(hour).agent(format!("agt_{:032x}", 7)),
            ),
        ] {
            let t = median_report(&aggregator, &request);
            println!("  report {label:<20} {:>9.3} ms", t.as_secs_f64() * 1e3);
        }
    }
    let mut wide = Aggregator::new(&config)?;
    feed(&mut wide, 1_000_000, 10_000);
    println!(
        "1000000 records, 10000 agents: {} tracked, memory {:.1} MiB",
        wide.tracked_agents(),
        wide.memory_bytes() as f64 / (1 << 20) as f64
    );
    Ok(())
}
