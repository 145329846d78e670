//! Reports over records: from an export's records and from a data directory's history,
//! with the same figures for the same records.

mod common;

use std::time::Duration;

use arbiter_events::{
    Aggregator, AnalyticsConfig, DataDir, ExportError, Grouping, Record, ReportError,
    ReportRequest, StorageError, Trend, Window,
};
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

/// Seconds between records in [`segmented`].
const SPACING: u64 = 20;

/// The three recorded sessions over and over, a record every [`SPACING`] seconds for
/// about five hours, into a data directory of 4 KiB segments; returns the records (read
/// back through an export) and the time of the first.
fn segmented(dir: &std::path::Path) -> Result<(Vec<Record>, OffsetDateTime)> {
    let config = config_with(|c| {
        c.storage.data_dir = Some(dir.to_owned());
        c.storage.segment_bytes = 4096;
    });
    let (collector, clock) = golden_collector(config)?;
    let mut events = Vec::new();
    for name in ["session_hotfix", "session_pr_review", "session_rl_batch"] {
        events.extend(read_events(&format!("fixtures/events/{name}.jsonl"))?);
    }
    let start = at(arbiter_events::Clock::now_unix_nanos(&clock))?;
    for event in events.iter().cycle().take(900) {
        collector.record(event.clone())?;
        clock.advance(Duration::from_secs(SPACING));
    }
    let all = records(&flushed_export(&collector)?)?;
    collector.shutdown(FLUSH_TIMEOUT)?;
    assert_eq!(all.len(), 900);
    Ok((all, start))
}

/// The segment files of `dir`, by first seq.
fn segment_files(dir: &std::path::Path) -> Result<Vec<(u64, std::path::PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir.join("segments"))? {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        found.extend(first.map(|f| (f, path)));
    }
    found.sort();
    Ok(found)
}

/// Flips a bit inside the payload of the first frame of the segment at `path`.
fn damage_first_frame(path: &std::path::Path) -> TestResult {
    let mut bytes = std::fs::read(path)?;
    // The segment header (32 bytes), the frame header (36), then the payload.
    bytes[32 + 36 + 4] ^= 0x10;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// The window the segment tests report over: 30 minutes, two and a half hours in.
fn window(start: OffsetDateTime) -> ReportRequest {
    let since = start + Duration::from_secs(150 * 60);
    ReportRequest::between(since, since + Duration::from_secs(30 * 60))
}

#[test]
fn a_window_over_many_segments_equals_the_same_records_folded_in_memory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (all, start) = segmented(dir.path())?;
    assert!(segment_files(dir.path())?.len() > 20, "many segments");
    let data = DataDir::open(dir.path())?;
    let config = AnalyticsConfig::default();
    for request in [
        window(start),
        window(start).by(Grouping::ByAgent).trend(Trend::None),
        window(start).by(Grouping::ByStrategy),
    ] {
        let Window::Between { until, .. } = request.window else {
            return Err("a window between two times".into());
        };
        let mut memory = Aggregator::new(&config)?;
        for record in all.iter().filter(|r| r.time < until) {
            memory.add(record);
        }
        let now = until + Duration::from_secs(3600);
        let expected = memory.report_at(&request, now);
        let history = data.report(&config, &request, now)?;
        assert!(history.records > 0 && history.records < all.len() as u64);
        assert_eq!(
            serde_json::to_value(&history)?,
            serde_json::to_value(&expected)?,
            "{request:?}"
        );
    }
    Ok(())
}

#[test]
fn a_damaged_frame_inside_the_window_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (all, start) = segmented(dir.path())?;
    let request = window(start);
    let Window::Between { since, until } = request.window else {
        return Err("a window between two times".into());
    };
    let time_of = |seq: u64| all.iter().find(|r| r.seq == seq).map(|r| r.time);
    let inside = segment_files(dir.path())?
        .into_iter()
        .find(|(first, _)| time_of(*first).is_some_and(|t| t >= since && t < until))
        .ok_or("no segment starts inside the window")?;
    damage_first_frame(&inside.1)?;
    let err = DataDir::open(dir.path())?
        .report(&AnalyticsConfig::default(), &request, until)
        .err()
        .ok_or("the damaged frame was read over")?;
    assert!(
        matches!(
            &err,
            ReportError::Export(ExportError::Storage(StorageError::Damaged { expected_seq, .. }))
                if *expected_seq == inside.0
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn segments_wholly_before_the_window_are_not_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (all, start) = segmented(dir.path())?;
    let request = window(start);
    let data = DataDir::open(dir.path())?;
    let config = AnalyticsConfig::default();
    let until = start + Duration::from_secs(180 * 60);
    let before = data.report(&config, &request, until)?;
    // The second segment: its records are hours before the window and its lead-in.
    let files = segment_files(dir.path())?;
    let early = files.get(1).ok_or("fewer than two segments")?;
    let next_first = files.get(2).ok_or("fewer than three segments")?.0;
    let last_time = all
        .iter()
        .find(|r| r.seq + 1 == next_first)
        .map(|r| r.time)
        .ok_or("no record before the third segment")?;
    assert!(last_time < start + Duration::from_secs(60 * 60));
    damage_first_frame(&early.1)?;
    let after = data.report(&config, &request, until)?;
    assert_eq!(
        serde_json::to_value(&after)?,
        serde_json::to_value(&before)?
    );
    // The damage is there: a window over it is refused.
    let whole = ReportRequest::between(start, until);
    assert!(data.report(&config, &whole, until).is_err());
    Ok(())
}
