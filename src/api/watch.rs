//! `WatchToken`: one issuance request kept fresh over a stream.
//!
//! One mechanism for every kind: the watched request is one of the unary
//! requests ([`pb::watch_token_request::Request`]), and every delivery is
//! that unary method run again through the same pipeline
//! ([`TokenApi::run`] and [`TokenApi::finish`]): the caller is identified
//! again (with the credentials the stream was opened with) against the
//! **current** configuration snapshot, admitted (RPC and rate limit),
//! authorized on what the token grants, signed, audited and counted. A
//! transport opens a watch with [`TokenApi::watch`] and forwards what the
//! returned channel yields.
//!
//! Schedule (all in unix seconds, on the injected [`crate::domain::Timer`]):
//! the first token at once; each next one at
//! `expires_at - max(renew_before_seconds, 30) - jitter`, with
//! `renew_before_seconds` by default a third of the lifetime and `jitter`
//! uniform in `0..=lifetime/10` (so a renewal is never later than 30 s
//! before expiry, and watches opened together spread out).
//!
//! Failures: a transient refusal (the audit log unavailable, the rate
//! limit) is retried with backoff (1 s doubling to 30 s, or the refusal's
//! `retry-after` when longer) while the current token is still valid; the
//! stream ends with that error only when the token would expire before the
//! next retry. Any other refusal (revoked caller, narrowed policy, app
//! removed) ends the stream at once with its status.
//!
//! Lifecycle: a watch counts against `max_watches_per_caller` while it is
//! open, ends (OK) after `max_watch_seconds`, ends with UNAVAILABLE
//! ("reconnect") when the server shuts down, and ends when the client goes
//! away. Each stream has a one-message queue; a delivery that the client
//! has not taken within [`SEND_TIMEOUT`] (its HTTP/2 window and the
//! server's send buffer full) ends the stream.

use super::*;
use crate::domain::rules;
use crate::pb;
use crate::pb::watch_token_request::Request as Watched;
use crate::pb::watch_token_response::Response as Delivered;
use crate::policy::{Credentials, Identity};
use crate::state::{WatchKey, WatchPermit};
use crate::telemetry::metrics::{Method, Transport};
use std::time::Duration;
use tokio::sync::mpsc;

/// Smallest `renew_before_seconds`.
pub const MIN_RENEW_BEFORE: u32 = 5;
/// A renewal is never later than this before expiry.
pub const LATEST_BEFORE_EXPIRY: u32 = 30;
/// Shortest token lifetime a watch accepts (renewals stay at least 24 s
/// apart).
pub const MIN_WATCH_LIFETIME: u32 = 60;
/// Renewals are at least this far apart (a `renew_before_seconds` that
/// would renew sooner is refused).
pub const MIN_RENEW_INTERVAL: u32 = 10;
/// Longest wait between retries of a transient failure.
pub const MAX_BACKOFF: u32 = 30;
/// How long a delivery may wait for the client to take it before the
/// stream is cut.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// One item of a watch: a delivery, or the error that ends the stream.
/// Boxed: tokio's channel allocates its slots in blocks of 32, so an idle
/// watch holds 32 slots of this type (a pointer each, not a message).
pub type WatchItem = Box<Result<pb::WatchTokenResponse, ApiError>>;

/// The field name of each kind, as in the proto `oneof`.
fn field(w: &Watched) -> &'static str {
    match w {
        Watched::AgentSession(_) => "agent_session",
        Watched::Rtc(_) => "rtc",
        Watched::RtcPrivileges(_) => "rtc_privileges",
        Watched::RtcRtm(_) => "rtc_rtm",
        Watched::Rtm(_) => "rtm",
        Watched::ChatUser(_) => "chat_user",
        Watched::Generic(_) => "generic",
        Watched::ChatApp(_) => "chat_app",
        Watched::Apaas(_) => "apaas",
        Watched::Fpa(_) => "fpa",
    }
}

/// The unary method each kind runs.
fn method(w: &Watched) -> Method {
    match w {
        Watched::AgentSession(_) => Method::BuildAgentSession,
        Watched::Rtc(_) => Method::BuildRtcToken,
        Watched::RtcPrivileges(_) => Method::BuildRtcTokenWithPrivileges,
        Watched::RtcRtm(_) => Method::BuildRtcRtmToken,
        Watched::Rtm(_) => Method::BuildRtmToken,
        Watched::ChatUser(_) => Method::BuildChatUserToken,
        Watched::Generic(_) => Method::BuildToken,
        Watched::ChatApp(_) => Method::BuildChatAppToken,
        Watched::Apaas(_) => Method::BuildApaasToken,
        Watched::Fpa(_) => Method::BuildFpaToken,
    }
}

/// The `expire_seconds` the request asks for (`Ok(None)`: the default;
/// `Err(l)`: a fixed lifetime `l`).
fn asked_expire(w: &Watched) -> Result<Option<u32>, u32> {
    Ok(match w {
        Watched::AgentSession(r) => r.expire_seconds,
        Watched::Rtc(r) => r.expire_seconds,
        Watched::RtcPrivileges(r) => r.expire_seconds,
        Watched::RtcRtm(r) => r.expire_seconds,
        Watched::Rtm(r) => r.expire_seconds,
        Watched::ChatUser(r) => r.expire_seconds,
        Watched::Generic(r) => r.expire_seconds,
        Watched::ChatApp(r) => r.expire_seconds,
        Watched::Apaas(r) => r.expire_seconds,
        Watched::Fpa(_) => return Err(agora_token::builders::FPA_TOKEN_EXPIRE),
    })
}

/// `(issued_at, expires_at)` of a delivery.
fn times(d: &Delivered) -> (u32, u32) {
    match d {
        Delivered::AgentSession(r) => (r.issued_at, r.expires_at),
        Delivered::Rtc(r) => (r.issued_at, r.expires_at),
        Delivered::RtcPrivileges(r) => (r.issued_at, r.expires_at),
        Delivered::RtcRtm(r) => (r.issued_at, r.expires_at),
        Delivered::Rtm(r) => (r.issued_at, r.expires_at),
        Delivered::ChatUser(r) => (r.issued_at, r.expires_at),
        Delivered::Generic(r) => (r.issued_at, r.expires_at),
        Delivered::ChatApp(r) => (r.issued_at, r.expires_at),
        Delivered::Apaas(r) => (r.issued_at, r.expires_at),
        Delivered::Fpa(r) => (r.issued_at, r.expires_at),
    }
}

/// How far before expiry a token of `lifetime` seconds is renewed (before
/// jitter): `renew_before_seconds`, by default a third of the lifetime, and
/// never less than [`LATEST_BEFORE_EXPIRY`].
pub fn renew_before(lifetime: u32, asked: Option<u32>) -> u32 {
    asked.unwrap_or(lifetime / 3).max(LATEST_BEFORE_EXPIRY)
}

/// The largest jitter for a token of `lifetime` seconds (10% of it).
pub fn max_jitter(lifetime: u32) -> u32 {
    lifetime / 10
}

/// When to renew a token issued at `issued_at` that expires at
/// `expires_at`, with `jitter` (taken modulo `max_jitter + 1`): never
/// before `issued_at + 1`, never after `expires_at - 30` when the
/// lifetime allows it.
pub fn renew_at(issued_at: u32, expires_at: u32, asked: Option<u32>, jitter: u32) -> u32 {
    let lifetime = expires_at.saturating_sub(issued_at);
    let j = jitter % (max_jitter(lifetime) + 1);
    expires_at
        .saturating_sub(renew_before(lifetime, asked))
        .saturating_sub(j)
        .max(issued_at.saturating_add(1))
}

/// Checks `renew_before_seconds` against a token lifetime (`field`: the
/// lifetime's field, for the error). A lifetime outside the token rules is
/// left to the issuance, which names it.
fn check_schedule(field: &str, lifetime: u32, asked: Option<u32>) -> Result<(), ApiError> {
    if let Some(rb) = asked {
        if rb < MIN_RENEW_BEFORE {
            return Err(ApiError::invalid(
                "renew_before_seconds",
                format!("must be at least {MIN_RENEW_BEFORE}, got {rb}"),
            ));
        }
    }
    if !(1..=rules::MAX_EXPIRE).contains(&lifetime) {
        return Ok(());
    }
    if lifetime < MIN_WATCH_LIFETIME {
        return Err(ApiError::invalid(
            field,
            format!(
                "a watched token must live at least {MIN_WATCH_LIFETIME} s \
                 (renewals come at least {LATEST_BEFORE_EXPIRY} s before expiry), got {lifetime}"
            ),
        ));
    }
    if let Some(rb) = asked {
        if rb >= lifetime {
            return Err(ApiError::invalid(
                "renew_before_seconds",
                format!("must be below the token lifetime ({lifetime} s), got {rb}"),
            ));
        }
        let earliest = lifetime
            .saturating_sub(renew_before(lifetime, asked))
            .saturating_sub(max_jitter(lifetime));
        if earliest < MIN_RENEW_INTERVAL {
            let most = lifetime - max_jitter(lifetime) - MIN_RENEW_INTERVAL;
            return Err(ApiError::invalid(
                "renew_before_seconds",
                format!(
                    "must be at most {most} for a {lifetime} s token (renewals come up to 10% \
                     of the lifetime early and at least {MIN_RENEW_INTERVAL} s apart), got {rb}"
                ),
            ));
        }
    }
    Ok(())
}

/// Uniform jitter source: fresh randomness per renewal.
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Without the OS's randomness the schedule still holds (no jitter).
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

/// Whether a refusal is worth retrying while the current token is valid.
fn transient(e: &ApiError) -> bool {
    matches!(e.code, Code::Unavailable | Code::ResourceExhausted)
}

/// What a watch keeps between renewals.
struct Watch {
    api: TokenApi,
    transport: Transport,
    identity: Identity,
    creds: Credentials,
    request: Watched,
    renew_before: Option<u32>,
    tx: mpsc::Sender<WatchItem>,
    _permit: WatchPermit,
}

impl TokenApi {
    /// Issues the watched request once, through the unary method, as the
    /// caller `who`.
    fn issue_watched(&self, who: &Authn, w: &Watched) -> Result<Delivered, ApiError> {
        Ok(match w.clone() {
            Watched::AgentSession(r) => Delivered::AgentSession(self.build_agent_session(who, r)?),
            Watched::Rtc(r) => Delivered::Rtc(self.build_rtc_token(who, r)?),
            Watched::RtcPrivileges(r) => {
                Delivered::RtcPrivileges(self.build_rtc_token_with_privileges(who, r)?)
            }
            Watched::RtcRtm(r) => Delivered::RtcRtm(self.build_rtc_rtm_token(who, r)?),
            Watched::Rtm(r) => Delivered::Rtm(self.build_rtm_token(who, r)?),
            Watched::ChatUser(r) => Delivered::ChatUser(self.build_chat_user_token(who, r)?),
            Watched::Generic(r) => Delivered::Generic(self.build_token(who, r)?),
            Watched::ChatApp(r) => Delivered::ChatApp(self.build_chat_app_token(who, r)?),
            Watched::Apaas(r) => Delivered::Apaas(self.build_apaas_token(who, r)?),
            Watched::Fpa(r) => Delivered::Fpa(self.build_fpa_token(who, r)?),
        })
    }

    /// One full issuance of `w` for `transport`: run (audited), counted
    /// and logged as the unary method.
    async fn deliver_once(
        &self,
        transport: Transport,
        who: &Authn,
        w: &Watched,
    ) -> Result<Delivered, ApiError> {
        let start = std::time::Instant::now();
        let result = self.run(|a| a.issue_watched(who, w)).await;
        self.finish(transport, method(w), start, result)
    }

    /// Opens a watch: validates the request, takes a place under the
    /// caller's cap, issues the first token (returned on the channel at
    /// once) and starts the renewals. A refusal before the first delivery
    /// is returned as the error of the call.
    pub async fn watch(
        &self,
        transport: Transport,
        who: Authn,
        creds: Credentials,
        r: pb::WatchTokenRequest,
    ) -> Result<mpsc::Receiver<WatchItem>, ApiError> {
        let identity = who
            .identity
            .clone()
            .map_err(|d| ApiError::from(d.clone()))?;
        let Some(request) = r.request else {
            return Err(ApiError::invalid(
                "request",
                "must be one of agent_session, rtc, rtc_privileges, rtc_rtm, rtm, chat_user, \
                 generic, chat_app, apaas, fpa",
            ));
        };
        let kind = field(&request);
        if self.shared.watches.is_stopping() {
            return Err(shutting_down());
        }
        // The lifetime the first token will have: checked before anything
        // is issued, so a refused watch leaves no token in the audit log.
        let snap = who
            .snapshot
            .clone()
            .unwrap_or_else(|| self.shared.current_full());
        let lifetime = match asked_expire(&request) {
            Ok(Some(e)) => e,
            Ok(None) => rules::DEFAULT_EXPIRE
                .min(snap.auth.limits(&identity).max_expire)
                .max(1),
            Err(fixed) => fixed,
        };
        check_schedule(
            &format!("{kind}.expire_seconds"),
            lifetime,
            r.renew_before_seconds,
        )?;
        let key = match &identity {
            Identity::Caller(c) => WatchKey::Caller(std::sync::Arc::clone(&c.name)),
            _ => WatchKey::Client(crate::policy::client_key(creds.ip, 64)),
        };
        let Some(permit) = self.shared.admit_watch(key) else {
            self.shared.metrics.watches.refused_cap();
            return Err(ApiError::new(
                Code::ResourceExhausted,
                format!(
                    "too many watches open for this caller (max_watches_per_caller = {}); \
                     close one or raise the limit",
                    self.shared.watches.max_per_caller
                ),
            )
            .with_reason("TOO_MANY_WATCHES"));
        };
        let first = self
            .deliver_once(transport, &who, &request)
            .await
            .map_err(|mut e| {
                if e.code == Code::InvalidArgument {
                    e.message = format!("{kind}.{}", e.message);
                }
                e
            })?;
        let (tx, rx) = mpsc::channel(1);
        let watch = Watch {
            api: self.clone(),
            transport,
            identity,
            creds,
            request,
            renew_before: r.renew_before_seconds,
            tx,
            _permit: permit,
        };
        let first = watch.message(first, 1);
        // The channel is new and holds one message: this cannot fail.
        let _ = watch.tx.try_send(Box::new(Ok(first.0)));
        self.shared.metrics.watches.delivered();
        tokio::spawn(watch.run(first.1));
        Ok(rx)
    }
}

/// The refusal of watches at shutdown.
fn shutting_down() -> ApiError {
    ApiError::new(
        Code::Unavailable,
        "the server is shutting down: reconnect (the last token stays valid until its expires_at)",
    )
    .with_reason("SHUTTING_DOWN")
}

/// Why a wait ended.
enum Woke {
    Time,
    Gone,
    Stop,
    MaxLife,
}

impl Watch {
    /// The message for `d`, numbered `seq`, and when its renewal is due.
    fn message(&self, d: Delivered, seq: u64) -> (pb::WatchTokenResponse, (u32, u32)) {
        let (issued_at, expires_at) = times(&d);
        let at = renew_at(issued_at, expires_at, self.renew_before, random_u32());
        (
            pb::WatchTokenResponse {
                response: Some(d),
                sequence: seq,
                renew_at: at,
            },
            (at, expires_at),
        )
    }

    /// Waits until `at` (unix seconds), the client leaving, shutdown, or
    /// the end of the stream's life.
    async fn wait(
        &self,
        at: u32,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        end_of_life: u32,
    ) -> Woke {
        let clock = &self.api.shared.clock;
        tokio::select! {
            () = clock.wait_until(at.min(end_of_life)) => {
                if at > end_of_life { Woke::MaxLife } else { Woke::Time }
            }
            () = self.tx.closed() => Woke::Gone,
            // Shutdown, or the registry is gone (so is the server).
            _ = stop.wait_for(|s| *s) => Woke::Stop,
        }
    }

    /// Sends `item`, or gives up after [`SEND_TIMEOUT`] (the client does
    /// not read) or when the client is gone. Returns whether it was sent.
    async fn send(&self, item: WatchItem) -> bool {
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, self.tx.send(item)).await,
            Ok(Ok(()))
        )
    }

    /// The renewals, until the stream ends.
    async fn run(self, (mut next, mut expires_at): (u32, u32)) {
        let shared = std::sync::Arc::clone(&self.api.shared);
        let metrics = &shared.metrics.watches;
        metrics.opened();
        let mut stop = shared.watches.stopping();
        let end_of_life = shared
            .clock
            .now()
            .saturating_add(u32::try_from(shared.watches.max_life.as_secs()).unwrap_or(u32::MAX));
        let mut seq = 1u64;
        let ended = 'stream: loop {
            match self.wait(next, &mut stop, end_of_life).await {
                Woke::Time => {}
                Woke::Gone => break "client_gone",
                Woke::MaxLife => break "max_watch_seconds",
                Woke::Stop => {
                    let _ = self.send(Box::new(Err(shutting_down()))).await;
                    break "shutdown";
                }
            }
            // Renew: retried with backoff while the current token is valid.
            let mut backoff = 1u32;
            let delivered = loop {
                let snap = shared.current_full();
                let who =
                    Authn::pinned(snap.auth.reauthenticate(&self.identity, &self.creds), snap);
                // Boxed: the renewal's state is allocated while it runs,
                // not kept in every idle watch's task.
                let renewal = Box::pin(self.api.deliver_once(self.transport, &who, &self.request));
                match renewal.await {
                    Ok(d) => break d,
                    Err(e) if transient(&e) => {
                        let wait = e
                            .retry_after_secs()
                            .map_or(backoff, |s| u32::try_from(s).unwrap_or(u32::MAX))
                            .max(backoff);
                        let retry = shared.clock.now().saturating_add(wait);
                        if retry >= expires_at {
                            let _ = self.send(Box::new(Err(e))).await;
                            break 'stream "error";
                        }
                        metrics.retried();
                        match self.wait(retry, &mut stop, end_of_life).await {
                            Woke::Time => {}
                            Woke::Gone => break 'stream "client_gone",
                            Woke::MaxLife => break 'stream "max_watch_seconds",
                            Woke::Stop => {
                                let _ = self.send(Box::new(Err(shutting_down()))).await;
                                break 'stream "shutdown";
                            }
                        }
                        backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
                    }
                    Err(e) => {
                        let _ = self.send(Box::new(Err(e))).await;
                        break 'stream "error";
                    }
                }
            };
            seq += 1;
            let (msg, (at, exp)) = self.message(delivered, seq);
            if !self.send(Box::new(Ok(msg))).await {
                break if self.tx.is_closed() {
                    "client_gone"
                } else {
                    "send_timeout"
                };
            }
            metrics.delivered();
            next = at;
            expires_at = exp;
        };
        metrics.closed(ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_defaults_bounds_and_jitter() {
        // An hour: renewed a third before expiry, up to 6 minutes earlier.
        let (i, e) = (1_000_000, 1_003_600);
        assert_eq!(renew_at(i, e, None, 0), e - 1200);
        assert_eq!(renew_at(i, e, None, 360), e - 1200 - 360);
        assert_eq!(renew_at(i, e, None, 361), e - 1200);
        for j in [0, 1, 77, 359, 360, u32::MAX] {
            let at = renew_at(i, e, Some(5), j);
            // Never later than 30 s before expiry, at most 10% earlier.
            assert!(at <= e - 30 && at >= e - 30 - 360, "{at}");
        }
        // A lifetime too short for the rules still renews after issue.
        assert_eq!(renew_at(10, 20, None, 0), 11);
        assert_eq!(renew_at(0, 0, None, 0), 1);
    }

    #[test]
    fn schedule_checks_name_the_field() {
        let bad = |lifetime, rb| check_schedule("rtc.expire_seconds", lifetime, rb).unwrap_err();
        assert!(
            bad(3600, Some(0))
                .message
                .starts_with("renew_before_seconds: must be at least 5")
        );
        assert!(
            bad(3600, Some(4))
                .message
                .starts_with("renew_before_seconds:")
        );
        assert!(
            bad(3600, Some(3600))
                .message
                .starts_with("renew_before_seconds: must be below the token lifetime")
        );
        assert!(
            bad(3600, Some(3300))
                .message
                .contains("must be at most 3230")
        );
        assert!(
            bad(59, None)
                .message
                .starts_with("rtc.expire_seconds: a watched token")
        );
        assert_eq!(bad(3600, Some(0)).code, Code::InvalidArgument);
        assert!(check_schedule("x", 3600, Some(3230)).is_ok());
        assert!(check_schedule("x", 60, None).is_ok());
        assert!(check_schedule("x", 86_400, Some(5)).is_ok());
        // Out of the token rules: the issuance names it.
        assert!(check_schedule("x", 0, None).is_ok());
        assert!(check_schedule("x", 100_000, None).is_ok());
    }
}
