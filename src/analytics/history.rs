//! Reports over history: the records of a data directory, read back in bounded chunks and
//! folded into the same aggregates the live collector keeps.

use time::OffsetDateTime;

use super::report::Window;
use super::{Aggregator, AnalyticsConfig, MAX_BUCKETS, Report, ReportRequest};
use crate::contract::clock::unix_nanos;
use crate::contract::config::ConfigError;
use crate::storage::export::ExportError;
use crate::storage::export::{Cursor, ExportRequest};
use crate::storage::log::DataDir;

/// Records read from disk per chunk: what a history report holds in memory at once,
/// besides its aggregates.
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
    /// taken); records are read in chunks of [`HISTORY_CHUNK`], so memory stays bounded
    /// whatever the window. Given the records the live aggregates hold and the same
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
        let mut cursor = Cursor::START;
        let base = ExportRequest::after(cursor)
            .since(since.checked_sub(lead_in).unwrap_or(since))
            .until(until)
            .limit(HISTORY_CHUNK);
        loop {
            let chunk = self.export(&ExportRequest {
                after: cursor,
                ..base.clone()
            })?;
            for record in chunk.records() {
                aggregator.add(&record?);
            }
            if chunk.next_cursor() == cursor {
                break;
            }
            cursor = chunk.next_cursor();
        }
        Ok(aggregator.report_at(request, now))
    }
}
