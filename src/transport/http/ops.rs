//! Operations routes: `/healthz`, `/readyz`, `/metrics`.

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
            text(StatusCode::OK, "ready\n")
        }
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
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
