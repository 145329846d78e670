//! The `arbiter-events` command line: a thin layer over the library.
//!
//! - `demo` simulates an arbiter on several threads, recording into the data directory.
//! - `export` writes an incremental export from the data directory (for a named
//!   consumer, committing its cursor once the file is durable).
//! - `stats` and `verify` read the data directory; `inspect FILE` reads an export.
//! - `report` prints what operators read: figures, percentiles and trends over a window,
//!   overall or per agent, kind or strategy, as a table, JSON or an HTML page.
//! - `alerts` lists the alerts that fired (the `anomaly_detected` records).
//! - `repair` sets damage aside as `on_damage = "truncate"` does; `consumer reset`
//!   moves a consumer's committed cursor.
//! - `verify-export FILE --mac-key-file F` checks an export's MAC; `key mac` prints the
//!   data directory's MAC key.
//! - `serve` records over HTTP and serves exports, consumers, stats, reports and
//!   metrics (with the `serve` feature, on by default).
//! - `relay --nats URL` publishes the data directory's records to NATS JetStream
//!   (feature `nats`); `relay --status` says how far it got. `pull --nats URL
//!   --consumer NAME --out FILE` writes one pull of many sources' records.
//!
//! Every command that reads the data directory works while a collector writes it.

mod alerts;
mod data;
mod demo;
mod html;
mod inspect;
#[cfg(feature = "nats")]
mod pull;
#[cfg(feature = "nats")]
mod relay;
mod report;
#[cfg(feature = "serve")]
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The data directory used when none is given.
const DEFAULT_DATA_DIR: &str = "./arbiter-data";

#[derive(Debug, Parser)]
#[command(
    name = "arbiter-events",
    version,
    about = "Record, anonymize and export agent-arbiter events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate an arbiter on several threads, recording into the data directory.
    Demo(demo::Args),
    /// Export records from the data directory as MessagePack or JSON Lines.
    Export(data::ExportArgs),
    /// Print the data directory's counts and consumers as JSON.
    Stats(data::DirArg),
    /// Check every frame of every segment; exit code 2 when damage is found.
    Verify(data::DirArg),
    /// Set damage aside as storage.on_damage = "truncate" does, and say what moved.
    Repair(data::RepairArgs),
    /// Manage a consumer's committed cursor.
    #[command(subcommand)]
    Consumer(data::ConsumerCommand),
    /// Verify an export file and print its records as JSON Lines.
    Inspect(inspect::Args),
    /// Report on a window of the data directory: table, JSON or an HTML page.
    Report(report::Args),
    /// List the alerts that fired (the data directory's anomaly_detected records).
    Alerts(alerts::Args),
    /// Verify an export file's MAC with a MAC key: refuses any change, and files without one.
    VerifyExport(inspect::VerifyArgs),
    /// Print the data directory's keys for handing to consumers.
    #[command(subcommand)]
    Key(inspect::KeyCommand),
    /// Record over HTTP and serve exports, consumers, stats, reports and metrics.
    #[cfg(feature = "serve")]
    Serve(serve::Args),
    /// Publish the data directory's records to NATS JetStream, exactly once per (source, seq).
    #[cfg(feature = "nats")]
    Relay(relay::Args),
    /// Pull the relayed records of every source once, into one file, exactly once per (source, seq).
    #[cfg(feature = "nats")]
    Pull(pull::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let success = |r: CliResult| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Demo(args) => success(demo::run(args)),
        Command::Export(args) => success(data::export(args)),
        Command::Stats(args) => success(data::stats(args)),
        Command::Verify(args) => data::verify(args),
        Command::Repair(args) => success(data::repair(args)),
        Command::Consumer(command) => success(data::consumer(command)),
        Command::Inspect(args) => success(inspect::run(args)),
        Command::Report(args) => success(report::run(args)),
        Command::Alerts(args) => success(alerts::run(args)),
        Command::VerifyExport(args) => success(inspect::verify(args)),
        Command::Key(command) => success(inspect::key(command)),
        #[cfg(feature = "serve")]
        Command::Serve(args) => success(serve::run(args)),
        #[cfg(feature = "nats")]
        Command::Relay(args) => success(relay::run(args)),
        #[cfg(feature = "nats")]
        Command::Pull(args) => success(pull::run(args)),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`| head`): nothing more can be said, and that is fine.
        Err(e) if is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An error for the command line: one line, with what to do.
type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Whether `e`, or an error it wraps, is a write to a closed pipe.
fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Standard output for the commands: written with `write!`, so a closed pipe comes back
/// as an error that ends the command cleanly instead of the panic `println!` gives.
#[derive(Debug)]
pub(crate) struct Out(std::io::StdoutLock<'static>);

impl Out {
    pub(crate) fn stdout() -> Out {
        Out(std::io::stdout().lock())
    }
}

impl std::io::Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
