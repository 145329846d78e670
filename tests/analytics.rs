//! Reports over records: from an export's records and from a data directory's history,
//! with the same figures for the same records.

mod common;

use std::time::Duration;

use arbiter_events::{Aggregator, AnalyticsConfig, DataDir, Grouping, ReportRequest, Trend};
use common::*;
use time::OffsetDateTime;

/// The three recorded sessions, stepped a second apart, into a collector with a data
/// directory; returns the collector's export aggregated and the clock's time at the end.
fn sessions(dir: &std::path::Path) -> Result<(Aggregator, OffsetDateTime)> {
    let config = config_with(|c| c.storage.data_dir = Some(dir.to_owned()));
    let (collector, clock) = golden_collector(config)?;
    for name in ["session_hotfix", "session_pr_review", "session_rl_batch"] {
        for event in read_events(&format!("fixtures/events/{name}.jsonl"))? {
            collector.record(event)?;
            collector.flush(FLUSH_TIMEOUT)?;
            clock.advance(Duration::from_secs(7));
        }
    }
    let mut aggregator = Aggregator::new(&AnalyticsConfig::default())?;
    for record in export_all(&collector)?.records() {
        aggregator.add(&record?);
    }
    let end = at(arbiter_events::Clock::now_unix_nanos(&clock))?;
    collector.shutdown(FLUSH_TIMEOUT)?;
    Ok((aggregator, end))
}

#[test]
fn smoke() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (aggregator, now) = sessions(dir.path())?;
    let report = aggregator.report_at(&ReportRequest::last(Duration::from_secs(3600)), now);
    assert_eq!(report.records, aggregator.records());
    assert!(report.records > 0);
    let overall = &report.groups[0];
    assert_eq!(overall.group, "overall");
    assert_eq!(overall.figures.events, report.records);
    assert!(
        overall.figures.tasks.ended > 0,
        "the sessions complete tasks"
    );
    Ok(())
}

#[test]
fn a_report_over_history_equals_one_over_the_same_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (aggregator, now) = sessions(dir.path())?;
    let data = DataDir::open(dir.path())?;
    let config = AnalyticsConfig::default();
    for request in [
        ReportRequest::last(Duration::from_secs(3600)),
        ReportRequest::last(Duration::from_secs(120)).by(Grouping::ByAgent),
        ReportRequest::last(Duration::from_secs(3600))
            .by(Grouping::ByKind)
            .trend(Trend::None),
        ReportRequest::last(Duration::from_secs(3600)).by(Grouping::ByStrategy),
    ] {
        let live = aggregator.report_at(&request, now);
        let history = data.report(&config, &request, now)?;
        assert_eq!(
            serde_json::to_value(&history)?,
            serde_json::to_value(&live)?,
            "{request:?}"
        );
    }
    Ok(())
}

#[test]
fn a_long_window_over_history_widens_its_buckets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (aggregator, now) = sessions(dir.path())?;
    let data = DataDir::open(dir.path())?;
    let config = AnalyticsConfig::default();
    let week = Duration::from_secs(7 * 86_400);
    let report = data.report(&config, &ReportRequest::last(week), now)?;
    assert_eq!(
        report.records,
        aggregator.records(),
        "every record is in the week"
    );
    assert!(report.bucket_secs > config.bucket_secs);
    assert_eq!(report.bucket_secs % config.bucket_secs, 0);
    assert!(report.groups[0].trend.len() <= config.buckets);
    assert!(report.until - report.since >= week);
    Ok(())
}

#[test]
fn a_bad_analytics_config_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    sessions(dir.path())?;
    let data = DataDir::open(dir.path())?;
    let mut config = AnalyticsConfig::default();
    config.buckets = 0;
    let err = data
        .report(
            &config,
            &ReportRequest::last(Duration::from_secs(60)),
            OffsetDateTime::now_utc(),
        )
        .err()
        .ok_or("buckets = 0 was taken")?;
    assert_eq!(
        err.to_string(),
        "analytics.buckets must be within [1, 10080], got 0"
    );
    Ok(())
}

#[test]
fn config_defaults_are_the_named_constants() {
    let c = AnalyticsConfig::default();
    assert_eq!(
        (c.bucket_secs, c.buckets, c.max_agents),
        (
            arbiter_events::DEFAULT_BUCKET_SECS,
            arbiter_events::DEFAULT_BUCKETS,
            arbiter_events::DEFAULT_MAX_AGENTS
        )
    );
}
