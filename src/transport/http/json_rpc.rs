//! proto3 JSON for every RPC at `POST /agora.token.v1.TokenService/<Method>`
//! (Connect unary style), and the JSON form of `grpc.health.v1.Health/Check`.

use super::*;
use crate::api::{ApiError, RETRY_AFTER, TokenApi};
use crate::domain::IssueError;
use crate::policy::Authn;
use crate::telemetry::metrics::{Method, Transport, code_name};
use crate::transport::http::json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::time::Instant;
use tonic::{Code, Status};

/// An error of a JSON route: HTTP status plus the Connect error body
/// `{"code":"invalid_argument","message":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The gRPC code it stands for.
    pub code: Code,
    /// The message (never a secret: internal details are logged, not sent).
    pub message: String,
    status_override: Option<StatusCode>,
    /// Seconds to wait before retrying (rate limits), sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl HttpError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status_override: None,
            retry_after: None,
        }
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status_override = Some(status);
        self
    }

    /// The HTTP status of a gRPC code (the Connect protocol's table).
    pub fn http_status(code: Code) -> StatusCode {
        match code {
            Code::Ok => StatusCode::OK,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            // 499: client closed request (Connect's mapping of canceled).
            Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Status> for HttpError {
    fn from(s: Status) -> Self {
        let mut e = Self::new(s.code(), s.message());
        e.retry_after = s
            .metadata()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        e
    }
}

impl From<IssueError> for HttpError {
    fn from(e: IssueError) -> Self {
        Status::from(e).into()
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Status::from(e).into()
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self
            .status_override
            .unwrap_or_else(|| Self::http_status(self.code));
        let body = serde_json::json!({ "code": code_name(self.code), "message": self.message });
        let mut r = (status, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

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
) -> Result<Vec<u8>, HttpError>
where
    Req: serde::de::DeserializeOwned,
    Resp: serde::Serialize,
{
    let req = json::decode::<Req>(body)
        .map_err(|e| HttpError::new(Code::InvalidArgument, e.to_string()))?;
    let resp = f(req)?;
    json::encode(&resp).map_err(|e| {
        tracing::error!(error = %e, "cannot encode a response");
        HttpError::new(Code::Internal, "internal error")
    })
}

pub(crate) fn dispatch(
    api: &TokenApi,
    who: &Authn,
    method: Method,
    body: &[u8],
) -> Result<Vec<u8>, HttpError> {
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
        Method::GetToken => Err(HttpError::new(Code::Unimplemented, "no such method")),
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

pub(crate) async fn read_body(body: Body, max: usize) -> Result<Bytes, HttpError> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(HttpError::new(
            Code::ResourceExhausted,
            format!("body: larger than {max} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)),
        Err(_) => Err(HttpError::new(
            Code::InvalidArgument,
            "body: could not be read",
        )),
    }
}

pub(crate) async fn json_rpc(
    State(s): State<HttpState>,
    who: Option<Extension<Authn>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(method) = Method::from_rpc_name(&name) else {
        return not_found().await;
    };
    let start = Instant::now();
    let result = async {
        if !is_json(&headers) {
            return Err(HttpError::new(
                Code::InvalidArgument,
                "content-type: must be application/json",
            )
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = read_body(body, s.max_body).await?;
        dispatch(&s.api, &authn_of(who), method, &bytes)
    }
    .await;
    let code = result.as_ref().map_or_else(|e| e.code, |_| Code::Ok);
    s.api
        .shared()
        .metrics
        .request(Transport::Json, method, code, start.elapsed());
    match result {
        Ok(body) => json_response(body),
        Err(e) => {
            tracing::info!(rpc = method.as_str(), code = code_name(e.code), reason = %e.message, "request refused");
            e.into_response()
        }
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
            return Err(HttpError::new(
                Code::InvalidArgument,
                "content-type: must be application/json",
            )
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = read_body(body, s.max_body).await?;
        let req = json::decode::<HealthCheckJson>(&bytes)
            .map_err(|e| HttpError::new(Code::InvalidArgument, e.to_string()))?;
        if !matches!(req.service.as_str(), "" | "agora.token.v1.TokenService") {
            return Err(HttpError::new(Code::NotFound, "service: unknown service"));
        }
        let status = if s.api.shared().is_ready() {
            "SERVING"
        } else {
            "NOT_SERVING"
        };
        json::encode(&HealthStatusJson { status }).map_err(|e| {
            tracing::error!(error = %e, "cannot encode a response");
            HttpError::new(Code::Internal, "internal error")
        })
    }
    .await;
    match result {
        Ok(body) => json_response(body),
        Err(e) => e.into_response(),
    }
}
