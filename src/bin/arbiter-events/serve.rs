//! `serve`: the HTTP server over the data directory (see `docs/http_api.md`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbiter_events::serve::{
    EXPORT_TOKEN_ENV, RECORD_TOKEN_ENV, RemoteAccess, Role, Server, ServerConfig, TokenSource,
    Tokens,
};
use arbiter_events::{Collector, Config};

use crate::{CliResult, default_data_dir};

/// How long the collector gets to store what is queued when the server stops.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The data directory [default: the config file's storage.data_dir, else ./arbiter-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file: the collector's sections and a [server] table.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The address to listen on [default: server.listen, else 127.0.0.1:7474]; port 0
    /// picks a free port (the first line printed says which).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Allow a listen address other hosts can reach (refused otherwise).
    #[arg(long)]
    allow_remote: bool,
    /// The record token's file [default: server.tokens.record_file, else
    /// DATA_DIR/server/record.token]; generated when missing. ARBITER_EVENTS_RECORD_TOKEN
    /// overrides it.
    #[arg(long)]
    record_token_file: Option<PathBuf>,
    /// The export token's file [default: server.tokens.export_file, else
    /// DATA_DIR/server/export.token]; generated when missing. ARBITER_EVENTS_EXPORT_TOKEN
    /// overrides it.
    #[arg(long)]
    export_token_file: Option<PathBuf>,
}

/// The collector's configuration and the `[server]` table of one file, then the
/// environment on top of the collector's part.
fn load(
    path: Option<&Path>,
) -> Result<(Config, ServerConfig), Box<dyn std::error::Error + Send + Sync>> {
    let Some(path) = path else {
        let mut server = toml::Table::new();
        server_env(&mut server, std::env::vars())?;
        return Ok((
            Config::default().with_env()?,
            ServerConfig::from_table(Some(server))?,
        ));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot parse config file {}: {e}", path.display()))?;
    let mut server = match table.remove("server") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(format!("{}: `server` must be a table", path.display()).into()),
    };
    server_env(&mut server, std::env::vars())?;
    let server =
        ServerConfig::from_table(Some(server)).map_err(|e| format!("{}: {e}", path.display()))?;
    let rest = toml::to_string(&table)?;
    let config = Config::from_toml_str(&rest).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((config.with_env()?, server))
}

/// The prefix of the environment variables that override `server.*` keys.
const SERVER_ENV_PREFIX: &str = "ARBITER_EVENTS_SERVER_";

/// Applies `ARBITER_EVENTS_SERVER_<KEY>` variables to the `[server]` table, as the
/// collector's variables are applied to its sections: a number is read as TOML (`500`);
/// addresses, paths and `remote` as strings.
fn server_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), String> {
    for (name, value) in vars {
        let Some(key) = name.strip_prefix(SERVER_ENV_PREFIX) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let (section, key) = match key.as_str() {
            "tokens_record_file" => (Some("tokens"), "record_file"),
            "tokens_export_file" => (Some("tokens"), "export_file"),
            "listen"
            | "remote"
            | "body_limit_bytes"
            | "max_events_per_request"
            | "read_timeout_ms"
            | "task_deadline_secs" => (None, key.as_str()),
            _ => return Err(format!("{name}: no such key server.{key}")),
        };
        let parsed = match key {
            "listen" | "record_file" | "export_file" | "remote" => toml::Value::String(value),
            _ => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| {
                    format!("{name}: server.{key} must be a whole number, got {value:?}")
                })?,
        };
        let target = match section {
            None => &mut *table,
            Some(section) => match table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => return Err(format!("{name}: server.{section} is not a table")),
            },
        };
        target.insert(key.to_owned(), parsed);
    }
    Ok(())
}

fn token_source(
    env: &str,
    flag: Option<PathBuf>,
    configured: Option<PathBuf>,
    default: PathBuf,
) -> TokenSource {
    match std::env::var(env) {
        Ok(value) if !value.trim().is_empty() => TokenSource::Value(value.trim().to_owned()),
        _ => TokenSource::File(flag.or(configured).unwrap_or(default)),
    }
}

pub(crate) fn run(args: Args) -> CliResult {
    let (mut config, mut server) = load(args.config.as_deref())?;
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| config.storage.data_dir.clone())
        .unwrap_or_else(default_data_dir);
    config.storage.data_dir = Some(data_dir.clone());
    if let Some(listen) = args.listen {
        server.listen = listen;
    }
    if args.allow_remote {
        server.remote = RemoteAccess::Allow;
    }
    server.validate()?;
    let record = token_source(
        RECORD_TOKEN_ENV,
        args.record_token_file,
        server.tokens.record_file.clone(),
        Tokens::default_file(&data_dir, Role::Record),
    );
    let export = token_source(
        EXPORT_TOKEN_ENV,
        args.export_token_file,
        server.tokens.export_file.clone(),
        Tokens::default_file(&data_dir, Role::Export),
    );
    let collector = Collector::new(config)?;
    let (tokens, generated) = Tokens::resolve(record, export)?;
    let bound = Server::bind(collector.clone(), server, tokens)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{}", bound.local_addr())?;
    for token in &generated {
        writeln!(
            out,
            "generated the {} token (shown once; kept in {}, owner-only): {}",
            token.role.as_str(),
            token.path.display(),
            token.token
        )?;
    }
    out.flush()?;
    drop(out);
    let report = bound.run_until_signal()?;
    let shutdown = collector.shutdown(SHUTDOWN_TIMEOUT);
    let stats = collector.stats();
    eprintln!(
        "stopped: {} requests answered, {} open executions recorded as abandoned{}; \
         submitted {}, stored {}, rejected {}, dropped {}, in flight {}",
        report.requests,
        report.abandoned,
        if report.connections_cut > 0 {
            ", connections cut at the drain timeout"
        } else {
            ""
        },
        stats.submitted,
        stats.stored,
        stats.rejected,
        stats.dropped.total(),
        stats.in_flight,
    );
    shutdown?;
    Ok(())
}
