//! The accept loop: TLS, HTTP/1.1 or HTTP/2 per connection, connection
//! limits, graceful drain.

use super::conn::*;
use super::*;
use crate::config::ConnectionLimits;
use crate::telemetry::metrics::{ConnTimeout, Listener};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// One listener's settings for [`serve_connections`].
#[derive(Debug, Clone)]
pub(crate) struct ListenerConfig {
    pub(crate) limits: ConnectionLimits,
    /// How long a request may stay in progress, its response included,
    /// before its connection is closed (the request timeout plus a margin
    /// for sending the response).
    pub(crate) stall: Duration,
    pub(crate) limiter: Arc<ConnLimiter>,
    pub(crate) listener: Listener,
    pub(crate) shared: Arc<Shared>,
}

/// The hyper builder of a listener: HTTP/1.1 and HTTP/2 with the limits.
fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
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
        .initial_stream_window_size(limits.http2_stream_window)
        .initial_connection_window_size(limits.http2_connection_window)
        .max_send_buf_size(limits.http2_max_send_buf)
        .keep_alive_interval(limits.keep_alive_interval)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    builder
}

/// Requests that legitimately stay open (a gRPC health `Watch` stream, a
/// `WatchToken` stream): never closed as stalled.
fn long_lived(path: &str) -> bool {
    path == "/grpc.health.v1.Health/Watch" || path == WATCH_PATH
}

/// Accepts connections on `listener` and serves `app` on each (HTTP/1.1 or
/// HTTP/2, detected per connection) with the connection limits, until `stop`
/// turns true; then stops accepting, asks every connection to finish
/// gracefully (HTTP/2 GOAWAY, HTTP/1.1 close after the current response) and
/// waits for them. The caller bounds the wait with the grace period.
///
/// A connection past a cap of `cfg.limiter` is closed right after accept.
/// Each connection has a watchdog: no first request within
/// `first_request_timeout`, or no request in progress for `idle_timeout`:
/// closed gracefully; a request or response in progress for longer than
/// `cfg.stall`: closed at once.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    cfg: ListenerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let limits = cfg.limits;
    let builder = Arc::new(builder(&limits));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = tokio::task::JoinSet::new();
    let mut errors = AcceptErrors::new();
    let name = match cfg.listener {
        Listener::Main => "main",
        Listener::Admin => "admin",
    };
    let stopping = stop.clone();
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
            Ok(a) => {
                errors.ok();
                a
            }
            Err(e) => {
                // E.g. EMFILE: back off (growing delay), log rarely.
                let wait = errors.failed(&e, name);
                cfg.shared.metrics.connections.accept_error();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut stopped => break,
                }
                continue;
            }
        };
        // Caps first: past them the connection is closed now, before any
        // TLS or HTTP work.
        let permit = match cfg.limiter.admit(peer.ip()) {
            Ok(p) => p,
            Err(_) => {
                // A reset, not a FIN: no TIME_WAIT state kept for refused connections.
                let _ = stream.set_zero_linger();
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = Arc::clone(&builder);
        let acceptor = acceptor.clone();
        let stop = stopping.clone();
        let shared = Arc::clone(&cfg.shared);
        let listener_id = cfg.listener;
        let stall = cfg.stall;
        // Connections live in a JoinSet owned by this task: if the grace
        // period runs out and this task is aborted, they are dropped with it.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            let mut dog = Watchdog::new(
                Arc::clone(&activity),
                limits.first_request_timeout,
                limits.idle_timeout,
                stall,
            );
            let service = move |names: TlsClientNames| {
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    // The peer address as axum's `ConnectInfo` (caller
                    // policies, per-IP limits and log lines read it); the
                    // client certificate's names on mTLS connections.
                    let in_flight = InFlight::new(&activity, long_lived(req.uri().path()));
                    req.extensions_mut().insert(ConnectInfo(peer));
                    if !names.0.is_empty() {
                        req.extensions_mut().insert(names.clone());
                    }
                    let call = app.clone().oneshot(req);
                    async move {
                        let resp = call.await?;
                        let (parts, inner) = resp.into_parts();
                        // Counted on its connection until the body is sent
                        // or dropped (its slot, if any, is in the body too:
                        // `slots::hold`).
                        let body = Held::new(inner, in_flight);
                        Ok::<_, std::convert::Infallible>(hyper::Response::from_parts(parts, body))
                    }
                })
            };
            let (io, names) = match acceptor {
                None => (Io::Plain(stream), TlsClientNames::default()),
                Some(acceptor) => {
                    // The handshake runs in the connection's task, bounded,
                    // so slow clients do not block accepts.
                    let tls = match tokio::time::timeout(
                        limits.tls_handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            shared
                                .metrics
                                .connections
                                .timed_out(listener_id, ConnTimeout::TlsHandshake);
                            return;
                        }
                    };
                    dog.restart();
                    let names = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(crate::config::tls::client_names)
                        .unwrap_or_default();
                    (Io::Tls(Box::new(tls)), TlsClientNames(Arc::new(names)))
                }
            };
            let conn = builder.serve_connection(TokioIo::new(io), service(names));
            tokio::pin!(conn);
            // The watchdog and the stop signal run in a task of their own
            // and tell the connection what to do through `ctl`: the
            // connection's task, polled on every read and write, only
            // loads an atomic besides serving.
            let ctl = Arc::new(Control::default());
            let control = tokio::spawn(control(
                dog,
                stop,
                Arc::clone(&ctl),
                Closing {
                    shared: Arc::clone(&shared),
                    listener: listener_id,
                    peer,
                },
            ));
            let mut graceful = false;
            let mut registered: Option<std::task::Waker> = None;
            let result = std::future::poll_fn(|cx| {
                loop {
                    match ctl.action.load(Ordering::Acquire) {
                        CLOSE_NOW => return std::task::Poll::Ready(Ok(())),
                        CLOSE_GRACEFULLY if !graceful => {
                            graceful = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        _ => {}
                    }
                    if let std::task::Poll::Ready(r) = conn.as_mut().poll(cx) {
                        return std::task::Poll::Ready(r);
                    }
                    // The same task's waker is stored once; a new one
                    // (the task moved executor) replaces it.
                    if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        return std::task::Poll::Pending;
                    }
                    ctl.set_waker(cx.waker());
                    registered = Some(cx.waker().clone());
                    // An action set before the waker was stored: act now.
                    if ctl.action.load(Ordering::Acquire) == NONE {
                        return std::task::Poll::Pending;
                    }
                }
            })
            .await;
            control.abort();
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    // Every connection sees `stop` and finishes gracefully.
    while connections.join_next().await.is_some() {}
}

/// How long a connection asked to close gracefully (idle, first request)
/// may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// No action asked of the connection (yet).
const NONE: u8 = 0;
/// Finish what is in progress and close (GOAWAY / `Connection: close`).
const CLOSE_GRACEFULLY: u8 = 1;
/// Close at once.
const CLOSE_NOW: u8 = 2;

/// What the control task of a connection asks of it: an action (only
/// ever raised: [`NONE`] → [`CLOSE_GRACEFULLY`] → [`CLOSE_NOW`]) and the
/// connection task's waker, to wake it when the action changes.
#[derive(Debug, Default)]
struct Control {
    action: AtomicU8,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Control {
    fn set_waker(&self, waker: &std::task::Waker) {
        // A poisoned lock only means a panic while swapping a waker.
        let mut w = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        *w = Some(waker.clone());
    }

    /// Raises the action to `action` and wakes the connection.
    fn ask(&self, action: u8) {
        self.action.fetch_max(action, Ordering::AcqRel);
        let w = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = w.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// What a connection closed by its watchdog is counted and logged with.
struct Closing {
    shared: Arc<Shared>,
    listener: Listener,
    peer: std::net::SocketAddr,
}

impl Closing {
    fn timed_out(&self, phase: ConnTimeout) {
        self.shared
            .metrics
            .connections
            .timed_out(self.listener, phase);
        tracing::debug!(peer = %self.peer, ?phase, "closing the connection (timeout)");
    }
}

/// A connection's control: its watchdog (first request, idle, stalled)
/// and the server's stop signal, off the connection's own task.
async fn control(
    mut dog: Watchdog,
    mut stop: watch::Receiver<bool>,
    ctl: Arc<Control>,
    closing: Closing,
) {
    if *stop.borrow() {
        ctl.ask(CLOSE_GRACEFULLY);
        return;
    }
    let mut tick = tokio::time::interval(dog.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        tokio::select! {
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    // Shutdown: finish gracefully (the server bounds the wait).
                    ctl.ask(CLOSE_GRACEFULLY);
                    return;
                }
            }
            _ = tick.tick() => {
                let phase = match dog.check() {
                    Verdict::Keep => continue,
                    Verdict::FirstRequest => ConnTimeout::FirstRequest,
                    Verdict::Idle => ConnTimeout::Idle,
                    Verdict::Stalled => ConnTimeout::Stalled,
                };
                closing.timed_out(phase);
                if phase == ConnTimeout::Stalled {
                    ctl.ask(CLOSE_NOW);
                    return;
                }
                ctl.ask(CLOSE_GRACEFULLY);
                tokio::time::sleep(CLOSE_GRACE).await;
                ctl.ask(CLOSE_NOW);
                return;
            }
        }
    }
}

/// A connection's transport: TCP, or TLS over TCP.
enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
