//! `arbiter-events report` as an operator runs it: a table, the JSON report, and the HTML
//! page, over a data directory the recorded sessions were written to.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use arbiter_events::Collector;
use common::*;
use serde_json::Value as Json;

fn cli(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .args(args)
        .output()
}

/// The three recorded sessions, into a data directory, timed now.
fn sessions(dir: &Path) -> TestResult {
    let config = config_with(|c| c.storage.data_dir = Some(dir.to_owned()));
    let collector = Collector::new(config)?;
    for name in ["session_hotfix", "session_pr_review", "session_rl_batch"] {
        for event in read_events(&format!("fixtures/events/{name}.jsonl"))? {
            collector.record(event)?;
        }
    }
    collector.flush(FLUSH_TIMEOUT)?;
    collector.shutdown(FLUSH_TIMEOUT)?;
    Ok(())
}

fn ok(out: &Output) -> Result<String> {
    if !out.status.success() {
        return Err(format!("failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout.clone())?)
}

#[test]
fn smoke() -> TestResult {
    let tmp = tempfile::tempdir()?;
    sessions(tmp.path())?;
    let d = tmp.path().to_str().ok_or("path")?;
    let table = ok(&cli(&["report", "--data-dir", d])?)?;
    assert!(table.contains("overall"), "{table}");
    assert!(table.contains("121 records"), "{table}");
    Ok(())
}

#[test]
fn the_json_report_counts_every_record_and_groups_by_agent() -> TestResult {
    let tmp = tempfile::tempdir()?;
    sessions(tmp.path())?;
    let d = tmp.path().to_str().ok_or("path")?;
    let report: Json = serde_json::from_str(&ok(&cli(&[
        "report",
        "--data-dir",
        d,
        "--format",
        "json",
        "--last",
        "1h",
        "--by",
        "agent",
    ])?)?)?;
    assert_eq!(report["records"], 121);
    assert_eq!(report["grouping"], "by_agent");
    let groups = report["groups"].as_array().ok_or("groups")?;
    assert!(groups.len() > 1);
    assert!(
        groups
            .iter()
            .all(|g| g["group"].as_str().is_some_and(|n| n.starts_with("agt_"))),
        "pseudonyms only"
    );
    let one = groups[0]["group"].as_str().ok_or("name")?;
    let single: Json = serde_json::from_str(&ok(&cli(&[
        "report",
        "--data-dir",
        d,
        "--format",
        "json",
        "--agent",
        one,
    ])?)?)?;
    assert_eq!(single["groups"].as_array().map(Vec::len), Some(1));
    assert_eq!(single["groups"][0]["figures"], groups[0]["figures"]);
    Ok(())
}

#[test]
fn the_html_page_is_well_formed_and_shows_the_reports_figures() -> TestResult {
    let tmp = tempfile::tempdir()?;
    sessions(tmp.path())?;
    let d = tmp.path().to_str().ok_or("path")?;
    let page = tmp.path().join("report.html");
    let p = page.to_str().ok_or("path")?;
    let json: Json = serde_json::from_str(&ok(&cli(&[
        "report",
        "--data-dir",
        d,
        "--format",
        "json",
        "--html",
        p,
    ])?)?)?;
    let html = std::fs::read_to_string(&page)?;
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )?;
    let svgs = doc.descendants().filter(|n| n.has_tag_name("svg")).count();
    assert_eq!(svgs, 4, "four charts");
    assert!(!html.contains("<script"), "no scripts");
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "nothing is fetched"
    );
    let overall = &json["groups"][0]["figures"];
    let text: String = doc
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join(" ");
    for figure in [
        format!("{} records", json["records"]),
        overall["tasks"]["ended"].to_string(),
        overall["tokens_consumed"].to_string(),
        format!(
            "{:.1} %",
            overall["tasks"]["success_rate"].as_f64().ok_or("rate")? * 100.0
        ),
    ] {
        assert!(text.contains(&figure), "the page lacks {figure}");
    }
    Ok(())
}

#[test]
fn bad_windows_are_refused_in_one_line() -> TestResult {
    let tmp = tempfile::tempdir()?;
    sessions(tmp.path())?;
    let d = tmp.path().to_str().ok_or("path")?;
    for (args, says) in [
        (vec!["--last", "soon"], "--last"),
        (vec!["--since", "yesterday"], "--since"),
        (
            vec![
                "--since",
                "2026-01-02T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
            "--until must be after --since",
        ),
    ] {
        let mut all = vec!["report", "--data-dir", d];
        all.extend(args);
        let out = cli(&all)?;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    Ok(())
}
