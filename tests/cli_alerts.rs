//! `arbiter-events demo` followed by `alerts`, as an operator runs them: the demo's
//! misbehaving agents fire its default rules, the summary says so, and `alerts` lists
//! the `anomaly_detected` records of the data directory.

use std::process::{Command, Output, Stdio};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn cli(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .args(args)
        .stdin(Stdio::null())
        .output()
}

fn ok(out: &Output) -> Result<String, Box<dyn std::error::Error>> {
    if !out.status.success() {
        return Err(format!("failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout.clone())?)
}

#[test]
fn the_demo_fires_one_alert_per_misbehaving_agent_and_alerts_lists_them() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path().to_str().ok_or("path")?;
    let summary = ok(&cli(&[
        "demo",
        "--data-dir",
        d,
        "--tasks",
        "3000",
        "--threads",
        "2",
    ])?)?;
    let line = summary
        .lines()
        .find(|l| l.starts_with("alerts: "))
        .ok_or_else(|| format!("no alerts line in {summary}"))?;
    assert!(line.starts_with("alerts: 3 fired"), "{line}");
    assert!(line.contains("arbiter-events alerts"), "{line}");
    assert!(line.contains("arbiter-events report"), "{line}");
    let json = ok(&cli(&["alerts", "--data-dir", d, "--format", "json"])?)?;
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut rules: Vec<&str> = rows.iter().filter_map(|r| r["rule"].as_str()).collect();
    rules.sort_unstable();
    assert_eq!(rules, ["failing-agent", "overspending-agent", "slow-agent"]);
    for row in &rows {
        assert!(row["seq"].as_u64().is_some_and(|s| s > 0), "{row}");
        let agent = row["agent_id"].as_str().unwrap_or_default();
        assert!(agent.starts_with("agt_"), "named by pseudonym: {row}");
    }
    let table = ok(&cli(&["alerts", "--data-dir", d])?)?;
    assert!(table.contains("3 alerts fired"), "{table}");
    assert!(table.contains("latency_spike"), "{table}");
    let only = ok(&cli(&[
        "alerts",
        "--data-dir",
        d,
        "--rule",
        "slow-agent",
        "--format",
        "json",
    ])?)?;
    assert_eq!(only.lines().count(), 1, "{only}");
    Ok(())
}

#[test]
fn a_folder_that_is_not_a_data_directory_is_refused_by_name() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path().to_str().ok_or("path")?;
    let out = cli(&["alerts", "--data-dir", d])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a data directory"), "{stderr}");
    assert!(stderr.contains(d), "{stderr}");
    Ok(())
}
