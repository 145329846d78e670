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
        return Ok((Config::default().with_env()?, ServerConfig::default()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot parse config file {}: {e}", path.display()))?;
    let server = match table.remove("server") {
        None => None,
        Some(toml::Value::Table(t)) => Some(t),
        Some(_) => return Err(format!("{}: `server` must be a table", path.display()).into()),
    };
    let server =
        ServerConfig::from_table(server).map_err(|e| format!("{}: {e}", path.display()))?;
    let rest = toml::to_string(&table)?;
    let config = Config::from_toml_str(&rest).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((config.with_env()?, server))
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
