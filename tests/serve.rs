//! `arbiter-events serve` as its clients see it: the real binary on a free loopback
//! port with its own data directory, spoken to over real HTTP, killed by a guard even
//! when a test fails.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{Cursor, DataDir, Event, ExportRequest, MacKey, read_export_verified};
use common::{PATIENCE, Result, TestResult};
use serde_json::{Value as Json, json};

const RECORD_TOKEN: &str = "test-record-token-0123456789";
const EXPORT_TOKEN: &str = "test-export-token-0123456789";
const NDJSON: &str = "application/x-ndjson";
const MSGPACK: &str = "application/msgpack";

/// A running `serve`, killed (and reaped) when dropped.
struct Serve {
    child: Child,
    base: String,
    data_dir: PathBuf,
    stderr: PathBuf,
    agent: ureq::Agent,
    _stdout: BufReader<ChildStdout>,
    _tmp: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Result<Json> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
            .into()
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` kind of a JSON error body.
    fn error(&self) -> Result<String> {
        Ok(self.json()?["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Starts `serve` on 127.0.0.1:0 over a new data directory, with `server` as the
/// config file's `[server]` table and `collector` as its other sections.
fn start_with(
    collector: &str,
    server: &str,
    env_tokens: bool,
    env: &[(&str, &str)],
) -> Result<Serve> {
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, format!("{collector}\n[server]\n{server}\n"))?;
    let stderr = tmp.path().join("stderr.txt");
    let mut command = Command::new(env!("CARGO_BIN_EXE_arbiter-events"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr)?);
    command
        .env_remove("ARBITER_EVENTS_RECORD_TOKEN")
        .env_remove("ARBITER_EVENTS_EXPORT_TOKEN");
    command.envs(env.iter().copied());
    if env_tokens {
        command
            .env("ARBITER_EVENTS_RECORD_TOKEN", RECORD_TOKEN)
            .env("ARBITER_EVENTS_EXPORT_TOKEN", EXPORT_TOKEN);
    }
    let mut child = command.spawn()?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err("no stdout".into());
    };
    let mut serve = Serve {
        child,
        base: String::new(),
        data_dir,
        stderr,
        agent: agent(),
        _stdout: BufReader::new(stdout),
        _tmp: tmp,
    };
    let mut line = String::new();
    serve._stdout.read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("listening on ") else {
        return Err(format!(
            "serve did not say where it listens: {line:?}; stderr: {}",
            serve.stderr_text()
        )
        .into());
    };
    serve.base = base.to_owned();
    Ok(serve)
}

fn start(server: &str) -> Result<Serve> {
    start_with("", server, true, &[])
}

impl Serve {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn answer(response: ureq::http::Response<ureq::Body>) -> Result<Answer> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = response
            .into_body()
            .with_config()
            .limit(512 * 1024 * 1024)
            .read_to_vec()?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn get(&self, path: &str, token: Option<&str>) -> Result<Answer> {
        let mut request = self.agent.get(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Serve::answer(request.call()?)
    }

    fn post(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Answer> {
        let mut request = self
            .agent
            .post(self.url(path))
            .header("Content-Type", content_type);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Serve::answer(request.send(body)?)
    }

    fn post_json(&self, path: &str, body: &Json) -> Result<Answer> {
        self.post(
            path,
            Some(RECORD_TOKEN),
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    fn events(&self, content_type: &str, body: &[u8]) -> Result<Answer> {
        self.post("/v1/events", Some(RECORD_TOKEN), content_type, body)
    }

    fn stats(&self) -> Result<Json> {
        let answer = self.get("/v1/stats", Some(EXPORT_TOKEN))?;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    /// Every record in the data directory, read from disk.
    fn records(&self) -> Result<Vec<arbiter_events::Record>> {
        let dir = DataDir::open(&self.data_dir)?;
        let export = dir.export(&ExportRequest::after(Cursor::START))?;
        Ok(export.records().collect::<std::result::Result<_, _>>()?)
    }
}

fn budget(task: &str, used: u64) -> Json {
    json!({"type": "thinking_budget_used", "task_id": task, "tokens_used": used, "tokens_allocated": used + 1})
}

fn ndjson(events: &[Json]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        out.extend_from_slice(event.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn u(value: &Json) -> u64 {
    value.as_u64().unwrap_or(u64::MAX)
}

/// `submitted = stored + dropped + rejected + in_flight`, with nothing in flight.
#[track_caller]
fn assert_identity(stats: &Json) {
    let dropped: u64 = ["queue_full", "paused", "disabled", "shutdown"]
        .iter()
        .map(|k| u(&stats["dropped"][k]))
        .sum();
    assert_eq!(u(&stats["in_flight"]), 0, "{stats:#}");
    assert_eq!(
        u(&stats["submitted"]),
        u(&stats["stored"]) + dropped + u(&stats["rejected"]),
        "{stats:#}"
    );
}

#[test]
fn smoke() -> TestResult {
    let serve = start("")?;
    let health = serve.get("/healthz", None)?;
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]));
    let body = common::read_bytes("fixtures/events/session_pr_review.jsonl")?;
    let lines = common::read_events("fixtures/events/session_pr_review.jsonl")?.len() as u64;
    let answer = serve.events(NDJSON, &body)?;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json()?,
        json!({"accepted": lines, "rejected": [], "dropped": 0})
    );
    // Every batch answered 2xx is synced: the directory holds it now.
    assert_eq!(serve.records()?.len() as u64, lines);
    let stats = serve.stats()?;
    assert_eq!(u(&stats["stored"]), lines);
    assert_identity(&stats);
    Ok(())
}

#[test]
fn bad_events_are_rejected_with_their_index_and_the_others_go_in() -> TestResult {
    let serve = start("")?;
    let cases = common::bad_cases()?;
    // good, malformed JSON, a wrong type, then every invalid fixture, then good.
    let mut body = ndjson(&[budget("task-1", 1)]);
    body.extend_from_slice(b"{\"type\": \"thinking_budget_used\", \"task_id\": \n");
    body.extend_from_slice(&ndjson(&[json!({"type": "thinking_budget_used", "task_id": "t", "tokens_used": "many", "tokens_allocated": 2})]));
    body.extend_from_slice(&ndjson(
        &cases.iter().map(|c| c.json.clone()).collect::<Vec<_>>(),
    ));
    body.extend_from_slice(&ndjson(&[budget("task-2", 2)]));
    let answer = serve.events(NDJSON, &body)?;
    assert_eq!(answer.status, 200, "{answer:?}");
    let out = answer.json()?;
    assert_eq!(u(&out["accepted"]), 2, "{out:#}");
    let rejected = out["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(rejected.len(), 2 + cases.len(), "{out:#}");
    assert_eq!(
        (u(&rejected[0]["index"]), rejected[0]["error"].as_str()),
        (1, Some("malformed"))
    );
    assert_eq!(
        (u(&rejected[1]["index"]), rejected[1]["error"].as_str()),
        (2, Some("malformed"))
    );
    for (i, case) in cases.iter().enumerate() {
        let r = &rejected[2 + i];
        assert_eq!(u(&r["index"]), 3 + i as u64, "{}", case.name);
        assert_eq!(r["error"], "invalid", "{}", case.name);
        assert_eq!(r["field"], case.field.as_str(), "{}", case.name);
        assert_eq!(r["rule"], case.rule.as_str(), "{}", case.name);
        assert!(
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains(&case.field)),
            "{r}"
        );
    }
    // The same through MessagePack: one undecodable item, one invalid, one good.
    let items = vec![
        budget("task-3", 3),
        json!({"type": "thinking_budget_used", "task_id": 7}),
        cases[0].json.clone(),
    ];
    let answer = serve.events(MSGPACK, &rmp_serde::to_vec_named(&items)?)?;
    let out = answer.json()?;
    assert_eq!(answer.status, 200, "{out:#}");
    assert_eq!(u(&out["accepted"]), 1);
    assert_eq!(out["rejected"][0]["index"], 1);
    assert_eq!(out["rejected"][0]["error"], "malformed");
    assert_eq!(out["rejected"][1]["index"], 2);
    assert_eq!(out["rejected"][1]["error"], "invalid");
    // Only the good ones are stored; invalid ones are counted as rejected, malformed
    // ones never reached the collector.
    let stored: Vec<u64> = serve
        .records()?
        .iter()
        .map(|r| match &r.event {
            Event::ThinkingBudgetUsed(u) => u.tokens_used,
            _ => 0,
        })
        .collect();
    assert_eq!(stored, [1, 2, 3]);
    let stats = serve.stats()?;
    assert_eq!(u(&stats["rejected"]), cases.len() as u64 + 1);
    assert_identity(&stats);
    Ok(())
}

#[test]
fn over_limit_and_undecodable_batches_store_nothing() -> TestResult {
    let serve = start("body_limit_bytes = 4096\nmax_events_per_request = 10")?;
    let eleven: Vec<Json> = (0..11).map(|i| budget("t", i)).collect();
    let answer = serve.events(NDJSON, &ndjson(&eleven))?;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.error()?, "too_many_events");
    assert_eq!(answer.json()?["limit"], 10);
    let answer = serve.events(MSGPACK, &rmp_serde::to_vec_named(&eleven)?)?;
    assert_eq!(
        (answer.status, answer.error()?.as_str()),
        (413, "too_many_events")
    );
    let big = vec![b' '; 8192];
    let answer = serve.events(NDJSON, &big)?;
    assert_eq!(
        (answer.status, answer.error()?.as_str()),
        (413, "body_too_large")
    );
    let answer = serve.events("text/plain", &ndjson(&eleven[..1]))?;
    assert_eq!(
        (answer.status, answer.error()?.as_str()),
        (415, "unsupported_media_type")
    );
    let answer = serve.events(MSGPACK, b"\x01\x02")?;
    assert_eq!(
        (answer.status, answer.error()?.as_str()),
        (400, "malformed")
    );
    let stats = serve.stats()?;
    assert_eq!(u(&stats["submitted"]), 0, "{stats:#}");
    assert!(serve.records()?.is_empty());
    Ok(())
}

#[test]
fn tokens_are_checked_and_refusals_counted() -> TestResult {
    let serve = start("")?;
    let body = ndjson(&[budget("t", 1)]);
    let none = serve.post("/v1/events", None, NDJSON, &body)?;
    assert_eq!((none.status, none.error()?.as_str()), (401, "unauthorized"));
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let bad = serve.post(
        "/v1/events",
        Some("not-the-token-0123456789"),
        NDJSON,
        &body,
    )?;
    assert_eq!((bad.status, bad.error()?.as_str()), (401, "unauthorized"));
    // A large body with a bad token: the client reads the 401, not a reset connection.
    let big = ndjson(&(0..20_000).map(|i| budget("t", i)).collect::<Vec<_>>());
    assert!(big.len() > 1 << 20);
    let bad = serve.post("/v1/events", Some("not-the-token-0123456789"), NDJSON, &big)?;
    assert_eq!(bad.status, 401);
    for path in [
        "/v1/stats",
        "/v1/export",
        "/v1/consumers",
        "/metrics",
        "/v1/report",
    ] {
        let answer = serve.get(path, Some(RECORD_TOKEN))?;
        assert_eq!(
            (answer.status, answer.error()?.as_str()),
            (403, "forbidden"),
            "{path}"
        );
        let answer = serve.get(path, None)?;
        assert_eq!(answer.status, 401, "{path}");
    }
    let commit = serve.post(
        "/v1/consumers/rl/commit",
        Some(RECORD_TOKEN),
        "application/json",
        b"{\"cursor\":0}",
    )?;
    assert_eq!(commit.status, 403);
    // The export token may record too.
    let answer = serve.post("/v1/events", Some(EXPORT_TOKEN), NDJSON, &body)?;
    assert_eq!(answer.status, 200, "{answer:?}");
    let stats = serve.stats()?;
    assert_eq!(
        u(&stats["submitted"]),
        1,
        "only the authorized batch counts"
    );
    let metrics = serve.get("/metrics", Some(EXPORT_TOKEN))?;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("arbiter_events_http_unauthorized_total 8"),
        "{text}"
    );
    assert!(
        text.contains("arbiter_events_http_forbidden_total 6"),
        "{text}"
    );
    Ok(())
}

#[test]
fn token_files_are_generated_once_owner_only_and_printed() -> TestResult {
    let mut serve = start_with("", "", false, &[])?;
    let mut printed = String::new();
    for _ in 0..2 {
        // Printed right after the first line, before serving.
        if serve._stdout.read_line(&mut printed)? == 0 {
            break;
        }
    }
    for role in ["record", "export"] {
        let path = serve.data_dir.join("server").join(format!("{role}.token"));
        let token = std::fs::read_to_string(&path)?.trim().to_owned();
        assert!(
            printed.contains(&token),
            "{role} token not printed: {printed}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
    }
    let export = std::fs::read_to_string(serve.data_dir.join("server/export.token"))?;
    let answer = serve.get("/v1/stats", Some(export.trim()))?;
    assert_eq!(answer.status, 200);
    Ok(())
}

#[test]
fn server_keys_come_from_the_environment_over_the_file() -> TestResult {
    let serve = start_with(
        "",
        "max_events_per_request = 100",
        true,
        &[("ARBITER_EVENTS_SERVER_MAX_EVENTS_PER_REQUEST", "5")],
    )?;
    let six: Vec<Json> = (0..6).map(|i| budget("t", i)).collect();
    let answer = serve.events(NDJSON, &ndjson(&six))?;
    assert_eq!(
        (answer.status, answer.json()?["limit"].as_u64()),
        (413, Some(5))
    );
    let unknown = start_with("", "", true, &[("ARBITER_EVENTS_SERVER_LISTEN_ADDR", "x")]);
    let Err(e) = unknown else {
        return Err("an unknown server key was accepted".into());
    };
    assert!(
        e.to_string().contains("did not say where it listens"),
        "{e}"
    );
    Ok(())
}

#[test]
fn a_remote_listen_address_needs_allow_remote() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-remote"), "{err}");
    assert!(out.stdout.is_empty(), "nothing listened");
    Ok(())
}

#[test]
fn executions_over_the_network() -> TestResult {
    let serve = start("task_deadline_secs = 1")?;
    let start = serve.post_json(
        "/v1/tasks/start",
        &json!({"task_id": "task-9", "agent_id": "agent-a", "context": {"pr": 1}}),
    )?;
    assert_eq!(start.status, 201, "{start:?}");
    let id = start.json()?["execution_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let other = serve.post_json(
        "/v1/tasks/start",
        &json!({"task_id": "task-9", "agent_id": "agent-a"}),
    )?;
    let other_id = other.json()?["execution_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(id, other_id, "execution ids are unique");
    let outcome = json!({"status": "succeeded", "quality_score": 0.9, "efficiency_score": 0.8, "tokens_consumed": 10});
    let bad = json!({"status": "succeeded", "quality_score": 1.5, "efficiency_score": 0.8, "tokens_consumed": 10});
    let invalid = serve.post_json(&format!("/v1/tasks/{id}/complete"), &bad)?;
    assert_eq!(
        (invalid.status, invalid.error()?.as_str()),
        (400, "invalid")
    );
    assert_eq!(invalid.json()?["field"], "outcome.quality_score");
    let done = serve.post_json(&format!("/v1/tasks/{id}/complete"), &outcome)?;
    assert_eq!(done.status, 200, "{done:?}");
    assert!(
        done.json()?["duration_ms"]
            .as_f64()
            .is_some_and(|d| d >= 0.0)
    );
    let twice = serve.post_json(&format!("/v1/tasks/{id}/complete"), &outcome)?;
    assert_eq!(
        (twice.status, twice.error()?.as_str()),
        (409, "already_finished")
    );
    let unknown = serve.post_json("/v1/tasks/nope-1/complete", &outcome)?;
    assert_eq!(
        (unknown.status, unknown.error()?.as_str()),
        (404, "unknown_execution")
    );
    let malformed = serve.post(
        "/v1/tasks/start",
        Some(RECORD_TOKEN),
        "application/json",
        b"{\"task_id\":",
    )?;
    assert_eq!(
        (malformed.status, malformed.error()?.as_str()),
        (400, "malformed")
    );
    // The other one passes its deadline and is recorded as abandoned.
    let deadline = Instant::now() + PATIENCE;
    let abandoned = loop {
        let abandoned = serve
            .records()?
            .into_iter()
            .any(|r| matches!(r.event, Event::TaskAbandoned(_)));
        if abandoned || Instant::now() > deadline {
            break abandoned;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(abandoned, "no TaskAbandoned after the deadline");
    let late = serve.post_json(&format!("/v1/tasks/{other_id}/complete"), &outcome)?;
    assert_eq!(late.status, 409);
    let kinds: Vec<&str> = serve
        .records()?
        .iter()
        .map(|r| r.event.kind().as_str())
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        kinds,
        [
            "task_started",
            "task_started",
            "task_completed",
            "task_abandoned"
        ]
    );
    let stats = serve.stats()?;
    // The invalid outcome recorded nothing and is counted as rejected, as in-process.
    assert_eq!(u(&stats["rejected"]), 1, "{stats:#}");
    assert_identity(&stats);
    Ok(())
}

fn mac_key(data_dir: &Path) -> Result<MacKey> {
    let out = Command::new(env!("CARGO_BIN_EXE_arbiter-events"))
        .args(["key", "mac", "--data-dir"])
        .arg(data_dir)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(MacKey::from_hex(
        String::from_utf8_lossy(&out.stdout).trim(),
    )?)
}

#[test]
fn exports_and_consumer_cursors() -> TestResult {
    let serve = start("")?;
    let events: Vec<Json> = (0..30).map(|i| budget("t", i)).collect();
    assert_eq!(serve.events(NDJSON, &ndjson(&events))?.status, 200);
    let first = serve.get("/v1/export?after=0&limit=10", Some(EXPORT_TOKEN))?;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("content-type"), Some(MSGPACK));
    assert_eq!(first.header("x-arbiter-next-cursor"), Some("10"));
    assert_eq!(first.header("x-arbiter-records"), Some("10"));
    let file = read_export_verified(first.body.as_slice(), &mac_key(&serve.data_dir)?)?;
    assert_eq!(file.records.len(), 10);
    let commit = serve.post(
        "/v1/consumers/rl/commit",
        Some(EXPORT_TOKEN),
        "application/json",
        b"{\"cursor\": 10}",
    )?;
    assert_eq!(commit.status, 200, "{commit:?}");
    assert_eq!(commit.json()?, json!({"consumer": "rl", "cursor": 10}));
    let next = serve.get(
        "/v1/export?consumer=rl&format=jsonl&kinds=thinking_budget_used",
        Some(EXPORT_TOKEN),
    )?;
    assert_eq!(next.status, 200);
    assert_eq!(next.header("content-type"), Some(NDJSON));
    assert_eq!(next.header("x-arbiter-records"), Some("20"));
    let text = String::from_utf8_lossy(&next.body);
    let header: Json = serde_json::from_str(text.lines().next().unwrap_or(""))?;
    assert_eq!((u(&header["after"]), u(&header["next_cursor"])), (10, 30));
    let backwards = serve.post(
        "/v1/consumers/rl/commit",
        Some(EXPORT_TOKEN),
        "application/json",
        b"{\"cursor\": 5}",
    )?;
    assert_eq!(
        (backwards.status, backwards.error()?.as_str()),
        (409, "cursor_backwards")
    );
    let ahead = serve.post(
        "/v1/consumers/rl/commit",
        Some(EXPORT_TOKEN),
        "application/json",
        b"{\"cursor\": 31}",
    )?;
    assert_eq!(
        (ahead.status, ahead.error()?.as_str()),
        (409, "cursor_ahead")
    );
    let bad_body = serve.post(
        "/v1/consumers/rl/commit",
        Some(EXPORT_TOKEN),
        "application/json",
        b"{\"cursor\": -1}",
    )?;
    assert_eq!(
        (bad_body.status, bad_body.error()?.as_str()),
        (400, "malformed")
    );
    let bad_name = serve.post(
        "/v1/consumers/bad%20name/commit",
        Some(EXPORT_TOKEN),
        "application/json",
        b"{\"cursor\": 1}",
    )?;
    assert_eq!(bad_name.status, 400, "{bad_name:?}");
    let list = serve.get("/v1/consumers", Some(EXPORT_TOKEN))?;
    assert_eq!(
        list.json()?,
        json!({"consumers": [{"name": "rl", "cursor": 10}]})
    );
    for (query, parameter) in [
        ("after=ten", "after"),
        ("since=yesterday", "since"),
        ("kinds=nope", "kinds"),
        ("format=xml", "format"),
        ("limit=0", "limit"),
        ("colour=red", "colour"),
        ("after=1&after=2", "after"),
    ] {
        let answer = serve.get(&format!("/v1/export?{query}"), Some(EXPORT_TOKEN))?;
        assert_eq!(answer.status, 400, "{query}");
        let body = answer.json()?;
        assert_eq!(
            (body["error"].as_str(), body["parameter"].as_str()),
            (Some("bad_request"), Some(parameter)),
            "{query}: {body}"
        );
    }
    Ok(())
}

#[test]
fn a_large_export_is_streamed_whole_and_a_reader_may_leave_early() -> TestResult {
    let serve = start("")?;
    let events: Vec<Json> = (0..5_000)
        .map(|i| budget(&format!("task-{i}"), i))
        .collect();
    assert_eq!(serve.events(NDJSON, &ndjson(&events))?.status, 200);
    let key = mac_key(&serve.data_dir)?;
    let all = serve.get("/v1/export", Some(EXPORT_TOKEN))?;
    assert_eq!(all.status, 200);
    assert!(
        all.body.len() > 4 * 64 * 1024,
        "spans many chunks: {}",
        all.body.len()
    );
    assert_eq!(
        read_export_verified(all.body.as_slice(), &key)?
            .records
            .len(),
        5_000
    );
    let jsonl = serve.get("/v1/export?format=jsonl", Some(EXPORT_TOKEN))?;
    assert_eq!(String::from_utf8_lossy(&jsonl.body).lines().count(), 5_002);
    // A reader that leaves after a few bytes: the server goes on serving.
    let addr = serve.base.trim_start_matches("http://").to_owned();
    for _ in 0..3 {
        let mut early = TcpStream::connect(&addr)?;
        write!(
            early,
            "GET /v1/export HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {EXPORT_TOKEN}\r\n\r\n"
        )?;
        let mut some = [0u8; 512];
        early.set_read_timeout(Some(PATIENCE))?;
        let n = early.read(&mut some)?;
        assert!(String::from_utf8_lossy(&some[..n]).starts_with("HTTP/1.1 200"));
    }
    assert_eq!(serve.get("/healthz", None)?.status, 200);
    let again = serve.get("/v1/export?after=4990", Some(EXPORT_TOKEN))?;
    assert_eq!(
        read_export_verified(again.body.as_slice(), &key)?
            .records
            .len(),
        10
    );
    Ok(())
}

#[test]
fn stats_report_metrics_and_unknown_routes() -> TestResult {
    let serve = start("")?;
    let body = common::read_bytes("fixtures/events/session_rl_batch.jsonl")?;
    let n = common::read_events("fixtures/events/session_rl_batch.jsonl")?.len() as u64;
    assert_eq!(serve.events(NDJSON, &body)?.status, 200);
    let report = serve.get("/v1/report?last=1h&by=kind", Some(EXPORT_TOKEN))?;
    assert_eq!(report.status, 200, "{report:?}");
    assert_eq!(u(&report.json()?["records"]), n);
    let bad = serve.get("/v1/report?last=soon", Some(EXPORT_TOKEN))?;
    assert_eq!(
        (bad.status, bad.json()?["parameter"].as_str()),
        (400, Some("last"))
    );
    let bad = serve.get("/v1/report?by=colour", Some(EXPORT_TOKEN))?;
    assert_eq!(
        (bad.status, bad.json()?["parameter"].as_str()),
        (400, Some("by"))
    );
    let metrics = serve.get("/metrics", Some(EXPORT_TOKEN))?;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        format!("arbiter_events_submitted_total {n}"),
        format!("arbiter_events_stored_total {n}"),
        "arbiter_events_dropped_total{reason=\"queue_full\"} 0".to_owned(),
        "arbiter_events_queue_depth 0".to_owned(),
        format!("arbiter_events_storage_records {n}"),
        "arbiter_events_http_requests_total{route=\"/v1/events\",status=\"200\"} 1".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    let unknown = serve.get("/v2/events", Some(EXPORT_TOKEN))?;
    assert_eq!(
        (unknown.status, unknown.error()?.as_str()),
        (404, "not_found")
    );
    let wrong = serve.get("/v1/events", Some(EXPORT_TOKEN))?;
    assert_eq!(
        (wrong.status, wrong.error()?.as_str()),
        (405, "method_not_allowed")
    );
    Ok(())
}

#[test]
fn a_slow_client_is_cut_off_and_holds_no_one_up() -> TestResult {
    let serve = start("read_timeout_ms = 300")?;
    let addr = serve.base.trim_start_matches("http://").to_owned();
    // Headers that never finish: the connection is closed.
    let mut stalled = TcpStream::connect(&addr)?;
    stalled.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")?;
    // Meanwhile others are served.
    assert_eq!(serve.get("/healthz", None)?.status, 200);
    stalled.set_read_timeout(Some(PATIENCE))?;
    let mut rest = Vec::new();
    let closed = stalled.read_to_end(&mut rest);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the stalled connection was not closed: {closed:?}"
    );
    // A body that never finishes: 408, and nothing stored.
    let mut slow = TcpStream::connect(&addr)?;
    write!(
        slow,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {RECORD_TOKEN}\r\nContent-Type: {NDJSON}\r\nContent-Length: 200\r\n\r\n{{\"type\":"
    )?;
    slow.set_read_timeout(Some(PATIENCE))?;
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"timeout\""), "{answer}");
    assert_eq!(u(&serve.stats()?["submitted"]), 0);
    Ok(())
}

#[test]
fn the_accounting_identity_holds_after_a_mixed_run() -> TestResult {
    let serve = start("max_events_per_request = 100\nbody_limit_bytes = 65536")?;
    let cases = common::bad_cases()?;
    let mut accepted = 0;
    let mut invalid = 0;
    for round in 0..5u64 {
        let mut batch: Vec<Json> = (0..20).map(|i| budget("t", round * 100 + i)).collect();
        batch.push(cases[round as usize % cases.len()].json.clone());
        let mut body = ndjson(&batch);
        body.extend_from_slice(b"garbage\n");
        let out = serve.events(NDJSON, &body)?.json()?;
        accepted += u(&out["accepted"]);
        invalid += out["rejected"].as_array().map_or(0, |r| {
            r.iter().filter(|r| r["error"] == "invalid").count() as u64
        });
        let items: Vec<Json> = (0..10).map(|i| budget("m", round * 100 + i)).collect();
        accepted += u(&serve
            .events(MSGPACK, &rmp_serde::to_vec_named(&items)?)?
            .json()?["accepted"]);
        // Refused whole: too many, too large, no token.
        let many: Vec<Json> = (0..101).map(|i| budget("x", i)).collect();
        assert_eq!(serve.events(NDJSON, &ndjson(&many))?.status, 413);
        assert_eq!(serve.events(NDJSON, &vec![b'{'; 70_000])?.status, 413);
        assert_eq!(
            serve
                .post("/v1/events", None, NDJSON, &ndjson(&items))?
                .status,
            401
        );
        let started =
            serve.post_json("/v1/tasks/start", &json!({"task_id": "t", "agent_id": "a"}))?;
        assert_eq!(started.status, 201);
        accepted += 1;
        let empty_id =
            serve.post_json("/v1/tasks/start", &json!({"task_id": "", "agent_id": "a"}))?;
        assert_eq!(
            (empty_id.status, empty_id.error()?.as_str()),
            (400, "invalid")
        );
        invalid += 1;
    }
    assert_eq!(accepted, 5 * 31);
    let stats = serve.stats()?;
    assert_identity(&stats);
    assert_eq!(u(&stats["stored"]), accepted, "{stats:#}");
    assert_eq!(u(&stats["rejected"]), invalid, "{stats:#}");
    assert_eq!(u(&stats["submitted"]), accepted + invalid, "{stats:#}");
    assert_eq!(serve.records()?.len() as u64, accepted);
    Ok(())
}

#[test]
fn kill_9_during_ingest_loses_nothing_acknowledged() -> TestResult {
    let mut serve = start_with("[anonymization]\nmode = \"off\"", "", true, &[])?;
    let url = serve.url("/v1/events");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let clients: Vec<_> = (0..3)
        .map(|client| {
            let (url, stop, acked) = (url.clone(), stop.clone(), acked.clone());
            thread::spawn(move || {
                let agent = agent();
                for batch in 0..10_000u64 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let ids: Vec<String> = (0..200)
                        .map(|i| format!("c{client}-b{batch}-e{i}"))
                        .collect();
                    let events: Vec<Json> = ids.iter().map(|id| budget(id, 1)).collect();
                    let Ok(response) = agent
                        .post(&url)
                        .header("Authorization", format!("Bearer {RECORD_TOKEN}"))
                        .header("Content-Type", NDJSON)
                        .send(&ndjson(&events)[..])
                    else {
                        return; // the server is gone
                    };
                    let status = response.status().as_u16();
                    let Ok(body) = response.into_body().read_to_vec() else {
                        return;
                    };
                    let Ok(out) = serde_json::from_slice::<Json>(&body) else {
                        return;
                    };
                    // A 2xx means synced; a 429 says how far it got (all valid here).
                    let taken = match status {
                        200 => ids.len(),
                        429 => out["retry_from"].as_u64().unwrap_or(0) as usize,
                        _ => 0,
                    };
                    let mut acked = acked.lock().unwrap_or_else(|e| e.into_inner());
                    acked.extend(ids.into_iter().take(taken));
                }
            })
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while acked.lock().map_or(0, |a| a.len()) < 6_000 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL while the clients are still sending.
    serve.child.kill()?;
    serve.child.wait()?;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let _ = client.join();
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        acked.len() >= 6_000,
        "too few acknowledged before the kill: {}",
        acked.len()
    );
    let stored: BTreeSet<String> = serve
        .records()?
        .iter()
        .filter_map(|r| r.event.task_id().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).take(5).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {lost:?} (of {})",
        acked.len()
    );
    Ok(())
}

#[test]
fn a_full_queue_answers_429_and_the_rest_is_resent_from_retry_from() -> TestResult {
    let serve = start_with(
        "[queue]\ncapacity = 1\n[storage]\ndurability = \"buffered\"",
        "",
        true,
        &[],
    )?;
    let events: Vec<Json> = (0..200).map(|i| budget("t", i)).collect();
    let (mut from, mut refusals, mut accepted) = (0usize, 0u64, 0u64);
    for _ in 0..5_000 {
        let answer = serve.events(NDJSON, &ndjson(&events[from..]))?;
        let out = answer.json()?;
        accepted += u(&out["accepted"]);
        match answer.status {
            200 => break,
            429 => {
                refusals += 1;
                assert_eq!(answer.header("retry-after"), Some("1"));
                assert_eq!(out["error"], "queue_full");
                assert_eq!(u(&out["dropped"]), 1, "{out}");
                let retry_from = u(&out["retry_from"]) as usize;
                assert_eq!(retry_from as u64, u(&out["accepted"]), "all valid: {out}");
                from += retry_from;
                thread::sleep(Duration::from_millis(2));
            }
            other => return Err(format!("status {other}: {out}").into()),
        }
    }
    assert_eq!(accepted, 200);
    assert!(refusals > 0, "a queue of one never filled");
    // Under `buffered` a 200 means queued: wait (bounded) for the worker and the disk.
    let deadline = Instant::now() + PATIENCE;
    let stats = loop {
        let stats = serve.stats()?;
        let settled = u(&stats["in_flight"]) == 0 && serve.records()?.len() == 200;
        if settled || Instant::now() > deadline {
            break stats;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_identity(&stats);
    assert_eq!(u(&stats["dropped"]["queue_full"]), refusals, "{stats:#}");
    let used: Vec<u64> = serve
        .records()?
        .iter()
        .map(|r| match &r.event {
            Event::ThinkingBudgetUsed(u) => u.tokens_used,
            _ => u64::MAX,
        })
        .collect();
    assert_eq!(
        used,
        (0..200).collect::<Vec<_>>(),
        "each event once, in order"
    );
    Ok(())
}

#[test]
fn concurrent_clients_on_loopback_all_get_in() -> TestResult {
    const CLIENTS: u64 = 4;
    const BATCHES: u64 = 10;
    const EVENTS: u64 = 500;
    let serve = start("")?;
    let url = serve.url("/v1/events");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let url = url.clone();
            thread::spawn(move || -> Result<u64> {
                let agent = agent();
                let mut accepted = 0;
                for batch in 0..BATCHES {
                    let events: Vec<Json> = (0..EVENTS)
                        .map(|i| budget(&format!("c{client}-{batch}"), i))
                        .collect();
                    let body = ndjson(&events);
                    let mut from = 0usize;
                    // Retries after a full queue resume at `retry_from`; bounded.
                    for _ in 0..100 {
                        let lines: Vec<&[u8]> = body
                            .split(|&b| b == b'\n')
                            .filter(|l| !l.is_empty())
                            .skip(from)
                            .collect();
                        let rest = lines.join(&b'\n');
                        let response = agent
                            .post(&url)
                            .header("Authorization", format!("Bearer {RECORD_TOKEN}"))
                            .header("Content-Type", NDJSON)
                            .send(&rest[..])?;
                        let status = response.status().as_u16();
                        let out: Json =
                            serde_json::from_slice(&response.into_body().read_to_vec()?)?;
                        accepted += out["accepted"].as_u64().unwrap_or(0);
                        match status {
                            200 => break,
                            429 => {
                                from += out["retry_from"].as_u64().unwrap_or(0) as usize;
                                thread::sleep(Duration::from_millis(20));
                            }
                            other => return Err(format!("status {other}: {out}").into()),
                        }
                    }
                }
                Ok(accepted)
            })
        })
        .collect();
    let mut accepted = 0;
    for client in clients {
        accepted += client.join().map_err(|_| "a client panicked")??;
    }
    assert_eq!(accepted, CLIENTS * BATCHES * EVENTS);
    let stats = serve.stats()?;
    assert_identity(&stats);
    assert_eq!(u(&stats["stored"]), accepted);
    assert_eq!(serve.records()?.len() as u64, accepted);
    Ok(())
}

#[test]
fn sigterm_drains_flushes_and_reports() -> TestResult {
    let mut serve = start("")?;
    let events: Vec<Json> = (0..50).map(|i| budget("t", i)).collect();
    assert_eq!(serve.events(NDJSON, &ndjson(&events))?.status, 200);
    let open = serve.post_json("/v1/tasks/start", &json!({"task_id": "t", "agent_id": "a"}))?;
    assert_eq!(open.status, 201);
    let status = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()?;
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(exit) = serve.child.try_wait()? {
            break Some(exit);
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let exit = exit.ok_or("serve did not stop on SIGTERM")?;
    assert!(exit.success(), "{exit:?}: {}", serve.stderr_text());
    let stderr = serve.stderr_text();
    assert!(
        stderr.contains("stopped:") && stderr.contains("1 open executions recorded as abandoned"),
        "{stderr}"
    );
    let kinds: Vec<&'static str> = serve
        .records()?
        .iter()
        .map(|r| r.event.kind().as_str())
        .collect();
    assert_eq!(kinds.len(), 52, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"task_abandoned"));
    Ok(())
}
