//! The transport-neutral API: one issuance pipeline for every RPC.
//!
//! Each method takes the request message of the public contract (the
//! proto messages, which gRPC and JSON share), maps it to a domain request
//! ([`convert`]), and runs it through [`TokenApi::issue`]: identify the
//! caller, resolve the app, authorize against the caller's policy and rate
//! limit, build with the permit's limits, count and audit. Errors are one
//! type, [`ApiError`], which each transport renders once.

#[macro_use]
mod convert;
mod error;
mod methods;

pub use convert::*;
pub use error::*;

use crate::domain::{AgentSession, IssueError, Issued, Issuer, Limits};
use crate::policy::{AccessRequest, Authn, Identity};
use crate::state::Shared;
use crate::telemetry::audit;
use crate::telemetry::metrics::{Method, Transport};
use std::sync::Arc;
use std::time::Instant;

/// The tokens a result carries (for metrics and audit).
pub trait Tokens {
    /// Every token issued.
    fn tokens(&self) -> Vec<&Issued>;
}

impl Tokens for Issued {
    fn tokens(&self) -> Vec<&Issued> {
        vec![self]
    }
}

impl Tokens for AgentSession {
    fn tokens(&self) -> Vec<&Issued> {
        if self.agent == self.rest {
            vec![&self.agent, &self.user]
        } else {
            vec![&self.agent, &self.user, &self.rest]
        }
    }
}

/// The API implementation shared by gRPC and JSON.
#[derive(Debug, Clone)]
pub struct TokenApi {
    shared: Arc<Shared>,
}

impl TokenApi {
    /// The API over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The one path every token takes: identify the caller, resolve the
    /// app, check the caller's policy and rate limit for `access`, build
    /// with the permit's limits, then count and audit the outcome.
    fn issue<T: Tokens>(
        &self,
        who: &Authn,
        method: Method,
        app_id: Option<&str>,
        access: AccessRequest<'_>,
        build: impl FnOnce(&Issuer, &Limits) -> Result<T, IssueError>,
    ) -> Result<T, ApiError> {
        // The snapshot the caller was authenticated against, else the current one.
        let snap = match &who.snapshot {
            Some(s) => Arc::clone(s),
            None => self.shared.current_full(),
        };
        // Re-bound after `snap`, so it may borrow the resolved app id from it.
        let mut access = access;
        let result: Result<T, ApiError> = (|| {
            let identity = who
                .identity
                .as_ref()
                .map_err(|d| ApiError::from(d.clone()))?;
            let app = snap.issuer.app(app_id)?;
            access.app_id = app.app_id.as_str();
            let permit = snap.auth.authorize(identity, &access)?;
            Ok(build(&snap.issuer, &permit.limits())?)
        })();
        let caller = who
            .identity
            .as_ref()
            .map_or("unauthenticated", Identity::name);
        match &result {
            Ok(tokens) => {
                let tokens = tokens.tokens();
                for i in &tokens {
                    self.shared.metrics.token_issued(i.kind, &i.app_id);
                }
                audit::issued(caller, method.as_str(), &access, &tokens);
            }
            Err(e) => audit::refused(caller, method.as_str(), &access, &e.to_string()),
        }
        result
    }

    /// Counts a finished call of `method` over `transport` and logs it when
    /// it was refused: the one place for both, whichever layer refused.
    pub fn finish<T>(
        &self,
        transport: Transport,
        method: Method,
        start: Instant,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let code = result.as_ref().map_or_else(|e| e.code, |_| Code::Ok);
        self.shared
            .metrics
            .request(transport, method, code, start.elapsed());
        if let Err(e) = &result {
            tracing::info!(
                rpc = method.as_str(),
                code = e.code_name(),
                reason = e.message.as_str(),
                "request refused"
            );
        }
        result
    }

    /// Runs one call for `transport`: times it, then [`Self::finish`].
    pub fn observe<T>(
        &self,
        transport: Transport,
        method: Method,
        f: impl FnOnce(&Self) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let start = Instant::now();
        let result = f(self);
        self.finish(transport, method, start, result)
    }
}
