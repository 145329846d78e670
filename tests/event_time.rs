//! Event time: records are stamped when `record()` takes them (so a `ManualClock` may be
//! advanced without a flush first), and a caller's `occurred_at` is validated against the
//! skew window and kept beside the ingest time.

mod common;

use std::time::Duration;

use arbiter_events::{
    Collector, Config, Cursor, Event, ExportRequest, IdKind, ManualClock, Record, RecordError,
    Rule, read_export,
};
use time::OffsetDateTime;

use common::{FLUSH_TIMEOUT, T0, TestResult};

const KEY: [u8; 32] = [12; 32];

fn build(clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> common::Result<Collector> {
    common::build_collector(clock.clone(), common::config_with(edit), KEY)
}

fn at(nanos: i64) -> common::Result<OffsetDateTime> {
    Ok(OffsetDateTime::from_unix_timestamp_nanos(i128::from(
        nanos,
    ))?)
}

fn records(collector: &Collector) -> common::Result<Vec<Record>> {
    collector.flush(FLUSH_TIMEOUT)?;
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    Ok(read_export(export.to_msgpack().as_slice())?.records)
}

#[test]
fn smoke() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    collector.record(common::used(1))?;
    let r = records(&collector)?;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].time, at(T0)?);
    assert_eq!(r[0].occurred_at, None);
    Ok(())
}

#[test]
fn records_are_stamped_at_record_not_at_ingest() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    // No flush between the calls and the advances.
    for i in 0..3 {
        collector.record(common::used(i))?;
        clock.advance(Duration::from_secs(1));
    }
    let times: Vec<OffsetDateTime> = records(&collector)?.iter().map(|r| r.time).collect();
    let expected = [at(T0)?, at(T0 + 1_000_000_000)?, at(T0 + 2_000_000_000)?];
    assert_eq!(times, expected);
    Ok(())
}

#[test]
fn time_stays_non_decreasing_when_the_clock_steps_back() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    collector.record(common::used(1))?;
    clock.set_unix_nanos(T0 - 5_000);
    collector.record(common::used(2))?;
    let times: Vec<OffsetDateTime> = records(&collector)?.iter().map(|r| r.time).collect();
    assert_eq!(times, [at(T0)?, at(T0)?]);
    Ok(())
}

#[test]
fn occurred_at_is_kept_beside_the_ingest_time() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    let happened = at(T0 - 90_000_000_000)?; // 90 s before
    collector.record_at(common::used(1), happened)?;
    collector.record(common::used(2))?;
    let r = records(&collector)?;
    assert_eq!((r[0].time, r[0].occurred_at), (at(T0)?, Some(happened)));
    assert_eq!(r[1].occurred_at, None);
    // On the wire: an `occurred_at` field (i64 Unix nanoseconds) only where given.
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    let values = common::msgpack_values(&export.to_msgpack())?;
    assert_eq!(
        values[1]["occurred_at"],
        serde_json::json!(T0 - 90_000_000_000)
    );
    assert!(values[2].get("occurred_at").is_none(), "{:?}", values[2]);
    let schema = common::Schema::load("record.schema.json")?;
    for record in &values[1..3] {
        schema.validate(record)?;
    }
    // It follows `time` in the record map, before `type`.
    let bytes = export.to_msgpack();
    let ranges = common::msgpack_ranges(&bytes)?;
    let record = &bytes[ranges[1].clone()];
    let find = |key: &[u8]| record.windows(key.len()).position(|w| w == key);
    let (time, occurred, kind) = (find(b"time"), find(b"occurred_at"), find(b"type"));
    assert!(time < occurred && occurred < kind, "{record:?}");
    Ok(())
}

#[test]
fn occurred_at_outside_the_skew_window_is_rejected_and_counted() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| {
        c.limits.max_occurred_past_secs = 10;
        c.limits.max_occurred_future_secs = 1;
    })?;
    // The edges are inside.
    collector.record_at(common::used(1), at(T0 - 10_000_000_000)?)?;
    collector.record_at(common::used(2), at(T0 + 1_000_000_000)?)?;
    let mut messages = Vec::new();
    for (name, nanos) in [
        ("too old", T0 - 10_000_000_001),
        ("too far ahead", T0 + 1_000_000_001),
    ] {
        let error = collector
            .record_at(common::used(3), at(nanos)?)
            .err()
            .ok_or_else(|| format!("{name}: accepted"))?;
        let RecordError::Invalid(invalid) = &error else {
            return Err(format!("{name}: {error:?}").into());
        };
        assert_eq!(invalid.field(), "occurred_at");
        assert!(
            matches!(invalid.rule(), Rule::OutsideSkewWindow { .. }),
            "{name}: {error:?}"
        );
        messages.push(error.to_string());
    }
    insta::assert_yaml_snapshot!("occurred_at_errors", messages);
    collector.flush(FLUSH_TIMEOUT)?;
    let s = collector.stats();
    assert_eq!((s.submitted, s.stored, s.rejected), (4, 2, 2));
    // The window is live.
    collector.update_config(|c| c.limits.max_occurred_past_secs = 100)?;
    collector.record_at(common::used(4), at(T0 - 50_000_000_000)?)?;
    assert_eq!(records(&collector)?.len(), 3);
    Ok(())
}

#[test]
fn pseudonym_finds_your_own_ids_in_an_export() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    let run = collector.start_task("task-7", "agent-7", Default::default())?;
    let execution = run.execution_id().to_owned();
    run.abandon()?;
    let r = records(&collector)?;
    let event: &Event = &r[0].event;
    assert_eq!(
        event.task_id(),
        Some(collector.pseudonym(IdKind::Task, "task-7").as_str())
    );
    assert_eq!(
        event.agent_id(),
        Some(collector.pseudonym(IdKind::Agent, "agent-7").as_str())
    );
    assert_eq!(
        event.execution_id(),
        Some(collector.pseudonym(IdKind::Execution, &execution).as_str())
    );
    assert_ne!(event.task_id(), Some("task-7"));
    // With anonymization off, ids are themselves.
    let off = build(&clock, |c| {
        c.anonymization.mode = arbiter_events::AnonymizationMode::Off;
    })?;
    assert_eq!(off.pseudonym(IdKind::Agent, "agent-7"), "agent-7");
    Ok(())
}
