//! The audit log: one structured event per issued or refused token, on the
//! `audit` log target (so it can be routed and shipped on its own, e.g.
//! `RUST_LOG=info,audit=info` or `--audit-log FILE`).
//!
//! An issued token is recorded from what it grants (its drafts: every
//! service, every identity exactly as packed), not from what was asked:
//! the app, the channel(s), the RTC uid(s) or account(s), the RTM / Chat
//! user id(s), the role (publisher when any service publishes), the
//! services, the lifetime, and a short fingerprint of each token (first 12
//! hex characters of its SHA-256) with its expiry time. A refusal records
//! what the request asked for, and what the token would have granted when
//! the refusal came from the policy. Never a token, a key or a certificate.

use std::fmt;

use agora_token::service::service_name;
use agora_token::{Payload, Role};

use super::asked::Asked;
use crate::domain::{Draft, Fingerprint, Issued, RtcUser};

/// The log target of audit events.
pub const TARGET: &str = "audit";

/// Items separated by commas, written straight into the log line.
struct List<I>(I);

impl<I, T> fmt::Display for List<I>
where
    I: Iterator<Item = T> + Clone,
    T: fmt::Display,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.clone().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            item.fmt(f)?;
        }
        Ok(())
    }
}

/// A channel name or identity as packed: as is (the log formatter escapes
/// it), but quoted when it holds a comma, so that it is not read as two
/// list items, or when it is not UTF-8.
struct Item<'a>(&'a [u8]);

impl fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) if !s.contains(',') => f.write_str(s),
            _ => write!(f, "{:?}", String::from_utf8_lossy(self.0)),
        }
    }
}

/// A uid as asked: numbers bare, accounts quoted (account `"42"` is told
/// apart from uid 42).
struct AskedUser<'a>(&'a RtcUser);

impl fmt::Display for AskedUser<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RtcUser::Uid(n) => write!(f, "{n}"),
            RtcUser::Account(s) => write!(f, "{s:?}"),
        }
    }
}

fn payloads<'d, 'a: 'd>(drafts: &'d [&'d Draft<'a>]) -> impl Iterator<Item = &'d Payload> + Clone {
    drafts
        .iter()
        .flat_map(|d| d.services().iter().map(|s| &s.payload))
}

/// Channels (RTC, Streaming, FCDN) and APaaS rooms.
fn channels<'d>(drafts: &'d [&'d Draft<'_>]) -> impl Iterator<Item = Item<'d>> + Clone {
    payloads(drafts).filter_map(|p| match p {
        Payload::Rtc { channel_name, .. }
        | Payload::Streaming { channel_name, .. }
        | Payload::Fcdn { channel_name, .. } => Some(Item(channel_name)),
        Payload::Apaas { room_uuid, .. } if !room_uuid.is_empty() => Some(Item(room_uuid)),
        _ => None,
    })
}

/// RTC identities as packed (`""`: any user).
fn rtc_users<'d>(drafts: &'d [&'d Draft<'_>]) -> impl Iterator<Item = Item<'d>> + Clone {
    payloads(drafts).filter_map(|p| match p {
        Payload::Rtc { uid: u, .. }
        | Payload::Streaming { account: u, .. }
        | Payload::Fcdn { account: u, .. } => Some(Item(u)),
        _ => None,
    })
}

/// RTM / RTM2 / Chat user ids and APaaS user uuids.
fn user_ids<'d>(drafts: &'d [&'d Draft<'_>]) -> impl Iterator<Item = Item<'d>> + Clone {
    payloads(drafts).filter_map(|p| match p {
        Payload::Rtm { user_id } | Payload::Chat { user_id } | Payload::Rtm2 { user_id, .. } => {
            Some(Item(user_id))
        }
        Payload::Apaas { user_uuid, .. } if !user_uuid.is_empty() => Some(Item(user_uuid)),
        _ => None,
    })
}

fn services<'d>(drafts: &'d [&'d Draft<'_>]) -> impl Iterator<Item = &'static str> + Clone {
    drafts
        .iter()
        .flat_map(|d| d.services().iter().map(|s| service_name(s.service_type())))
}

/// Every privilege of the drafts, service by service, as packed:
/// `RTC[1:3600,2:3600]` (privilege id: seconds; the ids are the format's,
/// e.g. RTC 1 join channel, 2-4 publish audio / video / data); services
/// separated by commas. Only plain characters, so log lines need not quote
/// or escape it.
struct Privileges<'d, 'a>(&'d [&'d Draft<'a>]);

impl fmt::Display for Privileges<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().flat_map(|d| d.services()).enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(service_name(s.service_type()))?;
            f.write_str("[")?;
            for (j, (id, v)) in s.privileges.iter().enumerate() {
                if j > 0 {
                    f.write_str(",")?;
                }
                let mut n = itoa::Buffer::new();
                f.write_str(n.format(id))?;
                f.write_str(":")?;
                f.write_str(n.format(v))?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

fn role(drafts: &[&Draft<'_>]) -> &'static str {
    if drafts.iter().any(|d| d.grants().any(|g| g.publishes())) {
        Role::Publisher.as_str()
    } else {
        Role::Subscriber.as_str()
    }
}

/// Records issued tokens.
pub fn issued(caller: &str, rpc: &str, drafts: &[&Draft<'_>], tokens: &[&Issued]) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let expires_at = tokens.first().map_or(0, |t| t.expires_at);
    let (kind, app_id, expire) = drafts
        .first()
        .map_or(("", "", 0), |d| (d.kind().as_str(), d.app_id(), d.expire()));
    // Hashed once, whatever the number of log layers that format the event
    // (at most three tokens: an agent session).
    let mut fps = [None; 3];
    for (slot, t) in fps.iter_mut().zip(tokens) {
        *slot = Some(Fingerprint::of(&t.token));
    }
    tracing::info!(
        target: TARGET,
        decision = "issued",
        caller,
        rpc,
        kind,
        app_id,
        channel = %List(channels(drafts)),
        uid = %List(rtc_users(drafts)),
        role = %role(drafts),
        user_id = %List(user_ids(drafts)),
        services = %List(services(drafts)),
        privileges = %Privileges(drafts),
        expire,
        expires_at,
        token_fp = %List(fps.iter().flatten()),
        "token issued"
    );
}

/// Records a refusal and its reason (the error message the caller got):
/// what the request asked for, and, when the policy refused drafted
/// tokens, what they would have granted.
pub fn refused(
    caller: &str,
    rpc: &str,
    a: &Asked<'_>,
    drafts: Option<&[&Draft<'_>]>,
    reason: &str,
) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let drafts = drafts.unwrap_or(&[]);
    let app_id = drafts.first().map_or(a.app_id, |d| d.app_id());
    tracing::info!(
        target: TARGET,
        decision = "refused",
        caller,
        rpc,
        kind = a.kind.as_str(),
        app_id,
        channel = %List(a.channels.iter().map(|c| Item(c.as_bytes()))),
        uid = %List(a.users.iter().map(AskedUser)),
        role = %List(a.roles.iter().map(|r| r.as_str())),
        expire = a.expire,
        granted_uid = %List(rtc_users(drafts)),
        granted_user_id = %List(user_ids(drafts)),
        granted_services = %List(services(drafts)),
        reason,
        "token refused"
    );
}

/// Most audit events of early refusals per second; beyond it they are
/// counted and summarized (a flood of bad credentials must not fill the
/// disk through the audit trail either).
pub const EARLY_REFUSALS_PER_SECOND: u32 = 50;

static EARLY_BUDGET: super::logging::LineBudget =
    super::logging::LineBudget::new(EARLY_REFUSALS_PER_SECOND);

/// Records a request refused before it was read: bad or missing
/// credentials and the failed-authentication throttle (caller
/// `unauthenticated`), the server's concurrency limit. The log context adds
/// the request id and the peer. At most [`EARLY_REFUSALS_PER_SECOND`]
/// events a second; the ones over it are counted in one summary event
/// (`decision="refused_summary"`, `suppressed=N`) written with the next.
pub fn refused_early(caller: &str, rpc: &str, reason: &str) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let suppressed = match EARLY_BUDGET.admit(std::time::Instant::now()) {
        super::logging::Verdict::Suppress => return,
        super::logging::Verdict::Log { suppressed } => suppressed,
    };
    if suppressed > 0 {
        tracing::info!(
            target: TARGET,
            decision = "refused_summary",
            suppressed,
            per_second = EARLY_REFUSALS_PER_SECOND,
            "early refusals over the audit rate limit, not recorded one by one"
        );
    }
    tracing::info!(
        target: TARGET,
        decision = "refused",
        caller,
        rpc,
        reason,
        "token refused"
    );
}
