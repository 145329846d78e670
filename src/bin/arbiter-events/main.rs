//! The `arbiter-events` command line: a thin layer over the library.
//!
//! - `demo` simulates an arbiter on several threads, recording into the data directory.
//! - `export` writes an incremental export from the data directory (for a named
//!   consumer, committing its cursor once the file is durable).
//! - `stats` and `verify` read the data directory; `inspect FILE` reads an export.
//! - `verify-export FILE --mac-key-file F` checks an export's MAC; `key mac` prints the
//!   data directory's MAC key.
//!
//! Every command that reads the data directory works while a collector writes it.

mod data;
mod demo;
mod inspect;

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
    /// Verify an export file and print its records as JSON Lines.
    Inspect(inspect::Args),
    /// Verify an export file's MAC with a MAC key: refuses any change, and files without one.
    VerifyExport(inspect::VerifyArgs),
    /// Print the data directory's keys for handing to consumers.
    #[command(subcommand)]
    Key(inspect::KeyCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let success = |r: CliResult| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Demo(args) => success(demo::run(args)),
        Command::Export(args) => success(data::export(args)),
        Command::Stats(args) => success(data::stats(args)),
        Command::Verify(args) => data::verify(args),
        Command::Inspect(args) => success(inspect::run(args)),
        Command::VerifyExport(args) => success(inspect::verify(args)),
        Command::Key(command) => success(inspect::key(command)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An error for the command line: one line, with what to do.
type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
