//! proto3 JSON for every RPC at `POST /agora.token.v1.TokenService/<Method>`
//! (Connect unary style), and the JSON form of `grpc.health.v1.Health/Check`.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{HttpState, authn_of, connect_error, json, not_found};
use crate::api::{ApiError, Code, TokenApi};
use crate::policy::Authn;
use crate::telemetry::metrics::{Method, Transport};

/// A 200 with a JSON body.
pub(crate) fn json_response(body: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Decodes, calls and encodes one JSON RPC.
pub(crate) fn run<Req, Resp>(
    body: &[u8],
    f: impl FnOnce(Req) -> Result<Resp, ApiError>,
) -> Result<Vec<u8>, ApiError>
where
    Req: serde::de::DeserializeOwned,
    Resp: serde::Serialize,
{
    let req = json::decode::<Req>(body).map_err(|e| ApiError::invalid(e.field, e.problem))?;
    let resp = f(req)?;
    json::encode(&resp).map_err(|e| {
        tracing::error!(error = %e, "cannot encode a response");
        ApiError::internal()
    })
}

pub(crate) fn dispatch(
    api: &TokenApi,
    who: &Authn,
    method: Method,
    body: &[u8],
) -> Result<Vec<u8>, ApiError> {
    match method {
        Method::BuildRtcToken => run(body, |r| api.build_rtc_token(who, r)),
        Method::BuildRtcTokenWithPrivileges => {
            run(body, |r| api.build_rtc_token_with_privileges(who, r))
        }
        Method::BuildRtcRtmToken => run(body, |r| api.build_rtc_rtm_token(who, r)),
        Method::BuildRtmToken => run(body, |r| api.build_rtm_token(who, r)),
        Method::BuildChatUserToken => run(body, |r| api.build_chat_user_token(who, r)),
        Method::BuildChatAppToken => run(body, |r| api.build_chat_app_token(who, r)),
        Method::BuildFpaToken => run(body, |r| api.build_fpa_token(who, r)),
        Method::BuildApaasToken => run(body, |r| api.build_apaas_token(who, r)),
        Method::BuildToken => run(body, |r| api.build_token(who, r)),
        Method::InspectToken => run(body, |r| api.inspect_token(who, r)),
        Method::BuildAgentSession => run(body, |r| api.build_agent_session(who, r)),
        Method::GetToken => Err(ApiError::new(Code::Unimplemented, "no such method")),
    }
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        // curl -d without -H sends a form content type; a missing one is fine.
        None => true,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")),
    }
}

pub(crate) async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            Code::ResourceExhausted,
            format!("body: larger than {max} bytes"),
        )
        .with_http_status(StatusCode::PAYLOAD_TOO_LARGE.as_u16())),
        Err(_) => Err(ApiError::invalid("body", "could not be read")),
    }
}

pub(crate) async fn json_rpc(
    State(s): State<HttpState>,
    who: Option<Extension<Authn>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if name == "WatchToken" {
        return connect_error(&ApiError::new(
            Code::Unimplemented,
            "WatchToken is a server stream: call it over gRPC (Connect and gRPC-Web streaming are not served yet)",
        ));
    }
    let Some(method) = Method::from_rpc_name(&name) else {
        return not_found().await;
    };
    let start = Instant::now();
    let result = async {
        if !is_json(&headers) {
            return Err(unsupported_media_type());
        }
        let bytes = read_body(body, s.max_body).await?;
        let who = authn_of(who);
        s.api.run(|api| dispatch(api, &who, method, &bytes)).await
    }
    .await;
    match s.api.finish(Transport::Json, method, start, result) {
        Ok(body) => json_response(body),
        Err(e) => connect_error(&e),
    }
}

/// The JSON form of `grpc.health.v1.HealthCheckRequest`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckJson {
    #[serde(default)]
    service: String,
}

/// The JSON form of `grpc.health.v1.HealthCheckResponse`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct HealthStatusJson {
    status: &'static str,
}

/// `POST /grpc.health.v1.Health/Check` with JSON: `{"status":"SERVING"}`
/// (or `NOT_SERVING` while shutting down) for `""` and the token service,
/// `not_found` for any other service, as the gRPC health service answers.
/// It passes through the same body reading, decoding and encoding as the
/// token routes, so it is the fair trivial baseline for them.
pub(crate) async fn json_health_check(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        if !is_json(&headers) {
            return Err(unsupported_media_type());
        }
        let bytes = read_body(body, s.max_body).await?;
        let req = json::decode::<HealthCheckJson>(&bytes)
            .map_err(|e| ApiError::invalid(e.field, e.problem))?;
        if !matches!(req.service.as_str(), "" | "agora.token.v1.TokenService") {
            return Err(ApiError::new(Code::NotFound, "service: unknown service"));
        }
        let status = if s.api.shared().is_ready() {
            "SERVING"
        } else {
            "NOT_SERVING"
        };
        json::encode(&HealthStatusJson { status }).map_err(|e| {
            tracing::error!(error = %e, "cannot encode a response");
            ApiError::internal()
        })
    }
    .await;
    match result {
        Ok(body) => json_response(body),
        Err(e) => connect_error(&e),
    }
}

/// 415: the JSON routes take `application/json` only.
fn unsupported_media_type() -> ApiError {
    ApiError::invalid("content-type", "must be application/json")
        .with_http_status(StatusCode::UNSUPPORTED_MEDIA_TYPE.as_u16())
}
