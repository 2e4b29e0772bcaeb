//! The audit log: one structured event per issued or refused token, on the
//! `audit` log target (so it can be routed and shipped on its own, e.g.
//! `RUST_LOG=info,audit=info` or `--audit-log FILE`).
//!
//! An event names the caller, the RPC, the app, the channel(s), uid(s) or
//! account(s), role(s), requested expiry, and for issued tokens a short
//! fingerprint (first 12 hex characters of the token's SHA-256) and the
//! expiry time: never a token, a key or a certificate.

use agora_token::Role;

use crate::auth::AccessRequest;
use crate::issuer::{Issued, RtcUser, fingerprint};

/// The log target of audit events.
pub const TARGET: &str = "audit";

fn users(a: &AccessRequest<'_>) -> String {
    let mut out = String::new();
    for (i, u) in a.users.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match u {
            RtcUser::Uid(n) => out.push_str(&n.to_string()),
            // Quoted, so an account "42" is told apart from uid 42.
            RtcUser::Account(s) => out.push_str(&format!("{s:?}")),
        }
    }
    out
}

fn roles(a: &AccessRequest<'_>) -> String {
    let names: Vec<&str> = a
        .roles
        .iter()
        .map(|r| match r {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        })
        .collect();
    names.join(",")
}

/// Records issued tokens.
pub fn issued(caller: &str, rpc: &str, a: &AccessRequest<'_>, tokens: &[&Issued]) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let fps: Vec<String> = tokens.iter().map(|t| fingerprint(&t.token)).collect();
    let expires_at = tokens.first().map_or(0, |t| t.expires_at);
    tracing::info!(
        target: TARGET,
        decision = "issued",
        caller,
        rpc,
        kind = a.kind.as_str(),
        app_id = a.app_id,
        channel = %a.channels.join(","),
        uid = %users(a),
        role = %roles(a),
        expire = a.expire,
        expires_at,
        token_fp = %fps.join(","),
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
        channel = %a.channels.join(","),
        uid = %users(a),
        role = %roles(a),
        expire = a.expire,
        reason,
        "token refused"
    );
}
