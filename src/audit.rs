//! The audit log: one structured event per issued or refused token, on the
//! `audit` log target (so it can be routed and shipped on its own, e.g.
//! `RUST_LOG=info,audit=info` or `--audit-log FILE`).
//!
//! An event names the caller, the RPC, the app, the channel(s), uid(s) or
//! account(s), role(s), requested expiry, and for issued tokens a short
//! fingerprint (first 12 hex characters of the token's SHA-256) and the
//! expiry time: never a token, a key or a certificate.
//!
//! Off the request path: once [`start`] has run (the service does it at
//! start-up), a request only copies the event's values into a [`Record`]
//! and hands it to the audit thread, which computes the fingerprints and
//! formats and emits the event. The channel is bounded and lossless (a full
//! channel makes requests wait rather than drop events); [`flush`] at
//! shutdown waits until every record is written. Without [`start`] (tests,
//! the library used in-process) events are emitted on the calling thread.

use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use agora_token::Role;

use crate::auth::AccessRequest;
use crate::issuer::{Issued, RtcUser, fingerprint};

/// The log target of audit events.
pub const TARGET: &str = "audit";

/// Records waiting for the audit thread at most.
const QUEUE: usize = 16 * 1024;

/// One audit event's values, owned so another thread can write them.
#[derive(Debug)]
struct Record {
    decision: &'static str,
    caller: String,
    rpc: &'static str,
    kind: &'static str,
    app_id: String,
    channels: Vec<String>,
    users: Vec<RtcUser>,
    roles: Vec<Role>,
    expire: Option<u32>,
    expires_at: u32,
    /// Issued tokens, fingerprinted by the writer and then dropped.
    tokens: Vec<String>,
    reason: String,
}

enum Message {
    Record(Box<Record>),
    Flush(SyncSender<()>),
}

static SINK: OnceLock<SyncSender<Message>> = OnceLock::new();

/// Starts the audit thread (idempotent). Returns an error only if the
/// thread cannot be spawned; events are then written on the request path.
pub fn start() -> std::io::Result<()> {
    if SINK.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = sync_channel::<Message>(QUEUE);
    std::thread::Builder::new()
        .name("audit".to_owned())
        .spawn(move || run(rx))?;
    // A concurrent start would leave one idle thread; harmless.
    let _ = SINK.set(tx);
    Ok(())
}

fn run(rx: Receiver<Message>) {
    for m in rx {
        match m {
            Message::Record(r) => write(&r),
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Waits until every audit record handed over so far has been written.
pub fn flush() {
    if let Some(tx) = SINK.get() {
        let (done_tx, done_rx) = sync_channel(1);
        if tx.send(Message::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }
}

fn submit(r: Record) {
    match SINK.get() {
        Some(tx) => {
            if let Err(e) = tx.send(Message::Record(Box::new(r))) {
                // The audit thread is gone: write here rather than lose it.
                if let Message::Record(r) = e.0 {
                    write(&r);
                }
            }
        }
        None => write(&r),
    }
}

fn users(r: &Record) -> String {
    let mut out = String::new();
    for (i, u) in r.users.iter().enumerate() {
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

fn roles(r: &Record) -> String {
    let names: Vec<&str> = r
        .roles
        .iter()
        .map(|r| match r {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        })
        .collect();
    names.join(",")
}

fn write(r: &Record) {
    let channel = r.channels.join(",");
    let (uid, role) = (users(r), roles(r));
    if r.decision == "issued" {
        let fps: Vec<String> = r.tokens.iter().map(|t| fingerprint(t)).collect();
        tracing::info!(
            target: TARGET,
            decision = r.decision,
            caller = %r.caller,
            rpc = r.rpc,
            kind = r.kind,
            app_id = %r.app_id,
            channel = %channel,
            uid = %uid,
            role = %role,
            expire = r.expire,
            expires_at = r.expires_at,
            token_fp = %fps.join(","),
            "token issued"
        );
    } else {
        tracing::info!(
            target: TARGET,
            decision = r.decision,
            caller = %r.caller,
            rpc = r.rpc,
            kind = r.kind,
            app_id = %r.app_id,
            channel = %channel,
            uid = %uid,
            role = %role,
            expire = r.expire,
            reason = %r.reason,
            "token refused"
        );
    }
}

fn record(
    decision: &'static str,
    caller: &str,
    rpc: &'static str,
    a: &AccessRequest<'_>,
) -> Record {
    Record {
        decision,
        caller: caller.to_owned(),
        rpc,
        kind: a.kind.as_str(),
        app_id: a.app_id.to_owned(),
        channels: a.channels.iter().map(|c| (*c).to_owned()).collect(),
        users: a.users.clone(),
        roles: a.roles.clone(),
        expire: a.expire,
        expires_at: 0,
        tokens: Vec::new(),
        reason: String::new(),
    }
}

/// Records issued tokens.
pub fn issued(caller: &str, rpc: &'static str, a: &AccessRequest<'_>, tokens: &[&Issued]) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let mut r = record("issued", caller, rpc, a);
    r.expires_at = tokens.first().map_or(0, |t| t.expires_at);
    r.tokens = tokens.iter().map(|t| t.token.clone()).collect();
    submit(r);
}

/// Records a refusal and its reason (the error message the caller got).
pub fn refused(caller: &str, rpc: &'static str, a: &AccessRequest<'_>, reason: &str) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let mut r = record("refused", caller, rpc, a);
    r.reason = reason.to_owned();
    submit(r);
}
