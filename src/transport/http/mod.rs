//! The HTTP side of the one listener: the compatible
//! `GET /api/agora/token` (DESIGN 4.1), the Connect protocol's unary RPCs
//! for every method at `POST /agora.token.v1.TokenService/<Method>` (JSON
//! and binary protobuf, gzip; GET for `InspectToken`: [`connect`]),
//! `/healthz`, `/readyz` and `/metrics`, the JSON form of
//! `grpc.health.v1.Health/Check`, and `/openapi.json` (the OpenAPI 3.1
//! document of the JSON routes and the GET endpoint). Unknown paths get a
//! plain 404.

pub mod connect;
mod get_token;
pub mod json;
mod ops;

pub(crate) use connect::json_health_check;
pub(crate) use ops::{healthz, metrics, readyz};

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::{ApiError, TokenApi};

/// Header names read or written on every request, parsed once at compile
/// time (a `&str` name is parsed and validated at each use).
pub(crate) mod names {
    use axum::http::HeaderName;
    pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub(crate) const X_ERROR_REASON: HeaderName = HeaderName::from_static("x-error-reason");
    pub(crate) const CONNECT_PROTOCOL_VERSION: HeaderName =
        HeaderName::from_static("connect-protocol-version");
    pub(crate) const CONNECT_TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");
    pub(crate) const CONNECT_CONTENT_ENCODING: HeaderName =
        HeaderName::from_static("connect-content-encoding");
    pub(crate) const ACCEPT_POST: HeaderName = HeaderName::from_static("accept-post");
}
use crate::policy::{Authn, Denial};

/// Default JSON request body limit, in bytes.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// State of the HTTP routes.
#[derive(Debug, Clone)]
pub struct HttpState {
    api: TokenApi,
    max_body: usize,
}

impl HttpState {
    /// Routes over `api`, refusing JSON bodies above `max_body` bytes.
    pub fn new(api: TokenApi, max_body: usize) -> Self {
        Self { api, max_body }
    }
}

/// The main port's HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/api/agora/token", get(get_token::get_token))
        .route(
            "/agora.token.v1.TokenService/{method}",
            post(connect::connect_post).get(connect::connect_get),
        )
        .route("/grpc.health.v1.Health/Check", post(json_health_check))
        .route("/openapi.json", get(ops::openapi))
        .merge(ops_routes())
        .fallback(not_found)
        .with_state(state)
}

/// The admin port's routes: health, readiness and metrics only.
pub fn admin_router(state: HttpState) -> Router {
    ops_routes().fallback(not_found).with_state(state)
}

pub(crate) fn ops_routes() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// A plain-text 404.
pub async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

pub(crate) fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The HTTP status of an [`ApiError`].
pub(crate) fn status_of(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `Retry-After` (whole seconds) when the error carries a wait.
pub(crate) fn set_retry_after(r: &mut Response, e: &ApiError) {
    if let Some(v) = e
        .retry_after_secs()
        .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

/// `WWW-Authenticate: Bearer ...` (RFC 6750) on a 401.
pub(crate) fn set_www_authenticate(r: &mut Response, e: &ApiError) {
    if let Some(v) = e.www_authenticate() {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
    }
}

/// The body of a Connect error: `{"code":"invalid_argument","message":"...",
/// "details":[{"type":"google.rpc.ErrorInfo","value":"<base64 protobuf>",
/// "debug":{...}}]}` (values in unpadded standard base64, as connect-go
/// writes them; `debug` is the detail in JSON, for people).
pub(crate) fn connect_error_body(e: &ApiError) -> String {
    connect_error_json(e).to_string()
}

/// [`connect_error_body`] as a JSON value (also the `error` of a Connect
/// stream's end message).
pub(crate) fn connect_error_json(e: &ApiError) -> serde_json::Value {
    use base64::Engine as _;
    let details: Vec<serde_json::Value> = e
        .details()
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "type": d.type_name,
                "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&d.value),
                "debug": d.debug,
            })
        })
        .collect();
    serde_json::json!({ "code": e.code_name(), "message": e.message, "details": details })
}

/// An [`ApiError`] as a Connect error: the HTTP status of its code (the
/// specification's table) and [`connect_error_body`]; `Retry-After` with
/// a wait, `WWW-Authenticate` on 401.
pub(crate) fn connect_error(e: &ApiError) -> Response {
    let mut r = (status_of(e), connect_error_body(e)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_retry_after(&mut r, e);
    set_www_authenticate(&mut r, e);
    r
}

/// An [`ApiError`] as one line of plain text with its HTTP status (the GET
/// endpoint and refusals made before routing), with its stable reason in
/// `x-error-reason`.
pub(crate) fn text_error(e: &ApiError) -> Response {
    let mut r = text(status_of(e), format!("{}\n", e.message));
    set_retry_after(&mut r, e);
    set_www_authenticate(&mut r, e);
    set_reason(&mut r, e);
    r
}

/// `x-error-reason`: the stable `ErrorInfo` reason of a plain-text error.
pub(crate) fn set_reason(r: &mut Response, e: &ApiError) {
    if let Ok(v) = HeaderValue::from_str(&e.reason()) {
        r.headers_mut().insert(names::X_ERROR_REASON, v);
    }
}

/// The authentication result the server attached (absent: fail closed).
pub(crate) fn authn_of(ext: Option<Extension<Authn>>) -> Authn {
    ext.map(|Extension(a)| a)
        .unwrap_or(Authn::new(Err(Denial::Unauthenticated(
            "the request was not authenticated",
        ))))
}
