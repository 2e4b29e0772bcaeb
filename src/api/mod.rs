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
pub mod watch;

pub use convert::*;
pub use error::*;

use crate::domain::{AgentSession, Issued, Issuer, Limits, Unsigned};
use crate::policy::{Authenticator, Authn, Identity};
use crate::state::Shared;
use crate::telemetry::asked::Asked;
use crate::telemetry::metrics::{Method, Transport};
use crate::telemetry::{audit, audit_file};
use std::cell::Cell;
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

/// The authorization step of one call: a build closure hands it the
/// drafts the issuer made; it checks what they grant against the caller's
/// policy, signs them with the permit, and records the outcome in the
/// audit trail (issued, or refused with what the token would have granted).
pub struct Signer<'c> {
    auth: &'c Authenticator,
    identity: &'c Identity,
    caller: &'c str,
    rpc: &'static str,
    /// What was asked, built only for a refusal's audit record.
    asked: &'c dyn Fn() -> Asked<'c>,
    audited: &'c Cell<bool>,
}

impl Signer<'_> {
    /// Authorizes and signs `unsigned` (made by `issuer`).
    pub fn sign<'a, U>(&self, issuer: &'a Issuer, unsigned: U) -> Result<U::Signed, ApiError>
    where
        U: Unsigned<'a>,
        U::Signed: Tokens,
    {
        let drafts = unsigned.drafts();
        let permit = match self.auth.authorize(self.identity, &drafts) {
            Ok(p) => p,
            Err(d) => {
                let e = ApiError::from(d);
                audit::refused(
                    self.caller,
                    self.rpc,
                    &(self.asked)(),
                    Some(&drafts),
                    &e.message,
                );
                self.audited.set(true);
                return Err(e);
            }
        };
        let signed = unsigned.sign(issuer, &permit)?;
        audit::issued(self.caller, self.rpc, &drafts, &signed.tokens());
        self.audited.set(true);
        Ok(signed)
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

    /// The one path every token takes: identify the caller; admit the call
    /// (the caller's RPCs and rate limit) before reading anything of the
    /// request; draft the token(s) with the caller's limits; authorize what
    /// the drafts grant and sign them with the permit ([`Signer`]); count
    /// and audit the outcome. `asked` describes the request for the audit
    /// record of a refusal; it is called only then (issued tokens are
    /// recorded from their drafts).
    fn issue<'r, T: Tokens>(
        &self,
        who: &Authn,
        method: Method,
        app_id: Option<&str>,
        asked: impl Fn() -> Asked<'r>,
        build: impl FnOnce(&Issuer, &Limits, &Signer<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        // The snapshot the caller was authenticated against, else the current one.
        let snap = match &who.snapshot {
            Some(s) => Arc::clone(s),
            None => self.shared.current_full(),
        };
        let asked = || {
            let mut a = asked();
            if let Ok(app) = snap.issuer.app(app_id) {
                a.app_id = app.app_id.as_str();
            }
            a
        };
        // The GET endpoint is checked (and limited) as BuildRtcToken.
        let rpc = match method {
            Method::GetToken => Method::BuildRtcToken,
            m => m,
        }
        .as_str();
        let caller = who
            .identity
            .as_ref()
            .map_or("unauthenticated", Identity::name);
        let audited = Cell::new(false);
        let result: Result<T, ApiError> = (|| {
            let identity = who
                .identity
                .as_ref()
                .map_err(|d| ApiError::from(d.clone()))?;
            snap.auth.admit_checked(identity, rpc, who.rate_decision)?;
            let limits = snap.auth.limits(identity);
            let signer = Signer {
                auth: &snap.auth,
                identity,
                caller,
                rpc: method.as_str(),
                asked: &asked,
                audited: &audited,
            };
            build(&snap.issuer, &limits, &signer)
        })();
        match &result {
            Ok(tokens) => {
                for i in tokens.tokens() {
                    self.shared.metrics.token_issued(i.kind, &i.app_id);
                }
            }
            Err(e) if !audited.get() => {
                audit::refused(caller, method.as_str(), &asked(), None, &e.message);
            }
            Err(_) => {}
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
            // At a bounded rate (the audit log has every refusal).
            if !tracing::enabled!(tracing::Level::INFO)
                || !crate::telemetry::logging::admit_line(&crate::telemetry::logging::REFUSALS)
            {
                return result;
            }
            tracing::info!(
                rpc = method.as_str(),
                code = e.code_name(),
                reason = e.message.as_str(),
                "request refused"
            );
        }
        result
    }

    /// Runs one call for `transport` ([`Self::run`]), timed, then
    /// [`Self::finish`].
    pub async fn call<T>(
        &self,
        transport: Transport,
        method: Method,
        f: impl FnOnce(&Self) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let start = Instant::now();
        let result = self.run(f).await;
        self.finish(transport, method, start, result)
    }

    /// Runs the synchronous part of a call (`f`: draft, authorize, sign,
    /// audit) and, with an audit file, waits until the records of the
    /// tokens it issued are written: a token whose record cannot be
    /// written is not returned (UNAVAILABLE). Every transport goes through
    /// here.
    pub async fn run<T>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (result, receipts) = audit_file::collect(|| f(self));
        if result.is_ok() && !receipts.is_empty() && !audit_file::committed(receipts).await {
            return Err(ApiError::new(
                Code::Unavailable,
                "the audit log cannot be written: no token is issued until it can",
            )
            .retry_after(std::time::Duration::from_secs(1))
            .with_reason("AUDIT_UNAVAILABLE"));
        }
        result
    }
}
