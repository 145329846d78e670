//! The routes of the HTTP contract (`docs/http_api.md`), each a thin call into the
//! public API; blocking calls run on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::App;
use super::auth::Role;
use super::ingest::{self, Encoding, SplitError};
use super::tasks::Finish;
use crate::{
    AnalyticsConfig, Attributes, Cursor, EventKind, ExportError, ExportRequest, Grouping,
    RecordError, ReportRequest, StorageError, TaskOutcome,
};

/// An error answer: a status and `{"error": kind, "message": ..., ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Value,
    retry_after: bool,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": kind, "message": message.into() }),
            retry_after: false,
        }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        if let Value::Object(map) = &mut self.body {
            map.insert(key.to_owned(), value.into());
        }
        self
    }

    fn bad_parameter(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message).with("parameter", parameter)
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    fn no_data_dir(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} needs a data directory: the collector has no storage.data_dir"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type Answer = Result<Response, ApiError>;
type AppState = State<Arc<App>>;

pub(super) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/events", post(events))
        .route("/v1/tasks/start", post(task_start))
        .route("/v1/tasks/{execution_id}/complete", post(task_complete))
        .route("/v1/export", get(export))
        .route("/v1/consumers", get(consumers))
        .route("/v1/consumers/{name}/commit", post(commit))
        .route("/v1/stats", get(stats))
        .route("/v1/report", get(report))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .with_state(app)
}

/// Counts every answer by route and status.
async fn count(State(app): AppState, request: Request, next: Next) -> Response {
    let route = match request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some("/healthz") => "/healthz",
        Some("/metrics") => "/metrics",
        Some("/v1/events") => "/v1/events",
        Some("/v1/tasks/start") => "/v1/tasks/start",
        Some("/v1/tasks/{execution_id}/complete") => "/v1/tasks/{execution_id}/complete",
        Some("/v1/export") => "/v1/export",
        Some("/v1/consumers") => "/v1/consumers",
        Some("/v1/consumers/{name}/commit") => "/v1/consumers/{name}/commit",
        Some("/v1/stats") => "/v1/stats",
        Some("/v1/report") => "/v1/report",
        _ => "unmatched",
    };
    let response = next.run(request).await;
    app.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    app.metrics.request(route, response.status().as_u16());
    response
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The role the request's bearer token grants, if it allows `need`.
fn authorize(app: &App, headers: &HeaderMap, need: Role) -> Result<Role, ApiError> {
    let unauthorized = |message: &str| {
        app.metrics.unauthorized.inc();
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| unauthorized("the authorization header is not `Bearer <token>`"))?;
    let role = app.tokens.role(token).ok_or_else(|| {
        unauthorized("the bearer token matches neither the record nor the export token")
    })?;
    if role < need {
        app.metrics.forbidden.inc();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the {} token does not allow this route: it needs the {} token",
                role.as_str(),
                need.as_str()
            ),
        ));
    }
    Ok(role)
}

/// The most bytes of a refused body read and discarded so that the client, still
/// sending, can read the answer (closing with unread bytes resets the connection).
const DISCARD_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Reads the whole body, at most `server.body_limit_bytes`, within `server.read_timeout_ms`.
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let limit = app.config.body_limit_bytes;
    let too_large = |app: &App| {
        app.metrics.refused("body_too_large");
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the limit of {limit} bytes (server.body_limit_bytes); send smaller batches"),
        )
        .with("limit", limit)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client that waits for `100 Continue` has sent nothing yet: answer at once.
    let waits = headers.contains_key(header::EXPECT);
    let timeout = Duration::from_millis(app.config.read_timeout_ms);
    if declared.is_some_and(|n| n > limit) {
        if !waits && declared.is_some_and(|n| n <= DISCARD_MAX_BYTES) {
            let _ = tokio::time::timeout(timeout, discard(body, DISCARD_MAX_BYTES)).await;
        }
        return Err(too_large(app));
    }
    let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
    let read = async move {
        let mut body = body;
        let mut buf = Vec::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::malformed(format!("cannot read the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > limit {
                    discard(body, DISCARD_MAX_BYTES).await;
                    return Err(too_large(app));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => {
            app.metrics.refused("timeout");
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request body did not arrive within {} ms (server.read_timeout_ms)",
                    timeout.as_millis()
                ),
            ))
        }
    }
}

/// Refuses a request without keeping its body: the body is read and dropped first (at
/// most `server.body_limit_bytes`, within the read timeout), so a client still sending
/// reads the answer instead of a reset connection.
async fn refuse(app: &App, headers: &HeaderMap, body: Body, error: ApiError) -> ApiError {
    let limit = app.config.body_limit_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !headers.contains_key(header::EXPECT) && declared.is_none_or(|n| n <= limit) {
        let timeout = Duration::from_millis(app.config.read_timeout_ms);
        let _ = tokio::time::timeout(timeout, discard(body, limit)).await;
    }
    error
}

/// [`authorize`] for a route with a body: a refusal drops the body unkept.
async fn authorize_with_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    need: Role,
) -> Result<Body, ApiError> {
    match authorize(app, headers, need) {
        Ok(_) => Ok(body),
        Err(e) => Err(refuse(app, headers, body, e).await),
    }
}

/// Reads and drops the rest of `body`, at most `max` bytes.
async fn discard(mut body: Body, max: u64) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > max {
                return;
            }
        }
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a request task failed: {e}")))
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(app): AppState, headers: HeaderMap) -> Answer {
    authorize(&app, &headers, Role::Export)?;
    let text = app
        .metrics
        .encode()
        .map_err(|e| ApiError::internal(format!("cannot encode the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response())
}

fn record_error(e: &RecordError) -> ApiError {
    match e {
        RecordError::Invalid(v) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", v.to_string())
            .with("field", v.field())
            .with("rule", ingest::rule_name(v.rule())),
        RecordError::QueueFull | RecordError::Timeout(_) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!("{e}; retry after a second"),
            );
            e.retry_after = true;
            e
        }
        other => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dropped",
            other.to_string(),
        ),
    }
}

/// Waits until what was recorded is synced, when 2xx must mean synced.
fn sync(app: &App) -> Result<(), ApiError> {
    if !app.durable_acks {
        return Ok(());
    }
    app.collector.flush(ingest::FLUSH_TIMEOUT).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_durable",
            format!("the events are accepted but not known to be on disk: {e}"),
        )
    })
}

async fn events(State(app): AppState, headers: HeaderMap, body: Body) -> Answer {
    let body = authorize_with_body(&app, &headers, body, Role::Record).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::of(content_type) else {
        app.metrics.refused("unsupported_media_type");
        let error = ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type `{content_type}` is neither application/x-ndjson nor application/msgpack"
            ),
        );
        return Err(refuse(&app, &headers, body, error).await);
    };
    let bytes = read_body(&app, &headers, body).await?;
    let worker = app.clone();
    let (out, synced) = blocking(move || {
        let max = worker.config.max_events_per_request;
        let items = ingest::split(&bytes, encoding, max)?;
        let out = ingest::record(&worker.collector, items);
        let synced = if out.accepted > 0 { sync(&worker) } else { Ok(()) };
        Ok::<_, SplitError>((out, synced))
    })
    .await?
    .map_err(|e| match e {
        SplitError::TooMany { count } => {
            let limit = app.config.max_events_per_request;
            app.metrics.refused("too_many_events");
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                format!("the batch holds {count} events, over the limit of {limit} (server.max_events_per_request); nothing was stored"),
            )
            .with("limit", limit)
            .with("count", count)
        }
        SplitError::NotAnArray(reason) => {
            app.metrics.refused("malformed");
            ApiError::malformed(format!("{reason}; nothing was stored"))
        }
    })?;
    let m = &app.metrics;
    m.accepted_events.inc_by(out.accepted);
    m.rejected_events
        .inc_by(out.rejected.len() as u64 - out.malformed);
    m.malformed_events.inc_by(out.malformed);
    m.dropped_events.inc_by(out.dropped);
    let counts = serde_json::to_value(&out)
        .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))?;
    let with_counts = |mut e: ApiError| {
        if let (Value::Object(map), Value::Object(counts)) = (&mut e.body, &counts) {
            map.extend(counts.clone());
        }
        e
    };
    synced.map_err(with_counts)?;
    if out.shut_down {
        return Err(with_counts(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the collector is shutting down: the events from `accepted + rejected + dropped` on were not taken",
        )));
    }
    if let Some(index) = out.retry_from {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "the queue is full: events before index {index} were taken; retry from index {index} after a second"
            ),
        );
        e.retry_after = true;
        return Err(with_counts(e));
    }
    Ok(json_response(StatusCode::OK, counts))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::malformed(format!("the {what} body is not valid: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    task_id: String,
    agent_id: String,
    #[serde(default)]
    context: Attributes,
}

async fn task_start(State(app): AppState, headers: HeaderMap, body: Body) -> Answer {
    let body = authorize_with_body(&app, &headers, body, Role::Record).await?;
    let bytes = read_body(&app, &headers, body).await?;
    let start: StartBody = parse_json(&bytes, "task start")?;
    if !app.executions.has_room() {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_executions",
            format!(
                "{} executions are open, the most allowed; complete some first",
                super::MAX_OPEN_EXECUTIONS
            ),
        );
        e.retry_after = true;
        return Err(e);
    }
    let worker = app.clone();
    let id = blocking(move || {
        let execution = worker
            .collector
            .start_task(start.task_id, start.agent_id, start.context)
            .map_err(|e| record_error(&e))?;
        let id = worker.executions.insert(execution);
        sync(&worker)?;
        Ok::<_, ApiError>(id)
    })
    .await??;
    Ok(json_response(
        StatusCode::CREATED,
        json!({ "execution_id": id }),
    ))
}

async fn task_complete(
    State(app): AppState,
    Path(execution_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let body = authorize_with_body(&app, &headers, body, Role::Record).await?;
    let bytes = read_body(&app, &headers, body).await?;
    let outcome: TaskOutcome = parse_json(&bytes, "task completion")?;
    let worker = app.clone();
    let id = execution_id.clone();
    let finish = blocking(move || worker.executions.complete(&id, outcome)).await?;
    match finish {
        Finish::Completed(elapsed) => {
            let worker = app.clone();
            blocking(move || sync(&worker)).await??;
            Ok(json_response(
                StatusCode::OK,
                json!({ "execution_id": execution_id, "duration_ms": elapsed.as_secs_f64() * 1000.0 }),
            ))
        }
        Finish::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_execution",
            format!("no execution {execution_id} was started on this server"),
        )),
        Finish::AlreadyFinished => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("execution {execution_id} was already completed, or abandoned at its deadline"),
        )),
        Finish::Invalid(e) => Err(record_error(&RecordError::Invalid(e))),
        Finish::Dropped(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dropped",
            format!(
                "the completion of {execution_id} was dropped and counted ({e}); the execution is closed"
            ),
        )),
    }
}

/// The query's pairs, refusing unknown and repeated parameters.
fn params<'a>(
    pairs: &'a [(String, String)],
    known: &[&str],
) -> Result<std::collections::BTreeMap<&'a str, &'a str>, ApiError> {
    let mut out = std::collections::BTreeMap::new();
    for (key, value) in pairs {
        if !known.contains(&key.as_str()) {
            return Err(ApiError::bad_parameter(
                key,
                format!("unknown parameter `{key}`; known: {}", known.join(", ")),
            ));
        }
        if out.insert(key.as_str(), value.as_str()).is_some() {
            return Err(ApiError::bad_parameter(
                key,
                format!("parameter `{key}` is given twice"),
            ));
        }
    }
    Ok(out)
}

fn parse_u64(name: &str, value: &str) -> Result<u64, ApiError> {
    value.parse::<u64>().map_err(|_| {
        ApiError::bad_parameter(
            name,
            format!("`{name}` must be a whole number ≥ 0, got {value:?}"),
        )
    })
}

fn parse_time(name: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        ApiError::bad_parameter(
            name,
            format!("`{name}` {value:?} is not an RFC 3339 time such as 2026-11-24T06:00:00Z: {e}"),
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Msgpack,
    Jsonl,
}

fn storage_error(e: &StorageError) -> ApiError {
    match e {
        StorageError::InvalidConsumer { .. } => ApiError::bad_parameter("consumer", e.to_string()),
        StorageError::CursorAhead { last_seq, .. } => {
            ApiError::new(StatusCode::CONFLICT, "cursor_ahead", e.to_string())
                .with("synced_seq", *last_seq)
        }
        _ => ApiError::internal(e.to_string()),
    }
}

async fn export(
    State(app): AppState,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Answer {
    authorize(&app, &headers, Role::Export)?;
    let p = params(
        &pairs,
        &[
            "after", "since", "until", "kinds", "limit", "format", "consumer",
        ],
    )?;
    let after = p.get("after").map(|v| parse_u64("after", v)).transpose()?;
    let mut request = ExportRequest::after(Cursor::after_seq(after.unwrap_or(0)));
    request.since = p.get("since").map(|v| parse_time("since", v)).transpose()?;
    request.until = p.get("until").map(|v| parse_time("until", v)).transpose()?;
    if let Some(limit) = p.get("limit") {
        let limit = parse_u64("limit", limit)?;
        if limit == 0 {
            return Err(ApiError::bad_parameter(
                "limit",
                "`limit` must be at least 1",
            ));
        }
        request.limit = Some(limit);
    }
    if let Some(kinds) = p.get("kinds").filter(|k| !k.is_empty()) {
        let kinds = kinds
            .split(',')
            .map(|name| {
                EventKind::from_name(name.trim()).ok_or_else(|| {
                    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    ApiError::bad_parameter(
                        "kinds",
                        format!("unknown event kind `{name}`; one of {}", names.join(", ")),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        request = request.kinds(kinds);
    }
    let format = match p.get("format").copied() {
        None | Some("msgpack") => Format::Msgpack,
        Some("jsonl") => Format::Jsonl,
        Some(other) => {
            return Err(ApiError::bad_parameter(
                "format",
                format!("`format` must be msgpack or jsonl, got {other:?}"),
            ));
        }
    };
    if let (Some(since), Some(until)) = (request.since, request.until)
        && since >= until
    {
        return Err(ApiError::bad_parameter(
            "until",
            "`since` must be before `until`",
        ));
    }
    let consumer = p.get("consumer").map(|c| (*c).to_owned());
    let worker = app.clone();
    let export = blocking(move || {
        if let (Some(name), None) = (&consumer, after) {
            let dir = worker
                .dir
                .as_ref()
                .ok_or_else(|| ApiError::no_data_dir("consumer="))?;
            request.after = dir.committed(name).map_err(|e| storage_error(&e))?;
        }
        match &worker.dir {
            Some(dir) => dir.export(&request),
            None => worker.collector.export(&request),
        }
        .map_err(|e| match e {
            ExportError::InvalidRequest { reason } => ApiError::bad_parameter("after", reason),
            ExportError::CursorAhead { after, last_seq } => ApiError::new(
                StatusCode::CONFLICT,
                "cursor_ahead",
                format!("cursor {after} is ahead of the last stored seq {last_seq}"),
            )
            .with("last_seq", last_seq),
            ExportError::Storage(e) => storage_error(&e),
            other => ApiError::internal(format!("cannot export: {other}")),
        })
    })
    .await??;
    let content_type = match format {
        Format::Msgpack => "application/msgpack",
        Format::Jsonl => "application/x-ndjson",
    };
    let (next_cursor, count) = (export.header().next_cursor, export.header().count);
    // Written on the blocking pool into a bounded channel the response reads: the
    // bytes go out as they are made, never held twice.
    let (tx, body) = http_body_util::Channel::<Bytes, std::io::Error>::new(EXPORT_CHUNKS_IN_FLIGHT);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx: Some(tx),
            handle,
            buf: Vec::with_capacity(EXPORT_CHUNK_BYTES),
        };
        let written = match format {
            Format::Msgpack => export.write_msgpack(&mut out),
            Format::Jsonl => export.write_jsonl(&mut out),
        };
        match written
            .map_err(std::io::Error::other)
            .and_then(|()| out.send())
        {
            Ok(()) => {}
            // The reader sees a cut body; its checksum and count refuse it.
            Err(e) => out.abort(e),
        }
    });
    let mut response = (StatusCode::OK, Body::new(body)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("x-arbiter-next-cursor", HeaderValue::from(next_cursor));
    h.insert("x-arbiter-records", HeaderValue::from(count));
    Ok(response)
}

/// Bytes of an export sent per chunk.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks buffered between the writer and the connection.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 4;

/// A `Write` that sends full chunks into a response body, waiting for room.
struct ChunkWriter {
    tx: Option<http_body_util::channel::Sender<Bytes, std::io::Error>>,
    handle: tokio::runtime::Handle,
    buf: Vec<u8>,
}

impl ChunkWriter {
    /// Sends what is buffered.
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(EXPORT_CHUNK_BYTES),
        ));
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away");
        let tx = self.tx.as_mut().ok_or_else(gone)?;
        self.handle
            .block_on(tx.send_data(chunk))
            .map_err(|_| gone())
    }

    /// Ends the body with an error, so the connection is not left looking complete.
    fn abort(&mut self, error: std::io::Error) {
        if let Some(tx) = self.tx.take() {
            tx.abort(error);
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn consumers(State(app): AppState, headers: HeaderMap) -> Answer {
    authorize(&app, &headers, Role::Export)?;
    let worker = app.clone();
    let list = blocking(move || {
        let dir = worker
            .dir
            .as_ref()
            .ok_or_else(|| ApiError::no_data_dir("consumers"))?;
        dir.consumer_cursors().map_err(|e| storage_error(&e))
    })
    .await??;
    let consumers: Vec<Value> = list
        .into_iter()
        .map(|(name, cursor)| match cursor {
            Ok(c) => json!({ "name": name, "cursor": c.seq() }),
            Err(e) => json!({ "name": name, "error": e.to_string() }),
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "consumers": consumers }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    cursor: u64,
}

async fn commit(
    State(app): AppState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let body = authorize_with_body(&app, &headers, body, Role::Export).await?;
    let bytes = read_body(&app, &headers, body).await?;
    let CommitBody { cursor } = parse_json(&bytes, "commit")?;
    let worker = app.clone();
    let consumer = name.clone();
    blocking(move || {
        let dir = worker.dir.as_ref().ok_or_else(|| ApiError::no_data_dir("a commit"))?;
        let _serial = worker.commits.lock().unwrap_or_else(|e| e.into_inner());
        let committed = dir.committed(&consumer).map_err(|e| storage_error(&e))?;
        if cursor < committed.seq() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "cursor_backwards",
                format!(
                    "consumer {consumer} has committed {}; a commit never goes backwards (got {cursor}); use `arbiter-events consumer reset` to move it back",
                    committed.seq()
                ),
            )
            .with("committed", committed.seq()));
        }
        dir.commit(&consumer, Cursor::after_seq(cursor))
            .map_err(|e| storage_error(&e))
    })
    .await??;
    Ok(json_response(
        StatusCode::OK,
        json!({ "consumer": name, "cursor": cursor }),
    ))
}

async fn stats(State(app): AppState, headers: HeaderMap) -> Answer {
    authorize(&app, &headers, Role::Export)?;
    let worker = app.clone();
    let stats = blocking(move || worker.collector.stats()).await?;
    let body = serde_json::to_value(&stats)
        .map_err(|e| ApiError::internal(format!("cannot encode the stats: {e}")))?;
    Ok(json_response(StatusCode::OK, body))
}

async fn report(
    State(app): AppState,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Answer {
    authorize(&app, &headers, Role::Export)?;
    let p = params(&pairs, &["last", "since", "until", "by", "agent"])?;
    let now = OffsetDateTime::now_utc();
    let mut request = match (p.get("since"), p.get("last")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_parameter(
                "last",
                "give `last` or `since`, not both",
            ));
        }
        (Some(since), None) => {
            let since = parse_time("since", since)?;
            let until = p
                .get("until")
                .map(|u| parse_time("until", u))
                .transpose()?
                .unwrap_or(now);
            if until <= since {
                return Err(ApiError::bad_parameter(
                    "until",
                    "`until` must be after `since`",
                ));
            }
            ReportRequest::between(since, until)
        }
        (None, last) => {
            if p.contains_key("until") {
                return Err(ApiError::bad_parameter("until", "`until` needs `since`"));
            }
            let last = crate::parse_duration(last.copied().unwrap_or("1h"))
                .map_err(|e| ApiError::bad_parameter("last", format!("`last`: {e}")))?;
            if last.is_zero() {
                return Err(ApiError::bad_parameter(
                    "last",
                    "`last` must be longer than zero",
                ));
            }
            ReportRequest::last(last)
        }
    };
    request = match p.get("by").copied() {
        None | Some("overall") => request.by(Grouping::Overall),
        Some("agent") => request.by(Grouping::ByAgent),
        Some("kind") => request.by(Grouping::ByKind),
        Some("strategy") => request.by(Grouping::ByStrategy),
        Some(other) => {
            return Err(ApiError::bad_parameter(
                "by",
                format!("`by` must be agent, kind, strategy or overall, got {other:?}"),
            ));
        }
    };
    if let Some(agent) = p.get("agent") {
        request = request.agent((*agent).to_owned());
    }
    let worker = app.clone();
    let report = blocking(move || {
        let dir = worker
            .dir
            .as_ref()
            .ok_or_else(|| ApiError::no_data_dir("a report"))?;
        dir.report(&AnalyticsConfig::default(), &request, now)
            .map_err(|e| ApiError::internal(format!("cannot build the report: {e}")))
    })
    .await??;
    let body = serde_json::to_value(&report)
        .map_err(|e| ApiError::internal(format!("cannot encode the report: {e}")))?;
    Ok(json_response(StatusCode::OK, body))
}
