//! The compatible `GET /api/agora/token` (DESIGN 4.1): a form-decoded
//! query in, the token as `text/plain` out, one line naming the parameter
//! on error.

use std::time::Instant;

use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::Response;

use super::{HttpState, authn_of, set_retry_after, status_of, text};
use crate::api::{ApiError, Code, Detail, TokenApi};
use crate::domain::rules;
use crate::domain::{Common, RtcRequest, RtcUser};
use crate::policy::Authn;
use crate::telemetry::metrics::{Method, Transport};

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

/// The token, or why not.
pub(crate) fn get_token_inner(
    api: &TokenApi,
    who: &Authn,
    query: &str,
) -> Result<String, ApiError> {
    let p = GetParams::parse(query);
    let Some(channel_name) = p.channel_name else {
        return Err(ApiError::invalid(
            "channelName",
            "is required (an empty value means any channel)",
        ));
    };
    let user = match p.uid.as_deref() {
        None => crate::api::bound_rtc_user(who),
        Some(s) => {
            RtcUser::Uid(rules::parse_uid("uid", s).map_err(|v| ApiError::invalid("uid", v.rule))?)
        }
    };
    let role = match p.role.as_deref() {
        None => agora_token::Role::Publisher,
        Some(r) => r
            .parse()
            .map_err(|_| ApiError::invalid("role", "must be publisher or subscriber"))?,
    };
    let expire = match p.expire_seconds.as_deref() {
        None => None,
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            // Too many digits for a u32 is out of range; let the issuer say so.
            Some(s.parse::<u32>().unwrap_or(u32::MAX))
        }
        Some(_) => {
            return Err(ApiError::invalid(
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
        user,
        role,
        privilege_expire: expire,
    };
    match api.rtc(who, Method::GetToken, &req) {
        Ok(issued) => Ok(issued.token),
        Err(e) if e.code == Code::NotFound => {
            tracing::error!(error = %e, "no default app configured");
            Err(ApiError::new(Code::Internal, "token generation failed"))
        }
        Err(e) => Err(e),
    }
}

/// The one line of text a refusal of the GET endpoint answers: the
/// parameter (as the endpoint names it) and the rule, or the message.
fn error_line(e: &ApiError) -> String {
    match &e.detail {
        Some(Detail::Field { field, rule }) => format!("{}: {rule}\n", get_param_name(field)),
        _ => format!("{}\n", e.message),
    }
}

pub(crate) async fn get_token(
    State(s): State<HttpState>,
    who: Option<Extension<Authn>>,
    uri: Uri,
) -> Response {
    let start = Instant::now();
    let who = authn_of(who);
    let query = uri.query().unwrap_or("");
    let result = s.api.run(|api| get_token_inner(api, &who, query)).await;
    let result = s
        .api
        .finish(Transport::Http, Method::GetToken, start, result);
    let mut r = match &result {
        Ok(token) => text(StatusCode::OK, token.clone()),
        Err(e) => text(status_of(e), error_line(e)),
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Err(e) = &result {
        set_retry_after(&mut r, e);
        super::set_www_authenticate(&mut r, e);
        super::set_reason(&mut r, e);
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
