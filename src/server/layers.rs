//! What every request passes through: the request context (id, one log
//! line) and the guard (authentication of token routes, the concurrency
//! limits: global, per caller or client address, and for unauthenticated
//! clients together; the request timeout on every route), CORS for the
//! browser-facing routes ([`cors_layer`]) and the keep-alive of HTTP/1.1
//! connections whose request body was not read ([`request_context`]).

use super::*;
use crate::api::{ApiError, Code};
use crate::policy::Authn;
use crate::policy::jwt::JwtFail;
use crate::transport::http::names;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Is `path` one of the endpoints that issue or inspect tokens (and so need
/// a caller)? Health, readiness, metrics and reflection do not.
pub(crate) fn is_token_path(path: &str) -> bool {
    path == GET_PATH || path.starts_with(TOKEN_PREFIX)
}

/// The key of an `authorization: Bearer <key>` header.
pub(crate) fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// A refusal before routing, in the caller's protocol: a gRPC status for
/// gRPC requests, a Connect error for the JSON routes, one line of text
/// for the GET endpoint.
pub(crate) fn early_refusal(grpc: bool, get: bool, e: ApiError) -> Response {
    if grpc {
        let mut r = tonic::Status::from(e.clone()).into_http::<axum::body::Body>();
        if let Some(v) = e
            .retry_after_secs()
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        crate::transport::http::set_www_authenticate(&mut r, &e);
        r
    } else if get {
        crate::transport::http::text_error(&e)
    } else {
        crate::transport::http::connect_error(&e)
    }
}

/// Request headers a browser may send to the browser-facing routes: what
/// the GET endpoint, the Connect protocol, gRPC-Web and the connect-web /
/// grpc-web clients send.
const CORS_ALLOW_HEADERS: [&str; 13] = [
    "authorization",
    "content-type",
    "content-encoding",
    "accept-encoding",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-accept-encoding",
    "connect-content-encoding",
    "grpc-timeout",
    "grpc-accept-encoding",
    "x-grpc-web",
    "x-user-agent",
    "x-request-id",
];

/// Response headers a page may read: the request id, the gRPC(-Web)
/// status and its details, the wait of a refusal, the authentication
/// challenge, the reason of a plain-text refusal, and the codings.
const CORS_EXPOSE_HEADERS: [&str; 9] = [
    "x-request-id",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "retry-after",
    "www-authenticate",
    "x-error-reason",
    "content-encoding",
    "grpc-encoding",
];

/// CORS for the browser-facing routes (the GET endpoint, the Connect
/// routes, gRPC-Web), tower-http's: the configured `[cors]` origins only
/// (`*`: any), `GET` and `POST`, the headers these protocols need, and
/// preflights (`OPTIONS`) answered before authentication, on every route
/// of them. Without configured origins a preflight is still answered (no
/// 405), without `Access-Control-Allow-Origin`: the browser refuses.
pub(crate) fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // A predicate (an `Arc`) rather than `AllowOrigin::list` (a `Vec`):
        // the layer is cloned per request.
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        AllowOrigin::predicate(move |origin, _| list.contains(origin))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(CORS_ALLOW_HEADERS.map(HeaderName::from_static))
        .expose_headers(CORS_EXPOSE_HEADERS.map(HeaderName::from_static))
        .max_age(Duration::from_secs(600))
}

/// A request body that records whether it was read to its end, so that
/// [`request_context`] can tell whether an HTTP/1.1 connection can be
/// reused after the response.
struct TrackedBody {
    inner: axum::body::Body,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &r {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            this.done.store(true, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client address of `req` (the peer, or `X-Forwarded-For` from a
/// trusted proxy).
fn client_ip(g: &Guard, req: &Request) -> std::net::IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let xff = || {
        req.headers()
            .get(names::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
    };
    g.shared.current().auth.client_ip_with(peer, xff)
}

/// The request timeout's refusal.
fn timed_out(grpc: bool, get: bool) -> Response {
    early_refusal(
        grpc,
        get,
        ApiError::new(
            Code::DeadlineExceeded,
            "the request took longer than the server's timeout",
        ),
    )
}

/// Routes that need no credentials (health, readiness, metrics,
/// reflection, the JSON health check, 404s): a slot counted against the
/// client's address and the unauthenticated pool, and the request timeout
/// (reading the body included).
async fn unauthenticated_route(g: &Guard, req: Request, next: Next) -> Response {
    let grpc = is_grpc(&req);
    let key = SlotKey::Client(crate::policy::client_key(
        client_ip(g, &req),
        g.slots.ipv6_prefix,
    ));
    let permit = match g.slots.acquire(key, true) {
        Ok(p) => p,
        Err(why) => {
            return early_refusal(grpc, false, ApiError::busy(why, Duration::from_secs(1)));
        }
    };
    let resp = match lazy_timeout(g.timeout, next.run(req)).await {
        Some(r) => r,
        None => timed_out(grpc, false),
    };
    hold(resp, permit)
}

/// The admin listener's limits: its own slots and the request timeout.
#[derive(Debug)]
pub(crate) struct AdminGuard {
    pub(crate) slots: Arc<Gate>,
    pub(crate) timeout: Duration,
}

/// Requests in progress on the admin listener at once.
pub(crate) const ADMIN_MAX_IN_FLIGHT: usize = 64;

/// The admin listener's guard: a slot of its own budget and the request
/// timeout.
pub(super) async fn admin_guard(
    axum::extract::State(g): axum::extract::State<Arc<AdminGuard>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(permit) = g.slots.try_take() else {
        return crate::transport::http::text(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many admin requests in progress\n",
        );
    };
    let resp = match lazy_timeout(g.timeout, next.run(req)).await {
        Some(r) => r,
        None => timed_out(false, false),
    };
    hold(resp, SlotPermit::of_gate(permit))
}

/// Authentication of token requests, the concurrency limits (global, per
/// caller or client, unauthenticated clients together) and the request
/// timeout on every route. (CORS is answered before it: [`cors_layer`].)
pub(super) async fn guard(
    axum::extract::State(g): axum::extract::State<Arc<Guard>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if !is_token_path(path) {
        return unauthenticated_route(&g, req, next).await;
    }
    let grpc = is_grpc(&req);
    let get = path == GET_PATH;
    let req_path_is_watch = path == WATCH_PATH;
    let start = Instant::now();
    let authed = match g.shared.rate_store.as_deref() {
        None => authenticate(&g, &mut req, get).await,
        Some(store) => authenticate_shared(&g, store, &mut req, get).await,
    };
    match authed {
        Err(e) => {
            // Refused before anything of the request was read, and before
            // it took a concurrency slot: counted, logged (at a bounded
            // rate: a flood must not fill a disk) and audited here.
            let budget = &crate::telemetry::logging::UNAUTHENTICATED_REFUSALS;
            let logged = refused_early(&g, &req, grpc, get, start, "unauthenticated", &e, budget);
            let mut r = early_refusal(grpc, get, e);
            if !logged {
                // Its `request` line is suppressed with it.
                r.extensions_mut().insert(SuppressedRefusal);
            }
            r
        }
        Ok((label, key, anonymous)) => match g.slots.acquire(key, anonymous) {
            Err(why) => {
                let e = ApiError::busy(why, Duration::from_secs(1));
                let caller = label.as_deref().unwrap_or("open");
                let budget = &crate::telemetry::logging::REFUSALS;
                let logged = refused_early(&g, &req, grpc, get, start, caller, &e, budget);
                let mut r = early_refusal(grpc, get, e);
                if !logged {
                    r.extensions_mut().insert(SuppressedRefusal);
                }
                r
            }
            Ok(permit) => {
                // Metrics of this request are labelled with its caller (task-local).
                let run = async {
                    match label {
                        Some(l) => crate::telemetry::metrics::with_caller(l, next.run(req)).await,
                        None => next.run(req).await,
                    }
                };
                let watch = req_path_is_watch;
                let resp = match lazy_timeout(g.timeout, run).await {
                    Some(r) => r,
                    None => timed_out(grpc, get),
                };
                // A watch holds its slot while it opens (its first
                // issuance), not for the stream's life: open watches are
                // bounded by `max_watches_per_caller` instead.
                if watch {
                    drop(permit);
                    resp
                } else {
                    hold(resp, permit)
                }
            }
        },
    }
}

/// Identifies the caller of a token request and attaches the result
/// ([`Authn`], with the snapshot it was checked against) to the request;
/// `Ok` carries the caller's metrics label, the key its concurrency slots
/// count against and whether it is unauthenticated (anonymous). A request
/// whose credentials fail is refused here (401), and so is every request
/// with credentials from a client that failed too often recently (429, see
/// [`crate::policy::throttle`]).
async fn authenticate(
    g: &Guard,
    req: &mut Request,
    get: bool,
) -> Result<(Option<Arc<str>>, SlotKey, bool), ApiError> {
    let snap = g.shared.current();
    let (ip, tls_names) = client_of(&snap, req);
    let names: &[String] = tls_names.as_deref().map_or(&[], Vec::as_slice);
    let key = bearer(req);
    if key.is_some() || !names.is_empty() {
        if let Err(wait) = g.shared.auth_throttle.check(ip) {
            return Err(throttled(wait));
        }
    }
    let identity = match identify(&snap.auth, key, names, ip, get).await {
        Ok(i) => i,
        Err(d) => {
            g.shared.auth_throttle.failed(ip);
            return Err(d.into());
        }
    };
    let authn = Authn::pinned(Ok(identity), arc_swap::Guard::into_inner(snap));
    Ok(attach(g, req, ip, tls_names, authn))
}

/// Identifies a request; a JWT signed with a key the cached JWKS lacks (a
/// rotation) gets one refetch (rate-limited per JWKS), then one more try.
async fn identify(
    auth: &crate::policy::Authenticator,
    key: Option<&str>,
    names: &[String],
    ip: std::net::IpAddr,
    get: bool,
) -> Result<crate::policy::Identity, crate::policy::Denial> {
    match auth.try_authenticate(key, names, ip, get) {
        Ok(i) => Ok(i),
        Err(JwtFail::Denied(d)) => Err(d),
        Err(JwtFail::UnknownKid(source, _)) => {
            source.refetch().await;
            auth.authenticate(key, names, ip, get)
        }
    }
}

/// The client address of a token request and its verified client
/// certificate names (only on TLS connections with one).
fn client_of(
    snap: &crate::state::Snapshot,
    req: &Request,
) -> (std::net::IpAddr, Option<Arc<Vec<String>>>) {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let headers = req.headers();
    let xff = || {
        headers
            .get(names::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
    };
    let ip = snap.auth.client_ip_with(peer, xff);
    let names = req
        .extensions()
        .get::<TlsClientNames>()
        .map(|n| Arc::clone(&n.0));
    (ip, names)
}

/// The failed-authentication throttle's refusal.
fn throttled(wait: Duration) -> ApiError {
    ApiError::new(
        Code::ResourceExhausted,
        "too many failed authentications from this address; retry later",
    )
    .retry_after(wait)
    .with_reason("AUTH_THROTTLED")
}

/// Attaches an authenticated `authn` to the request (and, to a
/// `WatchToken` request, what it presented, to identify it again at each
/// renewal); its metrics label, the key its concurrency slots count
/// against and whether it is anonymous.
fn attach(
    g: &Guard,
    req: &mut Request,
    ip: std::net::IpAddr,
    tls_names: Option<Arc<Vec<String>>>,
    authn: Authn,
) -> (Option<Arc<str>>, SlotKey, bool) {
    use crate::policy::Identity;
    let client = || SlotKey::Client(crate::policy::client_key(ip, g.slots.ipv6_prefix));
    let (label, slot_key, anonymous) = match &authn.identity {
        Ok(i @ Identity::Caller(c)) => (i.label(), SlotKey::Caller(Arc::clone(c)), false),
        Ok(i @ Identity::Anonymous(_)) => (i.label(), client(), true),
        // JWT callers: per client address (subjects are unbounded).
        Ok(i @ (Identity::Jwt(_) | Identity::Open)) => (i.label(), client(), false),
        Err(_) => (None, client(), false),
    };
    if req.uri().path() == WATCH_PATH {
        let is_jwt = matches!(authn.identity, Ok(Identity::Jwt(_)));
        let creds = crate::policy::Credentials {
            key: bearer(req).map(crate::policy::ApiKeyHash::of_key),
            jwt: is_jwt.then(|| bearer(req).map(Arc::from)).flatten(),
            tls_names: tls_names.unwrap_or_default(),
            ip,
        };
        req.extensions_mut().insert(creds);
    }
    req.extensions_mut().insert(authn);
    (label, slot_key, anonymous)
}

/// [`authenticate`] with the shared rate-limit store: one decision of the
/// store (at most one round trip) covers the failed-authentication
/// throttle (checked when credentials are presented, counted when they
/// fail) and the identity's bucket. The bucket's verdict travels in
/// [`Authn::rate_decision`], so a rate-limited request is refused, counted
/// and audited by the API like an in-process one. While the store is
/// down, `rate_limit_store_failure` decides: this replica's own limiters
/// (`local`) or UNAVAILABLE (`deny`).
async fn authenticate_shared(
    g: &Guard,
    store: &crate::policy::store::RateStore,
    req: &mut Request,
    get: bool,
) -> Result<(Option<Arc<str>>, SlotKey, bool), ApiError> {
    use crate::policy::store::{Ask, StoreFailure, Verdict};
    let snap = g.shared.current_full();
    let (ip, tls_names) = client_of(&snap, req);
    let names: &[String] = tls_names.as_deref().map_or(&[], Vec::as_slice);
    let key = bearer(req);
    // In open mode nothing fails authentication: no throttle to check.
    let check_throttle = (key.is_some() || !names.is_empty()) && !snap.auth.is_open();
    let identity = identify(&snap.auth, key, names, ip, get).await;
    // The GET endpoint is limited as BuildRtcToken (as in the API); a
    // path that names no RPC is answered without taking a token.
    let rpc = if get {
        Some("BuildRtcToken")
    } else {
        req.uri()
            .path()
            .strip_prefix(TOKEN_PREFIX)
            .filter(|n| crate::telemetry::metrics::Method::from_rpc_name(n).is_some())
    };
    let bucket = match (&identity, rpc) {
        (Ok(i), Some(rpc)) => snap.auth.store_bucket(i, rpc),
        _ => None,
    };
    let ask = Ask {
        ip,
        check_throttle,
        failed: identity.is_err(),
        bucket,
    };
    let verdict = match store.decide(&ask).await {
        Some(v) => v,
        None if store.config().failure == StoreFailure::Deny => {
            return Err(ApiError::new(
                Code::Unavailable,
                "the shared rate limit store is unavailable and rate_limit_store_failure = \"deny\": \
                 token requests are refused until it answers",
            )
            .retry_after(Duration::from_secs(1))
            .with_reason("RATE_LIMIT_STORE_UNAVAILABLE"));
        }
        // This replica's own limiters, with the same limits.
        None => {
            let throttled = if check_throttle {
                g.shared.auth_throttle.check(ip).err()
            } else {
                None
            };
            match (throttled, &identity) {
                (Some(wait), _) => Verdict::Throttled(wait),
                (None, Err(_)) => {
                    g.shared.auth_throttle.failed(ip);
                    Verdict::Failed
                }
                (None, Ok(i)) if bucket.is_some() => match snap.auth.take_local(i) {
                    Ok(()) => Verdict::Allowed,
                    Err(wait) => Verdict::RateLimited(wait),
                },
                (None, Ok(_)) => Verdict::Allowed,
            }
        }
    };
    let rate_decision = match verdict {
        Verdict::Throttled(wait) => return Err(throttled(wait)),
        Verdict::Failed | Verdict::Allowed => Ok(()),
        Verdict::RateLimited(wait) => Err(wait),
    };
    let mut authn = Authn::pinned(Ok(identity?), snap);
    // Without a bucket there is nothing to decide later either.
    authn.rate_decision = Some(rate_decision);
    Ok(attach(g, req, ip, tls_names, authn))
}

/// Marks the response of a refusal whose log lines were suppressed by its
/// [`LineBudget`](crate::telemetry::logging::LineBudget): its `request`
/// line is logged at debug level.
#[derive(Debug, Clone, Copy)]
struct SuppressedRefusal;

/// Counts, logs and audits a request refused by the guard; its `request
/// refused` line is logged only within `budget`. Returns whether the line
/// was logged.
#[allow(clippy::too_many_arguments)]
fn refused_early(
    g: &Guard,
    req: &Request,
    grpc: bool,
    get: bool,
    start: Instant,
    caller: &str,
    e: &ApiError,
    budget: &crate::telemetry::logging::LineBudget,
) -> bool {
    use crate::telemetry::metrics::{Method, Transport};
    let (transport, method) = if get {
        (Transport::Http, Some(Method::GetToken))
    } else {
        let name = req.uri().path().strip_prefix(TOKEN_PREFIX).unwrap_or("");
        let t = if grpc {
            Transport::Grpc
        } else {
            Transport::Json
        };
        (t, Method::from_rpc_name(name))
    };
    if let Some(m) = method {
        g.shared
            .metrics
            .request(transport, m, e.code, start.elapsed());
    }
    let rpc = method.map_or("unknown", |m| m.as_str());
    let logged =
        !tracing::enabled!(tracing::Level::INFO) || crate::telemetry::logging::admit_line(budget);
    if logged {
        tracing::info!(
            rpc,
            code = e.code_name(),
            reason = e.message.as_str(),
            "request refused"
        );
    }
    crate::telemetry::audit::refused_early(caller, rpc, &e.message);
    logged
}

/// `f`, or `None` when it has not completed `limit` after the call.
///
/// Like `tokio::time::timeout` (which it hands over to), but the timer is
/// registered only if `f` does not complete on its first poll, as token
/// requests (CPU work, no I/O) do: they skip the timer wheel's insert and
/// removal. The deadline counts from the call either way; a `limit` too
/// large to add to the clock means no timer.
pub(crate) async fn lazy_timeout<F: Future>(limit: Duration, f: F) -> Option<F::Output> {
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
pub(crate) fn request_id(req: &Request) -> HeaderValue {
    let given = req.headers().get(names::X_REQUEST_ID).filter(|v| {
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
    hex_id(splitmix64(
        key.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)),
    ))
}

/// `id` as 16 lowercase hex digits, most significant first, without
/// allocating beyond the header value itself.
fn hex_id(id: u64) -> HeaderValue {
    let mut hex = [0u8; 16];
    // Invariant: 8 bytes fill exactly 16 hex digits, so this cannot fail,
    // and 16 lowercase hex digits are a valid header value.
    let _ = hex::encode_to_slice(id.to_be_bytes(), &mut hex);
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A bijective mixer of 64-bit values (SplitMix64's finaliser): distinct
/// counters give distinct, scattered ids.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Request id and one log line per request (probes, scrapes and
/// successful token requests at debug level). Every line logged while the
/// request is served carries its id and peer ([`crate::telemetry::logfmt::scope`]):
/// no span is created, so a request that logs nothing pays nothing.
pub(crate) async fn request_context(req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let context = crate::telemetry::logfmt::RequestLog::new(id.as_bytes(), peer);
    // Cheap copies (the URI's bytes are reference counted).
    let uri = req.uri().clone();
    let method = req.method().clone();
    let start = Instant::now();
    // An HTTP/1.1 request with a body that the route may answer without
    // reading it (a 401, 404, 405, 413, 415, a refusal before routing):
    // track whether it was read, and close the connection after the
    // response when it was not (`Connection: close`), so the client does
    // not send its next request on a connection hyper will not reuse.
    let unread = if req.version() <= axum::http::Version::HTTP_11
        && !hyper::body::Body::is_end_stream(req.body())
    {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let req = req.map(|inner| axum::body::Body::new(TrackedBody { inner, done: flag }));
        (req, Some(done))
    } else {
        (req, None)
    };
    let (req, unread) = unread;
    crate::telemetry::logfmt::scope(context, async move {
        let mut resp = next.run(req).await;
        if unread.is_some_and(|d| !d.load(Ordering::Relaxed)) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let path = truncate(uri.path(), 128);
        let status = resp.status().as_u16();
        // Probes and scrapes at debug level; so are successful token
        // requests, whose audit event (with the same request id and peer)
        // already records them at info: one info line per token.
        // So is a refusal whose `request refused` line was suppressed.
        let quiet = matches!(path, "/healthz" | "/readyz" | "/metrics")
            || (is_token_path(path) && resp.status().is_success())
            || resp.extensions().get::<SuppressedRefusal>().is_some();
        if quiet {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let elapsed_ms = millis(start.elapsed());
                tracing::debug!(%method, path, status, elapsed_ms, "request");
            }
        } else if tracing::enabled!(tracing::Level::INFO)
            && crate::telemetry::logging::admit_line(&crate::telemetry::logging::REQUEST_LINES)
        {
            let elapsed_ms = millis(start.elapsed());
            tracing::info!(%method, path, status, elapsed_ms, "request");
        }
        resp.headers_mut().insert(names::X_REQUEST_ID, id);
        resp
    })
    .await
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Milliseconds with microsecond precision, as a log field: whole
/// microseconds divided by 1000 print as `1.034539`, where
/// `as_secs_f64() * 1000.0` printed `1.0345389999999999`.
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_16_hex_digits_or_the_callers() {
        for id in [0, 1, 0xf, 0x0123_4567_89ab_cdef, u64::MAX, splitmix64(7)] {
            assert_eq!(hex_id(id).as_bytes(), format!("{id:016x}").as_bytes());
        }
        let new = || request_id(&Request::new(axum::body::Body::empty()));
        let (a, b) = (new(), new());
        assert_ne!(a, b);
        for v in [&a, &b] {
            assert!(
                v.len() == 16
                    && v.as_bytes()
                        .iter()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        let mut req = Request::new(axum::body::Body::empty());
        req.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("req-1.a:b_c"));
        assert_eq!(request_id(&req), "req-1.a:b_c");
        req.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("no spaces"));
        assert_eq!(request_id(&req).len(), 16);
    }

    #[test]
    fn milliseconds_print_with_at_most_three_decimals() {
        let d = std::time::Duration::from_nanos(1_034_539_123);
        assert_eq!(millis(d).to_string(), "1034.539");
        let d = std::time::Duration::from_nanos(42_908_999);
        assert_eq!(millis(d).to_string(), "42.908");
        assert_eq!(
            millis(std::time::Duration::from_micros(1_034_539)).to_string(),
            "1034.539"
        );
    }
}
