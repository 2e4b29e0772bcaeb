//! `token-authority watch <kind>`: keeps a token fresh through the
//! server's `WatchToken` stream. Prints each delivery as one JSON line (the
//! proto3 JSON of `WatchTokenResponse`), and with `--out FILE` rewrites
//! FILE atomically on each delivery (a temporary file in the same
//! directory, synced, then renamed over FILE; mode 0600): a sidecar for any
//! stack, in the manner of Vault Agent templates. A reader of FILE sees the
//! previous token or the new one, never a partial one.
//!
//! Reconnects: when the stream ends with OK (the server's
//! `max_watch_seconds`) at once; after UNAVAILABLE, RESOURCE_EXHAUSTED, a
//! connection failure or any other transient error with backoff (1 s
//! doubling to 30 s, with jitter; reset by a delivery). It stops (exit 1)
//! on INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED and NOT_FOUND:
//! retrying cannot help, the request or the caller's access must change.

use super::CliError;
use super::{RoleArg, UserArgs};
use crate::pb::token_service_client::TokenServiceClient;
use crate::pb::watch_token_request::Request as Watched;
use crate::pb::watch_token_response::Response as Delivered;
use crate::pb::{self, WatchTokenRequest, WatchTokenResponse};
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default environment variable holding the caller's API key.
pub const DEFAULT_KEY_ENV: &str = "TOKEN_AUTHORITY_API_KEY";

/// `token-authority watch` options.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The server: http://HOST:PORT, or https://HOST:PORT with --ca-file.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub server: String,
    /// The environment variable holding the API key (sent as
    /// `authorization: Bearer`; never taken from the command line). Unset
    /// or empty: no key (a server in open mode).
    #[arg(long, default_value = DEFAULT_KEY_ENV, value_name = "VAR")]
    pub key_env: String,
    /// PEM file of the CA that signed the server's certificate (https).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Seconds before expiry to renew (server default: a third of the
    /// lifetime; never later than 30 s before expiry).
    #[arg(long, value_name = "S")]
    pub renew_before: Option<u32>,
    /// Rewrite FILE atomically with each delivery.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// What --out holds: the token (an agent session's agent token), or the
    /// delivery's JSON (every token of an agent session).
    #[arg(long, value_enum, default_value_t)]
    pub out_format: OutFormat,
    /// Do not print deliveries on stdout.
    #[arg(long)]
    pub quiet: bool,
    /// Stop after this many deliveries (default: never).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// What to watch.
    #[command(subcommand)]
    pub kind: WatchKind,
}

/// The content of `--out`.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum OutFormat {
    /// The token and a newline.
    #[default]
    Token,
    /// The delivery as proto3 JSON.
    Json,
}

/// What to watch (the `oneof` of `WatchTokenRequest`).
#[derive(Debug, Subcommand)]
pub enum WatchKind {
    /// An RTC token (BuildRtcToken).
    Rtc {
        /// Channel name ("" = any channel).
        #[arg(long, value_name = "C")]
        channel: String,
        #[command(flatten)]
        user: UserArgs,
        /// Role.
        #[arg(long, value_enum, default_value_t)]
        role: RoleArg,
        /// Token lifetime in seconds (server default: 3600).
        #[arg(long, value_name = "S")]
        expire: Option<u32>,
        /// App id (default: the server's default app).
        #[arg(long, value_name = "ID", default_value = "")]
        app_id: String,
    },
    /// An RTC + RTM token (BuildRtcRtmToken).
    RtcRtm {
        /// Channel name.
        #[arg(long, value_name = "C")]
        channel: String,
        #[command(flatten)]
        user: UserArgs,
        /// RTM user id (default: the uid or account).
        #[arg(long, value_name = "ID")]
        rtm_user_id: Option<String>,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S")]
        expire: Option<u32>,
        /// App id.
        #[arg(long, value_name = "ID", default_value = "")]
        app_id: String,
    },
    /// An RTM login token (BuildRtmToken).
    Rtm {
        /// RTM user id.
        #[arg(long, value_name = "ID")]
        user_id: String,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S")]
        expire: Option<u32>,
        /// App id.
        #[arg(long, value_name = "ID", default_value = "")]
        app_id: String,
    },
    /// A Chat user token (BuildChatUserToken).
    ChatUser {
        /// Chat user id.
        #[arg(long, value_name = "ID")]
        user_id: String,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S")]
        expire: Option<u32>,
        /// App id.
        #[arg(long, value_name = "ID", default_value = "")]
        app_id: String,
    },
    /// The tokens of a ConvoAI agent session (BuildAgentSession).
    AgentSession {
        /// Channel name.
        #[arg(long, value_name = "C")]
        channel: String,
        /// The agent's uid (decimal, or an account with --string-uid).
        #[arg(long, value_name = "UID")]
        agent_uid: String,
        /// The end user's uid.
        #[arg(long, value_name = "UID")]
        user_uid: String,
        /// The uids are string accounts.
        #[arg(long)]
        string_uid: bool,
        /// Give the agent and the user RTM too.
        #[arg(long)]
        enable_rtm: bool,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S")]
        expire: Option<u32>,
        /// App id.
        #[arg(long, value_name = "ID", default_value = "")]
        app_id: String,
    },
    /// Any kind, as the proto3 JSON of a `WatchTokenRequest`, e.g.
    /// '{"generic":{"services":[...]}}'.
    Request {
        /// The JSON.
        json: String,
    },
}

impl WatchKind {
    /// The `WatchTokenRequest` (without `renew_before_seconds`).
    fn request(&self) -> Result<WatchTokenRequest, CliError> {
        let user = |u: &UserArgs| match (&u.account, u.uid) {
            (Some(a), _) => pb::build_rtc_token_request::User::Account(a.clone()),
            (None, uid) => pb::build_rtc_token_request::User::Uid(uid.unwrap_or(0)),
        };
        let role = |r: RoleArg| match r {
            RoleArg::Publisher => pb::Role::Publisher as i32,
            RoleArg::Subscriber => pb::Role::Subscriber as i32,
        };
        let request = match self {
            Self::Rtc {
                channel,
                user: u,
                role: r,
                expire,
                app_id,
            } => Watched::Rtc(pb::BuildRtcTokenRequest {
                channel_name: channel.clone(),
                user: Some(user(u)),
                role: role(*r),
                expire_seconds: *expire,
                privilege_expire_seconds: None,
                app_id: app_id.clone(),
            }),
            Self::RtcRtm {
                channel,
                user: u,
                rtm_user_id,
                expire,
                app_id,
            } => Watched::RtcRtm(pb::BuildRtcRtmTokenRequest {
                channel_name: channel.clone(),
                user: Some(match user(u) {
                    pb::build_rtc_token_request::User::Uid(n) => {
                        pb::build_rtc_rtm_token_request::User::Uid(n)
                    }
                    pb::build_rtc_token_request::User::Account(a) => {
                        pb::build_rtc_rtm_token_request::User::Account(a)
                    }
                }),
                rtm_user_id: rtm_user_id.clone(),
                expire_seconds: *expire,
                app_id: app_id.clone(),
                ..Default::default()
            }),
            Self::Rtm {
                user_id,
                expire,
                app_id,
            } => Watched::Rtm(pb::BuildRtmTokenRequest {
                user_id: user_id.clone(),
                expire_seconds: *expire,
                app_id: app_id.clone(),
                ..Default::default()
            }),
            Self::ChatUser {
                user_id,
                expire,
                app_id,
            } => Watched::ChatUser(pb::BuildChatUserTokenRequest {
                user_id: user_id.clone(),
                expire_seconds: *expire,
                app_id: app_id.clone(),
            }),
            Self::AgentSession {
                channel,
                agent_uid,
                user_uid,
                string_uid,
                enable_rtm,
                expire,
                app_id,
            } => Watched::AgentSession(pb::BuildAgentSessionRequest {
                channel_name: channel.clone(),
                agent_uid: agent_uid.clone(),
                user_uid: user_uid.clone(),
                string_uid: *string_uid,
                enable_rtm: *enable_rtm,
                expire_seconds: *expire,
                app_id: app_id.clone(),
            }),
            Self::Request { json } => {
                return serde_json::from_str::<WatchTokenRequest>(json).map_err(|e| {
                    CliError::new(
                        super::EXIT_USAGE,
                        format!("request: not a WatchTokenRequest: {e}"),
                    )
                });
            }
        };
        Ok(WatchTokenRequest {
            request: Some(request),
            renew_before_seconds: None,
        })
    }
}

/// The token `--out` holds for a delivery (`--out-format token`).
fn token_of(d: &Delivered) -> &str {
    match d {
        Delivered::AgentSession(r) => &r.agent_token,
        Delivered::Rtc(r) => &r.token,
        Delivered::RtcPrivileges(r) => &r.token,
        Delivered::RtcRtm(r) => &r.token,
        Delivered::Rtm(r) => &r.token,
        Delivered::ChatUser(r) => &r.token,
        Delivered::Generic(r) => &r.token,
        Delivered::ChatApp(r) => &r.token,
        Delivered::Apaas(r) => &r.token,
        Delivered::Fpa(r) => &r.token,
    }
}

/// Replaces `path` with `content` atomically: a temporary file beside it
/// (same directory, so the rename stays on one file system), written,
/// synced, made private (0600 on Unix: it holds a credential), renamed
/// over `path`. On failure the temporary file is removed and `path` is
/// left as it was.
pub fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".to_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// How a stream ended.
enum Ended {
    /// OK: the server's `max_watch_seconds`; reconnect at once.
    Reconnect,
    /// A transient failure: reconnect after a backoff.
    Retry(String),
    /// `--count` reached.
    Done,
}

/// Whether a status is worth retrying.
fn retryable(code: tonic::Code) -> bool {
    !matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound
            | tonic::Code::Unimplemented
            | tonic::Code::FailedPrecondition
    )
}

/// The state of one `watch` run.
struct Watcher {
    args: WatchArgs,
    request: WatchTokenRequest,
    key: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    delivered: u64,
}

impl Watcher {
    async fn channel(&self) -> Result<tonic::transport::Channel, String> {
        let mut ep = tonic::transport::Endpoint::from_shared(self.args.server.clone())
            .map_err(|e| format!("--server {}: {e}", self.args.server))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(ca) = &self.args.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("--ca-file {}: {e}", ca.display()))?;
            ep = ep
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                )
                .map_err(|e| format!("--ca-file: {e}"))?;
        }
        ep.connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.args.server))
    }

    /// Hands a delivery to stdout and `--out`.
    fn deliver(&mut self, m: &WatchTokenResponse) -> Result<(), CliError> {
        let json = serde_json::to_string(m)
            .map_err(|e| CliError::new(super::EXIT_FAILURE, format!("cannot encode: {e}")))?;
        if let (Some(out), Some(d)) = (&self.args.out, &m.response) {
            let content = match self.args.out_format {
                OutFormat::Token => format!("{}\n", token_of(d)),
                OutFormat::Json => format!("{json}\n"),
            };
            write_atomically(out, content.as_bytes()).map_err(|e| {
                CliError::new(
                    super::EXIT_FAILURE,
                    format!("--out {}: cannot write: {e}", out.display()),
                )
            })?;
        }
        if !self.args.quiet {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{json}");
            let _ = stdout.flush();
        }
        self.delivered += 1;
        Ok(())
    }

    /// One stream, until it ends.
    async fn stream_once(&mut self) -> Result<Ended, CliError> {
        let channel = match self.channel().await {
            Ok(c) => c,
            Err(e) => return Ok(Ended::Retry(e)),
        };
        let mut client = TokenServiceClient::new(channel);
        let mut req = tonic::Request::new(self.request.clone());
        if let Some(k) = &self.key {
            req.metadata_mut().insert("authorization", k.clone());
        }
        let mut stream = match client.watch_token(req).await {
            Ok(s) => s.into_inner(),
            Err(s) if retryable(s.code()) => {
                return Ok(Ended::Retry(format!("{:?}: {}", s.code(), s.message())));
            }
            Err(s) => return Err(refused(&s)),
        };
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    self.deliver(&m)?;
                    if self.args.count.is_some_and(|n| self.delivered >= n) {
                        return Ok(Ended::Done);
                    }
                }
                Ok(None) => return Ok(Ended::Reconnect),
                Err(s) if retryable(s.code()) => {
                    return Ok(Ended::Retry(format!("{:?}: {}", s.code(), s.message())));
                }
                Err(s) => return Err(refused(&s)),
            }
        }
    }
}

fn refused(s: &tonic::Status) -> CliError {
    CliError::new(
        super::EXIT_FAILURE,
        format!("watch refused ({:?}): {}", s.code(), s.message()),
    )
}

/// `token-authority watch`.
pub fn watch_main(args: WatchArgs) -> Result<(), CliError> {
    let mut request = args.kind.request()?;
    if args.renew_before.is_some() {
        request.renew_before_seconds = args.renew_before;
    }
    let key = match std::env::var(&args.key_env) {
        Ok(k) if !k.trim().is_empty() => {
            Some(format!("Bearer {}", k.trim()).parse().map_err(|_| {
                CliError::new(
                    super::EXIT_USAGE,
                    format!("{}: not a valid API key (printable ASCII)", args.key_env),
                )
            })?)
        }
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(super::EXIT_FAILURE, format!("cannot start: {e}")))?;
    let mut w = Watcher {
        args,
        request,
        key,
        delivered: 0,
    };
    rt.block_on(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let before = w.delivered;
            match w.stream_once().await? {
                Ended::Done => return Ok(()),
                // Ended at the server's max_watch_seconds: at once (unless
                // it ended without a delivery: then as a failure).
                Ended::Reconnect if w.delivered > before => {
                    backoff = Duration::from_secs(1);
                    continue;
                }
                Ended::Reconnect => {
                    let why = "the stream ended without a delivery".to_owned();
                    wait_backoff(&mut backoff, &why).await;
                }
                Ended::Retry(why) => {
                    if w.delivered > before {
                        backoff = Duration::from_secs(1);
                    }
                    wait_backoff(&mut backoff, &why).await;
                }
            }
        }
    })
}

/// Waits `backoff` and up to a quarter more (so that many sidecars spread
/// out), then doubles it up to 30 s.
async fn wait_backoff(backoff: &mut Duration, why: &str) {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let extra = backoff.mul_f64(f64::from(u16::from_le_bytes(b)) / 65535.0 / 4.0);
    let wait = *backoff + extra;
    eprintln!("watch: {why}; reconnecting in {:.1} s", wait.as_secs_f64());
    tokio::time::sleep(wait).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(30));
}
