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
//! Shutdown: readiness and health turn NOT_SERVING; requests are still
//! served for the shutdown delay (so load balancers stop sending first);
//! then the listeners stop accepting, and in-flight requests get the grace
//! period to finish; after it, remaining connections are dropped.
//!
//! Reload ([`crate::reload`]): `serve` reloads the configuration on SIGHUP
//! and when a watched file changes (polled).

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

use crate::auth::{Authn, Identity};
use crate::config::{Config, ConnectionLimits, EXIT_CONFIG, LogFormat, ServeArgs};
use crate::grpc::{TokenApi, TokenServiceServer};
use crate::http::{self, HttpState};
use crate::logfmt::LineFormat;
use crate::logwriter::{BatchedStdout, FlushGuard};
use crate::pb;
use crate::reload::{self, Reloader, Trigger};
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
    shutdown_delay: Duration,
    shutdown_grace: Duration,
    max_request_bytes: usize,
    connection: ConnectionLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    guard: Arc<Guard>,
}

/// What every request passes through before routing: authentication of
/// token requests, the global concurrency limit, the request timeout and
/// CORS for the GET endpoint.
#[derive(Debug)]
struct Guard {
    shared: Arc<Shared>,
    in_flight: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
    cors_origins: Vec<String>,
}

/// The verified client-certificate names of a TLS connection (mTLS).
#[derive(Debug, Clone, Default)]
pub struct TlsClientNames(pub Arc<Vec<String>>);

/// The path of the compatible GET endpoint.
const GET_PATH: &str = "/api/agora/token";
/// The prefix of every TokenService method, gRPC and JSON alike.
const TOKEN_PREFIX: &str = "/agora.token.v1.TokenService/";

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
        let snapshot = config.snapshot().map_err(std::io::Error::other)?;
        if snapshot.auth.is_open() {
            tracing::warn!(
                "NO CALLERS CONFIGURED: the service is OPEN, anyone who can reach it can get tokens; \
                 configure [[callers]] (token-authority keygen) before exposing it"
            );
        }
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(
                crate::tls::server_config(t).map_err(std::io::Error::other)?,
            )),
            None => None,
        };
        let metrics = if config.metrics {
            crate::metrics::Metrics::new()
        } else {
            crate::metrics::Metrics::disabled()
        };
        let shared = Arc::new(Shared::with_metrics(snapshot, metrics));
        let guard = Arc::new(Guard {
            shared: Arc::clone(&shared),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
            timeout: config.request_timeout,
            cors_origins: config.cors_origins.clone(),
        });
        Ok(Self {
            listener,
            admin,
            shared,
            shutdown_delay: config.shutdown_delay,
            shutdown_grace: config.shutdown_grace,
            max_request_bytes: config.max_request_bytes,
            connection: config.connection,
            tls,
            guard,
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

    /// Serves until `shutdown` completes; then reports NOT_SERVING, keeps
    /// serving for the shutdown delay, stops accepting and drains within the
    /// grace period.
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
            .layer(middleware::from_fn_with_state(
                Arc::clone(&self.guard),
                guard,
            ))
            .layer(middleware::from_fn(request_context));

        let (stop_tx, stop_rx) = watch::channel(false);
        let main_addr = self.listener.local_addr()?;
        let conn = self.connection;
        if self.tls.is_some() {
            tracing::info!("TLS on the main port");
        }
        let mut main_task = tokio::spawn(serve_connections(
            self.listener,
            app,
            stop_rx.clone(),
            conn,
            self.tls.clone(),
        ));
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
                    None,
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

        self.shared.set_ready(false);
        reporter
            .set_not_serving::<TokenServiceServer<TokenApi>>()
            .await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if !self.shutdown_delay.is_zero() {
            tracing::info!(
                delay_seconds = self.shutdown_delay.as_secs_f64(),
                "shutting down: NOT_SERVING; still serving during the shutdown delay"
            );
            tokio::select! {
                () = tokio::time::sleep(self.shutdown_delay) => {}
                r = &mut main_task => return r.map_err(std::io::Error::other),
            }
        }
        tracing::info!(
            grace_seconds = self.shutdown_grace.as_secs_f64(),
            "shutting down: no longer accepting connections; draining in-flight requests"
        );
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
    tls: Option<Arc<rustls::ServerConfig>>,
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
    let builder = Arc::new(builder);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
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
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let header_timeout = limits.header_read_timeout;
        // Connections live in a JoinSet owned by this task: if the grace
        // period runs out and this task is aborted, they are dropped with it.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let service = move |names: TlsClientNames| {
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.extensions_mut().insert(names.clone());
                    app.clone().oneshot(req)
                })
            };
            let result = match acceptor {
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service(TlsClientNames::default()));
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    // The handshake runs in the connection's task, bounded
                    // like the headers, so slow clients do not block accepts.
                    let tls =
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let names = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(crate::tls::client_names)
                        .unwrap_or_default();
                    let conn = builder.serve_connection(
                        TokioIo::new(tls),
                        service(TlsClientNames(Arc::new(names))),
                    );
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Is `path` one of the endpoints that issue or inspect tokens (and so need
/// a caller)? Health, readiness, metrics and reflection do not.
fn is_token_path(path: &str) -> bool {
    path == GET_PATH || path.starts_with(TOKEN_PREFIX)
}

/// The key of an `authorization: Bearer <key>` header.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// A refusal before routing, in the caller's protocol: a gRPC status for
/// gRPC requests, otherwise an HTTP status with a short text.
fn early_refusal(grpc: bool, status: tonic::Status, http: axum::http::StatusCode) -> Response {
    let retry = status
        .metadata()
        .get(crate::grpc::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut r = if grpc {
        status.into_http::<axum::body::Body>()
    } else {
        let mut r = Response::new(axum::body::Body::from(format!("{}\n", status.message())));
        *r.status_mut() = http;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if let Some(secs) = retry.and_then(|s| HeaderValue::from_str(&s).ok()) {
        r.headers_mut().insert(header::RETRY_AFTER, secs);
    }
    r
}

/// Authentication of token requests, the global concurrency limit, the
/// request timeout and CORS for the GET endpoint.
async fn guard(
    axum::extract::State(g): axum::extract::State<Arc<Guard>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if !is_token_path(path) {
        return next.run(req).await;
    }
    let grpc = is_grpc(&req);
    let get = path == GET_PATH;
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed_origin = origin.as_ref().filter(|o| {
        o.to_str()
            .is_ok_and(|o| g.cors_origins.iter().any(|a| a == "*" || a == o))
    });
    if get && req.method() == axum::http::Method::OPTIONS {
        // CORS preflight: answered here, never routed.
        let mut r = Response::new(axum::body::Body::empty());
        match allowed_origin {
            Some(o) => {
                *r.status_mut() = axum::http::StatusCode::NO_CONTENT;
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
            }
            None => *r.status_mut() = axum::http::StatusCode::FORBIDDEN,
        }
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("origin"));
        return r;
    }
    let label: Option<Arc<str>>;
    let Ok(permit) = Arc::clone(&g.in_flight).try_acquire_owned() else {
        let mut s = tonic::Status::resource_exhausted(
            "the server is at its concurrency limit; retry shortly",
        );
        s.metadata_mut().insert(
            crate::grpc::RETRY_AFTER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        return early_refusal(grpc, s, axum::http::StatusCode::TOO_MANY_REQUESTS);
    };
    {
        let snap = g.shared.current();
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let xff = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let ip = snap.auth.client_ip(peer, xff);
        let names = req
            .extensions()
            .get::<TlsClientNames>()
            .map(|n| Arc::clone(&n.0))
            .unwrap_or_default();
        let identity = snap.auth.authenticate(bearer(&req), &names, ip, get);
        label = identity.as_ref().ok().and_then(Identity::label);
        let authn = Authn::pinned(identity, arc_swap::Guard::into_inner(snap));
        req.extensions_mut().insert(authn);
    }
    // Metrics of this request are labelled with its caller (task-local).
    let run = async {
        match label {
            Some(l) => crate::metrics::with_caller(l, next.run(req)).await,
            None => next.run(req).await,
        }
    };
    let mut resp = match lazy_timeout(g.timeout, run).await {
        Some(r) => r,
        None => early_refusal(
            grpc,
            tonic::Status::deadline_exceeded("the request took longer than the server's timeout"),
            axum::http::StatusCode::GATEWAY_TIMEOUT,
        ),
    };
    drop(permit);
    if get && origin.is_some() {
        if let Some(o) = allowed_origin {
            resp.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        }
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

/// `f`, or `None` when it has not completed `limit` after the call.
///
/// Like `tokio::time::timeout` (which it hands over to), but the timer is
/// registered only if `f` does not complete on its first poll, as token
/// requests (CPU work, no I/O) do: they skip the timer wheel's insert and
/// removal. The deadline counts from the call either way; a `limit` too
/// large to add to the clock means no timer.
async fn lazy_timeout<F: Future>(limit: Duration, f: F) -> Option<F::Output> {
    let start = tokio::time::Instant::now();
    let mut f = std::pin::pin!(f);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => match start.checked_add(limit) {
            Some(deadline) => tokio::time::timeout_at(deadline, f).await.ok(),
            None => Some(f.await),
        },
    }
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

/// Request id and one log line per request (probes, scrapes and
/// successful token requests at debug level). Every line logged while the
/// request is served carries its id and peer ([`crate::logfmt::scope`]):
/// no span is created, so a request that logs nothing pays nothing.
async fn request_context(req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let context = crate::logfmt::RequestLog::new(id.as_bytes(), peer);
    // Cheap copies (the URI's bytes are reference counted).
    let uri = req.uri().clone();
    let method = req.method().clone();
    let start = Instant::now();
    crate::logfmt::scope(context, async move {
        let mut resp = next.run(req).await;
        let path = truncate(uri.path(), 128);
        let status = resp.status().as_u16();
        // Probes and scrapes at debug level; so are successful token
        // requests, whose audit event (with the same request id and peer)
        // already records them at info: one info line per token.
        let quiet = matches!(path, "/healthz" | "/readyz" | "/metrics")
            || (is_token_path(path) && resp.status().is_success());
        if quiet {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
                tracing::debug!(%method, path, status, elapsed_ms, "request");
            }
        } else {
            let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(%method, path, status, elapsed_ms, "request");
        }
        resp.headers_mut().insert("x-request-id", id);
        resp
    })
    .await
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

/// Keeps the background log writers running; dropping it flushes them.
#[derive(Debug, Default)]
pub struct LogGuards {
    _stdout: Option<FlushGuard>,
    _files: Vec<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global `tracing` subscriber (`RUST_LOG`, default `info`).
///
/// Log lines are formatted on the request path but written to stdout in
/// batches by a background thread ([`crate::logwriter`]). Audit events (target `audit`) go to the main log and, with
/// `audit_log`, also to that file as JSON lines, written without loss.
pub fn init_logging(
    format: LogFormat,
    audit_log: Option<&std::path::Path>,
) -> Result<LogGuards, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let mut guards = LogGuards::default();
    let (writer, guard) = BatchedStdout::new();
    guards._stdout = Some(guard);
    let main = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(LineFormat::text())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(LineFormat::json())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let audit = match audit_log {
        None => None,
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--audit-log {}: {e}", path.display()))?;
            let (w, g) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .finish(file);
            guards._files.push(g);
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .event_format(LineFormat::json())
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .with_writer(w)
                    .with_filter(
                        tracing_subscriber::filter::Targets::new()
                            .with_target(crate::audit::TARGET, tracing::Level::INFO),
                    ),
            )
        }
    };
    // Already installed (e.g. by a test): keep the existing one.
    let _ = tracing_subscriber::registry()
        .with(main)
        .with(audit)
        .try_init();
    Ok(guards)
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
    let _log_guards = match init_logging(config.log_format, config.audit_log.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("token-authority: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
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
        // Before anything slow: SIGHUP's default action ends the process.
        let hangup = match hangup_signal() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("token-authority: cannot handle SIGHUP: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match Server::bind(&config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                eprintln!("token-authority: {e}");
                return ExitCode::FAILURE;
            }
        };
        let apps: Vec<String> = server
            .shared()
            .current()
            .app_certificates()
            .into_iter()
            .map(|(id, n)| format!("{id} ({n} certificate{})", if n == 1 { "" } else { "s" }))
            .collect();
        tracing::info!(apps = ?apps, source = %config.apps_source, "credentials loaded (certificates not shown)");
        let reloader = Reloader::new(
            config.clone(),
            Arc::clone(server.shared()),
            crate::env::ProcessEnv::load,
        );
        let reloads = tokio::spawn(reload_loop(reloader, hangup));
        let result = server.run(shutdown_signal()).await;
        reloads.abort();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGHUP as a stream (a never-ending one where there are no signals).
#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> std::io::Result<Hangup> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

#[cfg(not(unix))]
fn hangup_signal() -> std::io::Result<Hangup> {
    Ok(())
}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangup) {
    if h.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await;
}

/// Reloads on SIGHUP and when a watched file changes (checked every
/// [`reload::POLL_INTERVAL`]). The file I/O runs on the blocking pool.
async fn reload_loop<F, E>(mut reloader: Reloader<F>, mut hangup: Hangup)
where
    F: Fn() -> E + Send + 'static,
    E: crate::env::Env,
{
    let files: Vec<String> = reloader
        .watched_files()
        .map(|p| p.display().to_string())
        .collect();
    tracing::info!(files = ?files, "reloading on SIGHUP and on changes of these files");
    let mut tick = tokio::time::interval(reload::POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let trigger = tokio::select! {
            () = next_hangup(&mut hangup) => Some(Trigger::Signal),
            _ = tick.tick() => None,
        };
        if trigger.is_some() {
            tracing::info!("SIGHUP received: reloading");
        }
        let step = tokio::task::spawn_blocking(move || {
            // The outcome is logged and counted by the reloader.
            let _ = match trigger {
                Some(t) => Some(reloader.reload(t)),
                None => reloader.poll(),
            };
            reloader
        });
        reloader = match step.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the reloader failed; reloads are disabled until a restart");
                return;
            }
        };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lazy_timeout_completes_times_out_and_never_overflows() {
        // Ready on the first poll: no timer at all.
        assert_eq!(
            lazy_timeout(Duration::from_millis(1), async { 7 }).await,
            Some(7)
        );
        // Pending first, done before the deadline.
        let slow = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            8
        };
        assert_eq!(lazy_timeout(Duration::from_secs(1), slow).await, Some(8));
        // Never done: cut off at the deadline, counted from the call.
        let start = tokio::time::Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(lazy_timeout(Duration::from_millis(300), never).await, None);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        // A limit too large for the clock: no timer, no panic.
        let slow = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            9
        };
        assert_eq!(lazy_timeout(Duration::MAX, slow).await, Some(9));
    }
}
