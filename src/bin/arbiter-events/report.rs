//! `report`: what operators read — the data directory's records over a window, overall
//! or per agent, kind or strategy, as a terminal table, JSON, or an HTML page.

use std::io::Write;
use std::path::PathBuf;

use arbiter_events::{
    AnalyticsConfig, Figures, GroupReport, Grouping, Report, ReportRequest, Summary, Trend,
    parse_duration,
};
use clap::ValueEnum;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::data::DirArg;
use crate::html::{self, num};
use crate::{CliResult, Out};

/// Agents charted on the HTML page.
const DEFAULT_TOP: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum By {
    Agent,
    Kind,
    Strategy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    dir: DirArg,
    /// The window up to now, e.g. `15m`, `1h`, `7d` (default `1h` unless --since is given).
    #[arg(long, conflicts_with = "since")]
    last: Option<String>,
    /// The window's start, RFC 3339 (e.g. `2026-01-01T00:00:00Z`).
    #[arg(long)]
    since: Option<String>,
    /// The window's end, RFC 3339 (default: now).
    #[arg(long, requires = "since")]
    until: Option<String>,
    /// One row per agent, event kind or routing strategy instead of one overall row.
    #[arg(long)]
    by: Option<By>,
    /// Only this agent (as reports name it: its pseudonym when anonymization is on).
    #[arg(long, conflicts_with = "by")]
    agent: Option<String>,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also write a self-contained HTML page with charts to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Agents charted on the HTML page.
    #[arg(long, default_value_t = DEFAULT_TOP)]
    top: usize,
    /// Width of one bucket in seconds (the trend's resolution).
    #[arg(long, default_value_t = arbiter_events::DEFAULT_BUCKET_SECS)]
    bucket_secs: u64,
}

fn instant(text: &str, flag: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{flag} {text:?} is not an RFC 3339 time: {e}"))
}

fn request(args: &Args, now: OffsetDateTime) -> Result<ReportRequest, String> {
    let mut request = match (&args.since, &args.last) {
        (Some(since), _) => {
            let since = instant(since, "--since")?;
            let until = match &args.until {
                Some(u) => instant(u, "--until")?,
                None => now,
            };
            if until <= since {
                return Err("--until must be after --since".into());
            }
            ReportRequest::between(since, until)
        }
        (None, last) => {
            let last = parse_duration(last.as_deref().unwrap_or("1h"))
                .map_err(|e| format!("--last: {e}"))?;
            if last.is_zero() {
                return Err("--last must be longer than zero".into());
            }
            ReportRequest::last(last)
        }
    };
    request = match args.by {
        Some(By::Agent) => request.by(Grouping::ByAgent),
        Some(By::Kind) => request.by(Grouping::ByKind),
        Some(By::Strategy) => request.by(Grouping::ByStrategy),
        None => request,
    };
    if let Some(agent) = &args.agent {
        request = request.agent(agent.clone());
    }
    if args.format == Format::Table {
        request = request.trend(Trend::None);
    }
    Ok(request)
}

pub(crate) fn run(args: Args) -> CliResult {
    let data = args.dir.open()?;
    let mut config = AnalyticsConfig::default();
    config.bucket_secs = args.bucket_secs;
    let now = OffsetDateTime::now_utc();
    let request = request(&args, now)?;
    let report = data.report(&config, &request, now)?;
    let mut out = Out::stdout();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Table => write!(out, "{}", table(&report))?,
    }
    if let Some(path) = &args.html {
        // The page charts the whole window and its busiest agents, whatever the rows
        // printed above.
        let mut overall = request.clone();
        overall.grouping = Grouping::Overall;
        overall.agent = None;
        overall.trend = Trend::PerBucket;
        let agents = overall.clone().by(Grouping::ByAgent);
        let overall = data.report(&config, &overall, now)?;
        let agents = data.report(&config, &agents, now)?;
        write_page(path, &html::page(&overall, &agents, args.top))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes the page through a temporary file and a rename, so a reader never sees half.
fn write_page(path: &std::path::Path, page: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("html.tmp");
    let result = std::fs::write(&tmp, page).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
}

fn p(s: Option<Summary>, pick: fn(&Summary) -> f64) -> String {
    num(s.as_ref().map(pick))
}

fn row(g: &GroupReport) -> Vec<Cell> {
    let f: &Figures = &g.figures;
    let d = f.duration_ms;
    [
        g.group.clone(),
        f.events.to_string(),
        f.tasks.ended.to_string(),
        pct(f.tasks.success_rate),
        pct(f.tasks.error_rate),
        f.tasks.abandoned.to_string(),
        p(d, |s| s.p50),
        p(d, |s| s.p95),
        p(d, |s| s.p99),
        p(d, |s| s.max),
        f.tokens_consumed.to_string(),
        pct(f.budget.overspent_share),
        pct(f.caws.pass_rate),
        (f.caws.violations.high + f.caws.violations.critical).to_string(),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, text)| {
        let cell = Cell::new(text);
        if i == 0 {
            cell
        } else {
            cell.set_alignment(CellAlignment::Right)
        }
    })
    .collect()
}

/// The report as a terminal table, then the top CAWS rules of the first row.
fn table(report: &Report) -> String {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header([
        "group",
        "events",
        "tasks",
        "success",
        "errors",
        "abandoned",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "tokens",
        "budget over",
        "CAWS pass",
        "high+crit",
    ]);
    for g in &report.groups {
        t.add_row(row(g));
    }
    let mut out = format!(
        "{} to {} ({} s buckets): {} records\n{t}\n",
        report.since, report.until, report.bucket_secs, report.records
    );
    if let Some(first) = report.groups.first()
        && !first.figures.caws.top_rules.is_empty()
    {
        out.push_str("top CAWS rules:");
        for r in &first.figures.caws.top_rules {
            out.push_str(&format!(" {} ({})", r.rule, r.violations));
        }
        out.push('\n');
    }
    if report.folded_agents > 0 {
        out.push_str(&format!(
            "{} less active agents are counted together under `other`\n",
            report.folded_agents
        ));
    }
    if report.skipped > 0 {
        out.push_str(&format!(
            "note: {} records of this window were not counted (the live analytics fell behind)\n",
            report.skipped
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arbiter_events::Aggregator;

    use super::*;

    #[test]
    fn the_table_notes_records_the_live_stage_skipped() -> Result<(), Box<dyn std::error::Error>> {
        let aggregator = Aggregator::new(&AnalyticsConfig::default())?;
        let mut report = aggregator.report(&ReportRequest::last(Duration::from_secs(60)));
        assert!(!table(&report).contains("not counted"));
        report.skipped = 42;
        assert!(table(&report).contains("note: 42 records of this window were not counted"));
        Ok(())
    }
}
