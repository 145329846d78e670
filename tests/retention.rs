//! Retention: records older than `max_age_secs`, beyond `max_events` or beyond
//! `max_bytes` are pruned oldest first, the rest keep their order, and reads never
//! return an expired record.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{
    Attributes, Collector, Config, Cursor, Custom, Event, ExportRequest, GapReason, ManualClock,
    Record, Stats,
};

use common::{
    PATIENCE, T0, TestResult, export_all, gap, record_all, record_bytes, records, seqs, used,
};

const MAX_AGE_SECS: u64 = 10;

/// A collector on `clock` whose worker only wakes on its own after a minute, so any
/// pruning a test sees comes from the call it makes.
fn build(clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> common::Result<Collector> {
    let config = common::config_with(|c| {
        c.retention.max_age_secs = MAX_AGE_SECS;
        c.worker.tick_ms = 60_000;
        edit(c);
    });
    common::build_collector(clock.clone(), config, [9; 32])
}

/// A custom event with a payload of `len` bytes.
fn sized(marker: u64, len: usize) -> Event {
    Event::Custom(Custom {
        name: format!("blob-{marker}"),
        attributes: Attributes::new().with("payload", "x".repeat(len)),
    })
}

fn marker(record: &Record) -> Option<u64> {
    match &record.event {
        Event::ThinkingBudgetUsed(e) => Some(e.tokens_used),
        Event::Custom(e) => e.name.strip_prefix("blob-")?.parse().ok(),
        _ => None,
    }
}

/// The retained records are exactly `first..=last` of what was stored, in order, each
/// with its own marker.
fn assert_suffix(collector: &Collector, s: &Stats) -> TestResult {
    let export = export_all(collector)?;
    let got = records(&export)?;
    let last = s.last_seq.unwrap_or(0);
    let first = last + 1 - s.retained;
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (first..=last).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|r| marker(r) == Some(r.seq)));
    assert!(got.windows(2).all(|w| w[0].time <= w[1].time));
    Ok(())
}

#[test]
fn smoke() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| c.retention.max_events = 2)?;
    record_all(&collector, 1..=3)?;
    assert_eq!(seqs(&export_all(&collector)?)?, [2, 3]);
    Ok(())
}

#[test]
fn age_retains_the_boundary_and_prunes_past_it() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    record_all(&collector, 1..=3)?;
    clock.advance(Duration::from_secs(5));
    record_all(&collector, 4..=6)?;

    // Exactly `max_age` old is not older than it.
    clock.advance(Duration::from_secs(MAX_AGE_SECS - 5));
    collector.flush(PATIENCE)?;
    assert_eq!(collector.stats().retained, 6);
    assert_eq!(seqs(&export_all(&collector)?)?, [1, 2, 3, 4, 5, 6]);

    clock.advance(Duration::from_nanos(1));
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!((s.retained, s.pruned.age), (3, 3));
    assert_eq!(s.first_retained_seq, Some(4));
    let export = export_all(&collector)?;
    assert_eq!(export.gap(), gap(1, 3, GapReason::Age));
    assert_eq!(seqs(&export)?, [4, 5, 6]);

    clock.advance(Duration::from_secs(5));
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!((s.retained, s.pruned.age), (0, 6));
    assert_eq!(s.retained_bytes, 0);
    assert_eq!(s.first_retained_seq, None);
    assert_eq!(s.last_seq, Some(6));
    Ok(())
}

#[test]
fn export_never_returns_expired_records_even_before_pruning() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    record_all(&collector, 1..=3)?;
    clock.advance(Duration::from_secs(6));
    record_all(&collector, 4..=5)?;
    clock.advance(Duration::from_secs(5));
    // Nothing has pruned since the clock moved: the worker sleeps for a minute.
    assert_eq!(collector.stats().retained, 5);
    assert_eq!(collector.stats().pruned.age, 0);
    let export = export_all(&collector)?;
    assert_eq!(export.gap(), gap(1, 3, GapReason::Age));
    assert_eq!(seqs(&export)?, [4, 5]);
    let cutoff = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(T0))?
        + time::Duration::seconds(1);
    assert!(records(&export)?.iter().all(|r| r.time >= cutoff));

    // A filtered export does not see them either.
    clock.advance(Duration::from_secs(10));
    let later = collector.export(&ExportRequest::after(Cursor::START).limit(1))?;
    assert!(later.is_empty());
    assert_eq!(later.gap(), gap(1, 5, GapReason::Age));
    let s = collector.stats();
    assert_eq!((s.retained, s.pruned.age), (0, 5));
    Ok(())
}

#[test]
fn an_idle_worker_prunes_on_its_tick() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| c.worker.tick_ms = 5)?;
    record_all(&collector, 1..=5)?;
    clock.advance(Duration::from_secs(MAX_AGE_SECS + 1));
    // No call to the collector but `stats`, which never prunes.
    let deadline = Instant::now() + PATIENCE;
    let mut s = collector.stats();
    while s.pruned.age < 5 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
        s = collector.stats();
    }
    assert_eq!((s.retained, s.pruned.age, s.retained_bytes), (0, 5, 0));
    Ok(())
}

#[test]
fn count_bound_removes_the_oldest_first() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| c.retention.max_events = 10)?;
    for batch in 0..5 {
        record_all(&collector, batch * 5 + 1..=batch * 5 + 5)?;
        let s = collector.stats();
        assert!(s.retained <= 10);
        assert_eq!(s.retained, s.stored.min(10));
        assert_eq!(s.pruned.capacity, s.stored - s.retained);
        assert_suffix(&collector, &s)?;
    }
    let export = export_all(&collector)?;
    assert_eq!(export.gap(), gap(1, 15, GapReason::Capacity));
    assert_eq!(seqs(&export)?, (16..=25).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn byte_bound_holds_after_every_record() -> TestResult {
    let clock = ManualClock::new(T0);
    let max_bytes = 4096;
    let collector = build(&clock, |c| c.retention.max_bytes = max_bytes)?;
    let mut sizes = (7u64..).map(|n| (n * 37 % 300) as usize);
    for m in 1..=200 {
        collector.record(sized(m, sizes.next().unwrap_or(0)))?;
        if m % 10 == 0 {
            collector.flush(PATIENCE)?;
            let s = collector.stats();
            assert!(s.retained_bytes <= max_bytes, "{s:#?}");
            assert!(s.retained > 0);
            assert_eq!(s.pruned.capacity, s.stored - s.retained);
            assert_suffix(&collector, &s)?;
            assert_eq!(s.retained_bytes, record_bytes(&export_all(&collector)?)?);
        }
    }
    Ok(())
}

#[test]
fn a_record_larger_than_the_byte_bound_is_not_retained() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| c.retention.max_bytes = 1024)?;
    record_all(&collector, 1..=3)?;
    collector.record(sized(4, 2000))?;
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert!(s.retained_bytes <= 1024);
    assert_eq!(s.stored, 4);
    assert_eq!(s.retained, 0);
    assert_eq!(s.pruned.capacity, 4);
    let export = export_all(&collector)?;
    assert_eq!(export.gap(), gap(1, 4, GapReason::Capacity));
    record_all(&collector, 5..=6)?;
    assert_eq!(seqs(&export_all(&collector)?)?, [5, 6]);
    Ok(())
}

#[test]
fn lowering_the_count_bound_live_prunes_at_once() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    record_all(&collector, 1..=20)?;
    collector.update_config(|c| c.retention.max_events = 5)?;
    let s = collector.stats();
    assert_eq!((s.retained, s.pruned.capacity), (5, 15));
    assert_suffix(&collector, &s)?;
    // Raising it again brings nothing back, and new records are kept up to it.
    collector.update_config(|c| c.retention.max_events = 8)?;
    assert_eq!(collector.stats().retained, 5);
    record_all(&collector, 21..=25)?;
    let s = collector.stats();
    assert_eq!((s.retained, s.pruned.capacity), (8, 17));
    assert_suffix(&collector, &s)?;
    Ok(())
}

#[test]
fn lowering_the_byte_bound_live_prunes_at_once() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    for m in 1..=50 {
        collector.record(sized(m, 100))?;
    }
    collector.flush(PATIENCE)?;
    let before = collector.stats();
    assert!(before.retained_bytes > 2048);
    collector.update_config(|c| c.retention.max_bytes = 2048)?;
    let s = collector.stats();
    assert!(s.retained_bytes <= 2048, "{s:#?}");
    assert!(s.retained > 0 && s.retained < 50);
    assert_eq!(s.pruned.capacity, 50 - s.retained);
    assert_suffix(&collector, &s)?;
    assert_eq!(s.retained_bytes, record_bytes(&export_all(&collector)?)?);
    Ok(())
}

#[test]
fn lowering_the_age_bound_live_prunes_at_once() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| c.retention.max_age_secs = 3600)?;
    record_all(&collector, 1..=4)?;
    clock.advance(Duration::from_secs(100));
    record_all(&collector, 5..=6)?;
    assert_eq!(collector.stats().retained, 6);
    collector.update_config(|c| c.retention.max_age_secs = 50)?;
    // Seen by `stats`, which never prunes by itself: the update did it.
    let s = collector.stats();
    assert_eq!((s.retained, s.pruned.age), (2, 4), "{s:#?}");
    assert_eq!(s.first_retained_seq, Some(5));
    Ok(())
}

#[test]
fn raising_the_age_bound_keeps_what_was_not_yet_pruned() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    record_all(&collector, 1..=3)?;
    clock.advance(Duration::from_secs(MAX_AGE_SECS + 5));
    collector.update_config(|c| c.retention.max_age_secs = 3600)?;
    assert_eq!(seqs(&export_all(&collector)?)?, [1, 2, 3]);
    Ok(())
}

#[test]
fn every_bound_at_once_keeps_order() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| {
        c.retention.max_events = 30;
        c.retention.max_bytes = 2048;
    })?;
    for round in 0..10u64 {
        for m in round * 10 + 1..=round * 10 + 10 {
            let event = if m % 3 == 0 { sized(m, 40) } else { used(m) };
            collector.record(event)?;
        }
        clock.advance(Duration::from_secs(3));
        collector.flush(PATIENCE)?;
        let s = collector.stats();
        assert!(s.retained <= 30 && s.retained_bytes <= 2048, "{s:#?}");
        assert_eq!(s.stored, s.retained + s.pruned.total());
        assert_suffix(&collector, &s)?;
    }
    let s = collector.stats();
    assert!(s.pruned.age > 0 || s.pruned.capacity > 0);
    Ok(())
}

#[test]
fn large_and_small_records_survive_pruning_intact() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| {
        c.limits.max_string_bytes = 1 << 20;
        c.retention.max_events = 6;
        c.retention.max_bytes = 600 * 1024;
    })?;
    // Sizes straddle the store's internal 64 KiB chunks, above and below.
    let sizes = [
        10,
        70_000,
        5,
        65_530,
        200_000,
        1,
        64 * 1024,
        3,
        150_000,
        40_000,
        7,
        90_000,
    ];
    for (i, len) in sizes.iter().enumerate() {
        let marker = i as u64 + 1;
        let fill = char::from(b'a' + (i % 26) as u8).to_string().repeat(*len);
        collector.record(Event::Custom(Custom {
            name: format!("blob-{marker}"),
            attributes: Attributes::new().with("payload", fill),
        }))?;
        collector.flush(PATIENCE)?;
        let s = collector.stats();
        assert!(s.retained <= 6 && s.retained_bytes <= 600 * 1024, "{s:#?}");
        assert_suffix(&collector, &s)?;
        for record in records(&export_all(&collector)?)? {
            let Event::Custom(e) = &record.event else {
                panic!("unexpected record {record:?}");
            };
            let index = usize::try_from(record.seq - 1)?;
            let expected = char::from(b'a' + (index % 26) as u8)
                .to_string()
                .repeat(sizes[index]);
            assert_eq!(
                e.attributes.get("payload"),
                Some(&arbiter_events::Value::String(expected)),
                "seq {}",
                record.seq
            );
        }
        assert_eq!(s.retained_bytes, record_bytes(&export_all(&collector)?)?);
    }
    Ok(())
}
