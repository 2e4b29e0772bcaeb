//! The compatible `GET /api/agora/token` (DESIGN 4.1): a form-decoded
//! query in, the token as `text/plain` out, one line naming the parameter
//! on error.

use super::*;
use crate::api::{ApiError, TokenApi};
use crate::domain::rules;
use crate::domain::{Common, IssueError, RtcRequest, RtcUser};
use crate::policy::{Authn, Denial};
use crate::telemetry::metrics::{Method, Transport, code_name};
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use std::time::Instant;
use tonic::Code;

/// The compatible endpoint's parameters, as received.
#[derive(Debug, Default)]
pub(crate) struct GetParams {
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
pub(crate) fn bad_param(param: &str, why: &str) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("{param}: {why}\n"))
}

/// The issuer names fields as in the proto; the GET endpoint's parameters
/// are named differently.
pub(crate) fn get_param_name(field: &str) -> &str {
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

pub(crate) fn get_token_inner(
    api: &TokenApi,
    who: &Authn,
    query: &str,
) -> Result<String, GetError> {
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
pub(crate) fn authn_of(ext: Option<Extension<Authn>>) -> Authn {
    ext.map(|Extension(a)| a)
        .unwrap_or(Authn::new(Err(Denial::Unauthenticated(
            "the request was not authenticated",
        ))))
}

pub(crate) async fn get_token(
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
}
