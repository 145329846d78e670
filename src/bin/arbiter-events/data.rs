//! Commands over a data directory, safe to run while a collector writes it: `export`,
//! `stats` and `verify`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use arbiter_events::{Cursor, DataDir, EventKind, Export, ExportRequest, VerifyReport};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{CliResult, default_data_dir};

#[derive(Debug, clap::Args)]
pub(crate) struct DirArg {
    /// The data directory.
    #[arg(long, default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
}

impl DirArg {
    fn open(&self) -> Result<DataDir, Box<dyn std::error::Error + Send + Sync>> {
        Ok(DataDir::open(&self.data_dir)?)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Pull what is new for this consumer, and commit its cursor once the file is durable.
    #[arg(long, conflicts_with = "after")]
    consumer: Option<String>,
    /// Export the records after this seq (0: from the start).
    #[arg(long)]
    after: Option<u64>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-24T06:00:00Z).
    #[arg(long, value_parser = parse_time)]
    since: Option<OffsetDateTime>,
    /// Only records before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    until: Option<OffsetDateTime>,
    /// Only these event kinds, comma-separated (e.g. task_completed,judgment_recorded).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    kinds: Vec<EventKind>,
    /// At most this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// Where to write the export: a file (written atomically) or `-` for standard output
    /// (not with --consumer).
    #[arg(long, default_value = "-")]
    out: PathBuf,
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{e}; expected RFC 3339 such as 2026-11-24T06:00:00Z"))
}

fn parse_kind(text: &str) -> Result<EventKind, String> {
    EventKind::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown event kind `{text}`; one of {}", names.join(", "))
    })
}

fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub(crate) fn export(args: ExportArgs) -> CliResult {
    if args.consumer.is_some() && args.out == Path::new("-") {
        return Err("--consumer needs --out FILE: the cursor is committed only once the export is durable in a file".into());
    }
    let dir = args.dir.open()?;
    let after = match (&args.consumer, args.after) {
        (Some(name), _) => dir.committed(name)?,
        (None, Some(seq)) => Cursor::after_seq(seq),
        (None, None) => Cursor::START,
    };
    let mut request = ExportRequest::after(after);
    request.since = args.since;
    request.until = args.until;
    request.limit = args.limit;
    if !args.kinds.is_empty() {
        request = request.kinds(args.kinds.iter().copied());
    }
    let bar = spinner("exporting");
    let export = dir.export(&request);
    bar.finish_and_clear();
    let export = export?;
    write_export(&export, &args.out)?;
    let h = export.header();
    let gap = h.gap.map_or_else(String::new, |g| {
        format!(", gap {}..={} ({:?})", g.from_seq, g.to_seq, g.reason)
    });
    let range = match (h.first_seq, h.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "no records".to_owned(),
    };
    let mut note = format!(
        "exported {} records ({range}{gap}); next cursor {}",
        h.count, h.next_cursor
    );
    if let Some(name) = &args.consumer {
        if export.next_cursor() != after {
            dir.commit(name, export.next_cursor())?;
            note.push_str(&format!(", committed for consumer {name}"));
        } else {
            note.push_str(&format!(", nothing new for consumer {name}"));
        }
    }
    eprintln!("{note}");
    Ok(())
}

/// Writes the export to standard output, or to `path` atomically and durably: a
/// temporary file, synced, renamed into place, the folder synced.
fn write_export(export: &Export, path: &Path) -> CliResult {
    if path == Path::new("-") {
        let stdout = std::io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        export.write_msgpack(&mut out)?;
        return Ok(out.flush()?);
    }
    let name = path
        .file_name()
        .ok_or_else(|| format!("--out {} names no file", path.display()))?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = folder.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let file = File::create(&tmp)?;
        let mut out = BufWriter::new(file);
        export
            .write_msgpack(&mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(&folder)?.sync_all()
    };
    write().map_err(|e| {
        format!(
            "cannot write {}: {e}; check the folder exists and is writable",
            path.display()
        )
    })?;
    Ok(())
}

pub(crate) fn stats(args: DirArg) -> CliResult {
    let dir = args.open()?;
    // O(segments): closed segments are counted from their summaries.
    let report = dir.survey()?;
    let last = report.seqs.map_or(0, |(_, last)| last);
    let consumers: Vec<serde_json::Value> = dir
        .consumers()?
        .into_iter()
        .map(|(name, cursor)| {
            serde_json::json!({
                "name": name,
                "after": cursor.seq(),
                "behind": last.saturating_sub(cursor.seq()),
            })
        })
        .collect();
    let kinds: serde_json::Map<String, serde_json::Value> = report
        .kinds
        .iter()
        .map(|(k, n)| (k.as_str().to_owned(), (*n).into()))
        .collect();
    let out = serde_json::json!({
        "data_dir": report.data_dir,
        "segments": report.segments.len(),
        "disk_bytes": report.bytes,
        "records": report.records,
        "first_seq": report.seqs.map(|(f, _)| f),
        "last_seq": report.seqs.map(|(_, l)| l),
        "kinds": kinds,
        "consumers": consumers,
        "damaged": report.is_damaged(),
        "missing": report.missing,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Exit code when damage is found (1 is any other failure).
const EXIT_DAMAGED: u8 = 2;

pub(crate) fn verify(args: DirArg) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let dir = args.open()?;
    let total = disk_bytes(dir.path());
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "verifying {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .map_err(|e| e.to_string())?,
    );
    let report = dir.verify(|done| bar.set_position(done));
    bar.finish_and_clear();
    let report = report?;
    print_verify(&report);
    Ok(if report.is_damaged() {
        ExitCode::from(EXIT_DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}

fn disk_bytes(root: &Path) -> u64 {
    std::fs::read_dir(root.join("segments"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn print_verify(report: &VerifyReport) {
    for s in &report.segments {
        let verdict = match (&s.damage, s.incomplete_tail_bytes) {
            (Some((offset, what)), _) => format!("DAMAGED at byte {offset}: {what}"),
            (None, 0) => "ok".to_owned(),
            (None, n) => format!("ok, {n} bytes of an unfinished write at the end"),
        };
        println!(
            "{}: {} records from seq {}, {} bytes, key_id {}: {verdict}",
            s.path.display(),
            s.records,
            s.first_seq,
            s.bytes,
            s.key_id.as_deref().unwrap_or("none"),
        );
    }
    for (from, to) in &report.missing {
        println!(
            "MISSING: seqs {from}..={to} are in no segment and pruned.json does not explain them (a segment or pruned.json was deleted or renamed, or the tail was lost)"
        );
    }
    let seqs = report.seqs.map_or_else(
        || "no records".to_owned(),
        |(a, b)| format!("seq {a}..={b}"),
    );
    if report.is_damaged() {
        println!(
            "DAMAGED: {} segments, {} valid records ({seqs}); open with storage.on_damage = \"truncate\" to set the damage aside",
            report.segments.len(),
            report.records
        );
    } else {
        println!(
            "intact: {} segments, {} records ({seqs}), {} bytes",
            report.segments.len(),
            report.records,
            report.bytes
        );
    }
}
