//! The one error model of the API: [`ApiError`]. Every refusal, whichever
//! layer made it (input rules, app lookup, authentication, policy, rate
//! limits, the server's own limits, body decoding), becomes one `ApiError`;
//! metrics and the refusal log read it once ([`super::TokenApi::finish`]),
//! and each transport renders it once: a gRPC status
//! ([`crate::transport::grpc`]), a Connect / JSON body with its HTTP status,
//! or one plain-text line for the GET endpoint
//! ([`crate::transport::http`]).

use std::fmt;
use std::time::Duration;

pub use tonic::Code;

use crate::domain::IssueError;
use crate::policy::Denial;

/// Name of the gRPC metadata / HTTP header that carries the wait before a
/// retry, in whole seconds.
pub const RETRY_AFTER: &str = "retry-after";

/// What the error is about, for clients that act on it (and for the GET
/// endpoint, which names its own query parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// A request field breaks a rule.
    Field {
        /// The field, as named in the proto request.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The caller's policy refused; the key that did.
    PolicyRule(&'static str),
}

/// Why a call failed.
///
/// `code` is the gRPC status code (the Connect protocol uses the same
/// codes); `message` is safe to send (never a secret: internal details are
/// logged, not returned); `retry_after` is set for rate limits and the
/// server's own limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub code: Code,
    /// What went wrong, for people.
    pub message: String,
    /// What went wrong, for programs.
    pub detail: Option<Detail>,
    /// How long to wait before retrying.
    pub retry_after: Option<Duration>,
    /// The HTTP status when it is more precise than the code's (415, 413).
    http_status: Option<u16>,
    /// The stable reason of `google.rpc.ErrorInfo`, when the default of
    /// [`Self::reason`] would not say it.
    reason: Option<&'static str>,
}

/// The `google.rpc.ErrorInfo` domain of every error of this service.
pub const ERROR_DOMAIN: &str = "token-authority";

/// One structured error detail: the full name of a `google.rpc` message
/// and its protobuf encoding (a `google.protobuf.Any` in a gRPC status, an
/// entry of `details` in a Connect error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    /// The message's full name, e.g. `google.rpc.ErrorInfo`.
    pub type_name: &'static str,
    /// The message, protobuf-encoded.
    pub value: Vec<u8>,
    /// The message in JSON, for people (Connect's `debug`).
    pub debug: serde_json::Value,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
            http_status: None,
            reason: None,
        }
    }

    /// With a stable `ErrorInfo` reason (upper snake case).
    #[must_use]
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// The stable, machine-readable reason (`google.rpc.ErrorInfo.reason`):
    /// `POLICY_<RULE>` for a policy refusal, `INVALID_ARGUMENT` for bad
    /// input, `RATE_LIMITED`, `UNAUTHENTICATED`, `INVALID_CREDENTIALS`,
    /// `OVERLOADED`, ...; otherwise the code's name in upper case.
    pub fn reason(&self) -> std::borrow::Cow<'static, str> {
        if let Some(r) = self.reason {
            return r.into();
        }
        if let Some(Detail::PolicyRule(rule)) = &self.detail {
            let rule: String = rule
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            return format!("POLICY_{rule}").into();
        }
        self.code_name().to_ascii_uppercase().into()
    }

    /// The structured details of this error, in this order: `ErrorInfo`
    /// (always: the reason, the domain [`ERROR_DOMAIN`], and the field or
    /// policy rule as metadata), `BadRequest` with the field violation
    /// for invalid input, `RetryInfo` when the error carries a wait.
    pub fn details(&self) -> Vec<ErrorDetail> {
        use prost::Message as _;
        use tonic_types::pb;
        let mut metadata = std::collections::HashMap::new();
        match &self.detail {
            Some(Detail::Field { field, .. }) => {
                metadata.insert("field".to_owned(), field.clone());
            }
            Some(Detail::PolicyRule(rule)) => {
                metadata.insert("rule".to_owned(), (*rule).to_owned());
            }
            None => {}
        }
        let info = pb::ErrorInfo {
            reason: self.reason().into_owned(),
            domain: ERROR_DOMAIN.to_owned(),
            metadata,
        };
        let mut out = vec![ErrorDetail {
            type_name: "google.rpc.ErrorInfo",
            value: info.encode_to_vec(),
            debug: serde_json::json!({
                "reason": info.reason,
                "domain": info.domain,
                "metadata": info.metadata,
            }),
        }];
        if let Some(Detail::Field { field, rule }) = &self.detail {
            let bad = pb::BadRequest {
                field_violations: vec![pb::bad_request::FieldViolation {
                    field: field.clone(),
                    description: rule.clone(),
                    ..Default::default()
                }],
            };
            out.push(ErrorDetail {
                type_name: "google.rpc.BadRequest",
                value: bad.encode_to_vec(),
                debug: serde_json::json!({
                    "fieldViolations": [{ "field": field, "description": rule }],
                }),
            });
        }
        if let Some(d) = self.retry_after {
            let retry = pb::RetryInfo {
                retry_delay: Some(prost_types::Duration {
                    seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    // Below 10^9: fits.
                    nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
                }),
            };
            out.push(ErrorDetail {
                type_name: "google.rpc.RetryInfo",
                value: retry.encode_to_vec(),
                debug: serde_json::json!({
                    "retryDelay": format!("{}s", d.as_secs_f64()),
                }),
            });
        }
        out
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750): `Bearer`,
    /// with `error="invalid_token"` when credentials were presented and
    /// refused; `None` for any other error.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        if self.code != Code::Unauthenticated {
            return None;
        }
        Some(if self.reason.is_some_and(|r| r != "UNAUTHENTICATED") {
            "Bearer realm=\"token-authority\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"token-authority\""
        })
    }

    /// INVALID_ARGUMENT: `field` breaks `rule` (message `field: rule`).
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        let (field, rule) = (field.into(), rule.into());
        let mut e = Self::new(Code::InvalidArgument, format!("{field}: {rule}"));
        e.detail = Some(Detail::Field { field, rule });
        e
    }

    /// INTERNAL with a generic message (the detail goes to the log).
    pub fn internal() -> Self {
        Self::new(Code::Internal, "internal error")
    }

    /// RESOURCE_EXHAUSTED for the server's own limits, retry after `after`
    /// (reason `OVERLOADED`).
    pub fn busy(message: impl Into<String>, after: Duration) -> Self {
        Self::new(Code::ResourceExhausted, message)
            .retry_after(after)
            .with_reason("OVERLOADED")
    }

    /// With a retry delay.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// With an HTTP status more precise than the code's.
    #[must_use]
    pub fn with_http_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The wait in whole seconds, rounded up, at least 1 (the form of the
    /// `retry-after` header and metadata).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
    }

    /// The HTTP status: the override, else the Connect protocol's table.
    pub fn http_status(&self) -> u16 {
        self.http_status.unwrap_or_else(|| http_status(self.code))
    }

    /// The lower snake case name of the code (Connect's, and the metrics
    /// label).
    pub fn code_name(&self) -> &'static str {
        crate::telemetry::metrics::code_name(self.code)
    }
}

/// The HTTP status of a gRPC code (the Connect protocol's table).
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        // 499: client closed request (Connect's mapping of canceled).
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// Bad input is INVALID_ARGUMENT naming the field and the rule; an unknown
/// app NOT_FOUND.
impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Invalid(v) => Self::invalid(v.field, v.rule),
            e @ IssueError::UnknownApp(_) => Self::new(Code::NotFound, e.to_string()),
            IssueError::NotPermitted { rule, detail } => Denial::Policy { rule, detail }.into(),
        }
    }
}

/// UNAUTHENTICATED; PERMISSION_DENIED naming the rule; RESOURCE_EXHAUSTED
/// with the wait.
impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        let message = d.to_string();
        match d {
            // No credentials at all, or credentials that were refused.
            Denial::Unauthenticated(m) if m.starts_with("credentials required") => {
                Self::new(Code::Unauthenticated, message).with_reason("UNAUTHENTICATED")
            }
            Denial::Unauthenticated(_) | Denial::Jwt { .. } => {
                Self::new(Code::Unauthenticated, message).with_reason("INVALID_CREDENTIALS")
            }
            Denial::Policy { rule, .. } => {
                let mut e = Self::new(Code::PermissionDenied, message);
                e.detail = Some(Detail::PolicyRule(rule));
                e
            }
            Denial::RateLimited { retry_after } => Self::new(Code::ResourceExhausted, message)
                .retry_after(retry_after)
                .with_reason("RATE_LIMITED"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::Violation;

    #[test]
    fn domain_and_policy_errors_map_to_codes() {
        let e = ApiError::from(IssueError::Invalid(Violation::new("uid", "bad")));
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::InvalidArgument, "uid: bad")
        );
        assert_eq!(
            e.detail,
            Some(Detail::Field {
                field: "uid".into(),
                rule: "bad".into()
            })
        );
        let e = ApiError::from(IssueError::UnknownApp("x".into()));
        assert_eq!(e.code, Code::NotFound);
        assert!(e.message.starts_with("app_id"));
        let e = ApiError::from(Denial::RateLimited {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(e.code, Code::ResourceExhausted);
        assert_eq!(e.retry_after_secs(), Some(2));
        let e = ApiError::from(Denial::RateLimited {
            retry_after: Duration::from_millis(1),
        });
        assert_eq!(e.retry_after_secs(), Some(1));
        assert_eq!(
            ApiError::from(Denial::Unauthenticated("x")).code,
            Code::Unauthenticated
        );
        let e = ApiError::from(Denial::Policy {
            rule: "channels",
            detail: "no".into(),
        });
        assert_eq!(e.detail, Some(Detail::PolicyRule("channels")));
        assert_eq!(e.http_status(), 403);
    }

    #[test]
    fn connect_status_table() {
        assert_eq!(http_status(Code::InvalidArgument), 400);
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(http_status(Code::Unauthenticated), 401);
        assert_eq!(http_status(Code::PermissionDenied), 403);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::Internal), 500);
        assert_eq!(
            ApiError::new(Code::InvalidArgument, "x")
                .with_http_status(415)
                .http_status(),
            415
        );
    }
}
