//! Wiring: one listener serving gRPC (HTTP/2 cleartext, prior knowledge)
//! and HTTP/1.1, an optional admin listener, reflection, health, request
//! ids and logs, and graceful shutdown.
//!
//! Requests whose content type is `application/grpc*` go to the tonic
//! services (TokenService, `grpc.health.v1.Health`, reflection v1 and
//! v1alpha); everything else goes to the HTTP routes of
//! [`crate::transport::http`]. Both are axum routers served by one hyper
//! connection builder that detects HTTP/1.1 or HTTP/2 per connection
//! ([`accept`]).
//!
//! Shutdown: readiness and health turn NOT_SERVING; requests are still
//! served for the shutdown delay (so load balancers stop sending first);
//! then the listeners stop accepting, and in-flight requests get the grace
//! period to finish; after it, remaining connections are dropped.
//!
//! Reload ([`reload`]): `serve` reloads the configuration on SIGHUP and
//! when a watched file changes (polled).

mod accept;
mod conn;
mod layers;
pub mod reload;
mod shutdown;
mod slots;

pub(crate) use accept::*;
pub(crate) use layers::*;
pub(crate) use shutdown::*;
pub(crate) use slots::*;

use std::future::Future;

use crate::api::TokenApi;
use crate::config::{Config, ConnectionLimits};
use crate::pb;
use crate::state::Shared;
use crate::transport::grpc::TokenServiceServer;
use crate::transport::http::{self, HttpState};
use axum::Router;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::{self};
use futures_util::future::Either;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic_health::ServingStatus;
use tower::{Layer as _, ServiceExt as _};

/// Largest gRPC response message, in bytes (tokens are small).
const MAX_GRPC_RESPONSE: usize = 1024 * 1024;
/// How long an HTTP/2 keep-alive ping may go unanswered.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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
    request_timeout: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    guard: Arc<Guard>,
    cors_origins: Vec<String>,
}

/// What every request passes through before routing: authentication of
/// token requests, the concurrency limits and the request timeout.
#[derive(Debug)]
struct Guard {
    shared: Arc<Shared>,
    slots: Slots,
    timeout: Duration,
}

/// The verified client-certificate names of a TLS connection (mTLS).
#[derive(Debug, Clone, Default)]
pub struct TlsClientNames(pub Arc<Vec<String>>);

/// The path of the compatible GET endpoint.
const GET_PATH: &str = "/api/agora/token";
/// The prefix of every TokenService method, gRPC and JSON alike.
const TOKEN_PREFIX: &str = "/agora.token.v1.TokenService/";
/// The path of the `WatchToken` stream.
pub(crate) const WATCH_PATH: &str = "/agora.token.v1.TokenService/WatchToken";

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

/// gRPC or gRPC-Web (whose requests reach the gRPC services translated).
fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A translated gRPC-Web request with the body type of the guard.
fn web_request(r: axum::http::Request<tonic::body::Body>) -> Request {
    r.map(axum::body::Body::new)
}

/// gRPC-Web, binary (`application/grpc-web`, `+proto`) or text
/// (`application/grpc-web-text`).
fn is_grpc_web(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc-web"))
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
                crate::config::tls::server_config(t).map_err(std::io::Error::other)?,
            )),
            None => None,
        };
        let metrics = if config.metrics {
            crate::telemetry::metrics::Metrics::new()
        } else {
            crate::telemetry::metrics::Metrics::disabled()
        };
        let rate_store = match &config.rate_limit_store {
            Some(c) => {
                if matches!(c.address().split_once("://"), Some(("rediss", _))) {
                    // TLS to the store: rustls with the provider the server
                    // uses (a second install is refused, harmlessly).
                    let _ = rustls::crypto::ring::default_provider().install_default();
                }
                Some(crate::policy::store::RateStore::start(c.clone()).await)
            }
            None => None,
        };
        let mut shared = Shared::with_metrics(snapshot, metrics).with_rate_store(rate_store);
        shared.configure_watches(
            config.connection.max_watches_per_caller,
            config.connection.max_watch,
            Arc::clone(&config.clock),
        );
        let shared = Arc::new(shared);
        let guard = Arc::new(Guard {
            shared: Arc::clone(&shared),
            slots: Slots::new(config.max_concurrent_requests, &config.connection),
            timeout: config.request_timeout,
        });
        Ok(Self {
            listener,
            admin,
            shared,
            shutdown_delay: config.shutdown_delay,
            shutdown_grace: config.shutdown_grace,
            max_request_bytes: config.max_request_bytes,
            connection: config.connection,
            request_timeout: config.request_timeout,
            tls,
            guard,
            cors_origins: config.cors_origins.clone(),
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
        // gRPC health follows the audit file and the JWT issuers' keys:
        // NOT_SERVING while the file cannot be written or an issuer has no
        // usable keys (as /readyz), SERVING again when both are fine.
        let watch_jwks = !self.shared.current().auth.jwt_issuers().is_empty();
        let device = crate::telemetry::audit_file::device();
        let audit_health = (device.is_some() || watch_jwks).then(|| {
            let reporter = reporter.clone();
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                let mut was = true;
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let now = device.as_ref().is_none_or(|d| d.is_healthy())
                        && shared.current().auth.jwks_status().is_ok();
                    if now != was {
                        let status = if now {
                            ServingStatus::Serving
                        } else {
                            ServingStatus::NotServing
                        };
                        reporter
                            .set_service_status("agora.token.v1.TokenService", status)
                            .await;
                        reporter.set_service_status("", status).await;
                        was = now;
                    }
                }
            })
        });
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc.ErrorInfo, BadRequest, RetryInfo: clients that
                // resolve types by reflection (grpcurl) print error details.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(std::io::Error::other)?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(std::io::Error::other)?;
        // gzip both ways (sent only to clients that accept it, and only
        // responses worth it: see transport::grpc::call). Health answers
        // are a few bytes: accepted compressed, never sent compressed.
        let token_service = TokenServiceServer::new(api.clone())
            .max_decoding_message_size(self.max_request_bytes)
            .max_encoding_message_size(MAX_GRPC_RESPONSE)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        let grpc = tonic::service::Routes::new(token_service)
            .add_service(health_service.accept_compressed(CompressionEncoding::Gzip))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .into_axum_router();
        let http_state = HttpState::new(api, self.max_request_bytes);
        let http = http::router(http_state.clone());
        // gRPC (and gRPC-Web once translated) to the tonic services,
        // everything else to the HTTP routes; behind the guard.
        // gRPC (and gRPC-Web once translated) to the tonic services,
        // everything else to the HTTP routes; behind the guard (without a
        // Router of its own: one routing level per request).
        let guarded: middleware::FromFn<_, _, _, (axum::extract::State<Arc<Guard>>, Request)> =
            middleware::from_fn_with_state(Arc::clone(&self.guard), guard).layer(
                tower::service_fn(move |req: Request| {
                    let target = if is_grpc(&req) {
                        grpc.clone()
                    } else {
                        http.clone()
                    };
                    target.oneshot(req)
                }),
            );
        // gRPC-Web (binary and text, HTTP/1.1 and HTTP/2) is translated to
        // gRPC before the guard, so its refusals are gRPC-Web too. (In a
        // Router: cheap to clone.)
        let web = Router::new().fallback_service(tonic_web::GrpcWebLayer::new().layer(
            tower::util::MapRequest::new(guarded.clone(), web_request as fn(_) -> _),
        ));
        let protocols = tower::service_fn(move |req: Request| {
            if is_grpc_web(&req) {
                Either::Left(web.clone().oneshot(req))
            } else {
                Either::Right(guarded.clone().oneshot(req))
            }
        });
        // CORS on the browser-facing routes only (not on /metrics and the
        // probes): preflights answered before the guard. /openapi.json too, so an
        // API browser on an allowed origin can load it. The router clones
        // its fallback per request: behind an Arc, only the branch taken
        // is cloned.
        let front = Arc::new((
            cors_layer(&self.cors_origins).layer(protocols.clone()),
            protocols,
        ));
        let app = Router::new()
            .fallback_service(tower::service_fn(move |req: Request| {
                // A request without `Origin` is not a CORS request (a
                // preflight always has one): server-to-server calls skip
                // the layer. Their responses are not cacheable (POST,
                // `no-store`), so the missing `Vary` changes nothing.
                let path = req.uri().path();
                if req.headers().contains_key(header::ORIGIN)
                    && (is_token_path(path) || path == "/openapi.json")
                {
                    Either::Left(front.0.clone().oneshot(req))
                } else {
                    Either::Right(front.1.clone().oneshot(req))
                }
            }))
            .layer(middleware::from_fn(request_context));

        let (stop_tx, stop_rx) = watch::channel(false);
        let main_addr = self.listener.local_addr()?;
        let conn = self.connection;
        if self.tls.is_some() {
            tracing::info!("TLS on the main port");
        }
        // Connections cost file descriptors: keep the caps under the
        // process's limit, so that the admin listener, the audit file and
        // reloads always have some.
        let admin_max = if self.admin.is_some() {
            conn.admin_max_connections
        } else {
            0
        };
        let mut max_connections = conn.max_connections;
        if let Some(fds) = conn::fd_limit() {
            let room = fds.saturating_sub(conn::RESERVED_FDS + admin_max).max(1);
            if room < max_connections {
                tracing::warn!(
                    max_connections,
                    open_files_limit = fds,
                    effective = room,
                    "max_connections is above what the open-files limit allows; using the lower value (raise `ulimit -n`)"
                );
                max_connections = room;
            }
        }
        // A request may take the request timeout; its response gets as
        // long again to be sent before the connection is closed.
        let stall = self.request_timeout.saturating_mul(2);
        let main_cfg = ListenerConfig {
            limits: conn,
            stall,
            limiter: conn::ConnLimiter::new(
                crate::telemetry::metrics::Listener::Main,
                max_connections,
                conn.max_connections_per_client,
                conn.client_ipv6_prefix,
                Arc::clone(&self.shared),
            ),
            listener: crate::telemetry::metrics::Listener::Main,
            shared: Arc::clone(&self.shared),
        };
        let mut main_task = tokio::spawn(serve_connections(
            self.listener,
            app,
            stop_rx.clone(),
            main_cfg,
            self.tls.clone(),
        ));
        let mut admin_task = match self.admin {
            Some(listener) => {
                let admin_guard = Arc::new(AdminGuard {
                    slots: slots::Gate::new(ADMIN_MAX_IN_FLIGHT),
                    timeout: self.request_timeout,
                });
                let admin_app = http::admin_router(http_state)
                    .layer(middleware::from_fn_with_state(
                        admin_guard,
                        layers::admin_guard,
                    ))
                    .layer(middleware::from_fn(request_context));
                tracing::info!(addr = %listener.local_addr()?, "admin listener: /healthz /readyz /metrics");
                let admin_cfg = ListenerConfig {
                    limits: conn,
                    stall,
                    // Its own budget; no per-client cap (probes come from
                    // few addresses).
                    limiter: conn::ConnLimiter::new(
                        crate::telemetry::metrics::Listener::Admin,
                        admin_max,
                        admin_max,
                        conn.client_ipv6_prefix,
                        Arc::clone(&self.shared),
                    ),
                    listener: crate::telemetry::metrics::Listener::Admin,
                    shared: Arc::clone(&self.shared),
                };
                Some(tokio::spawn(serve_connections(
                    listener,
                    admin_app,
                    stop_rx.clone(),
                    admin_cfg,
                    None,
                )))
            }
            None => None,
        };
        self.shared.set_ready(true);
        if self.tls.is_some() {
            tracing::info!(addr = %main_addr, "serving gRPC and HTTP/1.1 over TLS");
        } else {
            tracing::info!(addr = %main_addr, "serving gRPC (h2c) and HTTP/1.1");
        }

        tokio::select! {
            () = shutdown => {}
            r = &mut main_task => {
                self.shared.set_ready(false);
                return r.map_err(std::io::Error::other);
            }
        }

        self.shared.set_ready(false);
        // Watches end now (UNAVAILABLE, "reconnect"), within the delay:
        // their clients reconnect, through the load balancer, elsewhere.
        self.shared.watches.stop();
        if let Some(t) = &audit_health {
            t.abort();
        }
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
