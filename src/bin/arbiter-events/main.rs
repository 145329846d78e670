//! The `arbiter-events` command line: a thin layer over the library.
//!
//! - `demo` simulates an arbiter on several threads and writes incremental exports.
//! - `inspect FILE` verifies an export and prints its records as JSON Lines.

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
    /// Simulate an arbiter on several threads, then export what it recorded.
    Demo(demo::Args),
    /// Verify an export file and print its records as JSON Lines.
    Inspect(inspect::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Inspect(args) => inspect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
