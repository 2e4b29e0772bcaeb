//! The accept loop: TLS, HTTP/1.1 or HTTP/2 per connection, connection
//! limits, graceful drain.

use super::*;
use crate::config::ConnectionLimits;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt as _;

/// Accepts connections on `listener` and serves `app` on each (HTTP/1.1 or
/// HTTP/2, detected per connection) with the connection limits, until `stop`
/// turns true; then stops accepting, asks every connection to finish
/// gracefully (HTTP/2 GOAWAY, HTTP/1.1 close after the current response) and
/// waits for them. The caller bounds the wait with the grace period.
pub(crate) async fn serve_connections(
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
                        .map(crate::config::tls::client_names)
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
