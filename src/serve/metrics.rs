//! `GET /metrics`: the collector's accounting and the server's own counters in the
//! Prometheus text exposition format (OpenMetrics), through `prometheus-client`.

use std::sync::Arc;

use prometheus_client::collector::Collector as PromCollector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::Collector;

/// The `Content-Type` of the exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the requests counter.
type RequestLabels = Vec<(&'static str, String)>;

/// The server's own counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) unauthorized: Counter,
    pub(crate) forbidden: Counter,
    pub(crate) malformed_events: Counter,
    pub(crate) accepted_events: Counter,
    pub(crate) rejected_events: Counter,
    pub(crate) dropped_events: Counter,
    pub(crate) refused_batches: Family<RequestLabels, Counter>,
}

impl Metrics {
    pub(crate) fn new(collector: Collector, executions: Arc<super::tasks::Executions>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let unauthorized = Counter::default();
        let forbidden = Counter::default();
        let malformed_events = Counter::default();
        let accepted_events = Counter::default();
        let rejected_events = Counter::default();
        let dropped_events = Counter::default();
        let refused_batches = Family::<RequestLabels, Counter>::default();
        registry.register(
            "arbiter_events_http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "arbiter_events_http_unauthorized",
            "Requests refused for a missing or bad token (401); nothing they sent is stored",
            unauthorized.clone(),
        );
        registry.register(
            "arbiter_events_http_forbidden",
            "Requests refused because the record token was used on an export route (403)",
            forbidden.clone(),
        );
        registry.register(
            "arbiter_events_http_malformed_events",
            "Batch items that did not decode as events (never submitted to the collector)",
            malformed_events.clone(),
        );
        registry.register(
            "arbiter_events_http_accepted_events",
            "Events accepted by record() over HTTP",
            accepted_events.clone(),
        );
        registry.register(
            "arbiter_events_http_rejected_events",
            "Events rejected by validation over HTTP",
            rejected_events.clone(),
        );
        registry.register(
            "arbiter_events_http_dropped_events",
            "Events dropped by the collector over HTTP (queue full, paused, disabled, shut down)",
            dropped_events.clone(),
        );
        registry.register(
            "arbiter_events_http_refused_batches",
            "Batches refused whole, by reason (body_too_large, too_many_events, timeout, unsupported_media_type, malformed)",
            refused_batches.clone(),
        );
        registry.register_collector(Box::new(StatsCollector {
            collector,
            executions,
        }));
        Metrics {
            registry,
            requests,
            unauthorized,
            forbidden,
            malformed_events,
            accepted_events,
            rejected_events,
            dropped_events,
            refused_batches,
        }
    }

    /// Counts a request answered with `status` on `route`.
    pub(crate) fn request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// Counts a batch refused whole.
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused_batches
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// The exposition text.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The collector's [`Stats`](crate::Stats), read on each scrape.
#[derive(Debug)]
struct StatsCollector {
    collector: Collector,
    executions: Arc<super::tasks::Executions>,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn labelled_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value_label, value) in values {
        let metric = ConstCounter::new(*value);
        metric.encode(family.encode_family(&[(label, *value_label)])?)?;
    }
    Ok(())
}

impl PromCollector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.collector.stats();
        counter(
            &mut e,
            "arbiter_events_submitted",
            "Events submitted to record()",
            s.submitted,
        )?;
        counter(
            &mut e,
            "arbiter_events_stored",
            "Events assigned a seq and stored",
            s.stored,
        )?;
        counter(
            &mut e,
            "arbiter_events_rejected",
            "Events rejected by validation",
            s.rejected,
        )?;
        counter(
            &mut e,
            "arbiter_events_recovered",
            "Records loaded from the data directory at start",
            s.recovered,
        )?;
        let d = s.dropped;
        labelled_counter(
            &mut e,
            "arbiter_events_dropped",
            "Events dropped, by reason",
            "reason",
            &[
                ("queue_full", d.queue_full),
                ("paused", d.paused),
                ("disabled", d.disabled),
                ("shutdown", d.shutdown),
            ],
        )?;
        let p = s.pruned;
        labelled_counter(
            &mut e,
            "arbiter_events_pruned",
            "Records removed from the store, by reason",
            "reason",
            &[
                ("age", p.age),
                ("capacity", p.capacity),
                ("cleared", p.cleared),
            ],
        )?;
        let kinds: Vec<(&str, u64)> = s
            .kinds
            .iter()
            .map(|k| (k.kind.as_str(), k.stored))
            .collect();
        labelled_counter(
            &mut e,
            "arbiter_events_kind_stored",
            "Events stored, by kind",
            "kind",
            &kinds,
        )?;
        gauge(
            &mut e,
            "arbiter_events_in_flight",
            "Events submitted and not yet resolved",
            s.in_flight,
        )?;
        gauge(
            &mut e,
            "arbiter_events_retained",
            "Records retained in memory",
            s.retained,
        )?;
        gauge(
            &mut e,
            "arbiter_events_retained_bytes",
            "Encoded bytes of the retained records",
            s.retained_bytes,
        )?;
        gauge(
            &mut e,
            "arbiter_events_queue_depth",
            "Events waiting in the queue",
            s.queue_depth as u64,
        )?;
        gauge(
            &mut e,
            "arbiter_events_queue_capacity",
            "The queue's capacity",
            s.queue_capacity as u64,
        )?;
        gauge(
            &mut e,
            "arbiter_events_last_seq",
            "The last seq assigned",
            s.last_seq.unwrap_or(0),
        )?;
        gauge(
            &mut e,
            "arbiter_events_open_executions",
            "Executions started over HTTP and not yet completed or abandoned",
            self.executions.open() as u64,
        )?;
        #[cfg(feature = "nats")]
        if let Some(dir) = &self.collector.config().storage.data_dir {
            relay_metrics(&mut e, dir)?;
        }
        if let Some(st) = &s.storage {
            gauge(
                &mut e,
                "arbiter_events_storage_segments",
                "Segment files",
                st.segments,
            )?;
            gauge(
                &mut e,
                "arbiter_events_storage_disk_bytes",
                "Bytes of segment files",
                st.disk_bytes,
            )?;
            gauge(
                &mut e,
                "arbiter_events_storage_records",
                "Records on disk",
                st.records,
            )?;
            gauge(
                &mut e,
                "arbiter_events_storage_synced_through_seq",
                "Every record up to this seq is synced to disk",
                st.synced_through_seq.unwrap_or(0),
            )?;
            counter(
                &mut e,
                "arbiter_events_storage_write_errors",
                "Failed writes and syncs of the data directory",
                st.write_errors,
            )?;
            counter(
                &mut e,
                "arbiter_events_storage_unpersisted",
                "Records that could not be written to disk",
                st.unpersisted,
            )?;
        }
        Ok(())
    }
}

/// A relay metric: name, help, type, and its value in a relay's status.
#[cfg(feature = "nats")]
type RelayMetric<'a> = (
    &'static str,
    &'static str,
    prometheus_client::metrics::MetricType,
    &'a dyn Fn(&crate::RelayStatus) -> f64,
);

/// Writes one labelled metric per relay of a data directory.
#[cfg(feature = "nats")]
fn relay_family(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, kind): (&str, &str, prometheus_client::metrics::MetricType),
    values: &[(&[(&str, &str)], f64)],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        let labels: Vec<(&str, &str)> = labels.to_vec();
        if kind == MetricType::Counter {
            ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
        } else {
            ConstGauge::new(*value).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The progress of every relay of `dir` (another process, through the status file each
/// writes every second), labelled by stream and source. A status file that cannot be
/// read shows as `arbiter_events_relay_status_unreadable`, never as a failed scrape.
/// (Not formatted: the table of metrics reads best one line each.)
#[cfg(feature = "nats")]
#[rustfmt::skip]
fn relay_metrics(
    encoder: &mut DescriptorEncoder<'_>,
    dir: &std::path::Path,
) -> Result<(), std::fmt::Error> {
    use crate::RelayStatus;
    use prometheus_client::metrics::MetricType::{Counter, Gauge};
    let Ok(statuses) = crate::read_relay_statuses(dir) else {
        return gauge(
            encoder,
            "arbiter_events_relay_status_unreadable",
            "1 when a relay status file in the data directory cannot be read",
            1,
        );
    };
    if statuses.is_empty() {
        return Ok(());
    }
    // Records synced now and not in the stream, as of this scrape.
    let synced = crate::DataDir::open(dir)
        .and_then(|d| d.synced_through())
        .ok();
    let now_ms =
        u64::try_from((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).max(0))
            .unwrap_or(0);
    let labels: Vec<[(&str, &str); 2]> = statuses
        .iter()
        .map(|s| [("stream", s.stream.as_str()), ("source", s.source.as_str())])
        .collect();
    let series = |f: &dyn Fn(&RelayStatus) -> f64| -> Vec<(&[(&str, &str)], f64)> {
        labels
            .iter()
            .zip(&statuses)
            .map(|(l, s)| (&l[..], f(s)))
            .collect()
    };
    let lag = |s: &RelayStatus| {
        let synced = synced.unwrap_or(0).max(s.synced_through_seq);
        synced.saturating_sub(s.relayed_through_seq) as f64
    };
    let age = |s: &RelayStatus| now_ms.saturating_sub(s.updated_at_ms) as f64 / 1000.0;
    let metrics: [RelayMetric<'_>; 12] = [
        ("relayed_through_seq", "Every seq up to it is in the stream", Gauge, &|s| s.relayed_through_seq as f64),
        ("lag_records", "Records synced to disk, not yet in the stream", Gauge, &lag),
        ("lag_seconds", "Age of the oldest record not yet in the stream", Gauge, &|s| s.lag_ms as f64 / 1e3),
        ("messages", "Messages the relay's current run published", Counter, &|s| s.messages as f64),
        ("records", "Records the relay's current run published", Counter, &|s| s.records as f64),
        ("bytes", "Payload bytes the relay's current run published", Counter, &|s| s.bytes as f64),
        ("gaps", "Gap markers the relay's current run published", Counter, &|s| s.gaps as f64),
        ("conflicts", "Publishes refused because another came first", Counter, &|s| s.conflicts as f64),
        ("retries", "Waits after a failure", Counter, &|s| s.retries as f64),
        ("errors", "Failures: connect, create stream, publish, read", Counter, &|s| s.errors as f64),
        ("connected", "1 while connected to the broker", Gauge, &|s| f64::from(u8::from(s.connected))),
        ("status_age_seconds", "Since the status was written (each second while running)", Gauge, &age),
    ];
    for (name, help, kind, f) in metrics {
        let name = format!("arbiter_events_relay_{name}");
        relay_family(encoder, (&name, help, kind), &series(f))?;
    }
    Ok(())
}
