//! `arbiter-events demo` run as a user would: settings from flags over the config file
//! over the defaults, a summary of memory and disk, a closed pipe, bad thread counts, and
//! runs that never share a run folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::TestResult;
use tempfile::tempdir;

fn demo(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .arg("demo")
        .args(["--tasks", "50", "--threads", "2", "--pull-interval-ms", "1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> common::Result<&str> {
    Ok(p.to_str().ok_or("path")?)
}

fn run_dirs(data: &Path) -> common::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data.join("exports"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    dirs.sort();
    Ok(dirs)
}

#[test]
fn smoke() -> TestResult {
    let tmp = tempdir()?;
    let data = tmp.path().join("data");
    let out = demo(&["--data-dir", path(&data)?])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for line in [
        "accounting:",
        "memory:",
        "disk:",
        "recovery on open:",
        "write errors: 0",
    ] {
        assert!(said.contains(line), "{line}: {said}");
    }
    assert!(said.contains("data_dir = "), "{said}");
    assert!(
        said.contains("overflow = block (from the demo's default)"),
        "{said}"
    );
    Ok(())
}

#[test]
fn the_config_file_is_honoured_and_flags_override_it() -> TestResult {
    let tmp = tempdir()?;
    let data = tmp.path().join("from-file");
    let config = tmp.path().join("arbiter.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {:?}\nsegment_bytes = 8192\n\n[queue]\noverflow = \"drop_newest\"\n",
            path(&data)?
        ),
    )?;
    let c = path(&config)?;
    let out = demo(&["--config", c])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(data.join("segments").is_dir(), "{said}");
    assert!(
        said.contains(&format!("data_dir = {} (from {c})", path(&data)?)),
        "{said}"
    );
    assert!(
        said.contains(&format!("overflow = drop_newest (from {c})")),
        "{said}"
    );
    // segment_bytes from the file: 8 KiB segments, so several of them.
    let segments = common::segment_files(&data)?;
    assert!(segments.len() > 2, "{segments:?}");

    let elsewhere = tmp.path().join("from-flag");
    let out = demo(&[
        "--config",
        c,
        "--data-dir",
        path(&elsewhere)?,
        "--overflow",
        "block",
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(elsewhere.join("segments").is_dir());
    assert!(
        said.contains(&format!(
            "data_dir = {} (from --data-dir; the config file says {})",
            path(&elsewhere)?,
            path(&data)?
        )),
        "{said}"
    );
    assert!(
        said.contains("overflow = block (from --overflow; the config file says drop_newest)"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_closed_pipe_ends_the_demo_cleanly() -> TestResult {
    let tmp = tempdir()?;
    let data = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .args(["demo", "--tasks", "2000", "--data-dir", path(&data)?])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // As `| head -0` does: the reader is gone before the demo prints.
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    Ok(())
}

#[test]
fn thread_counts_past_the_bound_are_a_validation_error() -> TestResult {
    for threads in ["0", "257", "100000"] {
        let out = Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
            .args(["demo", "--threads", threads])
            .output()?;
        assert_eq!(out.status.code(), Some(2), "{threads}");
        let err = text(&out.stderr);
        assert!(err.contains("1..=256"), "{threads}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    Ok(())
}

#[test]
fn runs_in_the_same_second_keep_their_own_increments() -> TestResult {
    let tmp = tempdir()?;
    let data = tmp.path().join("data");
    let exports = data.join("exports");
    std::fs::create_dir_all(&exports)?;
    // Earlier runs' folders for this second and the next few, each with an increment.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let taken: Vec<PathBuf> = (now..now + 30)
        .map(|s| exports.join(format!("run-{s}-seed42")))
        .collect();
    for dir in &taken {
        std::fs::create_dir(dir)?;
        std::fs::write(dir.join("increment-0001.msgpack"), b"earlier run")?;
    }
    let out = demo(&["--data-dir", path(&data)?])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for dir in &taken {
        assert_eq!(
            std::fs::read(dir.join("increment-0001.msgpack"))?,
            b"earlier run"
        );
    }
    let new: Vec<PathBuf> = run_dirs(&data)?
        .into_iter()
        .filter(|d| !taken.contains(d))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].join("increment-0001.msgpack").is_file());
    assert!(new[0].join("stats.json").is_file());
    Ok(())
}

#[test]
fn rotate_key_is_needed_after_the_key_file_is_lost() -> TestResult {
    let tmp = tempdir()?;
    let data = tmp.path().join("data");
    let d = path(&data)?;
    let out = demo(&["--data-dir", d])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(data.join("key"))?;
    let out = demo(&["--data-dir", d])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--rotate-key"),
        "{}",
        text(&out.stderr)
    );
    let out = demo(&["--data-dir", d, "--rotate-key"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(data.join("key").is_file());
    Ok(())
}
