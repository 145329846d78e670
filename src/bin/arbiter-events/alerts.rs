//! `alerts`: the alerts that fired, as the data directory holds them (its
//! `anomaly_detected` records), oldest first, as a table or JSON Lines.

use std::io::Write;

use arbiter_events::{Cursor, DataDir, Event, EventKind, ExportRequest};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use time::format_description::well_known::Rfc3339;

use crate::data::DirArg;
use crate::report::Format;
use crate::{CliResult, Out};

/// Records read per chunk.
const CHUNK: u64 = 4096;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    dir: DirArg,
    /// Only alerts of this rule.
    #[arg(long)]
    rule: Option<String>,
    /// How to print them: a table, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub(crate) fn run(args: Args) -> CliResult {
    let path = args.dir.path()?;
    let dir = DataDir::open(&path)?;
    let mut cursor = Cursor::START;
    let mut rows = Vec::new();
    loop {
        let request = ExportRequest::after(cursor)
            .kinds([EventKind::AnomalyDetected])
            .limit(CHUNK);
        let chunk = dir.export(&request)?;
        for record in chunk.records() {
            let record = record?;
            if let Event::AnomalyDetected(a) = &record.event
                && args.rule.as_deref().is_none_or(|r| r == a.rule)
            {
                rows.push((record.seq, record.time, a.clone()));
            }
        }
        if chunk.next_cursor() == cursor {
            break;
        }
        cursor = chunk.next_cursor();
    }
    let mut out = Out::stdout();
    match args.format {
        Format::Json => {
            for (seq, time, a) in &rows {
                let mut value = serde_json::to_value(a)?;
                if let Some(map) = value.as_object_mut() {
                    map.insert("seq".into(), (*seq).into());
                    map.insert("time".into(), time.format(&Rfc3339)?.into());
                }
                writeln!(out, "{value}")?;
            }
        }
        Format::Table => {
            if rows.is_empty() {
                writeln!(out, "no alerts in {}", path.display())?;
                return Ok(());
            }
            let mut table = Table::new();
            table.load_style(UTF8_FULL_CONDENSED);
            table.set_header([
                "seq",
                "time",
                "rule",
                "kind",
                "agent",
                "observed",
                "threshold",
                "baseline",
                "window",
                "samples",
            ]);
            for (seq, time, a) in &rows {
                let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
                table.add_row([
                    right(seq.to_string()),
                    Cell::new(time.format(&Rfc3339)?),
                    Cell::new(&a.rule),
                    Cell::new(a.kind.as_str()),
                    Cell::new(a.agent_id.as_deref().unwrap_or("(overall)")),
                    right(format!("{:.3}", a.observed)),
                    right(format!("{:.3}", a.threshold)),
                    right(a.baseline.map_or("-".into(), |b| format!("{b:.3}"))),
                    right(format!("{} s", a.window_secs)),
                    right(a.samples.to_string()),
                ]);
            }
            writeln!(out, "{table}")?;
            writeln!(
                out,
                "{} alert{} fired; see `arbiter-events report --by agent` for the figures behind them",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            )?;
        }
    }
    Ok(())
}
