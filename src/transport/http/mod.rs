//! The HTTP side of the one listener: the compatible
//! `GET /api/agora/token` (DESIGN 4.1), proto3 JSON for every RPC at
//! `POST /agora.token.v1.TokenService/<Method>` (Connect unary style),
//! `/healthz`, `/readyz` and `/metrics`, the JSON form of
//! `grpc.health.v1.Health/Check`, and `/openapi.json` (the OpenAPI 3.1
//! document of the JSON routes and the GET endpoint). Unknown paths get a plain 404.

mod get_token;
pub mod json;
mod json_rpc;
mod ops;

pub(crate) use json_rpc::json_health_check;
pub(crate) use ops::{healthz, metrics, readyz};

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::{ApiError, TokenApi};
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
            post(json_rpc::json_rpc),
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

/// An [`ApiError`] as a Connect error: the HTTP status of its code and the
/// body `{"code":"invalid_argument","message":"..."}`.
pub(crate) fn connect_error(e: &ApiError) -> Response {
    let body = serde_json::json!({ "code": e.code_name(), "message": e.message });
    let mut r = (status_of(e), body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_retry_after(&mut r, e);
    r
}

/// An [`ApiError`] as one line of plain text with its HTTP status (the GET
/// endpoint and refusals made before routing).
pub(crate) fn text_error(e: &ApiError) -> Response {
    let mut r = text(status_of(e), format!("{}\n", e.message));
    set_retry_after(&mut r, e);
    r
}

/// The authentication result the server attached (absent: fail closed).
pub(crate) fn authn_of(ext: Option<Extension<Authn>>) -> Authn {
    ext.map(|Extension(a)| a)
        .unwrap_or(Authn::new(Err(Denial::Unauthenticated(
            "the request was not authenticated",
        ))))
}
