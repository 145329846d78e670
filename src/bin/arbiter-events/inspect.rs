use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use arbiter_events::{ExportFile, MacKey, read_export, read_export_verified};

use crate::{CliResult, default_data_dir};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The export file (`.msgpack`).
    file: PathBuf,
    /// Print the header as the first line.
    #[arg(long)]
    header: bool,
}

pub(crate) fn run(args: Args) -> CliResult {
    let file =
        File::open(&args.file).map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
    let export =
        read_export(BufReader::new(file)).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.header {
        serde_json::to_writer(&mut out, &export.header)?;
        writeln!(out)?;
    }
    for record in &export.records {
        serde_json::to_writer(&mut out, record)?;
        writeln!(out)?;
    }
    out.flush()?;
    let mac = match export.trailer.mac {
        Some(_) => "mac present (check it with verify-export)",
        None => "no mac",
    };
    eprintln!("verified {}, {mac}", summary(&export));
    Ok(())
}

/// What a verified file holds, in one line.
fn summary(export: &ExportFile) -> String {
    let h = &export.header;
    let range = match (&h.sources, h.first_seq, h.last_seq) {
        // A merged export: each source's range and gaps.
        (Some(sources), _, _) => sources
            .iter()
            .map(|(source, r)| {
                let gaps: u64 = r.gaps.iter().map(|g| g.len()).sum();
                format!(
                    "{source} {} records after seq {} to {}{}",
                    r.count,
                    r.after,
                    r.next_cursor,
                    if gaps > 0 {
                        format!(", {gaps} gone")
                    } else {
                        String::new()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        (None, Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "no records".to_owned(),
    };
    let gap = h.gap.map_or_else(String::new, |g| {
        format!(", gap {}..={} ({:?})", g.from_seq, g.to_seq, g.reason)
    });
    format!(
        "{} records ({range}{gap}), format version {}, source {}, checksum {}, key_id {}",
        export.trailer.count,
        export.version(),
        h.source.as_deref().unwrap_or(if h.sources.is_some() {
            "merged"
        } else {
            "none"
        }),
        export.trailer.checksum,
        h.key_id.as_deref().unwrap_or("none (not anonymized)")
    )
}

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The export file (`.msgpack`).
    file: PathBuf,
    /// A file holding the MAC key as 64 hex digits (from `arbiter-events key mac`).
    #[arg(long)]
    mac_key_file: PathBuf,
}

pub(crate) fn verify(args: VerifyArgs) -> CliResult {
    let key = MacKey::from_file(&args.mac_key_file)?;
    let file =
        File::open(&args.file).map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
    let export = read_export_verified(BufReader::new(file), &key)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    println!("verified {}, mac ok", summary(&export));
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeyCommand {
    /// Print the MAC key (64 hex digits) that verifies the data directory's exports;
    /// it cannot compute pseudonyms, so it can be handed to the pipeline.
    Mac {
        /// The data directory.
        #[arg(long, default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
}

pub(crate) fn key(command: KeyCommand) -> CliResult {
    match command {
        KeyCommand::Mac { data_dir } => {
            let path = data_dir.join("key");
            if !path.exists() {
                return Err(format!(
                    "{} has no key file: a collector that pseudonymizes makes it on first open; \
                     with a key from the config or the environment, derive the MAC key with \
                     AnonymizationKey::mac_key",
                    data_dir.display()
                )
                .into());
            }
            let key = arbiter_events::AnonymizationKey::from_file(&path)?;
            println!("{}", key.mac_key().to_hex());
            Ok(())
        }
    }
}
