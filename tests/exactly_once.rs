//! Exactly-once increments: successive exports from `Cursor::START`, each from the
//! previous `next_cursor`, deliver every record once and in order, and report an explicit
//! gap for exactly the records that were removed before the consumer pulled them.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use arbiter_events::{
    Collector, Complexity, Cursor, Event, EventKind, ExportError, ExportRequest, Gap, GapReason,
    ManualClock, Record, ThinkingBudgetAllocated,
};
use proptest::prelude::*;

use common::{PATIENCE, T0, TestResult, at, gap, record_all, records, seqs, used};

const SECOND: i64 = 1_000_000_000;
const MAX_AGE_SECS: u64 = 10;

fn build(clock: &ManualClock) -> common::Result<Collector> {
    let config = common::config_with(|c| c.retention.max_age_secs = MAX_AGE_SECS);
    common::build_collector(clock.clone(), config, [5; 32])
}

fn allocated(marker: u64) -> Event {
    Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
        task_id: "task".into(),
        allocated_tokens: marker,
        complexity: Complexity::Standard,
        confidence: 0.5,
    })
}

fn marker(record: &Record) -> Option<u64> {
    match &record.event {
        Event::ThinkingBudgetUsed(e) => Some(e.tokens_used),
        Event::ThinkingBudgetAllocated(e) => Some(e.allocated_tokens),
        _ => None,
    }
}

#[test]
fn smoke() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    record_all(&collector, 1..=3)?;
    let first = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(seqs(&first)?, [1, 2, 3]);
    assert_eq!(first.next_cursor(), Cursor::after_seq(3));
    record_all(&collector, 4..=5)?;
    let second = collector.export(&ExportRequest::after(first.next_cursor()))?;
    assert_eq!(seqs(&second)?, [4, 5]);
    assert_eq!(second.gap(), None);
    Ok(())
}

#[test]
fn limit_pages_through_the_stream() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    record_all(&collector, 1..=10)?;
    let mut cursor = Cursor::START;
    let mut pages = Vec::new();
    loop {
        let export = collector.export(&ExportRequest::after(cursor).limit(3))?;
        assert_eq!(export.header().after, cursor.seq());
        assert_eq!(export.header().limit, Some(3));
        assert_eq!(export.gap(), None);
        if export.is_empty() {
            assert_eq!(export.next_cursor(), cursor);
            break;
        }
        let page = seqs(&export)?;
        assert_eq!(export.header().first_seq, page.first().copied());
        assert_eq!(export.header().last_seq, page.last().copied());
        assert_eq!(
            export.next_cursor(),
            Cursor::after_seq(page[page.len() - 1])
        );
        cursor = export.next_cursor();
        pages.push(page);
    }
    assert_eq!(
        pages,
        [vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9], vec![10]]
    );
    Ok(())
}

#[test]
fn contradictory_requests_are_refused() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    record_all(&collector, 1..=2)?;
    let start = ExportRequest::after(Cursor::START);
    for request in [
        start.clone().limit(0),
        start.clone().kinds([]),
        start.clone().since(at(T0)?).until(at(T0)?),
        start.clone().since(at(T0 + SECOND)?).until(at(T0)?),
    ] {
        let result = collector.export(&request);
        assert!(
            matches!(result, Err(ExportError::InvalidRequest { .. })),
            "{request:?} gave {result:?}"
        );
    }
    Ok(())
}

#[test]
fn kinds_filter_consumes_the_records_it_passes_over() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    for m in 1..=6 {
        let event = if m % 2 == 0 { allocated(m) } else { used(m) };
        collector.record(event)?;
    }
    collector.flush(PATIENCE)?;
    let request = ExportRequest::after(Cursor::START).kinds([EventKind::ThinkingBudgetUsed]);
    let export = collector.export(&request)?;
    let got = records(&export)?;
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3, 5]);
    assert!(
        got.iter()
            .all(|r| r.event.kind() == EventKind::ThinkingBudgetUsed)
    );
    assert_eq!(
        export.header().kinds,
        Some(vec![EventKind::ThinkingBudgetUsed])
    );
    // Seq 6 was passed over, and the cursor moved past it.
    assert_eq!(export.next_cursor(), Cursor::after_seq(6));
    let rest = collector.export(&ExportRequest::after(export.next_cursor()))?;
    assert!(rest.is_empty());
    assert_eq!(rest.gap(), None);

    // With a limit, the cursor stops at the last record delivered.
    let limited = collector.export(
        &ExportRequest::after(Cursor::START)
            .kinds([EventKind::ThinkingBudgetAllocated])
            .limit(2),
    )?;
    assert_eq!(seqs(&limited)?, [2, 4]);
    assert_eq!(limited.next_cursor(), Cursor::after_seq(4));
    let next = collector.export(&ExportRequest::after(limited.next_cursor()))?;
    assert_eq!(seqs(&next)?, [5, 6]);
    Ok(())
}

/// Records 1-3 at `T0`, 4-6 at `T0 + 1 s`, 7-9 at `T0 + 2 s`.
fn three_seconds(clock: &ManualClock) -> common::Result<Collector> {
    let collector = build(clock)?;
    for second in 0..3 {
        record_all(&collector, second * 3 + 1..=second * 3 + 3)?;
        clock.advance(Duration::from_secs(1));
    }
    Ok(collector)
}

#[test]
fn since_is_inclusive_and_consumes_earlier_records() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = three_seconds(&clock)?;
    let export = collector.export(&ExportRequest::after(Cursor::START).since(at(T0 + SECOND)?))?;
    let got = records(&export)?;
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [4, 5, 6, 7, 8, 9]
    );
    let t1 = at(T0 + SECOND)?;
    assert!(got.iter().all(|r| r.time >= t1));
    assert_eq!(export.header().since, Some(T0 + SECOND));
    assert_eq!(export.next_cursor(), Cursor::after_seq(9));
    assert_eq!(export.gap(), None);

    // Just after a record's time excludes it.
    let later =
        collector.export(&ExportRequest::after(Cursor::START).since(at(T0 + SECOND + 1)?))?;
    assert_eq!(seqs(&later)?, [7, 8, 9]);

    // Records before `since` are passed over: a cursor past them does not see them again.
    let partial = collector.export(
        &ExportRequest::after(Cursor::START)
            .since(at(T0 + SECOND)?)
            .limit(1),
    )?;
    assert_eq!(seqs(&partial)?, [4]);
    let rest = collector.export(&ExportRequest::after(partial.next_cursor()))?;
    assert_eq!(seqs(&rest)?, [5, 6, 7, 8, 9]);

    // `since` after everything consumes everything.
    let none =
        collector.export(&ExportRequest::after(Cursor::START).since(at(T0 + 60 * SECOND)?))?;
    assert!(none.is_empty());
    assert_eq!(none.next_cursor(), Cursor::after_seq(9));
    Ok(())
}

#[test]
fn until_is_exclusive_and_stops_before_later_records() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = three_seconds(&clock)?;
    let export = collector.export(&ExportRequest::after(Cursor::START).until(at(T0 + SECOND)?))?;
    assert_eq!(seqs(&export)?, [1, 2, 3]);
    assert_eq!(export.header().until, Some(T0 + SECOND));
    assert_eq!(export.next_cursor(), Cursor::after_seq(3));
    // The records at and after `until` were not consumed.
    let rest = collector.export(&ExportRequest::after(export.next_cursor()))?;
    assert_eq!(seqs(&rest)?, [4, 5, 6, 7, 8, 9]);

    // Nothing before `until` after the cursor: the cursor stays put.
    let stuck =
        collector.export(&ExportRequest::after(Cursor::after_seq(3)).until(at(T0 + SECOND)?))?;
    assert!(stuck.is_empty());
    assert_eq!(stuck.next_cursor(), Cursor::after_seq(3));

    let window = collector.export(
        &ExportRequest::after(Cursor::START)
            .since(at(T0 + SECOND)?)
            .until(at(T0 + 2 * SECOND)?),
    )?;
    assert_eq!(seqs(&window)?, [4, 5, 6]);
    assert_eq!(window.next_cursor(), Cursor::after_seq(6));
    let after_window = collector.export(&ExportRequest::after(window.next_cursor()))?;
    assert_eq!(seqs(&after_window)?, [7, 8, 9]);
    Ok(())
}

#[test]
fn a_cursor_past_the_last_seq_is_refused() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    let empty = collector.export(&ExportRequest::after(Cursor::START))?;
    assert!(empty.is_empty());
    assert_eq!(empty.next_cursor(), Cursor::START);
    assert!(matches!(
        collector.export(&ExportRequest::after(Cursor::after_seq(1))),
        Err(ExportError::CursorAhead {
            after: 1,
            last_seq: 0
        })
    ));
    record_all(&collector, 1..=4)?;
    let caught_up = collector.export(&ExportRequest::after(Cursor::after_seq(4)))?;
    assert!(caught_up.is_empty());
    assert_eq!(caught_up.next_cursor(), Cursor::after_seq(4));
    assert!(matches!(
        collector.export(&ExportRequest::after(Cursor::after_seq(5))),
        Err(ExportError::CursorAhead {
            after: 5,
            last_seq: 4
        })
    ));
    // Still refused when the records are gone: seqs are never reused.
    collector.clear();
    assert!(matches!(
        collector.export(&ExportRequest::after(Cursor::after_seq(9))),
        Err(ExportError::CursorAhead {
            after: 9,
            last_seq: 4
        })
    ));
    Ok(())
}

#[test]
fn gap_reasons_name_what_removed_the_records() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;

    record_all(&collector, 1..=3)?;
    clock.advance(Duration::from_secs(MAX_AGE_SECS + 1));
    record_all(&collector, 4..=5)?;
    let age = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(age.gap(), gap(1, 3, GapReason::Age));
    assert_eq!(seqs(&age)?, [4, 5]);

    collector.update_config(|c| c.retention.max_events = 2)?;
    record_all(&collector, 6..=8)?;
    let capacity = collector.export(&ExportRequest::after(age.next_cursor()))?;
    assert_eq!(capacity.gap(), gap(6, 6, GapReason::Capacity));
    assert_eq!(seqs(&capacity)?, [7, 8]);

    record_all(&collector, 9..=10)?;
    assert_eq!(collector.clear(), 2);
    let cleared = collector.export(&ExportRequest::after(capacity.next_cursor()))?;
    assert_eq!(cleared.gap(), gap(9, 10, GapReason::Cleared));
    assert!(cleared.is_empty());
    assert_eq!(cleared.next_cursor(), Cursor::after_seq(10));

    // A consumer still at the start sees one gap over every removal: mixed.
    let late = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(late.gap(), gap(1, 10, GapReason::Mixed));
    assert_eq!(late.gap().map(|g| g.len()), Some(10));
    // ... but a gap within a single removal keeps its reason.
    let within = collector.export(&ExportRequest::after(Cursor::after_seq(8)))?;
    assert_eq!(within.gap(), gap(9, 10, GapReason::Cleared));
    Ok(())
}

#[test]
fn removing_pulled_records_reports_no_gap() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    record_all(&collector, 1..=4)?;
    let pulled = collector.export(&ExportRequest::after(Cursor::START))?;
    collector.clear();
    let after_clear = collector.export(&ExportRequest::after(pulled.next_cursor()))?;
    assert_eq!(after_clear.gap(), None);
    record_all(&collector, 5..=6)?;
    clock.advance(Duration::from_secs(MAX_AGE_SECS + 1));
    record_all(&collector, 7..=7)?;
    let partly = collector.export(&ExportRequest::after(Cursor::after_seq(5)))?;
    assert_eq!(partly.gap(), gap(6, 6, GapReason::Age));
    assert_eq!(seqs(&partly)?, [7]);
    let next = collector.export(&ExportRequest::after(Cursor::after_seq(6)))?;
    assert_eq!(next.gap(), None);
    assert_eq!(seqs(&next)?, [7]);
    Ok(())
}

#[test]
fn an_export_spanning_many_lock_chunks_is_whole() -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    record_all(&collector, 1..=5000)?;
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    let got = records(&export)?;
    assert_eq!(got.len(), 5000);
    for (i, record) in got.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert_eq!(marker(record), Some(record.seq));
    }
    assert_eq!(export.next_cursor(), Cursor::after_seq(5000));
    Ok(())
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Records this many events and flushes.
    Record(u8),
    /// Exports from the carried cursor, optionally with a limit.
    Export(Option<u64>),
    /// Moves the clock forward this many seconds and flushes (pruning by age).
    Advance(u64),
    /// Sets `retention.max_events` (pruning by capacity).
    MaxEvents(u64),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6).prop_map(Op::Record),
        4 => prop::option::of(1u64..6).prop_map(Op::Export),
        1 => (1u64..=12).prop_map(Op::Advance),
        1 => (1u64..=12).prop_map(Op::MaxEvents),
        1 => Just(Op::Clear),
    ]
}

/// The store as the consumer should see it.
#[derive(Debug)]
struct Model {
    /// `(seq, time)` of the retained records.
    retained: VecDeque<(u64, i64)>,
    /// Why each seq was removed, by seq (index 0 unused).
    removed: Vec<Option<GapReason>>,
    next_seq: u64,
    max_events: u64,
    now: i64,
}

impl Model {
    fn first_seq(&self) -> u64 {
        self.retained.front().map_or(self.next_seq, |&(seq, _)| seq)
    }

    fn pop(&mut self, reason: GapReason) {
        if let Some((seq, _)) = self.retained.pop_front() {
            self.removed[usize::try_from(seq).unwrap_or(usize::MAX)] = Some(reason);
        }
    }

    fn push(&mut self) {
        self.retained.push_back((self.next_seq, self.now));
        self.removed.push(None);
        self.next_seq += 1;
        self.enforce_count();
    }

    fn enforce_count(&mut self) {
        while self.retained.len() as u64 > self.max_events {
            self.pop(GapReason::Capacity);
        }
    }

    fn prune_age(&mut self) {
        let cutoff = self.now - MAX_AGE_SECS as i64 * SECOND;
        while self.retained.front().is_some_and(|&(_, t)| t < cutoff) {
            self.pop(GapReason::Age);
        }
    }

    fn reason(&self, from: u64, to: u64) -> Option<GapReason> {
        let mut reasons = (from..=to).map(|seq| {
            self.removed
                .get(usize::try_from(seq).unwrap_or(usize::MAX))
                .copied()
                .flatten()
        });
        let first = reasons.next().flatten()?;
        for r in reasons {
            if r? != first {
                return Some(GapReason::Mixed);
            }
        }
        Some(first)
    }

    /// The gap, records and next cursor an export after `cursor` should give.
    fn export(&self, cursor: u64, limit: Option<u64>) -> (Option<Gap>, Vec<(u64, i64)>, u64) {
        let mut cursor = cursor;
        let first = self.first_seq();
        let mut gap = None;
        if cursor + 1 < first {
            gap = self.reason(cursor + 1, first - 1).map(|reason| Gap {
                from_seq: cursor + 1,
                to_seq: first - 1,
                reason,
            });
            cursor = first - 1;
        }
        let limit = usize::try_from(limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
        let records: Vec<(u64, i64)> = self
            .retained
            .iter()
            .filter(|&&(seq, _)| seq > cursor)
            .take(limit)
            .copied()
            .collect();
        let next = records.last().map_or(cursor, |&(seq, _)| seq);
        (gap, records, next)
    }
}

/// Runs `ops` against a collector and the model; checks every export against the
/// model, then drains and checks that deliveries and gaps cover every seq exactly once.
fn run_ops(ops: &[Op]) -> TestResult {
    let clock = ManualClock::new(T0);
    let collector = build(&clock)?;
    let mut model = Model {
        retained: VecDeque::new(),
        removed: vec![None],
        next_seq: 1,
        max_events: collector.config().retention.max_events,
        now: T0,
    };
    let mut cursor = Cursor::START;
    // Every seq the consumer was told about, in the order it was told: delivered or gap.
    let mut accounted: Vec<u64> = Vec::new();
    let mut pull = |collector: &Collector, model: &Model, limit: Option<u64>| -> TestResult {
        let (gap, expected, next) = model.export(cursor.seq(), limit);
        let mut request = ExportRequest::after(cursor);
        request.limit = limit;
        let export = collector.export(&request)?;
        assert_eq!(export.gap(), gap, "after {cursor:?}, model {model:?}");
        let got = records(&export)?;
        let got_seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
        let expected_seqs: Vec<u64> = expected.iter().map(|&(seq, _)| seq).collect();
        assert_eq!(got_seqs, expected_seqs, "after {cursor:?}, model {model:?}");
        for (record, &(seq, time)) in got.iter().zip(&expected) {
            assert_eq!(marker(record), Some(seq));
            assert_eq!(record.time, at(time)?);
        }
        assert_eq!(export.next_cursor(), Cursor::after_seq(next));
        if let Some(gap) = gap {
            accounted.extend(gap.from_seq..=gap.to_seq);
        }
        accounted.extend(got_seqs);
        cursor = export.next_cursor();
        Ok(())
    };
    for op in ops {
        match *op {
            Op::Record(n) => {
                for _ in 0..n {
                    collector.record(used(model.next_seq))?;
                    model.push();
                }
                collector.flush(PATIENCE)?;
                model.prune_age();
            }
            Op::Export(limit) => pull(&collector, &model, limit)?,
            Op::Advance(secs) => {
                clock.advance(Duration::from_secs(secs));
                collector.flush(PATIENCE)?;
                model.now += i64::try_from(secs)? * SECOND;
                model.prune_age();
            }
            Op::MaxEvents(max) => {
                collector.update_config(|c| c.retention.max_events = max)?;
                model.max_events = max;
                model.enforce_count();
            }
            Op::Clear => {
                let n = collector.clear();
                assert_eq!(n, model.retained.len() as u64);
                while !model.retained.is_empty() {
                    model.pop(GapReason::Cleared);
                }
            }
        }
        let s = collector.stats();
        assert_eq!(s.retained, model.retained.len() as u64);
        assert_eq!(s.first_retained_seq, model.retained.front().map(|r| r.0));
    }
    pull(&collector, &model, None)?;
    let last = model.next_seq - 1;
    assert_eq!(accounted, (1..=last).collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn increments_are_exactly_once_with_explicit_gaps(
        ops in prop::collection::vec(op(), 1..50)
    ) {
        run_ops(&ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
