//! The Connect protocol's unary RPCs (<https://connectrpc.com/docs/protocol>)
//! for every TokenService method at `POST /agora.token.v1.TokenService/<Method>`,
//! Connect GET for the methods without side effects (`InspectToken`),
//! Connect server streaming for `WatchToken`, and the JSON form of
//! `grpc.health.v1.Health/Check`.
//!
//! - Codecs: `application/json` (proto3 JSON, parsed leniently: see
//!   [`json::decode_lenient`]) and `application/proto` (binary protobuf).
//!   A request without a content type is JSON (curl). Any other is 415
//!   with `Accept-Post` naming the two, as the specification says.
//! - Compression: request `Content-Encoding: gzip | identity` (anything
//!   else: `unimplemented`); the response is gzipped when the client's
//!   `Accept-Encoding` allows it and the body is at least
//!   [`COMPRESS_MIN_BYTES`].
//! - `Connect-Protocol-Version`: optional (curl); when sent it must be `1`.
//! - `Connect-Timeout-Ms`: the call's deadline; past it the call ends with
//!   `deadline_exceeded`.
//! - Errors: the Connect JSON error (`code`, `message`, `details` with
//!   `google.rpc.ErrorInfo`, `BadRequest`, `RetryInfo`) with the HTTP status
//!   of the code from the specification's table.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{HttpState, authn_of, connect_error, json};
use crate::api::watch::WatchItem;
use crate::api::{ApiError, Code, TokenApi};
use crate::pb;
use crate::policy::{Authn, Credentials, Denial};
use crate::telemetry::metrics::{Method, Transport};

pub use crate::transport::COMPRESS_MIN_BYTES;

/// What `Accept-Post` lists on a 415.
const ACCEPT_POST: &str = "application/json, application/proto";

/// A message codec of the Connect protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// `application/json`: proto3 JSON.
    Json,
    /// `application/proto`: binary protobuf.
    Proto,
}

impl Codec {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Json => "application/json",
            Self::Proto => "application/proto",
        })
    }

    /// The codec a `Content-Type` names (parameters such as
    /// `charset=utf-8` ignored); none means JSON (curl). `None`: not one
    /// this server speaks.
    fn of_content_type(headers: &HeaderMap) -> Option<Self> {
        let Some(v) = headers.get(header::CONTENT_TYPE) else {
            return Some(Self::Json);
        };
        let t = v.to_str().ok()?.split(';').next()?.trim();
        if t.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if t.eq_ignore_ascii_case("application/proto") {
            Some(Self::Proto)
        } else {
            None
        }
    }
}

/// A 200 with a body in `codec`, gzipped when `gzip` and large enough.
fn ok_response(codec: Codec, body: Vec<u8>, gzip: bool) -> Response {
    let (body, compressed) = if gzip && body.len() >= COMPRESS_MIN_BYTES {
        match gzip_bytes(&body) {
            Some(z) => (z, true),
            None => (body, false),
        }
    } else {
        (body, false)
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, codec.content_type());
    if compressed {
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// A 200 with a JSON body.
pub(crate) fn json_response(body: Vec<u8>) -> Response {
    ok_response(Codec::Json, body, false)
}

/// `body`, gzipped (`None` only if the in-memory compressor failed).
fn gzip_bytes(body: &[u8]) -> Option<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2 + 32),
        flate2::Compression::fast(),
    );
    z.write_all(body).ok()?;
    z.finish().ok()
}

/// `body` gunzipped, at most `max` bytes.
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(2).min(max));
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::invalid("body", "is not valid gzip (content-encoding: gzip)"))?;
    if out.len() > max {
        return Err(too_large(max));
    }
    Ok(out)
}

/// Is gzip acceptable to the client (`Accept-Encoding`, `q=0` refuses)?
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Whether the request body is gzipped (`Content-Encoding`); anything but
/// `gzip` and `identity` is `unimplemented`, as the specification says.
fn request_gzipped(encoding: Option<&HeaderValue>) -> Result<bool, ApiError> {
    let Some(v) = encoding else {
        return Ok(false);
    };
    match v.to_str().map(str::trim) {
        Ok(e) if e.eq_ignore_ascii_case("gzip") => Ok(true),
        Ok(e) if e.eq_ignore_ascii_case("identity") || e.is_empty() => Ok(false),
        _ => Err(ApiError::new(
            Code::Unimplemented,
            "content-encoding: unsupported; this server accepts gzip and identity",
        )
        .with_reason("UNSUPPORTED_COMPRESSION")),
    }
}

/// The checks of the Connect headers: `Connect-Protocol-Version` (when
/// sent, `1`) and `Connect-Timeout-Ms` (the deadline, when sent).
fn connect_headers(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    if let Some(v) = headers.get(super::names::CONNECT_PROTOCOL_VERSION) {
        if v.as_bytes() != b"1" {
            return Err(ApiError::invalid(
                "connect-protocol-version",
                "must be 1 (the only version of the Connect protocol)",
            ));
        }
    }
    match headers.get(super::names::CONNECT_TIMEOUT_MS) {
        None => Ok(None),
        Some(v) => {
            let b = v.as_bytes();
            if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
                return Err(ApiError::invalid(
                    "connect-timeout-ms",
                    "must be a positive integer of at most 10 digits",
                ));
            }
            let ms = std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            Ok(Some(Duration::from_millis(ms)))
        }
    }
}

fn deadline_exceeded() -> ApiError {
    ApiError::new(
        Code::DeadlineExceeded,
        "the call's deadline (connect-timeout-ms) passed before it completed",
    )
}

/// Decodes a request in `codec`, calls `f` and encodes its response.
pub(crate) fn run<Req, Resp>(
    codec: Codec,
    body: &[u8],
    f: impl FnOnce(Req) -> Result<Resp, ApiError>,
) -> Result<Vec<u8>, ApiError>
where
    Req: serde::de::DeserializeOwned + prost::Message + Default,
    Resp: serde::Serialize + prost::Message,
{
    let req = match codec {
        Codec::Json => {
            json::decode_lenient::<Req>(body).map_err(|e| ApiError::invalid(e.field, e.problem))?
        }
        Codec::Proto => Req::decode(body).map_err(|e| {
            ApiError::invalid("body", format!("is not a valid protobuf message: {e}"))
        })?,
    };
    let resp = f(req)?;
    match codec {
        Codec::Json => json::encode(&resp).map_err(|e| {
            tracing::error!(error = %e, "cannot encode a response");
            ApiError::internal()
        }),
        Codec::Proto => Ok(resp.encode_to_vec()),
    }
}

pub(crate) fn dispatch(
    api: &TokenApi,
    who: &Authn,
    method: Method,
    codec: Codec,
    body: &[u8],
) -> Result<Vec<u8>, ApiError> {
    match method {
        Method::BuildRtcToken => run(codec, body, |r| api.build_rtc_token(who, r)),
        Method::BuildRtcTokenWithPrivileges => {
            run(codec, body, |r| api.build_rtc_token_with_privileges(who, r))
        }
        Method::BuildRtcRtmToken => run(codec, body, |r| api.build_rtc_rtm_token(who, r)),
        Method::BuildRtmToken => run(codec, body, |r| api.build_rtm_token(who, r)),
        Method::BuildChatUserToken => run(codec, body, |r| api.build_chat_user_token(who, r)),
        Method::BuildChatAppToken => run(codec, body, |r| api.build_chat_app_token(who, r)),
        Method::BuildFpaToken => run(codec, body, |r| api.build_fpa_token(who, r)),
        Method::BuildApaasToken => run(codec, body, |r| api.build_apaas_token(who, r)),
        Method::BuildToken => run(codec, body, |r| api.build_token(who, r)),
        Method::InspectToken => run(codec, body, |r| api.inspect_token(who, r)),
        Method::BuildAgentSession => run(codec, body, |r| api.build_agent_session(who, r)),
        Method::GetToken => Err(ApiError::new(Code::Unimplemented, "no such method")),
    }
}

/// The request body's bytes, at most `max` (RESOURCE_EXHAUSTED beyond,
/// HTTP 429 as the Connect table maps that code: a body too large is the
/// client exceeding a limit, like connect-go's read limit).
pub(crate) async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(max)),
        Err(_) => Err(ApiError::invalid("body", "could not be read")),
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        Code::ResourceExhausted,
        format!("body: larger than {max} bytes (max_request_bytes)"),
    )
    .with_reason("REQUEST_TOO_LARGE")
}

/// 415 for a content type that is neither Connect codec: an empty body
/// and `Accept-Post`, as the specification says (Connect clients map the
/// status to `unknown`; the header tells people what to send).
fn unsupported_media_type() -> Response {
    let mut r = (StatusCode::UNSUPPORTED_MEDIA_TYPE, Body::empty()).into_response();
    r.headers_mut().insert(
        super::names::ACCEPT_POST,
        HeaderValue::from_static(ACCEPT_POST),
    );
    r
}

/// A Connect unary call over POST (or the `WatchToken` stream).
pub(crate) async fn connect_post(
    State(s): State<HttpState>,
    who: Option<Extension<Authn>>,
    creds: Option<Extension<Credentials>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if name == "WatchToken" {
        if let Some(codec) = StreamCodec::of_content_type(&headers) {
            return connect_watch(&s, who, creds, codec, &headers, body).await;
        }
    }
    let Some(method) = rpc_method(&name) else {
        return unknown_method(&name);
    };
    let Some(codec) = Codec::of_content_type(&headers) else {
        return unsupported_media_type();
    };
    let gzip_out = accepts_gzip(&headers);
    let start = Instant::now();
    let result = async {
        let deadline = connect_headers(&headers)?;
        let gzipped = request_gzipped(headers.get(header::CONTENT_ENCODING))?;
        let raw = read_body(body, s.max_body).await?;
        let bytes = if gzipped {
            Bytes::from(gunzip(&raw, s.max_body)?)
        } else {
            raw
        };
        call(&s, who, method, codec, &bytes, deadline).await
    }
    .await;
    match s.api.finish(Transport::Json, method, start, result) {
        Ok(body) => ok_response(codec, body, gzip_out),
        Err(e) => connect_error(&e),
    }
}

/// Calls `method` within the deadline, if any.
async fn call(
    s: &HttpState,
    who: Option<Extension<Authn>>,
    method: Method,
    codec: Codec,
    bytes: &[u8],
    deadline: Option<Duration>,
) -> Result<Vec<u8>, ApiError> {
    let who = authn_of(who);
    let run = s.api.run(|api| dispatch(api, &who, method, codec, bytes));
    match deadline {
        None => run.await,
        Some(d) if d.is_zero() => Err(deadline_exceeded()),
        Some(d) => crate::server::lazy_timeout(d, run)
            .await
            .unwrap_or_else(|| Err(deadline_exceeded())),
    }
}

/// The method a path names, or `None`.
fn rpc_method(name: &str) -> Option<Method> {
    Method::from_rpc_name(name).filter(|m| *m != Method::GetToken)
}

/// Not a unary method of the service: `WatchToken` is a stream (served
/// over gRPC and gRPC-Web), anything else is unknown.
fn unknown_method(name: &str) -> Response {
    if name == "WatchToken" {
        return connect_error(&ApiError::new(
            Code::Unimplemented,
            "WatchToken is a server stream: call it with Connect streaming (application/connect+json or application/connect+proto), gRPC or gRPC-Web",
        ));
    }
    connect_error(
        &ApiError::new(
            Code::Unimplemented,
            "no such method of agora.token.v1.TokenService",
        )
        .with_http_status(StatusCode::NOT_FOUND.as_u16()),
    )
}

/// A codec of Connect streaming (`application/connect+json`, `+proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamCodec(Codec);

impl StreamCodec {
    fn of_content_type(headers: &HeaderMap) -> Option<Self> {
        let t = headers
            .get(header::CONTENT_TYPE)?
            .to_str()
            .ok()?
            .split(';')
            .next()?
            .trim();
        if t.eq_ignore_ascii_case("application/connect+json") {
            Some(Self(Codec::Json))
        } else if t.eq_ignore_ascii_case("application/connect+proto") {
            Some(Self(Codec::Proto))
        } else {
            None
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self.0 {
            Codec::Json => "application/connect+json",
            Codec::Proto => "application/connect+proto",
        })
    }
}

/// Flag of a compressed Connect envelope.
const FLAG_COMPRESSED: u8 = 0x01;
/// Flag of the end-of-stream envelope.
const FLAG_END_STREAM: u8 = 0x02;

/// `payload` in a Connect envelope: flags, big-endian length, payload.
fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    // Messages of this API are far below 4 GiB.
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The end-of-stream envelope: `{}` or `{"error":{...}}`.
fn end_stream(e: Option<&ApiError>) -> Bytes {
    let body = match e {
        None => b"{}".to_vec(),
        Some(e) => serde_json::json!({ "error": super::connect_error_json(e) })
            .to_string()
            .into_bytes(),
    };
    envelope(FLAG_END_STREAM, &body)
}

/// The one message of a streaming request body (an envelope; compressed
/// when its flag says so, with `connect-content-encoding: gzip`).
fn unenvelope(b: &[u8], gzip: bool, max: usize) -> Result<Vec<u8>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "body",
            "must be one Connect envelope (flags, 4-byte big-endian length, message)",
        )
    };
    let [flags, a, b1, c, d, rest @ ..] = b else {
        return Err(bad());
    };
    let len = u32::from_be_bytes([*a, *b1, *c, *d]) as usize;
    if rest.len() != len {
        return Err(bad());
    }
    if flags & FLAG_COMPRESSED == 0 {
        return Ok(rest.to_vec());
    }
    if !gzip {
        return Err(ApiError::invalid(
            "connect-content-encoding",
            "a compressed message needs connect-content-encoding: gzip",
        ));
    }
    gunzip(rest, max)
}

/// `WatchToken` over Connect server streaming: the request is one
/// enveloped message; the response (HTTP 200, `application/connect+json`
/// or `+proto`) is one enveloped message per delivery, then the end
/// message (`{}`, or `{"error":...}` with the code and details, as every
/// refusal before or during the stream is sent). Messages are sent
/// uncompressed (allowed whatever `connect-accept-encoding` says).
async fn connect_watch(
    s: &HttpState,
    who: Option<Extension<Authn>>,
    creds: Option<Extension<Credentials>>,
    codec: StreamCodec,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let opened = async {
        let gzip = request_gzipped(headers.get(super::names::CONNECT_CONTENT_ENCODING))?;
        let raw = read_body(body, s.max_body).await?;
        let msg = unenvelope(&raw, gzip, s.max_body)?;
        let req: pb::WatchTokenRequest = match codec.0 {
            Codec::Json => {
                json::decode_lenient(&msg).map_err(|e| ApiError::invalid(e.field, e.problem))?
            }
            Codec::Proto => prost::Message::decode(msg.as_slice()).map_err(|e| {
                ApiError::invalid("body", format!("is not a valid protobuf message: {e}"))
            })?,
        };
        let who = authn_of(who);
        let creds = match creds {
            Some(Extension(c)) => c,
            None => {
                return Err(ApiError::from(Denial::Unauthenticated(
                    "the request was not authenticated",
                )));
            }
        };
        s.api.watch(Transport::Json, who, creds, req).await
    }
    .await;
    let body = match opened {
        Ok(rx) => Body::new(WatchBody {
            rx,
            codec: codec.0,
            ended: false,
        }),
        Err(e) => Body::from(end_stream(Some(&e))),
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, codec.content_type());
    r
}

/// The response body of a Connect `WatchToken` stream: each delivery in an
/// envelope, then the end message.
struct WatchBody {
    rx: tokio::sync::mpsc::Receiver<WatchItem>,
    codec: Codec,
    ended: bool,
}

impl WatchBody {
    fn encode(&self, m: &pb::WatchTokenResponse) -> Result<Vec<u8>, ApiError> {
        match self.codec {
            Codec::Json => json::encode(m).map_err(|e| {
                tracing::error!(error = %e, "cannot encode a response");
                ApiError::internal()
            }),
            Codec::Proto => Ok(prost::Message::encode_to_vec(m)),
        }
    }
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let data = match this.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(item)) => match this.encode_item(*item) {
                Ok(b) => b,
                Err(e) => {
                    this.ended = true;
                    end_stream(Some(&e))
                }
            },
            Poll::Ready(None) => {
                this.ended = true;
                end_stream(None)
            }
        };
        Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl WatchBody {
    /// A delivery's envelope, or the error that ends the stream.
    fn encode_item(
        &self,
        item: Result<pb::WatchTokenResponse, ApiError>,
    ) -> Result<Bytes, ApiError> {
        let m = item?;
        Ok(envelope(0, &self.encode(&m)?))
    }
}

/// The query of a Connect GET request.
#[derive(Debug, Default)]
struct GetQuery {
    connect: Option<String>,
    encoding: Option<String>,
    message: Option<String>,
    base64: Option<String>,
    compression: Option<String>,
}

impl GetQuery {
    fn parse(query: &str) -> Self {
        let mut q = Self::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "connect" => &mut q.connect,
                "encoding" => &mut q.encoding,
                "message" => &mut q.message,
                "base64" => &mut q.base64,
                "compression" => &mut q.compression,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        q
    }

    /// The codec and the message's bytes (decoded, decompressed).
    fn message(self, max: usize) -> Result<(Codec, Vec<u8>), ApiError> {
        if let Some(v) = self.connect.as_deref() {
            if v != "v1" {
                return Err(ApiError::invalid("connect", "must be v1"));
            }
        }
        let codec = match self.encoding.as_deref() {
            Some("json") => Codec::Json,
            Some("proto") => Codec::Proto,
            Some(_) => return Err(ApiError::invalid("encoding", "must be json or proto")),
            None => return Err(ApiError::invalid("encoding", "is required (json or proto)")),
        };
        let message = self.message.unwrap_or_default();
        let mut bytes = match self.base64.as_deref() {
            None | Some("0") => message.into_bytes(),
            Some("1") => {
                use base64::Engine as _;
                let trimmed = message.trim_end_matches('=');
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(trimmed)
                    .map_err(|_| {
                        ApiError::invalid("message", "is not URL-safe base64 (base64=1)")
                    })?
            }
            Some(_) => return Err(ApiError::invalid("base64", "must be 0 or 1")),
        };
        match self.compression.as_deref() {
            None | Some("identity") | Some("") => {}
            Some("gzip") => bytes = gunzip(&bytes, max)?,
            Some(_) => {
                return Err(ApiError::new(
                    Code::Unimplemented,
                    "compression: unsupported; this server accepts gzip and identity",
                )
                .with_reason("UNSUPPORTED_COMPRESSION"));
            }
        }
        if bytes.len() > max {
            return Err(too_large(max));
        }
        Ok((codec, bytes))
    }
}

/// A Connect unary call over GET, for the methods marked
/// `idempotency_level = NO_SIDE_EFFECTS` (`InspectToken`); the others
/// answer 405 with `Allow: POST`.
pub(crate) async fn connect_get(
    State(s): State<HttpState>,
    who: Option<Extension<Authn>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(method) = rpc_method(&name) else {
        return unknown_method(&name);
    };
    if method != Method::InspectToken {
        let mut r = connect_error(
            &ApiError::new(
                Code::Unimplemented,
                "only methods without side effects (InspectToken) can be called with GET; use POST",
            )
            .with_http_status(StatusCode::METHOD_NOT_ALLOWED.as_u16()),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let gzip_out = accepts_gzip(&headers);
    let start = Instant::now();
    let query = uri.query().unwrap_or("");
    let mut codec = Codec::Json;
    let result = async {
        let deadline = connect_headers(&headers)?;
        let (c, bytes) = GetQuery::parse(query).message(s.max_body)?;
        codec = c;
        call(&s, who, method, codec, &bytes, deadline).await
    }
    .await;
    let mut r = match s.api.finish(Transport::Json, method, start, result) {
        Ok(body) => ok_response(codec, body, gzip_out),
        Err(e) => connect_error(&e),
    };
    // The answer depends on the caller's credentials: no shared caches.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    r
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
    if Codec::of_content_type(&headers) != Some(Codec::Json) {
        return unsupported_media_type();
    }
    let result = async {
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

#[cfg(test)]
mod tests;
