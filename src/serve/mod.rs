//! `arbiter-events serve`: record from any language over HTTP, and pull exports.
//!
//! A thin adapter over the public API: every event that comes in goes through
//! [`Collector::record`], with the same validation, anonymization and accounting as
//! in-process events. The library stays synchronous; the server runs its own tokio
//! runtime and calls the collector from blocking threads, never stalling the runtime.
//! Built only with the `serve` cargo feature (on by default; embedders who do not need
//! it use `default-features = false`).
//!
//! ```no_run
//! use arbiter_events::serve::{Server, ServerConfig, Tokens};
//! use arbiter_events::{Collector, Config};
//!
//! let mut config = Config::default();
//! config.storage.data_dir = Some("./arbiter-data".into());
//! let collector = Collector::new(config)?;
//! let tokens = Tokens::new("a-record-token-of-some-length", "an-export-token-of-some-length")?;
//! let server = Server::bind(collector.clone(), ServerConfig::default(), tokens)?;
//! println!("listening on http://{}", server.local_addr());
//! let report = server.run_until_signal()?; // SIGINT / SIGTERM: stop accepting, drain, flush
//! eprintln!("served {} requests", report.requests);
//! collector.shutdown(std::time::Duration::from_secs(30))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The HTTP contract is in `docs/http_api.md`.

mod auth;
mod config;
mod ingest;
mod metrics;
mod routes;
mod tasks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::{Collector, DataDir, Durability};

pub use auth::{
    EXPORT_TOKEN_ENV, EXPORT_TOKEN_FILE, GeneratedToken, MIN_TOKEN_LEN, RECORD_TOKEN_ENV,
    RECORD_TOKEN_FILE, Role, TOKEN_DIR, TokenSource, Tokens,
};
pub use config::{
    DEFAULT_BODY_LIMIT_BYTES, DEFAULT_LISTEN, DEFAULT_MAX_EVENTS_PER_REQUEST,
    DEFAULT_READ_TIMEOUT_MS, DEFAULT_TASK_DEADLINE_SECS, MAX_BODY_LIMIT_BYTES,
    MAX_EVENTS_PER_REQUEST, MAX_OPEN_EXECUTIONS, MAX_READ_TIMEOUT_MS, MAX_TASK_DEADLINE_SECS,
    MIN_BODY_LIMIT_BYTES, RemoteAccess, ServerConfig, TokensConfig,
};

/// How long a graceful shutdown waits for requests in progress.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often executions past their deadline are looked for.
const EXPIRY_TICK: Duration = Duration::from_millis(200);

/// The server could not be set up or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A `server.*` setting breaks a rule.
    #[error("invalid server configuration: {reason}")]
    Config {
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A non-loopback address without `--allow-remote`.
    #[error(
        "refusing to listen on {addr}: it is not a loopback address; give --allow-remote (server.remote = \"allow\") to accept other hosts"
    )]
    RemoteRefused {
        /// The address.
        addr: SocketAddr,
    },
    /// A token could not be read, written or accepted.
    #[error("bad token: {reason}")]
    Token {
        /// What is wrong, with the path when from a file.
        reason: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The async runtime could not be started.
    #[error("cannot start the server runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The collector's data directory could not be opened for reading.
    #[error(transparent)]
    Storage(#[from] crate::StorageError),
}

/// What a server did, returned when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeReport {
    /// Requests answered.
    pub requests: u64,
    /// Connections still open when the drain timed out (0 after a clean drain).
    pub connections_cut: u64,
    /// Executions still open at shutdown, recorded as abandoned.
    pub abandoned: u64,
    /// Whether the final flush stored (and, under `every_batch`, synced) everything.
    pub flushed: bool,
}

/// Everything the handlers share.
#[derive(Debug)]
struct App {
    collector: Collector,
    dir: Option<DataDir>,
    tokens: Tokens,
    config: ServerConfig,
    /// A 2xx for events is sent only after they are synced.
    durable_acks: bool,
    executions: Arc<tasks::Executions>,
    metrics: metrics::Metrics,
    requests: AtomicU64,
    /// Serializes consumer commits, so the backwards check and the write are one step.
    commits: std::sync::Mutex<()>,
}

/// An HTTP server over a [`Collector`], bound and ready to run.
#[derive(Debug)]
pub struct Server {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    app: Arc<App>,
}

impl Server {
    /// Validates `config` and binds `config.listen` (port 0 picks a free port: see
    /// [`local_addr`](Self::local_addr)). Consumers, commits and reports need the
    /// collector to have a data directory (`storage.data_dir`); exports are read from
    /// it when there is one, else from the collector's memory.
    ///
    /// # Errors
    /// [`ServeError::Config`] or [`ServeError::RemoteRefused`] for the configuration,
    /// [`ServeError::Bind`] when the address cannot be bound, [`ServeError::Storage`]
    /// when the data directory cannot be opened for reading.
    pub fn bind(
        collector: Collector,
        config: ServerConfig,
        tokens: Tokens,
    ) -> Result<Server, ServeError> {
        config.validate()?;
        let collector_config = collector.config();
        let dir = match &collector_config.storage.data_dir {
            Some(path) => Some(DataDir::open(path)?),
            None => None,
        };
        let durable_acks =
            dir.is_some() && collector_config.storage.durability == Durability::EveryBatch;
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let bind_error = |source| ServeError::Bind {
            addr: config.listen,
            source,
        };
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let executions = Arc::new(tasks::Executions::new(
            Duration::from_secs(config.task_deadline_secs),
            MAX_OPEN_EXECUTIONS,
        ));
        let metrics = metrics::Metrics::new(collector.clone(), executions.clone());
        Ok(Server {
            listener,
            addr,
            app: Arc::new(App {
                collector,
                dir,
                tokens,
                config,
                durable_acks,
                executions,
                metrics,
                requests: AtomicU64::new(0),
                commits: std::sync::Mutex::new(()),
            }),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGINT or SIGTERM (Ctrl-C elsewhere), then shuts down gracefully as
    /// [`run`](Self::run) does. Blocks.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_until_signal(self) -> Result<ServeReport, ServeError> {
        self.run(shutdown_signal())
    }

    /// Serves until `shutdown` completes, then stops accepting, lets the requests in
    /// progress finish (up to [`DRAIN_TIMEOUT`]), records the executions still open as
    /// abandoned, and flushes the collector. Blocks; the collector itself is left
    /// running (call [`Collector::shutdown`] for its report).
    ///
    /// # Errors
    /// [`ServeError::Runtime`] when the runtime cannot start, [`ServeError::Bind`] when
    /// the listener cannot be registered with it.
    pub fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ServeReport, ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("arbiter-serve")
            .enable_io()
            .enable_time()
            .build()
            .map_err(ServeError::Runtime)?;
        let Server {
            listener,
            addr,
            app,
        } = self;
        let cut = runtime.block_on(serve(listener, addr, app.clone(), shutdown));
        // Blocking work still running after a timed-out drain is not waited for long.
        runtime.shutdown_timeout(Duration::from_secs(5));
        let cut = cut?;
        let abandoned = app.executions.abandon_all() as u64;
        let flushed = app.collector.flush(ingest::FLUSH_TIMEOUT).is_ok();
        Ok(ServeReport {
            requests: app.requests.load(Relaxed),
            connections_cut: cut,
            abandoned,
            flushed,
        })
    }
}

/// Accepts connections until `shutdown`, then drains them; returns how many were cut.
async fn serve(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<u64, ServeError> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|source| ServeError::Bind { addr, source })?;
    let router = routes::router(app.clone());
    let read_timeout = Duration::from_millis(app.config.read_timeout_ms);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let expiry = {
        let executions = app.executions.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_TICK);
            loop {
                tick.tick().await;
                let executions = executions.clone();
                let now = std::time::Instant::now();
                let _ = tokio::task::spawn_blocking(move || executions.expire(now)).await;
            }
        })
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of descriptors, a connection reset before accept: wait a moment.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    expiry.abort();
    Ok(u64::from(drained.is_err()))
}

/// Completes on SIGINT or SIGTERM (on Unix; Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            // Signals cannot be watched: serve until killed.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
