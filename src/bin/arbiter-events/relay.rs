//! `relay`: publishes the data directory's records to NATS JetStream; `relay --status`
//! says how far it got.

use std::io::Write;
use std::path::{Path, PathBuf};

use arbiter_events::relay::{read_status, status_path};
use arbiter_events::{Cursor, DataDir, ExportRequest, Relay, RelayConfig, RunMode};
use serde::Serialize;

use crate::{CliResult, Out, default_data_dir};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The NATS server URL(s), comma-separated [default: relay.url, else nats://127.0.0.1:4222].
    #[arg(long)]
    nats: Option<String>,
    /// The data directory [default: the config file's storage.data_dir, else ./arbiter-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML file: its [relay] table configures the relay, its storage.data_dir is used
    /// unless --data-dir is given.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The stream [default: relay.stream, else ARBITER].
    #[arg(long)]
    stream: Option<String>,
    /// Publish what is synced now, then exit (instead of tailing forever).
    #[arg(long)]
    once: bool,
    /// Print the relay's progress as JSON (from its status file and the data
    /// directory; no connection) and exit.
    #[arg(long)]
    status: bool,
}

/// The `[relay]` table and the data directory a command uses: flags first, then the
/// config file, then the defaults.
pub(crate) fn settings(
    config_file: Option<&Path>,
    nats: Option<&str>,
    stream: Option<&str>,
    data_dir: Option<&Path>,
) -> Result<(RelayConfig, PathBuf), Box<dyn std::error::Error + Send + Sync>> {
    let (mut config, file_dir) = match config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let file_dir = table
                .get("storage")
                .and_then(|s| s.get("data_dir"))
                .and_then(|d| d.as_str())
                .map(PathBuf::from);
            (RelayConfig::from_toml(&text)?, file_dir)
        }
        None => (RelayConfig::default(), None),
    };
    if let Some(url) = nats {
        config.url = url.to_owned();
    }
    if let Some(stream) = stream {
        config.stream = stream.to_owned();
    }
    config.validate()?;
    let dir = data_dir
        .map(Path::to_owned)
        .or(file_dir)
        .unwrap_or_else(default_data_dir);
    Ok((config, dir))
}

/// What `relay --status` prints.
#[derive(Debug, Serialize)]
struct Status {
    data_dir: PathBuf,
    status_file: PathBuf,
    /// Whether a relay wrote a status file at all.
    ran: bool,
    source: Option<String>,
    stream: String,
    relayed_through_seq: u64,
    /// The last seq the collector synced (what a relay can publish).
    synced_through_seq: u64,
    lag_records: u64,
    /// How long the oldest record not yet relayed has waited, seconds.
    lag_secs: f64,
    messages: u64,
    records: u64,
    bytes: u64,
    gaps: u64,
    conflicts: u64,
    retries: u64,
    errors: u64,
    last_error: Option<String>,
    connected: bool,
    /// How long ago the relay last wrote its status, seconds: a large value means it is
    /// not running.
    status_age_secs: Option<f64>,
}

pub(crate) fn run(args: Args) -> CliResult {
    let (config, dir) = settings(
        args.config.as_deref(),
        args.nats.as_deref(),
        args.stream.as_deref(),
        args.data_dir.as_deref(),
    )?;
    if args.status {
        return status(&dir, &config);
    }
    let relay = Relay::new(&dir, config)?;
    eprintln!(
        "relaying {} ({}) to {}",
        relay.source(),
        dir.display(),
        relay.subject()
    );
    let mode = if args.once {
        RunMode::UntilCaughtUp
    } else {
        RunMode::Forever
    };
    let done = relay.run(mode)?;
    let mut out = Out::stdout();
    serde_json::to_writer_pretty(&mut out, &done)?;
    writeln!(out)?;
    Ok(())
}

fn status(dir: &Path, config: &RelayConfig) -> CliResult {
    let data = DataDir::open(dir)?;
    let saved = read_status(dir, &config.stream)?;
    let survey = data.survey()?;
    let synced = survey
        .synced_through_seq
        .or(survey.seqs.map(|(_, last)| last))
        .unwrap_or(0);
    let saved_ref = saved.as_ref();
    let relayed = saved_ref.map_or(0, |s| s.relayed_through_seq);
    let now = time::OffsetDateTime::now_utc();
    let lag_secs = if relayed < synced {
        let next = data.export(&ExportRequest::after(Cursor::after_seq(relayed)).limit(1))?;
        next.records()
            .next()
            .transpose()?
            .map_or(0.0, |r| (now - r.time).as_seconds_f64().max(0.0))
    } else {
        0.0
    };
    let source = match saved_ref {
        Some(s) => Some(s.source.clone()),
        None => data
            .export(&ExportRequest::after(Cursor::START).limit(1))?
            .header()
            .source
            .clone(),
    };
    let now_ms = u64::try_from((now.unix_timestamp_nanos() / 1_000_000).max(0)).unwrap_or(0);
    let status = Status {
        data_dir: dir.to_owned(),
        status_file: status_path(dir, &config.stream),
        ran: saved.is_some(),
        source,
        stream: config.stream.clone(),
        relayed_through_seq: relayed,
        synced_through_seq: synced,
        lag_records: synced.saturating_sub(relayed),
        lag_secs,
        messages: saved_ref.map_or(0, |s| s.messages),
        records: saved_ref.map_or(0, |s| s.records),
        bytes: saved_ref.map_or(0, |s| s.bytes),
        gaps: saved_ref.map_or(0, |s| s.gaps),
        conflicts: saved_ref.map_or(0, |s| s.conflicts),
        retries: saved_ref.map_or(0, |s| s.retries),
        errors: saved_ref.map_or(0, |s| s.errors),
        last_error: saved_ref.and_then(|s| s.last_error.clone()),
        connected: saved_ref.is_some_and(|s| s.connected),
        status_age_secs: saved_ref.map(|s| now_ms.saturating_sub(s.updated_at_ms) as f64 / 1000.0),
    };
    let mut out = Out::stdout();
    serde_json::to_writer_pretty(&mut out, &status)?;
    writeln!(out)?;
    Ok(())
}
