//! The `[analytics]` section: bucket width, buckets kept, agents tracked.

use serde::{Deserialize, Serialize};

use crate::contract::config::ConfigError;

/// Default width of one aggregate bucket, in seconds.
pub const DEFAULT_BUCKET_SECS: u64 = 60;
/// Default number of buckets kept (with the default width: the last hour).
pub const DEFAULT_BUCKETS: usize = 60;
/// Default number of agents given a row of their own; less recently active ones fold
/// into the `other` row.
pub const DEFAULT_MAX_AGENTS: usize = 1_000;
/// The widest bucket: one day.
pub const MAX_BUCKET_SECS: u64 = 86_400;
/// The most buckets kept.
pub const MAX_BUCKETS: usize = 10_080;
/// The most agents tracked.
pub const MAX_AGENTS: usize = 100_000;

/// Online aggregates for reports and alerts (fixed at build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AnalyticsConfig {
    /// Width of one bucket in seconds; a report's window is whole buckets.
    pub bucket_secs: u64,
    /// Buckets kept: the live window reports can cover is `bucket_secs × buckets`.
    pub buckets: usize,
    /// Agents given a row of their own.
    pub max_agents: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            bucket_secs: DEFAULT_BUCKET_SECS,
            buckets: DEFAULT_BUCKETS,
            max_agents: DEFAULT_MAX_AGENTS,
        }
    }
}

impl AnalyticsConfig {
    /// Checks every field, returning the first broken rule.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] naming `analytics.bucket_secs`, `analytics.buckets`
    /// or `analytics.max_agents`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |field, value: u64, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                })
            }
        };
        check(
            "analytics.bucket_secs",
            self.bucket_secs,
            1,
            MAX_BUCKET_SECS,
        )?;
        check(
            "analytics.buckets",
            self.buckets as u64,
            1,
            MAX_BUCKETS as u64,
        )?;
        check(
            "analytics.max_agents",
            self.max_agents as u64,
            0,
            MAX_AGENTS as u64,
        )
    }

    pub(crate) fn bucket_nanos(&self) -> i64 {
        (self.bucket_secs.clamp(1, MAX_BUCKET_SECS) * 1_000_000_000) as i64
    }
}
