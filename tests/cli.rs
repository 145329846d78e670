//! The command line over a data directory: `export`, `stats`, `verify`, `repair`,
//! `consumer reset` and `inspect` run as another process would, with their exit codes
//! and one-line errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
    for command in [
        "demo", "export", "stats", "verify", "repair", "consumer", "inspect",
    ] {
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A data directory of `n` records in segments of at most 4 KiB.
fn small_segments(dir: &Path, n: u64) -> TestResult {
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.to_owned());
    config.storage.segment_bytes = 4096;
    let collector = Collector::new(config)?;
    for i in 0..n {
        collector.record(used(i))?;
    }
    collector.flush(FLUSH_TIMEOUT)?;
    collector.shutdown(FLUSH_TIMEOUT)?;
    Ok(())
}

/// The byte offset of frame `index` (from 0) in a segment's bytes.
fn frame_offset(bytes: &[u8], index: usize) -> common::Result<usize> {
    let mut at = 32;
    for _ in 0..index {
        let len = bytes.get(at..at + 4).ok_or("no such frame")?;
        at += 36 + u32::from_le_bytes(len.try_into()?) as usize;
    }
    Ok(at)
}

#[test]
fn repair_sets_damage_aside_reports_it_and_keeps_the_valid_frames() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 20)?;
    let d = dir.to_str().ok_or("path")?;
    let segment = common::segment_files(&dir)?
        .into_iter()
        .next()
        .ok_or("no segment")?;
    let mut bytes = std::fs::read(&segment)?;
    let at = frame_offset(&bytes, 10)?;
    bytes[at + 36 + 5] ^= 0xff;
    std::fs::write(&segment, &bytes)?;

    let out = cli(&["repair", "--data-dir", d])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    // Only the damaged frame is set aside: valid frames resume at the next one.
    let next = frame_offset(&bytes, 11)?;
    assert!(
        said.contains(&format!(
            "moved {} bytes from byte {at} (expected seq 11)",
            next - at
        )),
        "{said}"
    );
    assert!(said.contains(".damaged"), "{said}");
    assert!(
        said.contains(&format!("valid frames resume at byte {next} (seq 12)")),
        "{said}"
    );
    // The valid frames are byte for byte what they were; only the span is set aside.
    let kept = std::fs::read(&segment)?;
    assert_eq!(kept, bytes[..at]);
    let mut aside = segment.clone().into_os_string();
    aside.push(".damaged");
    assert_eq!(std::fs::read(PathBuf::from(aside))?, bytes[at..next]);
    let moved = segment.with_file_name(format!("{:020}.seg", 12));
    assert_eq!(std::fs::read(moved)?[32..], bytes[next..]);

    let out = cli(&["verify", "--data-dir", d])?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = cli(&["repair", "--data-dir", d])?;
    assert!(
        stdout(&out).contains("nothing to repair"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(&segment)?, kept);
    // The writer opens it under the default on_damage = "fail".
    data_dir(&dir, 1)?;
    Ok(())
}

#[test]
fn a_missing_segment_is_named_by_the_writer_and_verify_and_repair_fixes_it() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    small_segments(&dir, 200)?;
    let d = dir.to_str().ok_or("path")?;
    let segments = common::segment_files(&dir)?;
    assert!(segments.len() >= 3, "{segments:?}");
    std::fs::remove_file(&segments[1])?;

    // The writer refuses and names the command that fixes it; verify agrees.
    let err = data_dir(&dir, 1).err().ok_or("opened")?.to_string();
    assert!(
        err.contains("never deleted") && err.contains("arbiter-events repair"),
        "{err}"
    );
    let out = cli(&["verify", "--data-dir", d])?;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("never deleted"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("arbiter-events repair"),
        "{}",
        stdout(&out)
    );

    let out = cli(&["repair", "--data-dir", d])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("noted as a damaged gap"),
        "{}",
        stdout(&out)
    );
    let out = cli(&["verify", "--data-dir", d])?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    data_dir(&dir, 1)?;
    Ok(())
}

#[test]
fn repair_refuses_while_a_writer_holds_the_directory() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.clone());
    let collector = Collector::new(config)?;
    let out = cli(&["repair", "--data-dir", dir.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by another writer"),
        "{}",
        stderr(&out)
    );
    collector.shutdown(FLUSH_TIMEOUT)?;
    Ok(())
}

#[test]
fn consumer_reset_moves_the_cursor_and_a_corrupt_consumer_is_reported_alone() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 5)?;
    let d = dir.to_str().ok_or("path")?;
    let file = tmp.path().join("pull.msgpack");
    let f = file.to_str().ok_or("path")?;
    let out = cli(&["export", "--data-dir", d, "--consumer", "rl", "--out", f])?;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = cli(&["consumer", "reset", "rl", "--to", "2", "--data-dir", d])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("reset to 2 (was 5)"),
        "{}",
        stdout(&out)
    );
    let out = cli(&["export", "--data-dir", d, "--consumer", "rl", "--out", f])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let seqs: Vec<u64> = read_export(std::fs::File::open(&file)?)?
        .records
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [3, 4, 5]);

    // Past the last record: refused, the cursor stays.
    let out = cli(&["consumer", "reset", "rl", "--to", "99", "--data-dir", d])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("last seq on disk is 5"),
        "{}",
        stderr(&out)
    );

    // One corrupt consumer file: stats still reports the others.
    std::fs::write(dir.join("consumers").join("broken.json"), b"{not json")?;
    let out = cli(&["stats", "--data-dir", d])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let consumers = stats["consumers"].as_array().ok_or("no consumers")?;
    assert_eq!(consumers.len(), 2, "{consumers:?}");
    assert_eq!(consumers[0]["name"], "broken");
    assert!(
        consumers[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("corrupt"))
    );
    assert_eq!(consumers[1]["name"], "rl");
    assert_eq!(consumers[1]["after"], 5);
    // And the reset repairs it.
    let out = cli(&["consumer", "reset", "broken", "--to", "0", "--data-dir", d])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("was unreadable"), "{}", stdout(&out));
    let out = cli(&["stats", "--data-dir", d])?;
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(stats["consumers"][0]["behind"], 5);
    Ok(())
}

#[test]
fn config_names_the_data_directory_unless_data_dir_is_given() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 3)?;
    let config = tmp.path().join("arbiter.toml");
    std::fs::write(
        &config,
        format!("[storage]\ndata_dir = {:?}\n", dir.to_str().ok_or("path")?),
    )?;
    let c = config.to_str().ok_or("path")?;
    let file = tmp.path().join("out.msgpack");
    let f = file.to_str().ok_or("path")?;
    let runs: [&[&str]; 5] = [
        &["stats", "--config", c],
        &["verify", "--config", c],
        &["repair", "--config", c],
        &["export", "--config", c, "--out", f],
        &["consumer", "reset", "rl", "--to", "1", "--config", c],
    ];
    for args in runs {
        let out = cli(args)?;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = cli(&["stats", "--config", c])?;
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(stats["records"], 3);
    // --data-dir wins over the file.
    let elsewhere = tmp.path().join("elsewhere");
    let out = cli(&[
        "stats",
        "--config",
        c,
        "--data-dir",
        elsewhere.to_str().ok_or("path")?,
    ])?;
    assert!(
        stderr(&out).contains("elsewhere is not a data directory"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[cfg(unix)]
#[test]
fn export_out_never_replaces_what_is_not_a_regular_file() -> TestResult {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 4)?;
    let d = dir.to_str().ok_or("path")?;
    let outs = tmp.path().join("outs");
    std::fs::create_dir(&outs)?;
    let target = outs.join("real.msgpack");
    std::fs::write(&target, b"keep")?;
    let link = outs.join("link.msgpack");
    std::os::unix::fs::symlink(&target, &link)?;
    let folder = outs.join("folder");
    std::fs::create_dir(&folder)?;
    let cases = [
        (link.clone(), "symbolic link to a regular file"),
        (folder.clone(), "is a directory"),
    ];
    for (path, expected) in &cases {
        let out = cli(&[
            "export",
            "--data-dir",
            d,
            "--out",
            path.to_str().ok_or("path")?,
        ])?;
        assert_eq!(out.status.code(), Some(1), "{path:?}");
        assert!(
            stderr(&out).contains(expected),
            "{path:?}: {}",
            stderr(&out)
        );
    }
    assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());
    assert_eq!(std::fs::read(&target)?, b"keep");
    assert!(folder.is_dir());

    // A character device is streamed to, and stays a device, whether the write works
    // (/dev/null) or fails (/dev/full).
    let out = cli(&["export", "--data-dir", d, "--out", "/dev/null"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    if Path::new("/dev/full").exists() {
        let out = cli(&["export", "--data-dir", d, "--out", "/dev/full"])?;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(std::fs::metadata("/dev/full")?.file_type().is_char_device());
    }
    // A regular file is replaced atomically, leaving no temporary file.
    let out = cli(&[
        "export",
        "--data-dir",
        d,
        "--out",
        target.to_str().ok_or("path")?,
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_export(std::fs::File::open(&target)?)?.records.len(), 4);
    let names: Vec<String> = std::fs::read_dir(&outs)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    Ok(())
}

#[cfg(unix)]
#[test]
fn export_out_streams_to_a_fifo() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 3)?;
    let fifo = tmp.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo))
    };
    let out = cli(&[
        "export",
        "--data-dir",
        dir.to_str().ok_or("path")?,
        "--out",
        fifo.to_str().ok_or("path")?,
    ])?;
    if !reader.is_finished() {
        // The export never opened the FIFO: open it once, so the reader ends.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo)?);
    }
    let bytes = reader.join().map_err(|_| "reader panicked")??;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_export(bytes.as_slice())?.records.len(), 3);
    let meta = std::fs::symlink_metadata(&fifo)?;
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
    Ok(())
}

/// `export` without --out refuses a terminal: run under `script`, which gives it one.
#[test]
fn export_refuses_to_write_binary_to_a_terminal() -> TestResult {
    let tmp = tempdir()?;
    let dir = tmp.path().join("data");
    data_dir(&dir, 2)?;
    let script = Path::new("/usr/bin/script");
    if !script.exists() {
        eprintln!("skipped: no /usr/bin/script to give the command a terminal");
        return Ok(());
    }
    let command = format!(
        "{} export --data-dir {}",
        env!("CARGO_BIN_EXE_arbiter-events"),
        dir.to_str().ok_or("path")?
    );
    let out = Command::new(script)
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()?;
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen.contains("refusing to write binary MessagePack to a terminal"),
        "{seen}"
    );
    assert!(!out.status.success());
    Ok(())
}
