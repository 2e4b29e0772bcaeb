//! The one error model of the API: [`ApiError`], what every transport
//! renders (gRPC status, Connect JSON, plain text) and what metrics count.

use crate::domain::IssueError;
use crate::policy::Denial;
use tonic::Status;

/// Why a call failed: the request (from the issuer), or the caller's
/// credentials, policy or rate limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Bad input or an unknown app.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// Refused for the caller.
    #[error(transparent)]
    Denied(#[from] Denial),
}

/// Name of the metadata / header that carries the rate-limit wait, in seconds.
pub const RETRY_AFTER: &str = "retry-after";

/// The one mapping of caller refusals to gRPC codes: UNAUTHENTICATED,
/// PERMISSION_DENIED naming the rule, RESOURCE_EXHAUSTED with `retry-after`.
impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Issue(e) => e.into(),
            ApiError::Denied(d @ Denial::Unauthenticated(_)) => {
                Status::unauthenticated(d.to_string())
            }
            ApiError::Denied(d @ Denial::Policy { .. }) => Status::permission_denied(d.to_string()),
            ApiError::Denied(d @ Denial::RateLimited { retry_after }) => {
                let mut s = Status::resource_exhausted(d.to_string());
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                if let Ok(v) = secs.max(1).to_string().parse() {
                    s.metadata_mut().insert(RETRY_AFTER, v);
                }
                s
            }
        }
    }
}
