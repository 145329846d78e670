//! The `[server]` table of the configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ServeError;

/// Default of `server.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7474";
/// Default of `server.body_limit_bytes`: the largest request body accepted (16 MiB).
pub const DEFAULT_BODY_LIMIT_BYTES: u64 = 16 * 1024 * 1024;
/// The smallest `server.body_limit_bytes` accepted.
pub const MIN_BODY_LIMIT_BYTES: u64 = 1024;
/// The largest `server.body_limit_bytes` accepted (1 GiB).
pub const MAX_BODY_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;
/// Default of `server.max_events_per_request`.
pub const DEFAULT_MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// The largest `server.max_events_per_request` accepted.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000_000;
/// Default of `server.read_timeout_ms`: how long a client has to send a request's
/// headers, and then its body.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 10_000;
/// The largest `server.read_timeout_ms` accepted (10 minutes).
pub const MAX_READ_TIMEOUT_MS: u64 = 600_000;
/// Default of `server.task_deadline_secs`: executions not completed within it are
/// recorded as abandoned.
pub const DEFAULT_TASK_DEADLINE_SECS: u64 = 3_600;
/// The largest `server.task_deadline_secs` accepted (7 days).
pub const MAX_TASK_DEADLINE_SECS: u64 = 7 * 86_400;
/// The most executions open at once: a start beyond it is refused with 429.
pub const MAX_OPEN_EXECUTIONS: usize = 100_000;

/// Whether the server may listen on an address other hosts can reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemoteAccess {
    /// Only loopback addresses (`127.0.0.0/8`, `::1`): the default.
    #[default]
    Refuse,
    /// Any address (the command line's `--allow-remote`).
    Allow,
}

/// Where the bearer tokens are kept (the `[server.tokens]` table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TokensConfig {
    /// The record token's file (default `<data_dir>/server/record.token`).
    pub record_file: Option<PathBuf>,
    /// The export token's file (default `<data_dir>/server/export.token`).
    pub export_file: Option<PathBuf>,
}

/// The HTTP server's settings: the `[server]` table of the configuration file.
///
/// ```
/// use arbiter_events::serve::ServerConfig;
/// let config = ServerConfig::from_toml_str("listen = \"127.0.0.1:0\"\nmax_events_per_request = 500")?;
/// assert_eq!(config.max_events_per_request, 500);
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Whether a non-loopback `listen` address is allowed.
    pub remote: RemoteAccess,
    /// The largest request body accepted; a larger one gets 413.
    pub body_limit_bytes: u64,
    /// The most events in one `POST /v1/events`; more gets 413 and nothing is stored.
    pub max_events_per_request: usize,
    /// How long a client has to send a request's headers, and then its body; a slower
    /// one is disconnected (headers) or answered 408 (body).
    pub read_timeout_ms: u64,
    /// Executions not completed within this are recorded as abandoned.
    pub task_deadline_secs: u64,
    /// Where the tokens are kept.
    pub tokens: TokensConfig,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7474)),
            remote: RemoteAccess::Refuse,
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            max_events_per_request: DEFAULT_MAX_EVENTS_PER_REQUEST,
            read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
            task_deadline_secs: DEFAULT_TASK_DEADLINE_SECS,
            tokens: TokensConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Parses the `[server]` table's contents (without the header) and validates them.
    ///
    /// # Errors
    /// [`ServeError::Config`] for malformed TOML, an unknown key or a broken rule.
    pub fn from_toml_str(text: &str) -> Result<ServerConfig, ServeError> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| ServeError::Config {
            reason: format!("cannot parse [server]: {}", e.message()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses the `[server]` table of a parsed configuration document (defaults when the
    /// table is absent) and validates it.
    ///
    /// # Errors
    /// As [`ServerConfig::from_toml_str`].
    pub fn from_table(table: Option<toml::Table>) -> Result<ServerConfig, ServeError> {
        let Some(table) = table else {
            return Ok(ServerConfig::default());
        };
        let config: ServerConfig =
            ServerConfig::deserialize(table).map_err(|e| ServeError::Config {
                reason: format!("cannot parse [server]: {}", e.message()),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule, returning the first one broken.
    ///
    /// # Errors
    /// [`ServeError::Config`] naming the key, or [`ServeError::RemoteRefused`] for a
    /// non-loopback `listen` without [`RemoteAccess::Allow`].
    pub fn validate(&self) -> Result<(), ServeError> {
        let range = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(ServeError::Config {
                    reason: format!("server.{key} must be within [{min}, {max}], got {value}"),
                })
            } else {
                Ok(())
            }
        };
        range(
            "body_limit_bytes",
            self.body_limit_bytes,
            MIN_BODY_LIMIT_BYTES,
            MAX_BODY_LIMIT_BYTES,
        )?;
        range(
            "max_events_per_request",
            u64::try_from(self.max_events_per_request).unwrap_or(u64::MAX),
            1,
            MAX_EVENTS_PER_REQUEST as u64,
        )?;
        range(
            "read_timeout_ms",
            self.read_timeout_ms,
            1,
            MAX_READ_TIMEOUT_MS,
        )?;
        range(
            "task_deadline_secs",
            self.task_deadline_secs,
            1,
            MAX_TASK_DEADLINE_SECS,
        )?;
        if self.remote == RemoteAccess::Refuse && !self.listen.ip().is_loopback() {
            return Err(ServeError::RemoteRefused { addr: self.listen });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_defaults_are_valid() {
        assert!(ServerConfig::default().validate().is_ok());
        assert_eq!(ServerConfig::default().listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn remote_addresses_need_allow() {
        let mut config = ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7474)),
            ..ServerConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ServeError::RemoteRefused { .. })
        ));
        config.remote = RemoteAccess::Allow;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn rules_and_unknown_keys_are_refused() {
        let e = ServerConfig::from_toml_str("max_events_per_request = 0").unwrap_err();
        assert!(
            e.to_string().contains("server.max_events_per_request"),
            "{e}"
        );
        let e = ServerConfig::from_toml_str("listen_addr = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
        let c = ServerConfig::from_toml_str("[tokens]\nrecord_file = \"/tmp/r\"").unwrap();
        assert_eq!(c.tokens.record_file, Some(PathBuf::from("/tmp/r")));
    }
}
