//! The live analytics stage: a thread of its own, fed by the ingest worker with each
//! batch of records once the batch is committed, that folds them into the time-bucketed
//! aggregates, evaluates the alert rules, and turns each alert that fires into an
//! `AnomalyDetected` record (sent back through the worker, which gives it a `seq`) and a
//! message to every [`Collector::alerts`] subscriber.
//!
//! `record()` never touches any of it. The worker's part is a move of each event into a
//! batch and, per batch, one `try_send` into a bounded channel of
//! [`LIVE_QUEUE_BATCHES`]: when the stage falls behind, the batch is not folded and its
//! records are counted in [`AnalyticsStats::skipped`], and per bucket of record time, so
//! that a live report says how many records of its window it missed; the worker never
//! waits for the stage.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;

use crate::analytics::{Aggregates, Alert, Alerting, IdView, Report, ReportRequest};
use crate::codec::anonymize::Anonymizer;
use crate::contract::analytics::{AlertRule, AlertRuleError, AnalyticsConfig};
use crate::contract::clock::unix_nanos;
use crate::contract::event::{AnomalyDetected, Event};
use crate::contract::key::{IdKind, write_pseudonym};
use crate::pipeline::collector::{Collector, Shared};
use crate::pipeline::worker::Msg;

/// Batches the channel between the ingest worker and the live stage holds; a batch that
/// finds it full is not folded (counted in [`AnalyticsStats::skipped`]).
pub const LIVE_QUEUE_BATCHES: usize = 64;

/// Alerts each [`Collector::alerts`] receiver holds before further alerts are not
/// delivered to it (counted in [`AnalyticsStats::undelivered`]).
pub const ALERT_SUBSCRIBER_CAPACITY: usize = 256;

/// The rules are evaluated at most this often (in the collector's clock), and on the
/// first batch after it.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// How often the idle stage wakes to evaluate the rules.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// One record handed to the stage: its time (Unix nanoseconds) and its event.
type Batch = Vec<(i64, Event)>;

/// What the live stage has done, from [`Collector::analytics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct AnalyticsStats {
    /// Whether the collector keeps live aggregates (`analytics.enabled`).
    pub enabled: bool,
    /// Records folded into the live aggregates.
    pub folded: u64,
    /// Records not folded because the stage was [`LIVE_QUEUE_BATCHES`] batches behind.
    pub skipped: u64,
    /// Alerts fired (each is an `AnomalyDetected` record, counted in
    /// `stats().generated`, and a message to each subscriber).
    pub fired: u64,
    /// Alert messages not delivered because a subscriber's receiver was full.
    pub undelivered: u64,
    /// Rule evaluations run (each counted once the alerts it fired were sent).
    pub evaluations: u64,
    /// Agents with a row of their own now.
    pub tracked_agents: usize,
    /// Bytes held by the live aggregates.
    pub memory_bytes: usize,
}

/// Identifiers as the collector's records show them: keyed pseudonyms when
/// pseudonymizing. Only the name of an agent given a row is ever computed.
struct Pseudonyms(Anonymizer);

impl IdView for Pseudonyms {
    fn view<R>(&mut self, kind: IdKind, id: &str, f: impl FnOnce(&str) -> R) -> R {
        match self.0.pseudonym(kind, id) {
            Some((_, digits)) => {
                let mut out = String::new();
                write_pseudonym(kind, &digits, &mut out);
                f(&out)
            }
            None => f(id),
        }
    }
}

struct State {
    aggregates: Aggregates,
    alerting: Alerting,
    ids: Pseudonyms,
    last_evaluation: Option<i64>,
}

/// The stage's state, shared by its thread and the collector's handles.
pub(crate) struct LiveAnalytics {
    state: Mutex<State>,
    bucket_secs: u64,
    buckets: usize,
    folded: AtomicU64,
    skipped: AtomicU64,
    /// The width of one bucket, in nanoseconds.
    width: i64,
    /// Records skipped per bucket start (Unix nanoseconds), the last `buckets` buckets:
    /// written by the worker only when it skips a batch.
    skipped_buckets: Mutex<VecDeque<(i64, u64)>>,
    fired: AtomicU64,
    undelivered: AtomicU64,
    evaluations: AtomicU64,
    subscribers: Mutex<Vec<Sender<Alert>>>,
}

impl std::fmt::Debug for LiveAnalytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveAnalytics")
            .field("folded", &self.folded.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// The worker's end: the batch being built, and the channel to the stage.
pub(crate) struct LiveFeed {
    tx: Sender<Batch>,
    /// Emptied batches coming back, so batches do not allocate.
    spare: Receiver<Batch>,
    batch: Batch,
    stage: Arc<LiveAnalytics>,
}

impl LiveFeed {
    /// Adds a record the worker has encoded to the batch being built.
    #[inline]
    pub(crate) fn push(&mut self, time: i64, event: Event) {
        self.batch.push((time, event));
    }

    /// Hands the batch to the stage without waiting: a full channel counts the batch's
    /// records as skipped.
    pub(crate) fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = self.spare.try_recv().unwrap_or_default();
        let batch = std::mem::replace(&mut self.batch, next);
        if let Err(TrySendError::Full(mut b) | TrySendError::Disconnected(mut b)) =
            self.tx.try_send(batch)
        {
            self.stage.count_skipped(&b);
            b.clear();
            self.batch = b;
        }
    }
}

/// Starts the stage for `config` with `rules`, naming agents through `anonymizer`;
/// alert records go to the worker through `queue`. Returns the shared state and the
/// worker's end.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    config: &AnalyticsConfig,
    rules: Vec<AlertRule>,
    anonymizer: Anonymizer,
    queue: Sender<Msg>,
) -> Result<(Arc<LiveAnalytics>, LiveFeed), LiveError> {
    let stage = Arc::new(LiveAnalytics::new(config, rules, anonymizer)?);
    let (tx, rx) = crossbeam_channel::bounded(LIVE_QUEUE_BATCHES);
    let (back, spare) = crossbeam_channel::bounded(LIVE_QUEUE_BATCHES + 1);
    let thread_stage = Arc::clone(&stage);
    std::thread::Builder::new()
        .name("arbiter-events-analytics".into())
        .spawn(move || run(&thread_stage, &shared, &rx, &back, &queue))
        .map_err(LiveError::Spawn)?;
    let feed = LiveFeed {
        tx,
        spare,
        batch: Vec::new(),
        stage: Arc::clone(&stage),
    };
    Ok((stage, feed))
}

impl LiveAnalytics {
    fn new(
        config: &AnalyticsConfig,
        rules: Vec<AlertRule>,
        anonymizer: Anonymizer,
    ) -> Result<LiveAnalytics, AlertRuleError> {
        let alerting = Alerting::new(rules, config.bucket_secs, config.buckets)?;
        Ok(LiveAnalytics {
            state: Mutex::new(State {
                aggregates: Aggregates::new(config),
                alerting,
                ids: Pseudonyms(anonymizer),
                last_evaluation: None,
            }),
            bucket_secs: config.bucket_secs,
            buckets: config.buckets,
            folded: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            width: config.bucket_nanos(),
            skipped_buckets: Mutex::new(VecDeque::new()),
            fired: AtomicU64::new(0),
            undelivered: AtomicU64::new(0),
            evaluations: AtomicU64::new(0),
            subscribers: Mutex::new(Vec::new()),
        })
    }

    /// Counts the records of a batch the stage will not fold, overall and per bucket of
    /// their time (non-decreasing, so nearly always the newest bucket).
    fn count_skipped(&self, batch: &[(i64, Event)]) {
        self.skipped.fetch_add(batch.len() as u64, Relaxed);
        let width = self.width;
        let mut buckets = self
            .skipped_buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (time, _) in batch {
            let start = time.div_euclid(width) * width;
            let at = buckets.partition_point(|(s, _)| *s < start);
            let full = buckets.len() >= self.buckets;
            match buckets.get_mut(at) {
                Some((s, n)) if *s == start => *n += 1,
                // Older than every bucket kept (time went back): counted in the oldest.
                Some((_, n)) if at == 0 && full => *n += 1,
                _ => buckets.insert(at, (start, 1)),
            }
        }
        while buckets.len() > self.buckets {
            buckets.pop_front();
        }
    }

    /// Records skipped with a time in `since..until` (bucket edges).
    fn skipped_between(&self, since: i64, until: i64) -> u64 {
        self.skipped_buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(start, _)| (since..until).contains(start))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Why the stage could not start.
#[derive(Debug)]
pub(crate) enum LiveError {
    Rules(AlertRuleError),
    Spawn(std::io::Error),
}

impl From<AlertRuleError> for LiveError {
    fn from(e: AlertRuleError) -> LiveError {
        LiveError::Rules(e)
    }
}

/// The stage's thread: fold each batch, evaluate when due, emit what fires. It stops
/// when the worker drops its end.
fn run(
    stage: &LiveAnalytics,
    shared: &Shared,
    rx: &Receiver<Batch>,
    back: &Sender<Batch>,
    queue: &Sender<Msg>,
) {
    loop {
        let folded = match rx.recv_timeout(IDLE_TICK) {
            Ok(mut batch) => {
                let n = batch.len() as u64;
                stage.fold(&batch);
                // The events are freed here, off the worker's path.
                batch.clear();
                let _ = back.try_send(batch);
                n
            }
            Err(RecvTimeoutError::Timeout) => 0,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // The clock is read only when there are rules to evaluate.
        let alerts = if stage.has_rules() {
            stage.evaluate_if_due(shared.clock.now_unix_nanos())
        } else {
            None
        };
        if let Some(alerts) = alerts {
            for alert in alerts {
                stage.emit(shared, queue, alert);
            }
            // Counted once its alerts are sent.
            stage.evaluations.fetch_add(1, SeqCst);
        }
        // Published last: once `folded` counts a record, the evaluation after it ran
        // and its alerts were sent.
        stage.folded.fetch_add(folded, SeqCst);
    }
}

impl LiveAnalytics {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The aggregates are consistent between two records.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fold(&self, batch: &[(i64, Event)]) {
        let mut state = self.lock();
        let State {
            aggregates, ids, ..
        } = &mut *state;
        for (time, event) in batch {
            aggregates.add(*time, event, ids);
        }
    }

    fn has_rules(&self) -> bool {
        !self.lock().alerting.rules().is_empty()
    }

    /// The alerts of an evaluation at `now`, or `None` when none is due.
    fn evaluate_if_due(&self, now: i64) -> Option<Vec<Alert>> {
        let mut state = self.lock();
        if state.alerting.rules().is_empty() {
            return None;
        }
        let every = EVALUATE_EVERY.as_nanos() as i64;
        if state
            .last_evaluation
            .is_some_and(|last| now.saturating_sub(last) < every)
        {
            return None;
        }
        state.last_evaluation = Some(now);
        let State {
            aggregates,
            alerting,
            ..
        } = &mut *state;
        Some(alerting.evaluate(aggregates, now))
    }

    /// Delivers `alert` to every subscriber and sends its record to the worker, counted
    /// as generated.
    fn emit(&self, shared: &Shared, queue: &Sender<Msg>, alert: Alert) {
        self.fired.fetch_add(1, Relaxed);
        {
            let mut subscribers = self
                .subscribers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            subscribers.retain(|s| match s.try_send(alert.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.undelivered.fetch_add(1, Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
        }
        let event = Event::AnomalyDetected(AnomalyDetected {
            rule: alert.rule,
            kind: alert.kind,
            scope: alert.scope,
            agent_id: alert.agent_id,
            observed: alert.observed,
            threshold: alert.threshold,
            baseline: alert.baseline,
            window_secs: alert.window_secs,
            samples: alert.samples,
        });
        shared.generate(queue, event);
    }

    /// The rules in force from now on; unchanged rules keep their state.
    pub(crate) fn set_rules(&self, rules: Vec<AlertRule>) -> Result<(), AlertRuleError> {
        let next = Alerting::new(rules, self.bucket_secs, self.buckets)?;
        let mut state = self.lock();
        state.alerting.replace(next);
        // Evaluate the new rules on the next batch or tick.
        state.last_evaluation = None;
        Ok(())
    }

    /// The report of `request`, saying how many records of its window were skipped.
    fn report(&self, request: &ReportRequest, now: i64) -> Report {
        let mut report = self.lock().aggregates.report(request, now);
        report.skipped = self.skipped_between(unix_nanos(report.since), unix_nanos(report.until));
        report
    }

    fn subscribe(&self) -> Receiver<Alert> {
        let (tx, rx) = crossbeam_channel::bounded(ALERT_SUBSCRIBER_CAPACITY);
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tx);
        rx
    }

    fn stats(&self) -> AnalyticsStats {
        let (tracked_agents, memory_bytes) = {
            let state = self.lock();
            (state.aggregates.tracked_agents(), state.aggregates.bytes())
        };
        AnalyticsStats {
            enabled: true,
            folded: self.folded.load(SeqCst),
            skipped: self.skipped.load(Relaxed),
            fired: self.fired.load(Relaxed),
            undelivered: self.undelivered.load(Relaxed),
            evaluations: self.evaluations.load(SeqCst),
            tracked_agents,
            memory_bytes,
        }
    }
}

/// The receiving end of [`Collector::alerts`]: alerts as they fire, bounded to
/// [`ALERT_SUBSCRIBER_CAPACITY`] (a full receiver misses alerts; the collector never
/// waits for it). Dropping it unsubscribes.
#[derive(Debug, Clone)]
pub struct AlertReceiver(Receiver<Alert>);

impl AlertReceiver {
    /// The next alert, if one is waiting.
    pub fn try_recv(&self) -> Option<Alert> {
        self.0.try_recv().ok()
    }

    /// The next alert, waiting up to `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Alert> {
        self.0.recv_timeout(timeout).ok()
    }

    /// Alerts waiting.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no alert is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Collector {
    /// The report of `request` over the live aggregates (the last `analytics.buckets`
    /// buckets of `analytics.bucket_secs`); a [`Window::Last`](crate::Window::Last) ends
    /// now, in the collector's clock. Costs time in proportion to buckets × groups, never
    /// to the records (a by-agent report without a trend over a window covering every
    /// bucket kept: in proportion to agents); holds the aggregates' lock meanwhile (the live stage waits, the
    /// ingest worker does not). Records are folded shortly after they are stored: after a
    /// [`flush`](Self::flush), [`analytics`](Self::analytics)`().folded` tells when the
    /// stage has caught up. With `analytics.enabled = false` the report is empty.
    ///
    /// ```
    /// use std::time::Duration;
    /// use arbiter_events::{Collector, Grouping, ReportRequest};
    /// let collector = Collector::builder().build()?;
    /// let report = collector.report(&ReportRequest::last(Duration::from_secs(600)).by(Grouping::ByAgent));
    /// assert_eq!(report.records, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn report(&self, request: &ReportRequest) -> Report {
        let now = self.now_unix_nanos();
        match self.live() {
            Some(live) => live.report(request, now),
            None => Aggregates::new(&self.config().analytics).report(request, now),
        }
    }

    /// A receiver of every alert that fires from now on (holding up to
    /// [`ALERT_SUBSCRIBER_CAPACITY`]; when it is full, further alerts are not delivered to
    /// it and are counted in [`AnalyticsStats::undelivered`], and the stage never waits).
    /// Each alert is also an `AnomalyDetected` record in the stream. Without analytics
    /// the receiver never receives.
    pub fn alerts(&self) -> AlertReceiver {
        AlertReceiver(match self.live() {
            Some(live) => live.subscribe(),
            None => crossbeam_channel::bounded(0).1,
        })
    }

    /// What the live analytics stage has done.
    pub fn analytics(&self) -> AnalyticsStats {
        self.live().map(|l| l.stats()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::clock::datetime;
    use crate::contract::config::AnonymizationConfig;
    use crate::contract::event::ThinkingBudgetUsed;
    use crate::contract::key::AnonymizationKey;

    const SEC: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SEC;
    /// A bucket edge.
    const T0: i64 = 1_700_000_040 * SEC;

    fn event() -> Event {
        Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
            task_id: "t".into(),
            tokens_used: 1,
            tokens_allocated: 2,
        })
    }

    #[test]
    fn a_live_report_says_how_many_records_of_its_window_were_skipped()
    -> Result<(), Box<dyn std::error::Error>> {
        let config = AnalyticsConfig {
            bucket_secs: 60,
            buckets: 3,
            ..AnalyticsConfig::default()
        };
        let key = AnonymizationKey::from_bytes([7; 32]);
        let anonymizer = Anonymizer::new(&key, &AnonymizationConfig::default());
        let stage = Arc::new(LiveAnalytics::new(&config, Vec::new(), anonymizer)?);
        // A channel of one batch that nothing drains: every batch after the first is
        // skipped.
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let (_back, spare) = crossbeam_channel::bounded(1);
        let mut feed = LiveFeed {
            tx,
            spare,
            batch: Vec::new(),
            stage: Arc::clone(&stage),
        };
        let mut batch = |times: &[i64]| {
            for t in times {
                feed.push(*t, event());
            }
            feed.hand_over();
        };
        batch(&[T0]);
        batch(&[T0, T0 + 1, T0 + 2]);
        batch(&[T0 + MINUTE, T0 + 2 * MINUTE]);
        assert_eq!(stage.stats().skipped, 5);
        let now = T0 + 3 * MINUTE;
        let last = |secs| stage.report(&ReportRequest::last(Duration::from_secs(secs)), now);
        assert_eq!(last(60).skipped, 1, "the last bucket's");
        assert_eq!(last(180).skipped, 5, "every bucket's");
        let first = ReportRequest::between(datetime(T0), datetime(T0 + MINUTE));
        assert_eq!(stage.report(&first, now).skipped, 3);
        // Buckets beyond the `buckets` kept are forgotten, as the aggregates forget them.
        batch(&[T0 + 5 * MINUTE]);
        assert_eq!(stage.report(&first, now).skipped, 0);
        assert_eq!(stage.stats().skipped, 6);
        Ok(())
    }
}
