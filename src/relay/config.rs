//! `relay.*`: where the relay and the puller connect, how they name the stream and the
//! subjects, how they batch, and how they back off. Read from the `[relay]` table of a
//! TOML file; every default a named constant.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::RelayError;

/// Default of `relay.url`.
pub const DEFAULT_RELAY_URL: &str = "nats://127.0.0.1:4222";
/// Default of `relay.stream`: the JetStream stream the records go to.
pub const DEFAULT_STREAM: &str = "ARBITER";
/// Default of `relay.subject_prefix`: a source's records go to `<prefix>.<source>`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "arbiter.events";
/// Default of `relay.max_message_bytes`: a message (one export of a contiguous seq
/// range) stays under this many bytes, below the NATS default `max_payload` of 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 768 * 1024;
/// The smallest `relay.max_message_bytes` accepted.
pub const MIN_MAX_MESSAGE_BYTES: u64 = 4096;
/// The largest `relay.max_message_bytes` accepted (the NATS server's own ceiling on
/// `max_payload` is 64 MiB).
pub const MAX_MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Default of `relay.max_message_records`: records in one message at most.
pub const DEFAULT_MAX_MESSAGE_RECORDS: u64 = 16_384;
/// The largest `relay.max_message_records` accepted.
pub const MAX_MAX_MESSAGE_RECORDS: u64 = 1 << 20;
/// Default of `relay.flush_interval_ms`: once caught up, how long the relay waits
/// before it looks for newly synced records (so at most this much latency is added).
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 50;
/// The largest `relay.flush_interval_ms` accepted.
pub const MAX_FLUSH_INTERVAL_MS: u64 = 60_000;
/// Default of `relay.backoff_initial_ms`: the first wait after a failure.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 100;
/// Default of `relay.backoff_max_ms`: the wait doubles after each failure up to this.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 5_000;
/// The largest `relay.backoff_initial_ms` and `relay.backoff_max_ms` accepted.
pub const MAX_BACKOFF_MS: u64 = 600_000;
/// Default of `relay.request_timeout_ms`: how long a publish or a stream request waits
/// for the broker's answer.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// The largest `relay.request_timeout_ms` accepted.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 600_000;
/// Default of `relay.duplicate_window_secs`, set on a stream the relay creates: the
/// broker drops a message whose `Nats-Msg-Id` it saw this recently.
pub const DEFAULT_DUPLICATE_WINDOW_SECS: u64 = 120;
/// Default of `relay.stream_max_age_secs`, set on a stream the relay creates: 0 keeps
/// messages until `stream_max_bytes` (7 days otherwise is a common choice).
pub const DEFAULT_STREAM_MAX_AGE_SECS: u64 = 0;
/// Default of `relay.stream_max_bytes`, set on a stream the relay creates: 0 is no
/// limit.
pub const DEFAULT_STREAM_MAX_BYTES: u64 = 0;
/// The longest source id, as the collector accepts it, leaves subjects well under the
/// NATS limits; the subject prefix is bounded by this.
pub const MAX_SUBJECT_PREFIX_LEN: usize = 128;

/// The `[relay]` table: shared by the relay and the puller.
///
/// ```
/// use arbiter_events::RelayConfig;
/// let config = RelayConfig::from_toml("[relay]\nurl = \"nats://10.0.0.5:4222\"\n")?;
/// assert_eq!(config.url, "nats://10.0.0.5:4222");
/// assert_eq!(config.stream, "ARBITER");
/// assert_eq!(config.subject("src-1"), "arbiter.events.src-1");
/// # Ok::<(), arbiter_events::RelayError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RelayConfig {
    /// The NATS server(s), comma-separated `nats://host:port` (or `tls://`) URLs.
    pub url: String,
    /// The JetStream stream, created with the settings below when absent.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<source>`; the stream takes `<subject_prefix>.>`.
    pub subject_prefix: String,
    /// A message's bytes at most (headers aside); a single record larger than this
    /// goes alone in its message.
    pub max_message_bytes: u64,
    /// A message's records at most.
    pub max_message_records: u64,
    /// Once caught up, the wait before looking for newly synced records, milliseconds.
    pub flush_interval_ms: u64,
    /// The first wait after a failure, milliseconds.
    pub backoff_initial_ms: u64,
    /// The longest wait between retries, milliseconds.
    pub backoff_max_ms: u64,
    /// How long a request to the broker waits for an answer, milliseconds.
    pub request_timeout_ms: u64,
    /// `duplicate_window` of a stream the relay creates, seconds.
    pub duplicate_window_secs: u64,
    /// `max_age` of a stream the relay creates, seconds (0: none).
    pub stream_max_age_secs: u64,
    /// `max_bytes` of a stream the relay creates (0: none).
    pub stream_max_bytes: u64,
    /// The user name, with `password_file`.
    pub user: Option<String>,
    /// A file holding the password (first line, surrounding white space trimmed).
    pub password_file: Option<PathBuf>,
    /// A file holding a token (first line, trimmed); excludes `user`.
    pub token_file: Option<PathBuf>,
    /// Refuse a connection without TLS.
    pub tls_required: bool,
    /// PEM root certificates to trust, besides the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM client certificate, with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// The fleet's MAC key file (64 hex digits, as `arbiter-events key mac` prints it):
    /// the puller verifies every message under it and signs its files.
    pub mac_key_file: Option<PathBuf>,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            url: DEFAULT_RELAY_URL.to_owned(),
            stream: DEFAULT_STREAM.to_owned(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_message_records: DEFAULT_MAX_MESSAGE_RECORDS,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            duplicate_window_secs: DEFAULT_DUPLICATE_WINDOW_SECS,
            stream_max_age_secs: DEFAULT_STREAM_MAX_AGE_SECS,
            stream_max_bytes: DEFAULT_STREAM_MAX_BYTES,
            user: None,
            password_file: None,
            token_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            mac_key_file: None,
        }
    }
}

/// The `[relay]` table of a whole configuration file; other tables are not ours.
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    relay: RelayConfig,
}

impl RelayConfig {
    /// Reads the `[relay]` table of a TOML document (other tables are ignored: they
    /// configure the collector) and validates it. A document without one gives the
    /// defaults.
    ///
    /// # Errors
    /// [`RelayError::Config`] naming the field for a value out of range, an unknown
    /// field, or a document that is not TOML.
    pub fn from_toml(text: &str) -> Result<RelayConfig, RelayError> {
        let file: File = toml::from_str(text).map_err(|e| RelayError::Config {
            field: "relay",
            reason: e.message().to_owned(),
        })?;
        file.relay.validate()?;
        Ok(file.relay)
    }

    /// Reads [`RelayConfig::from_toml`] from a file.
    ///
    /// # Errors
    /// As [`RelayConfig::from_toml`], and [`RelayError::Io`] when the file cannot be read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<RelayConfig, RelayError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| RelayError::Io {
            action: "read",
            path: path.to_owned(),
            source: e,
        })?;
        RelayConfig::from_toml(&text)
    }

    /// The subject of `source`'s records.
    pub fn subject(&self, source: &str) -> String {
        format!("{}.{source}", self.subject_prefix)
    }

    /// The subjects the stream takes: every source's.
    pub fn stream_subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`RelayError::Config`] naming the first field that is wrong.
    pub fn validate(&self) -> Result<(), RelayError> {
        let bad = |field: &'static str, reason: String| Err(RelayError::Config { field, reason });
        let range = |field: &'static str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                bad(field, format!("must be within [{min}, {max}], got {value}"))
            }
        };
        if self.url.trim().is_empty() {
            return bad("relay.url", "must name at least one server".to_owned());
        }
        if self.stream.is_empty()
            || self.stream.len() > 64
            || !self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return bad(
                "relay.stream",
                format!(
                    "{:?} must be 1 to 64 ASCII letters, digits, `-` or `_`",
                    self.stream
                ),
            );
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self.subject_prefix.len() <= MAX_SUBJECT_PREFIX_LEN
            && self.subject_prefix.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            });
        if !prefix_ok {
            return bad(
                "relay.subject_prefix",
                format!(
                    "{:?} must be dot-separated tokens of ASCII letters, digits, `-` or `_` \
                     (no wildcards), at most {MAX_SUBJECT_PREFIX_LEN} bytes",
                    self.subject_prefix
                ),
            );
        }
        range(
            "relay.max_message_bytes",
            self.max_message_bytes,
            MIN_MAX_MESSAGE_BYTES,
            MAX_MAX_MESSAGE_BYTES,
        )?;
        range(
            "relay.max_message_records",
            self.max_message_records,
            1,
            MAX_MAX_MESSAGE_RECORDS,
        )?;
        range(
            "relay.flush_interval_ms",
            self.flush_interval_ms,
            1,
            MAX_FLUSH_INTERVAL_MS,
        )?;
        range(
            "relay.backoff_initial_ms",
            self.backoff_initial_ms,
            1,
            MAX_BACKOFF_MS,
        )?;
        range(
            "relay.backoff_max_ms",
            self.backoff_max_ms,
            self.backoff_initial_ms,
            MAX_BACKOFF_MS,
        )?;
        range(
            "relay.request_timeout_ms",
            self.request_timeout_ms,
            100,
            MAX_REQUEST_TIMEOUT_MS,
        )?;
        range(
            "relay.duplicate_window_secs",
            self.duplicate_window_secs,
            1,
            7 * 86_400,
        )?;
        range(
            "relay.stream_max_age_secs",
            self.stream_max_age_secs,
            0,
            100 * 365 * 86_400,
        )?;
        range(
            "relay.stream_max_bytes",
            self.stream_max_bytes,
            0,
            i64::MAX as u64,
        )?;
        if self.stream_max_age_secs != 0 && self.stream_max_age_secs < self.duplicate_window_secs {
            return bad(
                "relay.duplicate_window_secs",
                format!(
                    "{} must not exceed relay.stream_max_age_secs {}",
                    self.duplicate_window_secs, self.stream_max_age_secs
                ),
            );
        }
        if self.token_file.is_some() && (self.user.is_some() || self.password_file.is_some()) {
            return bad(
                "relay.token_file",
                "a token excludes relay.user and relay.password_file; keep one".to_owned(),
            );
        }
        if self.user.is_some() != self.password_file.is_some() {
            return bad(
                "relay.user",
                "relay.user and relay.password_file go together".to_owned(),
            );
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return bad(
                "relay.tls_cert_file",
                "relay.tls_cert_file and relay.tls_key_file go together".to_owned(),
            );
        }
        Ok(())
    }

    pub(crate) fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke() {
        let config = RelayConfig::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.stream_subjects(), "arbiter.events.>");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let config = RelayConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 350,
            ..RelayConfig::default()
        };
        let mut backoff = super::super::Backoff::new(&config);
        let waits: Vec<u64> = (0..5)
            .map(|_| backoff.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 350, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
    }

    #[test]
    fn reads_the_relay_table_and_ignores_the_others() -> Result<(), RelayError> {
        let config = RelayConfig::from_toml(
            "[queue]\ncapacity = 10\n[relay]\nstream = \"FLEET\"\nmax_message_records = 7\n",
        )?;
        assert_eq!(config.stream, "FLEET");
        assert_eq!(config.max_message_records, 7);
        assert_eq!(RelayConfig::from_toml("")?, RelayConfig::default());
        Ok(())
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        let field = |text: &str| match RelayConfig::from_toml(text) {
            Err(RelayError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field("[relay]\nurll = \"x\"\n"), "relay");
        assert_eq!(field("[relay]\nstream = \"a.b\"\n"), "relay.stream");
        assert_eq!(
            field("[relay]\nsubject_prefix = \"a.*\"\n"),
            "relay.subject_prefix"
        );
        assert_eq!(
            field("[relay]\nmax_message_bytes = 10\n"),
            "relay.max_message_bytes"
        );
        assert_eq!(
            field("[relay]\nbackoff_initial_ms = 100\nbackoff_max_ms = 10\n"),
            "relay.backoff_max_ms"
        );
        assert_eq!(
            field("[relay]\ntoken_file = \"t\"\nuser = \"u\"\npassword_file = \"p\"\n"),
            "relay.token_file"
        );
        assert_eq!(field("[relay]\nuser = \"u\"\n"), "relay.user");
    }
}
