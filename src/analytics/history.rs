//! Reports over history: the records of a data directory, folded into the same
//! aggregates the live collector keeps as the segments are read, one frame at a time,
//! through a borrowed view of each record (no export is built, nothing is allocated per
//! record).

use time::OffsetDateTime;

use super::report::Window;
use super::view::EventView;
use super::{Aggregator, AnalyticsConfig, MAX_BUCKETS, Report, ReportRequest};
use crate::contract::clock::unix_nanos;
use crate::contract::config::ConfigError;
use crate::storage::export::ExportError;
use crate::storage::export::{Cursor, ExportRequest, GapReason};
use crate::storage::log::summary::Summary;
use crate::storage::log::{DataDir, Visit};
use crate::storage::store::Meta;

/// Records per chunk of the former chunked read.
#[deprecated(
    since = "0.1.0",
    note = "a report over history folds records as it reads them, one frame at a time; no chunk is held"
)]
pub const HISTORY_CHUNK: u64 = 65_536;

/// Why a report over history could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The analytics configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The records could not be read.
    #[error(transparent)]
    Export(#[from] ExportError),
}

impl DataDir {
    /// The report of `request` over the records on disk, with `now` the end of a
    /// [`Window::Last`]. Any process may call it while a collector writes (no lock is
    /// taken); records are folded as they are read, one frame at a time, so memory stays
    /// bounded whatever the window, and closed segments whose summary shows them wholly
    /// before the window are not read. Given the records the live aggregates hold and the same
    /// `analytics` configuration, it gives the same report as `Collector::report`; for a
    /// window longer than the buckets kept, buckets are widened (whole multiples of
    /// `bucket_secs`) so that at most `buckets` cover it, and the report says which width
    /// it used.
    ///
    /// # Errors
    ///
    /// [`ReportError::Config`] for an invalid `config`, [`ReportError::Export`] when a
    /// segment cannot be read or is damaged.
    pub fn report(
        &self,
        config: &AnalyticsConfig,
        request: &ReportRequest,
        now: OffsetDateTime,
    ) -> Result<Report, ReportError> {
        config.validate()?;
        let (since, until) = match request.window {
            Window::Last(d) => (now - d, now),
            Window::Between { since, until } => (since, until),
        };
        let span_secs =
            ((unix_nanos(until).saturating_sub(unix_nanos(since))) / 1_000_000_000).max(0) as u64;
        let mut config = config.clone();
        let kept = config.bucket_secs.saturating_mul(config.buckets as u64);
        // Records from the live span before the window too: they teach the aggregates
        // which agent and strategy each task has, and which agents were active, as the
        // live aggregates had learnt; their buckets fall outside the window.
        let lead_in = time::Duration::seconds(i64::try_from(kept).unwrap_or(i64::MAX));
        if span_secs > kept {
            // Widen buckets so that `buckets` of them (plus the partial ones at the
            // edges) cover the window.
            let per = span_secs.div_ceil(config.buckets.saturating_sub(2).max(1) as u64);
            config.bucket_secs = per.div_ceil(config.bucket_secs) * config.bucket_secs;
            config.buckets = config.buckets.min(MAX_BUCKETS);
        }
        let mut aggregator = Aggregator::new(&config)?;
        let since = since.checked_sub(lead_in).unwrap_or(since);
        // The window is checked as an export of it would be.
        ExportRequest::after(Cursor::START)
            .since(since)
            .until(until)
            .validate()?;
        let mut fold = Fold {
            aggregator: &mut aggregator,
            since: unix_nanos(since),
            until: unix_nanos(until),
            cursor: 0,
        };
        self.visit(&mut fold).map_err(ExportError::from)?;
        Ok(aggregator.report_at(request, now))
    }
}

/// Folds the records of `[since, until)` (record time) as a read of the segments hands
/// them over; gaps and key changes do not matter to a report.
struct Fold<'a> {
    aggregator: &'a mut Aggregator,
    since: i64,
    until: i64,
    cursor: u64,
}

impl Visit for Fold<'_> {
    const SUMMARIES: bool = true;

    fn cursor(&self) -> u64 {
        self.cursor
    }

    fn gap_through(&mut self, to_seq: u64, _: GapReason) -> bool {
        self.cursor = self.cursor.max(to_seq);
        true
    }

    fn key(&mut self, _: Option<String>) -> bool {
        true
    }

    fn offer(&mut self, meta: &Meta, payload: &[u8]) -> Result<bool, String> {
        // Record times never go back in seq order: nothing after this is in the window.
        if meta.time >= self.until {
            return Ok(false);
        }
        self.cursor = meta.seq;
        if meta.time >= self.since {
            let event = EventView::decode(meta.kind, payload)
                .map_err(|e| format!("the record does not decode: {e}"))?;
            self.aggregator.add_view(meta.time, &event);
        }
        Ok(true)
    }

    fn pass_over(&mut self, summary: &Summary) -> bool {
        if summary.last_time >= self.since {
            return false;
        }
        self.cursor = self.cursor.max(summary.next_seq.saturating_sub(1));
        true
    }
}
