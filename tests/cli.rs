//! The command line over a data directory: `export`, `stats`, `verify` and `inspect`
//! run as another process would, with their exit codes and one-line errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use arbiter_events::{Collector, Config, read_export};
use common::{FLUSH_TIMEOUT, TestResult, used};
use tempfile::tempdir;

fn cli(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .args(args)
        .output()
}

/// A data directory holding `n` records, its collector shut down.
fn data_dir(dir: &Path, n: usize) -> TestResult {
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.to_owned());
    let collector = Collector::new(config)?;
    for i in 0..n {
        collector.record(used(i as u64))?;
    }
    collector.flush(FLUSH_TIMEOUT)?;
    collector.shutdown(FLUSH_TIMEOUT)?;
    Ok(())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn smoke() -> TestResult {
    let out = cli(&["--help"])?;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["demo", "export", "stats", "verify", "inspect"] {
        assert!(help.contains(command), "{help}");
    }
    Ok(())
}

#[test]
fn a_consumer_pulls_what_is_new_and_commits_after_the_file_is_written() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 5)?;
    let d = dir.to_str().ok_or("path")?;
    // Pulls for consumer `rl` into `name`: the seqs it got, and what the command said.
    let pull = |name: &str| -> common::Result<(Vec<u64>, String)> {
        let file = tmp.path().join(name);
        let path = file.to_str().ok_or("path")?;
        let out = cli(&["export", "--data-dir", d, "--consumer", "rl", "--out", path])?;
        assert!(out.status.success(), "{}", stderr(&out));
        let export = read_export(std::fs::File::open(&file)?)?;
        Ok((export.records.iter().map(|r| r.seq).collect(), stderr(&out)))
    };
    let (seqs, said) = pull("first.msgpack")?;
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert!(said.contains("committed for consumer rl"), "{said}");

    // Nothing new: an empty export, and the cursor stays.
    let (seqs, said) = pull("second.msgpack")?;
    assert!(seqs.is_empty());
    assert!(said.contains("nothing new"), "{said}");

    // More records: only they come.
    data_dir(&dir, 2)?;
    let (seqs, _) = pull("third.msgpack")?;
    assert_eq!(seqs, [6, 7]);

    let out = cli(&["stats", "--data-dir", d])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(stats["records"], 7);
    assert_eq!(stats["last_seq"], 7);
    assert_eq!(stats["consumers"][0]["name"], "rl");
    assert_eq!(stats["consumers"][0]["after"], 7);
    assert_eq!(stats["consumers"][0]["behind"], 0);
    Ok(())
}

#[test]
fn filters_and_standard_output() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 6)?;
    let d = dir.to_str().ok_or("path")?;
    let out = cli(&["export", "--data-dir", d, "--after", "2", "--limit", "3"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let file = read_export(out.stdout.as_slice())?;
    let seqs: Vec<u64> = file.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(file.header.next_cursor, 5);
    Ok(())
}

#[test]
fn bad_requests_are_one_line_errors() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 1)?;
    let d = dir.to_str().ok_or("path")?;
    let cases: [(&[&str], &str); 4] = [
        (
            &["export", "--data-dir", d, "--consumer", "rl"],
            "--consumer needs --out FILE",
        ),
        (
            &[
                "export",
                "--data-dir",
                d,
                "--consumer",
                "../x",
                "--out",
                "x.msgpack",
            ],
            "consumer name \"../x\" is invalid",
        ),
        (
            &["stats", "--data-dir", "/nonexistent/arbiter"],
            "is not a data directory",
        ),
        (
            &["export", "--data-dir", d, "--kinds", "nope"],
            "unknown event kind `nope`",
        ),
    ];
    for (args, expected) in cases {
        let out = cli(args)?;
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // The library's errors come out as one line.
    let out = cli(&["export", "--data-dir", d, "--consumer", "rl"])?;
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn verify_exit_code_says_the_verdict() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 20)?;
    let d = dir.to_str().ok_or("path")?;
    let out = cli(&["verify", "--data-dir", d])?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));

    // Damage inside the first frame's payload.
    let segment = common::segment_files(&dir)?
        .into_iter()
        .next()
        .ok_or("no segment")?;
    let mut bytes = std::fs::read(&segment)?;
    bytes[32 + 36 + 10] ^= 0xff;
    std::fs::write(&segment, &bytes)?;
    let out = cli(&["verify", "--data-dir", d])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("DAMAGED at byte 32"), "{report}");
    Ok(())
}
