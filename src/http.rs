//! The HTTP side of the one listener: the compatible
//! `GET /api/agora/token` (DESIGN 4.1), proto3 JSON for every RPC at
//! `POST /agora.token.v1.TokenService/<Method>` (Connect unary style),
//! `/healthz`, `/readyz` and `/metrics`, and the JSON form of
//! `grpc.health.v1.Health/Check` (the trivial JSON route the load generator
//! compares the token routes with). Unknown paths get a plain 404.
//!
//! Errors of the JSON routes go through one type, [`HttpError`], built from
//! the gRPC [`Status`] the issuer error maps to, so both transports report
//! the same code and message.

use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tonic::{Code, Status};

use crate::auth::{Authn, Denial};
use crate::grpc::{ApiError, RETRY_AFTER, TokenApi};
use crate::issuer::{Common, IssueError, RtcRequest, RtcUser};
use crate::json;
use crate::metrics::{Method, Transport, code_name};
use crate::rules;

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
        .route("/api/agora/token", get(get_token))
        .route("/agora.token.v1.TokenService/{method}", post(json_rpc))
        .route("/grpc.health.v1.Health/Check", post(json_health_check))
        .merge(ops_routes())
        .fallback(not_found)
        .with_state(state)
}

/// The admin port's routes: health, readiness and metrics only.
pub fn admin_router(state: HttpState) -> Router {
    ops_routes().fallback(not_found).with_state(state)
}

fn ops_routes() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// A plain-text 404.
pub async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn readyz(State(s): State<HttpState>) -> Response {
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

async fn metrics(State(s): State<HttpState>) -> Response {
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

// ---------------------------------------------------------------------------
// GET /api/agora/token
// ---------------------------------------------------------------------------

/// The compatible endpoint's parameters, as received.
#[derive(Debug, Default)]
struct GetParams {
    channel_name: Option<String>,
    uid: Option<String>,
    role: Option<String>,
    expire_seconds: Option<String>,
}

impl GetParams {
    /// Decodes the query as a form (`+` is a space, `%2B` a plus). The first
    /// occurrence of a parameter wins; unknown parameters are ignored.
    fn parse(query: &str) -> Self {
        let mut p = Self::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "channelName" => &mut p.channel_name,
                "uid" => &mut p.uid,
                "role" => &mut p.role,
                "expireSeconds" => &mut p.expire_seconds,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        p
    }
}

/// A `400` line for the GET endpoint.
fn bad_param(param: &str, why: &str) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("{param}: {why}\n"))
}

/// The issuer names fields as in the proto; the GET endpoint's parameters
/// are named differently.
fn get_param_name(field: &str) -> &str {
    match field {
        "channel_name" => "channelName",
        "expire_seconds" | "privilege_expire_seconds" => "expireSeconds",
        "account" => "uid",
        other => other,
    }
}

/// A refusal of the GET endpoint: status, one line of text, and for rate
/// limits the seconds to wait.
type GetError = (StatusCode, String, Option<u64>);

fn get_token_inner(api: &TokenApi, who: &Authn, query: &str) -> Result<String, GetError> {
    let bad = |param: &str, why: &str| -> GetError {
        let (s, b) = bad_param(param, why);
        (s, b, None)
    };
    let p = GetParams::parse(query);
    let Some(channel_name) = p.channel_name else {
        return Err(bad(
            "channelName",
            "is required (an empty value means any channel)",
        ));
    };
    let uid = match p.uid.as_deref() {
        None => 0,
        Some(s) => rules::parse_uid("uid", s).map_err(|v| bad("uid", &v.rule))?,
    };
    let role = match p.role.as_deref() {
        None | Some("publisher") => agora_token::Role::Publisher,
        Some("subscriber") => agora_token::Role::Subscriber,
        Some(_) => return Err(bad("role", "must be publisher or subscriber")),
    };
    let expire = match p.expire_seconds.as_deref() {
        None => None,
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            // Too many digits for a u32 is out of range; let the issuer say so.
            Some(s.parse::<u32>().unwrap_or(u32::MAX))
        }
        Some(_) => {
            return Err(bad(
                "expireSeconds",
                "must be a decimal integer of seconds (digits only)",
            ));
        }
    };
    let req = RtcRequest {
        common: Common {
            app_id: None,
            expire,
        },
        channel_name,
        user: RtcUser::Uid(uid),
        role,
        privilege_expire: expire,
    };
    match api.rtc(who, Method::GetToken, &req) {
        Ok(issued) => Ok(issued.token),
        Err(ApiError::Issue(IssueError::Invalid(v))) => Err(bad(get_param_name(&v.field), &v.rule)),
        Err(ApiError::Issue(e @ IssueError::UnknownApp(_))) => {
            tracing::error!(error = %e, "no default app configured");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "token generation failed\n".to_owned(),
                None,
            ))
        }
        Err(e @ ApiError::Denied(_)) => {
            // The one mapping (ApiError -> Status -> HTTP status, Retry-After).
            let e = HttpError::from(e);
            Err((
                HttpError::http_status(e.code),
                format!("{}\n", e.message),
                e.retry_after,
            ))
        }
    }
}

/// The authentication result the server attached (absent: fail closed).
fn authn_of(ext: Option<Extension<Authn>>) -> Authn {
    ext.map(|Extension(a)| a)
        .unwrap_or(Authn::new(Err(Denial::Unauthenticated(
            "the request was not authenticated",
        ))))
}

async fn get_token(
    State(s): State<HttpState>,
    who: Option<Extension<Authn>>,
    uri: Uri,
) -> Response {
    let start = Instant::now();
    let who = authn_of(who);
    let result = get_token_inner(&s.api, &who, uri.query().unwrap_or(""));
    let (status, body, retry) = match result {
        Ok(token) => (StatusCode::OK, token, None),
        Err(e) => e,
    };
    let code = match status {
        StatusCode::OK => Code::Ok,
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    if code != Code::Ok {
        tracing::info!(
            rpc = "GetToken",
            code = code_name(code),
            reason = body.trim_end(),
            "request refused"
        );
    }
    s.api
        .shared()
        .metrics
        .request(Transport::Http, Method::GetToken, code, start.elapsed());
    let mut r = text(status, body);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

// ---------------------------------------------------------------------------
// JSON for every RPC
// ---------------------------------------------------------------------------

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

fn json_response(body: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Decodes, calls and encodes one JSON RPC.
fn run<Req, Resp>(
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

fn dispatch(
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

fn is_json(headers: &HeaderMap) -> bool {
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

async fn read_body(body: Body, max: usize) -> Result<Bytes, HttpError> {
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

async fn json_rpc(
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

// ---------------------------------------------------------------------------
// JSON grpc.health.v1.Health/Check
// ---------------------------------------------------------------------------

/// The JSON form of `grpc.health.v1.HealthCheckRequest`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckJson {
    #[serde(default)]
    service: String,
}

/// The JSON form of `grpc.health.v1.HealthCheckResponse`.
#[derive(Debug, serde::Serialize)]
struct HealthStatusJson {
    status: &'static str,
}

/// `POST /grpc.health.v1.Health/Check` with JSON: `{"status":"SERVING"}`
/// (or `NOT_SERVING` while shutting down) for `""` and the token service,
/// `not_found` for any other service, as the gRPC health service answers.
/// It passes through the same body reading, decoding and encoding as the
/// token routes, so it is the fair trivial baseline for them.
async fn json_health_check(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_params_are_a_form() {
        let p = GetParams::parse("channelName=a+b%2Bc&uid=1&uid=2&x=y&role=subscriber");
        assert_eq!(p.channel_name.as_deref(), Some("a b+c"));
        assert_eq!(p.uid.as_deref(), Some("1"));
        assert_eq!(p.role.as_deref(), Some("subscriber"));
        assert_eq!(p.expire_seconds, None);
        let p = GetParams::parse("channelName=");
        assert_eq!(p.channel_name.as_deref(), Some(""));
    }

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
