//! Operations routes: `/healthz`, `/readyz`, `/metrics`; and
//! `/openapi.json` (main port only).

use super::*;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

pub(crate) async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

pub(crate) async fn readyz(State(s): State<HttpState>) -> Response {
    let shared = s.api.shared();
    if shared.is_ready() {
        if shared.current().auth.is_open() {
            // Said on every probe, so nobody runs an open authority by accident.
            text(
                StatusCode::OK,
                "ready (OPEN: no callers are configured, any client can get tokens)\n",
            )
        } else {
            match shared.current().auth.jwks_status() {
                Ok(stale) if !stale.is_empty() => text(
                    StatusCode::OK,
                    format!("ready (degraded: {})\n", stale.join("; ")),
                ),
                _ => text(StatusCode::OK, "ready\n"),
            }
        }
    } else if !crate::telemetry::audit_file::healthy() {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready (the audit log cannot be written: no token is issued until it can)\n",
        )
    } else if let Err(e) = shared.current().auth.jwks_status() {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready (JWT keys: {e})\n"),
        )
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub(crate) async fn metrics(State(s): State<HttpState>) -> Response {
    let shared = s.api.shared();
    if !shared.metrics.is_enabled() {
        return text(
            StatusCode::NOT_FOUND,
            "metrics are disabled (--no-metrics)
",
        );
    }
    let mut body = shared.metrics.render(shared.is_ready());
    let open = u8::from(shared.current().auth.is_open());
    body.push_str(
        "# HELP token_authority_open_mode 1 when no callers are configured (anyone can get tokens).
\
         # TYPE token_authority_open_mode gauge
",
    );
    body.push_str(&format!(
        "token_authority_open_mode {open}
"
    ));
    if let Some(store) = &shared.rate_store {
        store.render_metrics(&mut body);
    }
    if let Some(a) = crate::telemetry::audit_file::device() {
        body.push_str(&format!(
            "# HELP token_authority_audit_write_failures_total Audit log writes that failed (no token was returned for their records).\n\
             # TYPE token_authority_audit_write_failures_total counter\n\
             token_authority_audit_write_failures_total {}\n\
             # HELP token_authority_audit_records_total Audit records written to the audit log.\n\
             # TYPE token_authority_audit_records_total counter\n\
             token_authority_audit_records_total {}\n\
             # HELP token_authority_audit_healthy 1 when the last audit log write succeeded.\n\
             # TYPE token_authority_audit_healthy gauge\n\
             token_authority_audit_healthy {}\n",
            a.failures(),
            a.records(),
            u8::from(a.is_healthy())
        ));
    }
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The OpenAPI 3.1 document of the JSON routes and the GET endpoint:
/// `docs/openapi.json`, generated from the proto and kept current by
/// tests/service/openapi.rs.
pub(crate) const OPENAPI: &str = include_str!("../../../docs/openapi.json");

pub(crate) async fn openapi() -> Response {
    let mut r = (StatusCode::OK, OPENAPI).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
