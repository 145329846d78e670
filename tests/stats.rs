//! `stats`: per-kind counts over the lifetime and the retained records, the encoded size
//! of what is retained, times from the collector's clock, and the key's fingerprint.

mod common;

use std::time::Duration;

use arbiter_events::{
    AnonymizationKey, AnonymizationMode, Attributes, Collector, Complexity, Config, Custom, Event,
    EventKind, Export, ExportTrailer, KeyOrigin, ManualClock, State, ThinkingBudgetAllocated,
};
use time::OffsetDateTime;

use common::{PATIENCE, T0, TestResult, at, export_all};

const KEY: [u8; 32] = [8; 32];

fn build(clock: &ManualClock, edit: impl FnOnce(&mut Config)) -> common::Result<Collector> {
    common::build_collector(clock.clone(), common::config_with(edit), KEY)
}

fn used(n: u64) -> Event {
    common::used_by(format!("task-{n}"), n)
}

fn allocated(n: u64) -> Event {
    Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
        task_id: format!("task-{n}"),
        allocated_tokens: n,
        complexity: Complexity::Complex,
        confidence: 0.25,
    })
}

fn custom(n: u64, len: usize) -> Event {
    Event::Custom(Custom {
        name: format!("custom-{n}"),
        attributes: Attributes::new().with("blob", "y".repeat(len)),
    })
}

/// The encoded size of the records in `export`: the whole file minus header and trailer,
/// which must end it.
fn record_bytes(export: &Export) -> common::Result<u64> {
    let (size, rest) = common::record_size_and_rest(export)?;
    let mut input = std::io::Cursor::new(rest.as_slice());
    let trailer: ExportTrailer = rmp_serde::from_read(&mut input)?;
    if trailer.count != export.len() || input.position() != rest.len() as u64 {
        return Err("the export does not end with its trailer".into());
    }
    Ok(size)
}

#[test]
fn smoke() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    let s = collector.stats();
    assert_eq!(
        (s.submitted, s.stored, s.retained, s.retained_bytes),
        (0, 0, 0, 0)
    );
    assert_eq!((s.first_retained_seq, s.last_seq), (None, None));
    assert_eq!(s.state, State::Active);
    collector.record(used(1))?;
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!((s.submitted, s.stored, s.retained), (1, 1, 1));
    assert!(s.retained_bytes > 0);
    Ok(())
}

#[test]
fn kinds_are_counted_over_the_lifetime_and_the_retained_records() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    for n in 0..3 {
        collector.record(used(n))?;
    }
    for n in 0..2 {
        collector.record(allocated(n))?;
    }
    collector.record(custom(0, 4))?;
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!(
        s.kinds.iter().map(|k| k.kind).collect::<Vec<_>>(),
        EventKind::ALL
    );
    let counts = |kind| {
        let k = s.kind(kind);
        (k.stored, k.retained)
    };
    assert_eq!(counts(EventKind::ThinkingBudgetUsed), (3, 3));
    assert_eq!(counts(EventKind::ThinkingBudgetAllocated), (2, 2));
    assert_eq!(counts(EventKind::Custom), (1, 1));
    assert_eq!(counts(EventKind::RoutingDecision), (0, 0));
    assert_eq!(s.kinds.iter().map(|k| k.stored).sum::<u64>(), 6);

    // Keep the newest two: the custom record and the last allocation.
    collector.update_config(|c| c.retention.max_events = 2)?;
    let s = collector.stats();
    let counts = |kind| {
        let k = s.kind(kind);
        (k.stored, k.retained)
    };
    assert_eq!(counts(EventKind::ThinkingBudgetUsed), (3, 0));
    assert_eq!(counts(EventKind::ThinkingBudgetAllocated), (2, 1));
    assert_eq!(counts(EventKind::Custom), (1, 1));
    assert_eq!(s.kinds.iter().map(|k| k.retained).sum::<u64>(), s.retained);

    collector.clear();
    let s = collector.stats();
    assert!(s.kinds.iter().all(|k| k.retained == 0));
    assert_eq!(s.kinds.iter().map(|k| k.stored).sum::<u64>(), 6);
    Ok(())
}

#[test]
fn retained_bytes_is_the_size_of_the_exported_records() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| c.retention.max_events = 40)?;
    let mut previous = 0;
    for round in 0..6u64 {
        for n in round * 10..round * 10 + 10 {
            let event = match n % 3 {
                0 => used(n),
                1 => allocated(n),
                _ => custom(n, usize::try_from(n * 7)?),
            };
            collector.record(event)?;
        }
        collector.flush(PATIENCE)?;
        let s = collector.stats();
        let export = export_all(&collector)?;
        assert_eq!(export.len(), s.retained);
        assert_eq!(s.retained_bytes, record_bytes(&export)?, "round {round}");
        if round < 4 {
            assert!(s.retained_bytes > previous, "grows while nothing is pruned");
        }
        previous = s.retained_bytes;
    }
    collector.update_config(|c| c.retention.max_events = 5)?;
    let s = collector.stats();
    assert!(s.retained_bytes < previous);
    assert_eq!(s.retained_bytes, record_bytes(&export_all(&collector)?)?);
    collector.clear();
    assert_eq!(collector.stats().retained_bytes, 0);
    Ok(())
}

#[test]
fn seqs_and_queue_are_reported() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |c| {
        c.queue.capacity = 32;
        c.retention.max_events = 4;
    })?;
    for n in 0..10 {
        collector.record(used(n))?;
    }
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    assert_eq!(s.queue_capacity, 32);
    assert_eq!(s.queue_depth, 0);
    assert_eq!(s.last_seq, Some(10));
    assert_eq!(s.first_retained_seq, Some(7));
    assert_eq!((s.retained, s.pruned.capacity), (4, 6));
    collector.clear();
    let s = collector.stats();
    assert_eq!(s.first_retained_seq, None);
    assert_eq!(s.last_seq, Some(10));
    assert_eq!(s.pruned.cleared, 4);
    Ok(())
}

#[test]
fn times_come_from_the_collector_clock() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    clock.advance(Duration::from_secs(5));
    let s = collector.stats();
    assert_eq!(s.collection_started_at, at(T0)?);
    assert_eq!(s.last_updated_at, None);

    collector.record(used(1))?;
    collector.flush(PATIENCE)?;
    let first = at(T0 + 5_000_000_000)?;
    assert_eq!(collector.stats().last_updated_at, Some(first));
    clock.advance(Duration::from_millis(1500));
    collector.record(used(2))?;
    collector.flush(PATIENCE)?;
    let second = at(T0 + 6_500_000_000)?;
    let s = collector.stats();
    assert_eq!(s.last_updated_at, Some(second));
    assert_eq!(s.collection_started_at, at(T0)?);
    let times: Vec<OffsetDateTime> = export_all(&collector)?
        .records()
        .map(|r| r.map(|r| r.time))
        .collect::<Result<_, _>>()?;
    assert_eq!(times, [first, second]);

    // A clock stepping back never makes record times decrease.
    clock.set_unix_nanos(T0);
    collector.record(used(3))?;
    collector.flush(PATIENCE)?;
    assert_eq!(collector.stats().last_updated_at, Some(second));
    let last = export_all(&collector)?.records().last().transpose()?;
    assert_eq!(last.map(|r| r.time), Some(second));
    Ok(())
}

#[test]
fn the_key_fingerprint_matches_the_export() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    collector.record(used(1))?;
    collector.flush(PATIENCE)?;
    let s = collector.stats();
    let export = export_all(&collector)?;
    assert_eq!(
        s.key_id.as_deref(),
        Some(AnonymizationKey::from_bytes(KEY).key_id().as_str())
    );
    assert_eq!(s.key_id, export.header().key_id);
    assert_eq!(s.key_origin, Some(KeyOrigin::Explicit));
    assert_eq!(s.anonymization, AnonymizationMode::Pseudonymize);
    assert_eq!(export.header().anonymization, s.anonymization);
    Ok(())
}

#[test]
fn stats_serialize_with_their_field_names() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock, |_| {})?;
    collector.record(used(1))?;
    collector.flush(PATIENCE)?;
    let json = serde_json::to_value(collector.stats())?;
    for field in [
        "submitted",
        "stored",
        "rejected",
        "dropped",
        "in_flight",
        "retained",
        "retained_bytes",
        "pruned",
        "kinds",
        "tasks",
        "collection_started_at",
        "last_updated_at",
        "state",
        "key_id",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    assert_eq!(json["state"], "active");
    assert_eq!(json["collection_started_at"], "2023-11-14T22:13:20Z");
    Ok(())
}
