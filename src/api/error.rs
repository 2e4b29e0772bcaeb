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
        }
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

    /// RESOURCE_EXHAUSTED for the server's own limits, retry after `after`.
    pub fn busy(message: impl Into<String>, after: Duration) -> Self {
        Self::new(Code::ResourceExhausted, message).retry_after(after)
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
            Denial::Unauthenticated(_) | Denial::Jwt { .. } => {
                Self::new(Code::Unauthenticated, message)
            }
            Denial::Policy { rule, .. } => {
                let mut e = Self::new(Code::PermissionDenied, message);
                e.detail = Some(Detail::PolicyRule(rule));
                e
            }
            Denial::RateLimited { retry_after } => {
                Self::new(Code::ResourceExhausted, message).retry_after(retry_after)
            }
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
