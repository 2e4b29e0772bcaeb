//! The audit log: one structured event per issued or refused token, on the
//! `audit` log target (so it can be routed and shipped on its own, e.g.
//! `RUST_LOG=info,audit=info` or `--audit-log FILE`).
//!
//! An event names the caller, the RPC, the app, the channel(s), uid(s) or
//! account(s), role(s), requested expiry, and for issued tokens a short
//! fingerprint (first 12 hex characters of the token's SHA-256) and the
//! expiry time: never a token, a key or a certificate.

use std::fmt;

use agora_token::Role;

use crate::domain::{Issued, RtcUser, fingerprint};
use crate::policy::AccessRequest;

/// The log target of audit events.
pub const TARGET: &str = "audit";

/// Field values written straight into the log line (no intermediate
/// strings): items separated by commas.
struct List<'a, T>(&'a [T], fn(&T, &mut fmt::Formatter<'_>) -> fmt::Result);

impl<T> fmt::Display for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            (self.1)(item, f)?;
        }
        Ok(())
    }
}

fn channel(c: &&str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    // A channel name with a comma is quoted, so that it is not read as
    // two channels of the list.
    if c.contains(',') {
        write!(f, "{c:?}")
    } else {
        f.write_str(c)
    }
}

fn user(u: &RtcUser, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match u {
        RtcUser::Uid(n) => write!(f, "{n}"),
        // Quoted, so an account "42" is told apart from uid 42.
        RtcUser::Account(s) => write!(f, "{s:?}"),
    }
}

fn role(r: &Role, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(match r {
        Role::Publisher => "publisher",
        Role::Subscriber => "subscriber",
    })
}

fn token_fingerprint(t: &&Issued, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&fingerprint(&t.token))
}

/// Records issued tokens.
pub fn issued(caller: &str, rpc: &str, a: &AccessRequest<'_>, tokens: &[&Issued]) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let expires_at = tokens.first().map_or(0, |t| t.expires_at);
    tracing::info!(
        target: TARGET,
        decision = "issued",
        caller,
        rpc,
        kind = a.kind.as_str(),
        app_id = a.app_id,
        channel = %List(&a.channels, channel),
        uid = %List(&a.users, user),
        role = %List(&a.roles, role),
        expire = a.expire,
        expires_at,
        token_fp = %List(tokens, token_fingerprint),
        "token issued"
    );
}

/// Records a refusal and its reason (the error message the caller got).
pub fn refused(caller: &str, rpc: &str, a: &AccessRequest<'_>, reason: &str) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    tracing::info!(
        target: TARGET,
        decision = "refused",
        caller,
        rpc,
        kind = a.kind.as_str(),
        app_id = a.app_id,
        channel = %List(&a.channels, channel),
        uid = %List(&a.users, user),
        role = %List(&a.roles, role),
        expire = a.expire,
        reason,
        "token refused"
    );
}
