//! The HTTP side of the one listener: the compatible
//! `GET /api/agora/token` (DESIGN 4.1), proto3 JSON for every RPC at
//! `POST /agora.token.v1.TokenService/<Method>` (Connect unary style),
//! `/healthz`, `/readyz` and `/metrics`, and the JSON form of
//! `grpc.health.v1.Health/Check`. Unknown paths get a plain 404.

mod get_token;
pub mod json;
mod json_rpc;
mod ops;

pub(crate) use get_token::*;
pub use json_rpc::*;
pub(crate) use ops::*;

use crate::api::TokenApi;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn connect_status_table() {
        assert_eq!(
            HttpError::http_status(Code::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            HttpError::http_status(Code::NotFound),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            HttpError::http_status(Code::Unauthenticated),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            HttpError::http_status(Code::PermissionDenied),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            HttpError::http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            HttpError::http_status(Code::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
