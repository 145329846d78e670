//! `report --html FILE`: one self-contained page (no scripts, no fetches) with SVG charts
//! drawn here: task latency percentiles over time, success rate over time of the busiest
//! agents, the thinking-budget utilization histogram and CAWS violations by rule, then
//! the figures as tables. The page is well-formed XHTML, so any XML parser reads it.

use std::fmt::Write as _;

use arbiter_events::{Figures, GroupReport, Report, Summary};

/// Chart size, in SVG user units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const MARGIN: f64 = 48.0;

/// Line colours, one per series, cycling.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// Text escaped for XML content and attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A figure as the tables print it: up to three decimals, `–` when absent.
pub(crate) fn num(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => {
            let s = format!("{v:.3}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            if s.is_empty() || s == "-" {
                "0".into()
            } else {
                s.to_string()
            }
        }
        _ => "–".into(),
    }
}

fn pct(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{:.1} %", v * 100.0))
}

/// One line of a line chart: a label and (x, y) points.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
}

/// A line chart with x in seconds from the window's start and y from 0 to `y_max`.
fn line_chart(out: &mut String, title: &str, unit: &str, x_span: f64, lines: &[Line]) {
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let x_span = x_span.max(1.0);
    let plot_w = WIDTH - 2.0 * MARGIN;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    open_chart(out, title);
    axes(out, &format!("{} {}", num(Some(y_max)), unit), x_span);
    for (i, line) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    MARGIN + x / x_span * plot_w,
                    HEIGHT - MARGIN - y / y_max * plot_h
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            esc(&line.label)
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                out,
                r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>"#
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{colour}">{}</text>"#,
            WIDTH - MARGIN - 96.0,
            MARGIN + 14.0 * i as f64,
            esc(&short(&line.label))
        );
    }
    out.push_str("</svg></figure>\n");
}

/// Opens a chart: its caption and the SVG element, titled for screen readers.
fn open_chart(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<figure><figcaption>{}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
}

/// Bars: a label and a value each.
fn bar_chart(out: &mut String, title: &str, bars: &[(String, f64)]) {
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1.0);
    let plot_w = WIDTH - 2.0 * MARGIN;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    open_chart(out, title);
    axes(out, &num(Some(max)), 0.0);
    let slot = plot_w / bars.len().max(1) as f64;
    for (i, (label, value)) in bars.iter().enumerate() {
        let h = value / max * plot_h;
        let x = MARGIN + i as f64 * slot + slot * 0.1;
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#1f77b4"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
            HEIGHT - MARGIN - h,
            slot * 0.8,
            esc(label),
            num(Some(*value)),
            x + slot * 0.4,
            HEIGHT - MARGIN + 14.0,
            esc(&short(label)),
            x + slot * 0.4,
            HEIGHT - MARGIN - h - 3.0,
            num(Some(*value)),
        );
    }
    out.push_str("</svg></figure>\n");
}

fn axes(out: &mut String, y_label: &str, x_span: f64) {
    let _ = write!(
        out,
        r##"<line x1="{MARGIN}" y1="{b}" x2="{r}" y2="{b}" stroke="#444"/><line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{b}" stroke="#444"/><text x="4" y="{:.1}" font-size="10">{}</text>"##,
        MARGIN - 6.0,
        esc(y_label),
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN,
    );
    if x_span > 0.0 {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{} s</text>"#,
            WIDTH - MARGIN,
            HEIGHT - MARGIN + 28.0,
            num(Some(x_span))
        );
    }
}

/// A label short enough for a chart (pseudonyms are long).
fn short(label: &str) -> String {
    if label.chars().count() > 14 {
        let head: String = label.chars().take(12).collect();
        format!("{head}…")
    } else {
        label.to_string()
    }
}

fn seconds_from(report: &Report, start: time::OffsetDateTime) -> f64 {
    (start - report.since).as_seconds_f64()
}

fn summary_cells(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            s.count,
            num(Some(s.min)),
            num(Some(s.mean)),
            num(Some(s.p50)),
            num(Some(s.p95)),
            num(Some(s.p99)),
            num(Some(s.max))
        ),
        None => "<td>0</td><td>–</td><td>–</td><td>–</td><td>–</td><td>–</td><td>–</td>".into(),
    }
}

fn distributions(out: &mut String, f: &Figures) {
    out.push_str("<table><thead><tr><th>distribution</th><th>count</th><th>min</th><th>mean</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr></thead><tbody>\n");
    for (name, s) in [
        ("task duration (ms)", f.duration_ms),
        ("budget utilization", f.budget.utilization),
        ("CAWS compliance", f.caws.compliance),
        ("judgment score", f.judgment_score),
        ("evaluation score", f.evaluation.score),
        ("routing confidence", f.routing_confidence),
    ] {
        let _ = writeln!(out, "<tr><th>{}</th>{}</tr>", esc(name), summary_cells(s));
    }
    out.push_str("</tbody></table>\n");
}

fn agents_table(out: &mut String, groups: &[GroupReport]) {
    out.push_str("<table><thead><tr><th>agent</th><th>events</th><th>tasks</th><th>success</th><th>errors</th><th>p95 ms</th><th>budget over</th><th>CAWS pass</th></tr></thead><tbody>\n");
    for g in groups {
        let f = &g.figures;
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.group),
            f.events,
            f.tasks.ended,
            pct(f.tasks.success_rate),
            pct(f.tasks.error_rate),
            num(f.duration_ms.map(|d| d.p95)),
            pct(f.budget.overspent_share),
            pct(f.caws.pass_rate),
        );
    }
    out.push_str("</tbody></table>\n");
}

/// The page for `overall` (an overall report with a trend) and `agents` (a by-agent
/// report with a trend), charting the `top` busiest agents.
pub(crate) fn page(overall: &Report, agents: &Report, top: usize) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let since = overall.since.to_string();
    let until = overall.until.to_string();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/><title>arbiter-events report</title><style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}th{{text-align:left}}figure{{margin:1.5em 0}}figcaption{{font-weight:bold}}</style></head><body>\n<h1>arbiter-events report</h1>\n<p>{} to {} · {} s buckets · {} records</p>\n",
        esc(&since),
        esc(&until),
        overall.bucket_secs,
        overall.records
    );
    let span = (overall.until - overall.since).as_seconds_f64();
    let Some(all) = overall.groups.first() else {
        out.push_str("<p>No records in this window.</p></body></html>\n");
        return out;
    };
    let f = &all.figures;
    let _ = writeln!(
        out,
        "<table><tbody><tr><th>tasks ended</th><td>{}</td></tr><tr><th>success rate</th><td>{}</td></tr><tr><th>error rate</th><td>{}</td></tr><tr><th>abandoned</th><td>{}</td></tr><tr><th>tokens consumed</th><td>{}</td></tr><tr><th>budget uses over allocation</th><td>{} of {}</td></tr><tr><th>CAWS validations passed</th><td>{} of {}</td></tr></tbody></table>",
        f.tasks.ended,
        pct(f.tasks.success_rate),
        pct(f.tasks.error_rate),
        f.tasks.abandoned,
        f.tokens_consumed,
        f.budget.overspent,
        f.budget.uses,
        f.caws.passed,
        f.caws.validations,
    );
    let latency = |pick: fn(&Summary) -> f64, label: &str| Line {
        label: label.into(),
        points: all
            .trend
            .iter()
            .filter_map(|p| {
                Some((
                    seconds_from(overall, p.start),
                    pick(&p.figures.duration_ms?),
                ))
            })
            .collect(),
    };
    line_chart(
        &mut out,
        "Task duration percentiles over time (ms)",
        "ms",
        span,
        &[
            latency(|s| s.p50, "p50"),
            latency(|s| s.p95, "p95"),
            latency(|s| s.p99, "p99"),
        ],
    );
    let busiest: Vec<&GroupReport> = agents
        .groups
        .iter()
        .filter(|g| g.group != arbiter_events::OTHER_GROUP && g.figures.tasks.ended > 0)
        .take(top)
        .collect();
    let success: Vec<Line> = busiest
        .iter()
        .map(|g| Line {
            label: g.group.clone(),
            points: g
                .trend
                .iter()
                .filter_map(|p| {
                    Some((seconds_from(agents, p.start), p.figures.tasks.success_rate?))
                })
                .collect(),
        })
        .collect();
    line_chart(
        &mut out,
        &format!("Success rate over time, {} busiest agents", busiest.len()),
        "",
        span,
        &success,
    );
    let bands = [
        "<25%",
        "25–50%",
        "50–75%",
        "75–100%",
        "100–125%",
        "125–150%",
        "150–175%",
        "≥175%",
    ];
    let hist: Vec<(String, f64)> = bands
        .iter()
        .zip(f.budget.utilization_bands)
        .map(|(l, n)| (l.to_string(), n as f64))
        .collect();
    bar_chart(
        &mut out,
        "Thinking-budget utilization (uses per band)",
        &hist,
    );
    let rules: Vec<(String, f64)> = f
        .caws
        .top_rules
        .iter()
        .map(|r| (r.rule.clone(), r.violations as f64))
        .collect();
    bar_chart(&mut out, "CAWS violations by rule", &rules);
    out.push_str("<h2>Distributions</h2>\n");
    distributions(&mut out, f);
    out.push_str("<h2>Agents</h2>\n");
    agents_table(&mut out, &agents.groups);
    out.push_str("</body></html>\n");
    out
}
