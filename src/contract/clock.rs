//! Where record times and execution durations come from.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// A source of wall-clock time (record `time`) and monotonic time (execution durations).
///
/// `record()` reads the wall clock to stamp each event; the ingest worker makes record
/// times non-decreasing in `seq` order whatever the clock does, so a clock that steps
/// backwards never reorders the store. Both methods are called on producer threads and
/// on the collector's own threads.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Wall-clock time as nanoseconds since the Unix epoch, UTC.
    fn now_unix_nanos(&self) -> i64;

    /// Monotonic time since an arbitrary origin fixed for this clock.
    fn monotonic(&self) -> Duration;
}

/// The system clock and [`Instant`].
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_unix_nanos(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        }
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock moved only by hand, for tests and reproducible exports.
///
/// Clones share one time. Both the wall clock and the monotonic clock advance together.
/// Records take their `time` when [`record`](crate::Collector::record) is called, so
/// an `advance` after a `record` never changes that record's time, with or without a
/// `flush` in between.
///
/// ```
/// use std::time::Duration;
/// use arbiter_events::{Clock, ManualClock};
/// let clock = ManualClock::new(1_700_000_000_000_000_000);
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now_unix_nanos(), 1_700_000_000_005_000_000);
/// assert_eq!(clock.monotonic(), Duration::from_millis(5));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    wall: AtomicI64,
    mono: AtomicU64,
}

impl ManualClock {
    /// A clock at `unix_nanos`, with monotonic time zero.
    pub fn new(unix_nanos: i64) -> ManualClock {
        let inner = ManualInner {
            wall: AtomicI64::new(unix_nanos),
            mono: AtomicU64::new(0),
        };
        ManualClock {
            inner: Arc::new(inner),
        }
    }

    /// Moves both clocks forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let wall = i64::try_from(nanos).unwrap_or(i64::MAX);
        let _ = self
            .inner
            .wall
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                Some(w.saturating_add(wall))
            });
        let _ = self
            .inner
            .mono
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                Some(m.saturating_add(nanos))
            });
    }

    /// Sets the wall clock (it may go backwards; record times still never do).
    pub fn set_unix_nanos(&self, unix_nanos: i64) {
        self.inner.wall.store(unix_nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_nanos(&self) -> i64 {
        self.inner.wall.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.inner.mono.load(Ordering::SeqCst))
    }
}

/// Nanoseconds since the Unix epoch, saturated to the `i64` range.
pub(crate) fn unix_nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The UTC date-time of `nanos` since the Unix epoch (every `i64` is in range).
pub(crate) fn datetime(nanos: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
