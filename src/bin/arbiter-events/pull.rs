//! `pull`: one pull from the relay's stream through a durable consumer, written as one
//! merged export; `pull --read FILE` checks a pull file and prints its header.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use arbiter_events::relay::PullerState;
use arbiter_events::{MacKey, Puller, read_export, read_export_verified};
use serde::Serialize;

use crate::relay::settings;
use crate::{CliResult, Out};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The NATS server URL(s), comma-separated [default: relay.url, else nats://127.0.0.1:4222].
    #[arg(long)]
    nats: Option<String>,
    /// The durable consumer: one per pipeline.
    #[arg(long, required_unless_present = "read")]
    consumer: Option<String>,
    /// Where to write the pull file (replaced atomically). Nothing is written when
    /// nothing new came.
    #[arg(long, required_unless_present = "read")]
    out: Option<PathBuf>,
    /// The puller's state: what it wrote, per source [default: .<consumer>.pull-state.json
    /// beside --out].
    #[arg(long)]
    state: Option<PathBuf>,
    /// A TOML file whose [relay] table gives the URL, stream, credentials and TLS.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The stream [default: relay.stream, else ARBITER].
    #[arg(long)]
    stream: Option<String>,
    /// Messages taken at most.
    #[arg(long, default_value_t = arbiter_events::relay::DEFAULT_PULL_MESSAGES)]
    max_messages: usize,
    /// How long to wait for messages when none are ready, milliseconds.
    #[arg(long, default_value_t = 500)]
    wait_ms: u64,
    /// ack_wait of the consumer when this pull creates it, seconds: a message taken but
    /// not acked comes back after it.
    #[arg(long, default_value_t = 30)]
    ack_wait_secs: u64,
    /// Check a pull file (a merged export) and print its header as JSON.
    #[arg(long, conflicts_with_all = ["consumer", "out"])]
    read: Option<PathBuf>,
    /// The fleet's MAC key file (`arbiter-events key mac`) [default: relay.mac_key_file]:
    /// each message's MAC is verified before it is taken and the pull file is signed;
    /// with --read, the file's MAC is verified.
    #[arg(long)]
    mac_key_file: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Printed<'a> {
    file: Option<PathBuf>,
    messages: u64,
    records: u64,
    duplicates: u64,
    deferred: u64,
    bytes: u64,
    state: &'a PullerState,
}

pub(crate) fn run(args: Args) -> CliResult {
    let key = args
        .mac_key_file
        .as_ref()
        .map(MacKey::from_file)
        .transpose()?;
    if let Some(path) = &args.read {
        let input = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let input = std::io::BufReader::new(input);
        let file = match &key {
            Some(key) => read_export_verified(input, key)?,
            None => read_export(input)?,
        };
        let mut out = Out::stdout();
        serde_json::to_writer_pretty(&mut out, &file.header)?;
        writeln!(out)?;
        return Ok(());
    }
    let (Some(consumer), Some(out_path)) = (&args.consumer, &args.out) else {
        return Err("--consumer and --out are required".into());
    };
    let (config, _) = settings(
        args.config.as_deref(),
        args.nats.as_deref(),
        args.stream.as_deref(),
        None,
    )?;
    let state = args.state.clone().unwrap_or_else(|| {
        let folder = out_path.parent().map(PathBuf::from).unwrap_or_default();
        folder.join(format!(".{consumer}.pull-state.json"))
    });
    let mut puller = Puller::new(config, consumer, state)?;
    puller.max_messages = args.max_messages.max(1);
    puller.wait = Duration::from_millis(args.wait_ms.max(1));
    puller.ack_wait = Duration::from_secs(args.ack_wait_secs.max(1));
    if key.is_some() {
        puller.mac_key = key;
    }
    let outcome = puller.pull(out_path)?;
    let mut out = Out::stdout();
    serde_json::to_writer_pretty(
        &mut out,
        &Printed {
            file: outcome.file.clone(),
            messages: outcome.messages,
            records: outcome.records,
            duplicates: outcome.duplicates,
            deferred: outcome.deferred,
            bytes: outcome.bytes,
            state: puller.state(),
        },
    )?;
    writeln!(out)?;
    Ok(())
}
