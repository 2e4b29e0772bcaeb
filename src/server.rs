//! Wiring: one listener serving gRPC (HTTP/2 cleartext, prior knowledge)
//! and HTTP/1.1, an optional admin listener, reflection, health, request
//! ids and logs, and graceful shutdown.
//!
//! Requests whose content type is `application/grpc*` go to the tonic
//! services (TokenService, `grpc.health.v1.Health`, reflection v1 and
//! v1alpha); everything else goes to the HTTP routes of [`crate::http`].
//! Both are axum routers served by one hyper connection builder that
//! detects HTTP/1.1 or HTTP/2 per connection.
//!
//! Shutdown: readiness and health turn NOT_SERVING, the listeners stop
//! accepting, and in-flight requests get the grace period to finish; after
//! it, remaining connections are dropped.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpConnectInfo;
use tonic_health::ServingStatus;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::config::{Config, ConnectionLimits, EXIT_CONFIG, LogFormat, ServeArgs};
use crate::grpc::{TokenApi, TokenServiceServer};
use crate::http::{self, HttpState};
use crate::issuer::Issuer;
use crate::logwriter::{BatchedStdout, FlushGuard};
use crate::pb;
use crate::state::Shared;

/// Largest gRPC response message, in bytes (tokens are small).
const MAX_GRPC_RESPONSE: usize = 1024 * 1024;
/// How long an HTTP/2 keep-alive ping may go unanswered.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// `token-authority healthcheck` options.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Server address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: String,
    /// Check readiness (/readyz: credentials loaded and not shutting down)
    /// instead of liveness (/healthz).
    #[arg(long)]
    pub ready: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    pub timeout: u64,
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
    shutdown_grace: Duration,
    max_request_bytes: usize,
    connection: ConnectionLimits,
}

/// A running server started by [`Server::spawn`] or [`spawn`]. Dropping it
/// shuts the server down (without waiting).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// The main listener's address (gRPC and HTTP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The shared state (issuer, metrics, readiness).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

/// Binds `config`'s listeners and runs the server in a background task.
pub async fn spawn(config: &Config) -> std::io::Result<ServerHandle> {
    Ok(Server::bind(config).await?.spawn())
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

impl Server {
    /// Binds the listeners of `config` (port 0 picks a free port).
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        let admin = match config.admin_listen {
            Some(a) => Some(TcpListener::bind(a).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {a} (admin): {e}"))
            })?),
            None => None,
        };
        Ok(Self {
            listener,
            admin,
            shared: Arc::new(Shared::with_metrics(
                Issuer::new(config.apps.clone()),
                if config.metrics {
                    crate::metrics::Metrics::new()
                } else {
                    crate::metrics::Metrics::disabled()
                },
            )),
            shutdown_grace: config.shutdown_grace,
            max_request_bytes: config.max_request_bytes,
            connection: config.connection,
        })
    }

    /// The main listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs the server in a background task.
    pub fn spawn(self) -> ServerHandle {
        let addr = self
            .listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let admin_addr = self.admin.as_ref().and_then(|l| l.local_addr().ok());
        let shared = Arc::clone(&self.shared);
        // Bound and holding credentials: ready (connections queue until the
        // task below accepts them).
        self.shared.set_ready(true);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async move {
            // A send or a dropped handle both mean: stop.
            let _ = rx.await;
        }));
        ServerHandle {
            addr,
            admin_addr,
            shared,
            stop: Some(tx),
            task,
        }
    }

    /// Serves until `shutdown` completes, then drains within the grace period.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let api = TokenApi::new(Arc::clone(&self.shared));
        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter.set_serving::<TokenServiceServer<TokenApi>>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(std::io::Error::other)?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(std::io::Error::other)?;
        let token_service = TokenServiceServer::new(api.clone())
            .max_decoding_message_size(self.max_request_bytes)
            .max_encoding_message_size(MAX_GRPC_RESPONSE);
        let grpc = tonic::service::Routes::new(token_service)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .into_axum_router();
        let http_state = HttpState::new(api, self.max_request_bytes);
        let http = http::router(http_state.clone());
        let app = Router::new()
            .fallback_service(tower::service_fn(move |req: Request| {
                let target = if is_grpc(&req) {
                    grpc.clone()
                } else {
                    http.clone()
                };
                target.oneshot(req)
            }))
            .layer(middleware::from_fn(request_context));

        let (stop_tx, stop_rx) = watch::channel(false);
        let main_addr = self.listener.local_addr()?;
        let conn = self.connection;
        let mut main_task =
            tokio::spawn(serve_connections(self.listener, app, stop_rx.clone(), conn));
        let mut admin_task = match self.admin {
            Some(listener) => {
                let admin_app =
                    http::admin_router(http_state).layer(middleware::from_fn(request_context));
                tracing::info!(addr = %listener.local_addr()?, "admin listener: /healthz /readyz /metrics");
                Some(tokio::spawn(serve_connections(
                    listener,
                    admin_app,
                    stop_rx.clone(),
                    conn,
                )))
            }
            None => None,
        };
        self.shared.set_ready(true);
        tracing::info!(addr = %main_addr, "serving gRPC (h2c) and HTTP/1.1");

        tokio::select! {
            () = shutdown => {}
            r = &mut main_task => {
                self.shared.set_ready(false);
                return r.map_err(std::io::Error::other);
            }
        }

        tracing::info!(
            grace_seconds = self.shutdown_grace.as_secs(),
            "shutting down: draining in-flight requests"
        );
        self.shared.set_ready(false);
        reporter
            .set_not_serving::<TokenServiceServer<TokenApi>>()
            .await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let _ = stop_tx.send(true);
        let drain = async {
            let main = (&mut main_task).await;
            if let Some(t) = admin_task.as_mut() {
                let _ = t.await;
            }
            main
        };
        match tokio::time::timeout(self.shutdown_grace, drain).await {
            Ok(Ok(())) => {
                tracing::info!("stopped");
                Ok(())
            }
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => {
                tracing::warn!("grace period over; dropping the remaining connections");
                main_task.abort();
                if let Some(t) = admin_task {
                    t.abort();
                }
                Ok(())
            }
        }
    }
}

/// Accepts connections on `listener` and serves `app` on each (HTTP/1.1 or
/// HTTP/2, detected per connection) with the connection limits, until `stop`
/// turns true; then stops accepting, asks every connection to finish
/// gracefully (HTTP/2 GOAWAY, HTTP/1.1 close after the current response) and
/// waits for them. The caller bounds the wait with the grace period.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.keep_alive_interval)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The peer address, for tonic's `Request::remote_addr()` and axum's
        // `ConnectInfo` (caller policies and per-IP limits need it).
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req)
            });
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        // Connections live in a JoinSet owned by this task: if the grace
        // period runs out and this task is aborted, they are dropped with it.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A request id: the caller's `x-request-id` when it is short and plain,
/// otherwise a new one. New ids are unique and unpredictable enough for
/// correlating logs (they are not secrets): a random per-process key mixed
/// with a counter, so no system call per request.
fn request_id(req: &Request) -> HeaderValue {
    let given = req.headers().get("x-request-id").filter(|v| {
        let b = v.as_bytes();
        (1..=64).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
    });
    if let Some(id) = given {
        return id.clone();
    }
    static KEY: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let key = *KEY.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without the OS's randomness, ids are still unique (the counter).
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    });
    let id = splitmix64(key.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)));
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Invariant: 16 lowercase hex digits are a valid header value.
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A bijective mixer of 64-bit values (SplitMix64's finaliser): distinct
/// counters give distinct, scattered ids.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Request id, a span around the request, and one log line per request
/// (probes and scrapes at debug level).
async fn request_context(req: Request, next: Next) -> Response {
    let id = request_id(&req);
    // Cheap copies (the URI's bytes are reference counted; the address is
    // Copy): nothing is formatted unless the span is enabled.
    let uri = req.uri().clone();
    let path = truncate(uri.path(), 128);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let id_str = id.to_str().unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        id = id_str,
        peer = peer.map(tracing::field::display),
        method = %req.method(),
        path = path
    );
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(parent: &span, status, elapsed_ms, "request");
    } else {
        tracing::info!(parent: &span, status, elapsed_ms, "request");
    }
    resp.headers_mut().insert("x-request-id", id);
    resp
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// Installs the global `tracing` subscriber (`RUST_LOG`, default `info`),
/// writing to stdout in batches off the request path
/// ([`crate::logwriter`]). Keep the returned guard until exit: dropping it
/// writes the remaining lines.
pub fn init_logging(format: LogFormat) -> FlushGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = BatchedStdout::new();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // Already installed (e.g. by a test): keep the existing one.
    let _ = result;
    guard
}

/// `token-authority serve`: validates the configuration before anything
/// else (exit 78 on error), then serves until SIGTERM / Ctrl-C.
pub fn main(args: ServeArgs) -> ExitCode {
    let config = match Config::load(&args, &crate::env::ProcessEnv::load()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("token-authority: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _log_guard = init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("token-authority: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(&config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                eprintln!("token-authority: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app_ids: Vec<&str> = config.apps.iter().map(|a| a.app_id.as_str()).collect();
        tracing::info!(apps = ?app_ids, source = %config.apps_source, "credentials loaded (certificates not shown)");
        tracing::warn!("no callers are configured: the service is open to anyone who can reach it");
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// `token-authority healthcheck`: exit 0 when `GET /healthz` (or `/readyz`
/// with `--ready`) answers 200. Blocking std I/O, no runtime: it is run by
/// Docker every few seconds.
pub fn healthcheck_main(args: &HealthcheckArgs) -> ExitCode {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    match healthcheck(&args.addr, path, Duration::from_secs(args.timeout.max(1))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(addr: &str, path: &str, timeout: Duration) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .collect();
    let mut last = format!("{addr}: no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(mut s) => {
                let io = |e: std::io::Error| format!("{a}: {e}");
                s.set_read_timeout(Some(timeout)).map_err(io)?;
                s.set_write_timeout(Some(timeout)).map_err(io)?;
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )
                .map_err(io)?;
                let mut buf = [0u8; 64];
                let mut n = 0;
                while n < 12 {
                    match s.read(&mut buf[n..]).map_err(io)? {
                        0 => break,
                        k => n += k,
                    }
                }
                let line = String::from_utf8_lossy(&buf[..n]);
                let status = line.split_whitespace().nth(1).unwrap_or("");
                return if status == "200" {
                    Ok(())
                } else {
                    Err(format!(
                        "{a}{path} answered {:?}",
                        line.lines().next().unwrap_or("")
                    ))
                };
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}
