//! Reports over the aggregates: how long a report over the live window takes with 1,000
//! agents at 100k and 1M records (it should not depend on the record count), what folding
//! costs per record (over one hour, and over two, where a bucket is dropped every minute),
//! and how much memory the aggregates hold with 10,000 distinct agents.
//!
//! It measures `DataDir::report` over a data directory of 1M records written by the
//! library (records read and folded per second).
//!
//! It also measures end-to-end ingest (one producer, `record()` to stored) with the
//! live analytics stage and three alert rules on against the same with `analytics.enabled
//! = false`, alternating in the same run, and the live `Collector::report`.
//!
//! `cargo bench --bench analytics [history|ingest|live|aggregator]` (all by default)

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use arbiter_events::{
    Aggregator, AnalyticsConfig, Collector, Config, DataDir, Event, Grouping, ManualClock,
    OutcomeStatus, Overflow, ReportRequest, RoutingDecision, RoutingStrategy, TaskCompleted,
    TaskOutcome, ThinkingBudgetUsed, Trend,
};
use time::OffsetDateTime;

const T0: i64 = 1_700_000_000_000_000_000;

/// A stream of `n` events over `hours` from `agents` agents: routing, completion, budget.
fn feed(aggregator: &mut Aggregator, n: u64, agents: u64, hours: i64) -> Duration {
    let mut rng = fastrand::Rng::with_seed(7);
    let step = hours * 3_600_000_000_000 / n as i64;
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

const RULES: &str = r#"
[[alerts]]
name = "slow-agent"
kind = "latency_spike"
scope = "per_agent"
window_secs = 300
threshold = 5000.0

[[alerts]]
name = "errors"
kind = "error_rate"
window_secs = 300
threshold = 0.5

[[alerts]]
name = "overspend"
kind = "token_overuse"
scope = "per_agent"
window_secs = 300
max_share = 0.9
"#;

/// One run: `events` recorded by one producer (blocking on a full queue, so nothing is
/// dropped) until flushed: records/s, and with analytics the time until the stage has
/// folded them all and what it skipped.
fn ingest(
    analytics: bool,
    events: Vec<Event>,
) -> Result<(f64, Duration, u64), Box<dyn std::error::Error>> {
    let mut config = Config::from_toml_str(RULES)?;
    config.analytics.enabled = analytics;
    config.queue.overflow = Overflow::Block;
    config.retention.max_events = 2_000_000;
    config.retention.max_bytes = 1 << 30;
    let collector = Collector::new(config)?;
    let n = events.len();
    let started = Instant::now();
    for event in events {
        collector.record(event)?;
    }
    collector.flush(Duration::from_secs(120))?;
    let stored = started.elapsed();
    let mut caught_up = stored;
    if analytics {
        while collector.analytics().folded + collector.analytics().skipped
            < collector.stats().stored
            && started.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        caught_up = started.elapsed();
    }
    let skipped = collector.analytics().skipped;
    collector.shutdown(Duration::from_secs(60))?;
    Ok((n as f64 / stored.as_secs_f64(), caught_up, skipped))
}

fn ingest_comparison() -> Result<(), Box<dyn std::error::Error>> {
    const N: usize = 400_000;
    const ROUNDS: usize = 5;
    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 0..ROUNDS {
        // Alternate, so drift on a shared machine hits both alike.
        for analytics in [round % 2 == 0, round % 2 != 0] {
            let events = support::events(N, round as u64);
            let (rate, caught_up, skipped) = ingest(analytics, events)?;
            println!(
                "  ingest round {round} analytics {:<3} {:>10.0} records/s{}",
                if analytics { "on" } else { "off" },
                rate,
                if analytics {
                    format!(", folded all after {caught_up:.2?}, skipped {skipped}")
                } else {
                    String::new()
                }
            );
            if analytics {
                on.push(rate)
            } else {
                off.push(rate)
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "ingest {N} records, 1 producer: analytics off {off:.0}/s, on with 3 rules {on:.0}/s: {:.1} % (medians of {ROUNDS})",
        100.0 * on / off
    );
    Ok(())
}

/// The reports the live and history figures time, over the last hour: overall with a
/// trend, and by agent without one.
fn overall_and_by_agent() -> [(&'static str, ReportRequest); 2] {
    let hour = Duration::from_secs(3600);
    [
        ("overall, trend", ReportRequest::last(hour)),
        (
            "by_agent, no trend",
            ReportRequest::last(hour)
                .by(Grouping::ByAgent)
                .trend(Trend::None),
        ),
    ]
}

/// `Collector::report` over the live window with 1,000 agents, at 100k and 1M records
/// spread over the hour the buckets keep (a manual clock moves 3.6 s per 1/1000th).
fn live_report() -> Result<(), Box<dyn std::error::Error>> {
    for n in [100_000u64, 1_000_000] {
        let mut config = Config::default();
        config.queue.overflow = Overflow::Block;
        config.retention.max_events = 2_000_000;
        config.retention.max_bytes = 1 << 30;
        let clock = ManualClock::new(T0);
        let collector = Collector::builder()
            .config(config)
            .clock(clock.clone())
            .build()?;
        for i in 0..n {
            if i % (n / 1000) == 0 {
                clock.advance(Duration::from_millis(3600));
            }
            let agent = format!("agent-{}", i % 1000);
            let event = Event::TaskCompleted(TaskCompleted {
                execution_id: format!("exe-{i}"),
                task_id: format!("task-{i}"),
                agent_id: agent,
                outcome: TaskOutcome {
                    status: OutcomeStatus::Succeeded,
                    quality_score: 0.5,
                    efficiency_score: 0.5,
                    tokens_consumed: 100,
                },
                duration_ms: (i % 977) as f64,
            });
            collector.record(event)?;
        }
        collector.flush(Duration::from_secs(120))?;
        while collector.analytics().folded + collector.analytics().skipped < n {
            std::thread::sleep(Duration::from_millis(1));
        }
        for (label, request) in overall_and_by_agent() {
            let mut times: Vec<Duration> = (0..21)
                .map(|_| {
                    let started = Instant::now();
                    black_box(collector.report(&request));
                    started.elapsed()
                })
                .collect();
            times.sort();
            println!(
                "  live report {n:>8} records, 1000 agents, {label:<20} {:>9.3} ms",
                times[10].as_secs_f64() * 1e3
            );
        }
        collector.shutdown(Duration::from_secs(60))?;
    }
    Ok(())
}

/// `DataDir::report` over a data directory of 1M records of the benches' mixed stream
/// (16 agents), written by a collector over one hour of a manual clock; the report's
/// window is that hour, so every record is read, decoded and folded. Median of 5.
fn history_report() -> Result<(), Box<dyn std::error::Error>> {
    const N: usize = 1_000_000;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-analytics");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut config = Config::default();
    config.queue.overflow = Overflow::Block;
    config.retention.max_events = 2_000_000;
    config.retention.max_bytes = 1 << 30;
    config.storage.data_dir = Some(dir.clone());
    config.storage.max_disk_bytes = 1 << 40;
    config.analytics.enabled = false;
    let clock = ManualClock::new(T0);
    let collector = Collector::builder()
        .config(config)
        .clock(clock.clone())
        .build()?;
    for (i, event) in support::events(N, 3).into_iter().enumerate() {
        if i % (N / 1000) == 0 {
            clock.advance(Duration::from_millis(3600));
        }
        collector.record(event)?;
    }
    collector.flush(Duration::from_secs(300))?;
    collector.shutdown(Duration::from_secs(60))?;
    let data = DataDir::open(&dir)?;
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(T0) + 3_601_000_000_000)?;
    for (label, request) in overall_and_by_agent() {
        let mut runs = Vec::new();
        let mut records = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let report = data.report(&AnalyticsConfig::default(), &request, now)?;
            runs.push(started.elapsed());
            records = report.records;
        }
        runs.sort();
        let t = runs[runs.len() / 2];
        println!(
            "  history report {records} records, {label:<20} {:>8.1} ms, {:>5.2} M records/s",
            t.as_secs_f64() * 1e3,
            records as f64 / t.as_secs_f64() / 1e6
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.starts_with(o));
    if wanted("history") {
        history_report()?;
    }
    if wanted("ingest") {
        ingest_comparison()?;
    }
    if wanted("live") {
        live_report()?;
    }
    if !wanted("aggregator") {
        return Ok(());
    }
    let config = AnalyticsConfig::default();
    println!(
        "analytics: bucket {} s x {} buckets, max_agents {}",
        config.bucket_secs, config.buckets, config.max_agents
    );
    let hour = Duration::from_secs(3600);
    for n in [100_000u64, 1_000_000] {
        let mut aggregator = Aggregator::new(&config)?;
        let fold = feed(&mut aggregator, n, 1_000, 1);
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
    // Over two hours, so that a bucket is dropped every minute of the second hour.
    let mut long = Aggregator::new(&config)?;
    let fold = feed(&mut long, 1_000_000, 1_000, 2);
    println!(
        "1000000 records over 2 h, 1000 agents: fold {:.0} ns/record",
        fold.as_nanos() as f64 / 1e6
    );
    let mut wide = Aggregator::new(&config)?;
    feed(&mut wide, 1_000_000, 10_000, 1);
    println!(
        "1000000 records, 10000 agents: {} tracked, memory {:.1} MiB",
        wide.tracked_agents(),
        wide.memory_bytes() as f64 / (1 << 20) as f64
    );
    Ok(())
}
