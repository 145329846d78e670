use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use arbiter_events::read_export;

use crate::CliResult;

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
    let h = &export.header;
    let range = match (h.first_seq, h.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "no records".to_owned(),
    };
    let gap = h.gap.map_or_else(String::new, |g| {
        format!(", gap {}..={} ({:?})", g.from_seq, g.to_seq, g.reason)
    });
    eprintln!(
        "verified {} records ({range}{gap}), checksum {}, key_id {}",
        export.trailer.count,
        export.trailer.checksum,
        h.key_id.as_deref().unwrap_or("none (not anonymized)")
    );
    Ok(())
}
