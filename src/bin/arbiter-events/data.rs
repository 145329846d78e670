//! Commands over a data directory, safe to run while a collector writes it: `export`,
//! `stats` and `verify`.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use arbiter_events::{
    Config, Cursor, DataDir, EventKind, Export, ExportRequest, RecoveryReport, VerifyReport,
};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{CliResult, Out, default_data_dir};

#[derive(Debug, clap::Args)]
pub(crate) struct DirArg {
    /// The data directory [default: the config file's storage.data_dir, else ./arbiter-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file: its storage.data_dir is used unless --data-dir is given.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DirArg {
    /// The directory: --data-dir, else the config file's storage.data_dir, else the
    /// default.
    pub(crate) fn path(&self) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        if let Some(file) = &self.config {
            let config = Config::from_file(file)?;
            if let Some(dir) = config.storage.data_dir {
                return Ok(dir);
            }
        }
        Ok(default_data_dir())
    }

    pub(crate) fn open(&self) -> Result<DataDir, Box<dyn std::error::Error + Send + Sync>> {
        Ok(DataDir::open(self.path()?)?)
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
    /// Where to write the export: a new or regular file (replaced atomically), a
    /// character device or FIFO (streamed to, e.g. /dev/stdout), or `-` for standard
    /// output (the default; refused on a terminal). --consumer needs a file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The file format: MessagePack, or JSON Lines (header, records, trailer, a line each).
    #[arg(long, value_enum, default_value_t = Format::Msgpack)]
    format: Format,
}

/// The export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A stream of MessagePack maps.
    Msgpack,
    /// JSON Lines.
    Jsonl,
}

impl Format {
    fn write<W: Write>(self, export: &Export, out: W) -> Result<(), arbiter_events::ExportError> {
        match self {
            Format::Msgpack => export.write_msgpack(out),
            Format::Jsonl => export.write_jsonl(out),
        }
    }
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
    let target = Target::of(args.out.as_deref())?;
    if args.consumer.is_some() && !matches!(target, Target::File(_)) {
        return Err("--consumer needs --out FILE: the cursor is committed only once the export is durable in a file".into());
    }
    if matches!(target, Target::Stdout) && std::io::stdout().is_terminal() {
        return Err("refusing to write binary MessagePack to a terminal: give --out FILE, or redirect standard output (`> export.msgpack`, `| python3 ...`)".into());
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
    write_export(&export, &target, args.format)?;
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

/// Where an export goes.
#[derive(Debug)]
enum Target {
    /// Standard output.
    Stdout,
    /// A character device or FIFO, written in place.
    Stream(PathBuf),
    /// A regular file, new or replaced atomically.
    File(PathBuf),
}

impl Target {
    /// Decides from what is at `path` now: nothing or a regular file is replaced
    /// atomically; a character device or FIFO (also through a symbolic link, as
    /// `/dev/stdout` is) is streamed to; anything else is refused, never replaced.
    fn of(path: Option<&Path>) -> Result<Target, String> {
        let path = match path {
            None => return Ok(Target::Stdout),
            Some(p) if p == Path::new("-") => return Ok(Target::Stdout),
            Some(p) => p,
        };
        let shown = path.display();
        let own = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Target::File(path.to_owned()));
            }
            Err(e) => return Err(format!("cannot inspect --out {shown}: {e}")),
        };
        if own.is_file() {
            return Ok(Target::File(path.to_owned()));
        }
        let followed = std::fs::metadata(path).map_err(|e| {
            format!(
                "--out {shown} is a symbolic link that cannot be followed: {e}; give another path"
            )
        })?;
        if is_stream(&followed.file_type()) {
            return Ok(Target::Stream(path.to_owned()));
        }
        let what = if own.is_symlink() && followed.is_file() {
            "a symbolic link to a regular file (a link is never replaced): give the file it points to"
        } else if followed.is_dir() {
            "a directory: give a file path inside it"
        } else {
            "neither a regular file, a character device nor a FIFO: give another path"
        };
        Err(format!("--out {shown} is {what}"))
    }
}

#[cfg(unix)]
fn is_stream(t: &std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    t.is_char_device() || t.is_fifo()
}

#[cfg(not(unix))]
fn is_stream(_: &std::fs::FileType) -> bool {
    false
}

/// Writes the export where `target` says; a file atomically and durably: a temporary
/// file, synced, renamed into place, the folder synced.
fn write_export(export: &Export, target: &Target, format: Format) -> CliResult {
    match target {
        Target::Stdout => {
            let mut out = BufWriter::new(Out::stdout());
            format.write(export, &mut out)?;
            Ok(out.flush()?)
        }
        Target::Stream(path) => {
            let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| fail(&e))?;
            let mut out = BufWriter::new(file);
            format.write(export, &mut out).map_err(|e| fail(&e))?;
            out.flush().map_err(|e| fail(&e))?;
            Ok(())
        }
        Target::File(path) => {
            write_atomically(path, |file| {
                let mut out = BufWriter::new(file);
                format
                    .write(export, &mut out)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                out.into_inner().map_err(|e| e.into_error())
            })
            .map_err(|e| {
                format!(
                    "cannot write {}: {e}; check the folder exists and is writable",
                    path.display()
                )
            })?;
            Ok(())
        }
    }
}

/// Creates a temporary file beside `path` (a new name, never an existing file or link),
/// lets `fill` write it, syncs it, renames it over `path` and syncs the folder. On any
/// failure the temporary file is removed.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(File) -> std::io::Result<File>,
) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tmp, file) = (0..100)
        .find_map(|n| {
            let tmp = folder.join(format!(
                ".{}.{}-{n}.tmp",
                name.to_string_lossy(),
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(file) => Some(Ok((tmp, file))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(e)),
            }
        })
        .unwrap_or_else(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "no free temporary file name beside it",
            ))
        })?;
    let write = || -> std::io::Result<()> {
        fill(file)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(&folder)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

pub(crate) fn stats(args: DirArg) -> CliResult {
    let dir = args.open()?;
    // O(segments): closed segments are counted from their summaries.
    let report = dir.survey()?;
    let last = report.seqs.map_or(0, |(_, last)| last);
    // A consumer whose file cannot be read is reported alone; the others still count.
    let consumers: Vec<serde_json::Value> = dir
        .consumer_cursors()?
        .into_iter()
        .map(|(name, cursor)| match cursor {
            Ok(cursor) => serde_json::json!({
                "name": name,
                "after": cursor.seq(),
                "behind": last.saturating_sub(cursor.seq()),
            }),
            Err(e) => serde_json::json!({ "name": name, "error": e.to_string() }),
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
    let mut w = Out::stdout();
    writeln!(w, "{}", serde_json::to_string_pretty(&out)?)?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(crate) struct RepairArgs {
    #[command(flatten)]
    dir: DirArg,
}

/// Sets damage aside as `on_damage = "truncate"` does and says exactly what moved.
pub(crate) fn repair(args: RepairArgs) -> CliResult {
    let dir = args.dir.open()?;
    let report = dir.repair()?;
    print_repair(&mut Out::stdout(), &report)?;
    Ok(())
}

fn print_repair(w: &mut impl Write, r: &RecoveryReport) -> std::io::Result<()> {
    if r.truncated_bytes > 0 {
        writeln!(
            w,
            "cut {} bytes ({} frames) of an unfinished write at the end of the last segment",
            r.truncated_bytes, r.truncated_frames
        )?;
    }
    for d in &r.damage {
        match &d.set_aside_to {
            Some(to) => writeln!(
                w,
                "{}: moved {} bytes from byte {} (expected seq {}) to {}: {}",
                d.segment.display(),
                d.set_aside_bytes,
                d.offset,
                d.expected_seq,
                to.display(),
                d.reason
            )?,
            None => writeln!(
                w,
                "{}: noted as a damaged gap in pruned.json, no bytes moved: {}",
                d.segment.display(),
                d.reason
            )?,
        }
        if let (Some(at), Some(seq), Some(into)) = (d.resumed_offset, d.resumed_seq, &d.resumed_in)
        {
            writeln!(
                w,
                "{}: valid frames resume at byte {at} (seq {seq}), kept in {}",
                d.segment.display(),
                into.display()
            )?;
        }
    }
    if r.damage.is_empty() && r.truncated_bytes == 0 {
        writeln!(
            w,
            "nothing to repair: {} segments, {} valid records",
            r.segments, r.records
        )
    } else {
        writeln!(
            w,
            "repaired: {} damaged spans set aside, {} valid records in {} segments kept as they were",
            r.damage.len(),
            r.records,
            r.segments
        )
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConsumerCommand {
    /// Set a consumer's committed cursor: its next export starts after SEQ.
    Reset(ResetArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ResetArgs {
    /// The consumer's name.
    name: String,
    /// The seq the consumer has seen: its next export starts after it (0: from the start).
    #[arg(long)]
    to: u64,
    #[command(flatten)]
    dir: DirArg,
}

pub(crate) fn consumer(command: ConsumerCommand) -> CliResult {
    match command {
        ConsumerCommand::Reset(args) => {
            let dir = args.dir.open()?;
            let before = match dir.committed(&args.name) {
                Ok(c) if c == Cursor::START => "never committed".to_owned(),
                Ok(c) => format!("was {}", c.seq()),
                Err(e @ arbiter_events::StorageError::InvalidConsumer { .. }) => {
                    return Err(e.into());
                }
                Err(_) => "was unreadable".to_owned(),
            };
            dir.commit(&args.name, Cursor::after_seq(args.to))?;
            writeln!(
                Out::stdout(),
                "consumer {} reset to {} ({before}); its next export starts at seq {}",
                args.name,
                args.to,
                args.to.saturating_add(1)
            )?;
            Ok(())
        }
    }
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
    print_verify(&mut Out::stdout(), &report)?;
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

fn print_verify(w: &mut impl Write, report: &VerifyReport) -> std::io::Result<()> {
    for s in &report.segments {
        let verdict = match (&s.damage, s.incomplete_tail_bytes) {
            (Some((offset, what)), _) => format!("DAMAGED at byte {offset}: {what}"),
            (None, 0) => "ok".to_owned(),
            (None, n) => format!("ok, {n} bytes of an unfinished write at the end"),
        };
        writeln!(
            w,
            "{}: {} records from seq {}, {} bytes, key_id {}: {verdict}",
            s.path.display(),
            s.records,
            s.first_seq,
            s.bytes,
            s.key_id.as_deref().unwrap_or("none"),
        )?;
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
        writeln!(
            w,
            "DAMAGED: {} segments, {} valid records ({seqs}); run `arbiter-events repair` to set the damage aside (as storage.on_damage = \"truncate\" does), keeping every valid record",
            report.segments.len(),
            report.records
        )
    } else {
        writeln!(
            w,
            "intact: {} segments, {} records ({seqs}), {} bytes",
            report.segments.len(),
            report.records,
            report.bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn names(dir: &Path) -> std::io::Result<Vec<String>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_old_file_as_it_was() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("out.msgpack");
        std::fs::write(&path, b"old")?;
        let failed = write_atomically(&path, |mut file| {
            file.write_all(b"partial")?;
            Err(std::io::Error::other("the export failed"))
        });
        assert!(failed.is_err());
        assert_eq!(names(tmp.path())?, ["out.msgpack"]);
        assert_eq!(std::fs::read(&path)?, b"old");

        write_atomically(&path, |mut file| {
            file.write_all(b"new")?;
            Ok(file)
        })?;
        assert_eq!(names(tmp.path())?, ["out.msgpack"]);
        assert_eq!(std::fs::read(&path)?, b"new");
        Ok(())
    }

    #[test]
    fn a_planted_temporary_name_is_never_written_through() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("out.msgpack");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"victim")?;
        let planted = tmp
            .path()
            .join(format!(".out.msgpack.{}-0.tmp", std::process::id()));
        #[cfg(unix)]
        std::os::unix::fs::symlink(&victim, &planted)?;
        write_atomically(&path, |mut file| {
            file.write_all(b"new")?;
            Ok(file)
        })?;
        assert_eq!(std::fs::read(&victim)?, b"victim");
        assert_eq!(std::fs::read(&path)?, b"new");
        Ok(())
    }
}
