//! The domain: validated requests become tokens.
//!
//! The [`Issuer`] holds the apps' credentials, the clock and the salt
//! source, applies the defaults and the input rules of [`crate::rules`],
//! and calls the official builders of `agora-token`. It knows nothing of
//! gRPC, HTTP or configuration files: every transport and the CLI share it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use agora_token::service::{
    permission_type_name, privilege_name, resource_type_name, service_name,
};
use agora_token::{
    AppCertificate, AppId, BuildError, Grant, ParseError, Payload, Role, RtcPrivilegeExpires,
    Rtm2Permissions, Service, UnverifiedToken, builders, v1::V1Token,
};

use crate::rules::{self, Violation};

/// One app's credentials. The certificate never leaves this struct except
/// as an HMAC key inside `agora-token`.
#[derive(Clone, Debug)]
pub struct AppCredentials {
    /// The app id.
    pub app_id: AppId,
    /// The certificate tokens are signed with.
    pub certificate: AppCertificate,
    /// A second certificate accepted when verifying (rotation).
    pub secondary: Option<AppCertificate>,
}

/// The current time, in unix seconds.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, truncated to `u32` like the token format.
    fn now(&self) -> u32;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u32 {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The format's issue_ts is a u32 (good until 2106); truncate as the
        // official builders do.
        secs as u32
    }
}

/// A source of salts.
pub trait SaltSource: Send + Sync + fmt::Debug {
    /// A salt for one token.
    fn salt(&self) -> u32;
}

/// Salts from the operating system's CSPRNG, uniform in 1..=99_999_999
/// (the python3 / Node.js range).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomSalt;

/// Largest salt [`RandomSalt`] returns.
pub const MAX_SALT: u32 = 99_999_999;

/// Random bytes from the OS, fetched [`SALT_POOL`] bytes at a time per
/// thread: one `getrandom` system call per 64 salts instead of one each.
/// Bytes are used once and never leave the thread that fetched them.
const SALT_POOL: usize = 256;

struct SaltPool {
    bytes: [u8; SALT_POOL],
    next: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<SaltPool> = const {
        std::cell::RefCell::new(SaltPool { bytes: [0; SALT_POOL], next: SALT_POOL })
    };
}

/// Four fresh random bytes, or `None` when the OS CSPRNG fails.
fn random_u32() -> Option<u32> {
    let take = |p: &mut SaltPool| -> Option<u32> {
        if p.next + 4 > SALT_POOL {
            getrandom::fill(&mut p.bytes).ok()?;
            p.next = 0;
        }
        let b = &p.bytes[p.next..p.next + 4];
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        p.next += 4;
        Some(v)
    };
    let direct = || {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).ok().map(|()| u32::from_le_bytes(b))
    };
    POOL.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut p) => take(&mut p),
        // Not re-entered in practice; a fresh draw is as good.
        Err(_) => direct(),
    })
    // The thread is being torn down and its pool is gone.
    .unwrap_or_else(|_| direct())
}

impl SaltSource for RandomSalt {
    fn salt(&self) -> u32 {
        // Rejection sampling over the largest multiple of MAX_SALT below 2^32
        // keeps the distribution uniform.
        const ZONE: u32 = u32::MAX - (u32::MAX % MAX_SALT);
        loop {
            let Some(v) = random_u32() else {
                // The OS CSPRNG failing is not recoverable in a useful way;
                // fall back to the next best unpredictable value rather than
                // panicking: the salt is not a secret, only a nonce.
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(1);
                return nanos % MAX_SALT + 1;
            };
            if v < ZONE {
                return v % MAX_SALT + 1;
            }
        }
    }
}

/// A fixed value, as clock or salt (for `--issue-ts`, `--salt` and tests).
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub u32);

impl Clock for Fixed {
    fn now(&self) -> u32 {
        self.0
    }
}

impl SaltSource for Fixed {
    fn salt(&self) -> u32 {
        self.0
    }
}

/// How strictly requests are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checks {
    /// The service's input rules (the default everywhere).
    #[default]
    Strict,
    /// Only what the format can pack (CLI `--unchecked`, for testing).
    FormatOnly,
}

/// Limits of the caller on whose behalf a token is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest token lifetime this caller may ask for.
    pub max_expire: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_expire: rules::MAX_EXPIRE,
        }
    }
}

/// What kind of token was issued (for metrics and audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenKind {
    /// RTC, one expiry for all privileges.
    #[default]
    Rtc,
    /// RTC with separate privilege expiries.
    RtcPrivileges,
    /// RTC + RTM.
    RtcRtm,
    /// RTM login.
    Rtm,
    /// RTM2 with permissions.
    Rtm2,
    /// Chat user.
    ChatUser,
    /// Chat app.
    ChatApp,
    /// FPA.
    Fpa,
    /// APaaS room user.
    ApaasRoomUser,
    /// APaaS user.
    ApaasUser,
    /// APaaS app.
    ApaasApp,
    /// Generic composition.
    Generic,
    /// ConvoAI agent session.
    AgentSession,
}

impl TokenKind {
    /// A stable lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rtc => "rtc",
            Self::RtcPrivileges => "rtc_privileges",
            Self::RtcRtm => "rtc_rtm",
            Self::Rtm => "rtm",
            Self::Rtm2 => "rtm2",
            Self::ChatUser => "chat_user",
            Self::ChatApp => "chat_app",
            Self::Fpa => "fpa",
            Self::ApaasRoomUser => "apaas_room_user",
            Self::ApaasUser => "apaas_user",
            Self::ApaasApp => "apaas_app",
            Self::Generic => "generic",
            Self::AgentSession => "agent_session",
        }
    }
}

/// Why a token was not issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// A request field breaks a rule.
    #[error("{0}")]
    Invalid(#[from] Violation),
    /// No configured app has this id.
    #[error("app_id: no app {0:?} is configured here")]
    UnknownApp(String),
}

impl From<BuildError> for IssueError {
    fn from(e: BuildError) -> Self {
        // With the strict rules nothing reaches the format's limits; with
        // `--unchecked` this is how an over-long field is reported.
        let field = match &e {
            BuildError::TooLong { field, .. } | BuildError::TooMany { field, .. } => *field,
            BuildError::NoService => "services",
            _ => "token",
        };
        Self::Invalid(Violation::new(field, e.to_string()))
    }
}

/// An issued token.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The token: a bearer credential, never to be logged whole.
    pub token: String,
    /// Issue time, unix seconds.
    pub issued_at: u32,
    /// Expiry time, unix seconds (issue time + token lifetime, saturating).
    pub expires_at: u32,
    /// The app the token is for.
    pub app_id: String,
    /// The kind of token.
    pub kind: TokenKind,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("token", &fingerprint(&self.token))
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("app_id", &self.app_id)
            .field("kind", &self.kind)
            .finish()
    }
}

/// A short, non-reversible fingerprint of a token for logs: the first 12 hex
/// characters of its SHA-256.
pub fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(token.as_bytes());
    let mut s = String::with_capacity(12);
    for b in d.iter().take(6) {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// An RTC user: a numeric uid (0 = any user) or a string account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcUser {
    /// Numeric uid; 0 is the wildcard.
    Uid(u32),
    /// String account (not a wildcard, even "0").
    Account(String),
}

impl Default for RtcUser {
    fn default() -> Self {
        Self::Uid(0)
    }
}

/// Fields every request has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Common {
    /// Which app (`None` or `""`: the default app).
    pub app_id: Option<String>,
    /// Token lifetime (`None`: 3600, or the caller's maximum if lower).
    pub expire: Option<u32>,
}

/// `BuildRtcToken`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtcRequest {
    /// App and expiry.
    pub common: Common,
    /// Channel (`""` = any channel).
    pub channel_name: String,
    /// The user.
    pub user: RtcUser,
    /// Publisher (default) or subscriber.
    pub role: Role,
    /// Privilege expiry (`None`: the token expiry).
    pub privilege_expire: Option<u32>,
}

/// Optional per-privilege expiries (absent ones default to the token expiry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrivilegeExpires {
    /// joinChannel.
    pub join_channel: Option<u32>,
    /// publishAudioStream.
    pub publish_audio: Option<u32>,
    /// publishVideoStream.
    pub publish_video: Option<u32>,
    /// publishDataStream.
    pub publish_data: Option<u32>,
}

/// `BuildRtcTokenWithPrivileges`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtcPrivilegesRequest {
    /// App and expiry.
    pub common: Common,
    /// Channel.
    pub channel_name: String,
    /// The user.
    pub user: RtcUser,
    /// The four expiries.
    pub privileges: PrivilegeExpires,
}

/// `BuildRtcRtmToken`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtcRtmRequest {
    /// App and expiry.
    pub common: Common,
    /// Channel.
    pub channel_name: String,
    /// The RTC user.
    pub user: RtcUser,
    /// Role.
    pub role: Role,
    /// One expiry for the RTC privileges (`None`: the token expiry);
    /// ignored where `privileges` gives one.
    pub privilege_expire: Option<u32>,
    /// Separate RTC privilege expiries.
    pub privileges: Option<PrivilegeExpires>,
    /// RTM user id (`None`: the RTC uid string).
    pub rtm_user_id: Option<String>,
    /// RTM login expiry (`None`: the token expiry).
    pub rtm_expire: Option<u32>,
}

/// `BuildRtmToken`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtmRequest {
    /// App and expiry.
    pub common: Common,
    /// User id.
    pub user_id: String,
    /// Build an RTM2 (type 8) service even without permissions.
    pub rtm2: bool,
    /// RTM2 grants: (resource type, permission type, resources). Any grant
    /// makes the token RTM2.
    pub permissions: Vec<(u16, u16, Vec<String>)>,
}

/// `BuildChatUserToken`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatUserRequest {
    /// App and expiry.
    pub common: Common,
    /// Chat user id.
    pub user_id: String,
}

/// APaaS room user token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApaasRoomUserRequest {
    /// App and expiry.
    pub common: Common,
    /// Room uuid.
    pub room_uuid: String,
    /// User uuid.
    pub user_uuid: String,
    /// Role (any i16).
    pub role: i16,
}

/// `BuildToken`: any services with explicit privileges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenericRequest {
    /// App and expiry.
    pub common: Common,
    /// The services.
    pub services: Vec<Service>,
}

/// `BuildAgentSession` (ConvoAI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSessionRequest {
    /// App and expiry.
    pub common: Common,
    /// Channel the agent and the user meet in.
    pub channel_name: String,
    /// The agent's uid: decimal u32 ("0" = any), or an account with `string_uid`.
    pub agent_uid: String,
    /// The end user's uid, same rules.
    pub user_uid: String,
    /// Uids are string accounts.
    pub string_uid: bool,
    /// The agent (and user) also get RTM.
    pub enable_rtm: bool,
}

/// The three tokens of an agent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSession {
    /// The agent's token: RTC, or RTC+RTM with `enable_rtm`.
    pub agent: Issued,
    /// The end user's token: RTC, or RTC+RTM with `enable_rtm`.
    pub user: Issued,
    /// The agent's RTC+RTM token, for `Authorization: agora token=<token>`.
    pub rest: Issued,
}

/// Signature check result of an inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Verifies with a configured certificate of the token's app.
    Valid,
    /// Does not verify with any configured certificate of the token's app.
    Invalid,
    /// Not checked: no certificate for the token's app (or, for 006, no
    /// channel and uid given).
    NotChecked,
}

/// A privilege as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedPrivilege {
    /// Privilege id.
    pub id: u16,
    /// Its name, if known.
    pub name: Option<&'static str>,
    /// 007: seconds after the issue time; 006: absolute unix time (0 = never).
    pub expire: u32,
    /// Absolute expiry, unix seconds (007: issue time + value; 006: the value).
    pub expires_at: u64,
}

/// A service as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedService {
    /// Service type number.
    pub service_type: u16,
    /// Its name (`UNKNOWN` for others).
    pub name: &'static str,
    /// Privileges in id order.
    pub privileges: Vec<InspectedPrivilege>,
    /// The payload.
    pub payload: Payload,
}

/// Token format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVersion {
    /// AccessToken2.
    V007,
    /// Legacy AccessToken (v1).
    V006,
}

/// What [`Issuer::inspect`] found in a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Format version.
    pub version: TokenVersion,
    /// Embedded app id (lossy text).
    pub app_id: String,
    /// Issue time (007; 0 for 006, which has none).
    pub issued_at: u32,
    /// Token expiry, unix seconds.
    pub expires_at: u64,
    /// Token lifetime in seconds (007), 0 for 006.
    pub expire: u32,
    /// Salt.
    pub salt: u32,
    /// Services (006: one pseudo-service holding its privileges, type 0).
    pub services: Vec<InspectedService>,
    /// Whether the token has expired now.
    pub expired: bool,
    /// Signature check.
    pub signature: SignatureStatus,
    /// 007: the service count field.
    pub service_count: u16,
    /// 007: type at which reading stopped.
    pub stopped_at_unknown_service_type: Option<u16>,
    /// 007: signed bytes after the last service read.
    pub trailing_bytes: usize,
    /// 007: unsigned bytes after the zlib stream.
    pub bytes_after_zlib_stream: usize,
    /// 006: CRC-32 of the channel name and uid the token was made for.
    pub v1_crc: Option<(u32, u32)>,
    /// Human-readable remarks (e.g. "this is a v1 token").
    pub notes: Vec<String>,
}

/// Why a token could not be inspected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token: {0}")]
pub struct InspectError(pub ParseError);

/// The issuer of tokens.
#[derive(Debug)]
pub struct Issuer {
    apps: Vec<AppCredentials>,
    clock: Box<dyn Clock>,
    salt: Box<dyn SaltSource>,
    checks: Checks,
}

impl Issuer {
    /// An issuer for `apps` (the first is the default), with the system clock
    /// and random salts. `apps` must not be empty; duplicate ids keep the first.
    pub fn new(mut apps: Vec<AppCredentials>) -> Self {
        let mut seen = std::collections::HashSet::new();
        apps.retain(|a| seen.insert(a.app_id.as_str().to_owned()));
        Self {
            apps,
            clock: Box::new(SystemClock),
            salt: Box::new(RandomSalt),
            checks: Checks::Strict,
        }
    }

    /// Replaces the clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Replaces the salt source.
    #[must_use]
    pub fn with_salt(mut self, salt: impl SaltSource + 'static) -> Self {
        self.salt = Box::new(salt);
        self
    }

    /// Sets how strictly requests are checked.
    #[must_use]
    pub fn with_checks(mut self, checks: Checks) -> Self {
        self.checks = checks;
        self
    }

    /// The configured app ids, default first.
    pub fn app_ids(&self) -> impl Iterator<Item = &str> {
        self.apps.iter().map(|a| a.app_id.as_str())
    }

    /// The app selected by `app_id` (`None` or `""`: the default app).
    pub fn app(&self, app_id: Option<&str>) -> Result<&AppCredentials, IssueError> {
        match app_id.filter(|s| !s.is_empty()) {
            None => self
                .apps
                .first()
                .ok_or_else(|| IssueError::UnknownApp(String::new())),
            Some(id) => self
                .apps
                .iter()
                .find(|a| a.app_id.as_str() == id)
                .ok_or_else(|| IssueError::UnknownApp(id.chars().take(64).collect())),
        }
    }

    fn strict(&self) -> bool {
        self.checks == Checks::Strict
    }

    fn check(&self, r: Result<(), Violation>) -> Result<(), IssueError> {
        if self.strict() {
            r.map_err(Into::into)
        } else {
            Ok(())
        }
    }

    /// The token lifetime: given, or 3600 capped by the caller's maximum.
    fn token_expire(
        &self,
        field: &str,
        v: Option<u32>,
        limits: &Limits,
    ) -> Result<u32, IssueError> {
        match v {
            None => Ok(rules::DEFAULT_EXPIRE.min(limits.max_expire).max(1)),
            Some(v) if self.strict() => {
                rules::token_expire(field, v)?;
                Ok(v)
            }
            Some(v) => Ok(v),
        }
    }

    fn privilege_expire(
        &self,
        field: &str,
        v: Option<u32>,
        default: u32,
    ) -> Result<u32, IssueError> {
        match v {
            None => Ok(default),
            Some(v) if self.strict() => Ok(rules::privilege_expire(field, v)?),
            Some(v) => Ok(v),
        }
    }

    fn rtc_user(&self, user: &RtcUser, account_field: &str) -> Result<String, IssueError> {
        match user {
            RtcUser::Uid(uid) => Ok(agora_token::service::uid_string(*uid)),
            RtcUser::Account(a) => {
                self.check(rules::account(account_field, a))?;
                Ok(a.clone())
            }
        }
    }

    fn sign(
        &self,
        app: &AppCredentials,
        grant: &Grant,
        kind: TokenKind,
    ) -> Result<Issued, IssueError> {
        let issued_at = self.clock.now();
        let token = grant.build(&app.app_id, &app.certificate, issued_at, self.salt.salt())?;
        Ok(Issued {
            token,
            issued_at,
            expires_at: issued_at.saturating_add(grant.expire),
            app_id: app.app_id.as_str().to_owned(),
            kind,
        })
    }

    /// An RTC token (`build_token_with_uid` / `_with_user_account`).
    pub fn rtc(&self, req: &RtcRequest, limits: &Limits) -> Result<Issued, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::channel_name("channel_name", &req.channel_name))?;
        let uid = self.rtc_user(&req.user, "account")?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let pe = self.privilege_expire("privilege_expire_seconds", req.privilege_expire, te)?;
        let grant = builders::rtc_with_user_account(&req.channel_name, &uid, req.role, te, pe);
        self.sign(app, &grant, TokenKind::Rtc)
    }

    fn privilege_set(
        &self,
        p: &PrivilegeExpires,
        default: u32,
    ) -> Result<RtcPrivilegeExpires, IssueError> {
        Ok(RtcPrivilegeExpires {
            join_channel: self.privilege_expire(
                "join_channel_expire_seconds",
                p.join_channel,
                default,
            )?,
            publish_audio: self.privilege_expire(
                "publish_audio_expire_seconds",
                p.publish_audio,
                default,
            )?,
            publish_video: self.privilege_expire(
                "publish_video_expire_seconds",
                p.publish_video,
                default,
            )?,
            publish_data: self.privilege_expire(
                "publish_data_expire_seconds",
                p.publish_data,
                default,
            )?,
        })
    }

    /// An RTC token with separate privilege expiries
    /// (`build_token_with_uid_and_privilege` / `_user_account_and_privilege`).
    pub fn rtc_with_privileges(
        &self,
        req: &RtcPrivilegesRequest,
        limits: &Limits,
    ) -> Result<Issued, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::channel_name("channel_name", &req.channel_name))?;
        let uid = self.rtc_user(&req.user, "account")?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let p = self.privilege_set(&req.privileges, te)?;
        let grant = builders::rtc_with_user_account_and_privilege(&req.channel_name, &uid, te, p);
        self.sign(app, &grant, TokenKind::RtcPrivileges)
    }

    /// RTC + RTM in one token (`build_token_with_rtm` semantics, or
    /// `build_token_with_rtm2` when identities or expiries differ).
    pub fn rtc_rtm(&self, req: &RtcRtmRequest, limits: &Limits) -> Result<Issued, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::channel_name("channel_name", &req.channel_name))?;
        let uid = self.rtc_user(&req.user, "account")?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let pe = self.privilege_expire("privilege_expire_seconds", req.privilege_expire, te)?;
        let privileges = match &req.privileges {
            Some(p) => self.privilege_set(p, pe)?,
            None => RtcPrivilegeExpires::all(pe),
        };
        let rtm_user_id = req.rtm_user_id.clone().unwrap_or_else(|| uid.clone());
        self.check(rules::user_id("rtm_user_id", &rtm_user_id).map_err(|v| {
            if req.rtm_user_id.is_none() {
                Violation::new(
                    "rtm_user_id",
                    format!("the default (the RTC uid {uid:?}) is not a valid RTM user id: {}; give rtm_user_id", v.rule),
                )
            } else {
                v
            }
        }))?;
        let rtm_expire = self.privilege_expire("rtm_expire_seconds", req.rtm_expire, te)?;
        let grant = builders::rtc_with_rtm2(
            &req.channel_name,
            &uid,
            req.role,
            te,
            privileges,
            &rtm_user_id,
            rtm_expire,
        );
        self.sign(app, &grant, TokenKind::RtcRtm)
    }

    /// An RTM token, or RTM2 with permissions.
    pub fn rtm(&self, req: &RtmRequest, limits: &Limits) -> Result<Issued, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::user_id("user_id", &req.user_id))?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        if !req.rtm2 && req.permissions.is_empty() {
            return self.sign(app, &builders::rtm(&req.user_id, te), TokenKind::Rtm);
        }
        let mut perms = Rtm2Permissions::new();
        for (i, (rt, pt, resources)) in req.permissions.iter().enumerate() {
            if self.strict() {
                let field = format!("permissions[{i}]");
                if resource_type_name(*rt).is_none() {
                    return Err(Violation::new(format!("{field}.resource_type"), "must be 0..=4 (message channels, stream channels, group channels, server groups, users)").into());
                }
                if permission_type_name(*pt).is_none() {
                    return Err(Violation::new(
                        format!("{field}.permission_type"),
                        "must be 0 (read) or 1 (write)",
                    )
                    .into());
                }
                if resources.len() > rules::MAX_RESOURCES {
                    return Err(Violation::new(
                        format!("{field}.resources"),
                        format!("at most {} resources", rules::MAX_RESOURCES),
                    )
                    .into());
                }
                for (j, r) in resources.iter().enumerate() {
                    rules::bounded_text(
                        &format!("{field}.resources[{j}]"),
                        r,
                        rules::MAX_RESOURCE_LEN,
                    )?;
                }
            }
            perms.add(*rt, *pt, resources.iter().map(String::as_str));
        }
        let grant = builders::rtm_with_permissions(&req.user_id, perms, te);
        self.sign(app, &grant, TokenKind::Rtm2)
    }

    /// A Chat user token.
    pub fn chat_user(&self, req: &ChatUserRequest, limits: &Limits) -> Result<Issued, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::user_id("user_id", &req.user_id))?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        self.sign(
            app,
            &builders::chat_user(&req.user_id, te),
            TokenKind::ChatUser,
        )
    }

    /// A Chat app token.
    pub fn chat_app(&self, common: &Common, limits: &Limits) -> Result<Issued, IssueError> {
        let app = self.app(common.app_id.as_deref())?;
        let te = self.token_expire("expire_seconds", common.expire, limits)?;
        self.sign(app, &builders::chat_app(te), TokenKind::ChatApp)
    }

    /// An FPA token (24 h, login privilege 0, as the official builder).
    pub fn fpa(&self, common: &Common, limits: &Limits) -> Result<Issued, IssueError> {
        let app = self.app(common.app_id.as_deref())?;
        if self.strict() && limits.max_expire < builders::FPA_TOKEN_EXPIRE {
            return Err(Violation::new(
                "expire_seconds",
                format!(
                    "an FPA token lasts {} seconds, more than this caller's maximum",
                    builders::FPA_TOKEN_EXPIRE
                ),
            )
            .into());
        }
        self.sign(app, &builders::fpa(), TokenKind::Fpa)
    }

    /// An APaaS (Education) room-user token.
    pub fn apaas_room_user(
        &self,
        req: &ApaasRoomUserRequest,
        limits: &Limits,
    ) -> Result<Issued, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::bounded_text(
            "room_uuid",
            &req.room_uuid,
            rules::MAX_UUID_LEN,
        ))?;
        self.check(rules::user_id("user_uuid", &req.user_uuid))?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let grant = builders::apaas_room_user(&req.room_uuid, &req.user_uuid, req.role, te);
        self.sign(app, &grant, TokenKind::ApaasRoomUser)
    }

    /// An APaaS user token.
    pub fn apaas_user(
        &self,
        common: &Common,
        user_uuid: &str,
        limits: &Limits,
    ) -> Result<Issued, IssueError> {
        let app = self.app(common.app_id.as_deref())?;
        self.check(rules::bounded_text(
            "user_uuid",
            user_uuid,
            rules::MAX_UUID_LEN,
        ))?;
        let te = self.token_expire("expire_seconds", common.expire, limits)?;
        self.sign(
            app,
            &builders::apaas_user(user_uuid, te),
            TokenKind::ApaasUser,
        )
    }

    /// An APaaS app token.
    pub fn apaas_app(&self, common: &Common, limits: &Limits) -> Result<Issued, IssueError> {
        let app = self.app(common.app_id.as_deref())?;
        let te = self.token_expire("expire_seconds", common.expire, limits)?;
        self.sign(app, &builders::apaas_app(te), TokenKind::ApaasApp)
    }

    /// A token with any services and explicit privileges.
    pub fn generic(&self, req: &GenericRequest, limits: &Limits) -> Result<Issued, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        if self.strict() {
            if req.services.is_empty() {
                return Err(Violation::new("services", "at least one service is required").into());
            }
            if req.services.len() > rules::MAX_SERVICES {
                return Err(Violation::new(
                    "services",
                    format!("at most {} services", rules::MAX_SERVICES),
                )
                .into());
            }
            for (i, s) in req.services.iter().enumerate() {
                check_service(&format!("services[{i}]"), s)?;
            }
        }
        let grant = Grant {
            expire: te,
            services: req.services.clone(),
        };
        self.sign(app, &grant, TokenKind::Generic)
    }

    /// The three tokens of a ConvoAI agent session.
    pub fn agent_session(
        &self,
        req: &AgentSessionRequest,
        limits: &Limits,
    ) -> Result<AgentSession, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::channel_name("channel_name", &req.channel_name))?;
        let user_of = |field: &str, s: &str| -> Result<RtcUser, IssueError> {
            if req.string_uid {
                self.check(rules::account(field, s))?;
                Ok(RtcUser::Account(s.to_owned()))
            } else {
                Ok(RtcUser::Uid(rules::parse_uid(field, s)?))
            }
        };
        let agent = user_of("agent_uid", &req.agent_uid)?;
        let user = user_of("user_uid", &req.user_uid)?;
        let agent_str = self.rtc_user(&agent, "agent_uid")?;
        let user_str = self.rtc_user(&user, "user_uid")?;
        self.check(rules::user_id("agent_uid", &req.agent_uid))?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let all = RtcPrivilegeExpires::all(te);
        let rtc_rtm = |uid: &str, rtm_id: &str| {
            builders::rtc_with_rtm2(&req.channel_name, uid, Role::Publisher, te, all, rtm_id, te)
        };
        let rest = self.sign(
            app,
            &rtc_rtm(&agent_str, &req.agent_uid),
            TokenKind::AgentSession,
        )?;
        let (agent_token, user_token) = if req.enable_rtm {
            self.check(rules::user_id("user_uid", &req.user_uid))?;
            (
                rest.clone(),
                self.sign(
                    app,
                    &rtc_rtm(&user_str, &req.user_uid),
                    TokenKind::AgentSession,
                )?,
            )
        } else {
            let rtc = |uid: &str| {
                builders::rtc_with_user_account(&req.channel_name, uid, Role::Publisher, te, te)
            };
            (
                self.sign(app, &rtc(&agent_str), TokenKind::AgentSession)?,
                self.sign(app, &rtc(&user_str), TokenKind::AgentSession)?,
            )
        };
        Ok(AgentSession {
            agent: agent_token,
            user: user_token,
            rest,
        })
    }

    /// Decodes a 007 or 006 token and checks its signature against the
    /// configured certificates of its app (primary, then secondary). For a
    /// 006 token the signature is checked only when `v1_identity` gives the
    /// channel name and uid string it was made for.
    pub fn inspect(
        &self,
        token: &str,
        v1_identity: Option<(&str, &str)>,
    ) -> Result<Inspection, InspectError> {
        let now = u64::from(self.clock.now());
        let token = token.trim();
        if token.starts_with(agora_token::v1::VERSION) {
            let t = V1Token::parse(token).map_err(InspectError)?;
            return Ok(self.inspect_v1(&t, v1_identity, now));
        }
        let t = UnverifiedToken::parse(token).map_err(InspectError)?;
        let certs = self.certificates_for(t.app_id());
        let signature = if certs.is_empty() {
            SignatureStatus::NotChecked
        } else if certs.iter().any(|c| t.verify(c).is_ok()) {
            SignatureStatus::Valid
        } else {
            SignatureStatus::Invalid
        };
        let mut notes = Vec::new();
        if !t.app_id_is_valid() {
            notes.push("the embedded app id is not 32 hexadecimal characters".to_owned());
        }
        if let Some(ty) = t.stopped_at_unknown_service_type() {
            notes.push(format!(
                "reading stopped at unknown service type {ty}; later services cannot be read"
            ));
        }
        if t.trailing_bytes() > 0 && t.stopped_at_unknown_service_type().is_none() {
            notes.push(format!(
                "{} signed bytes follow the last service (ignored)",
                t.trailing_bytes()
            ));
        }
        if t.bytes_after_zlib_stream() > 0 {
            notes.push(format!(
                "{} unsigned bytes follow the compressed content (ignored)",
                t.bytes_after_zlib_stream()
            ));
        }
        let services = t
            .services()
            .iter()
            .map(|s| {
                let ty = s.service_type();
                InspectedService {
                    service_type: ty,
                    name: service_name(ty),
                    privileges: s
                        .privileges
                        .iter()
                        .map(|(id, v)| InspectedPrivilege {
                            id,
                            name: privilege_name(ty, id),
                            expire: v,
                            expires_at: u64::from(t.issue_ts()) + u64::from(v),
                        })
                        .collect(),
                    payload: s.payload.clone(),
                }
            })
            .collect();
        Ok(Inspection {
            version: TokenVersion::V007,
            app_id: t.app_id_lossy().into_owned(),
            issued_at: t.issue_ts(),
            expires_at: t.expires_at(),
            expire: t.expire(),
            salt: t.salt(),
            services,
            expired: t.is_expired_at(now),
            signature,
            service_count: t.service_count(),
            stopped_at_unknown_service_type: t.stopped_at_unknown_service_type(),
            trailing_bytes: t.trailing_bytes(),
            bytes_after_zlib_stream: t.bytes_after_zlib_stream(),
            v1_crc: None,
            notes,
        })
    }

    fn certificates_for(&self, app_id: &[u8]) -> Vec<&AppCertificate> {
        self.apps
            .iter()
            .filter(|a| a.app_id.as_str().as_bytes() == app_id)
            .flat_map(|a| std::iter::once(&a.certificate).chain(a.secondary.as_ref()))
            .collect()
    }

    fn inspect_v1(&self, t: &V1Token, identity: Option<(&str, &str)>, now: u64) -> Inspection {
        let certs = self.certificates_for(t.app_id.as_bytes());
        let mut notes = vec![
            "this is a legacy v1 (006) AccessToken; current SDKs expect AccessToken2 (007) tokens"
                .to_owned(),
        ];
        let signature = match identity {
            _ if certs.is_empty() => SignatureStatus::NotChecked,
            None => {
                notes.push("give the channel name and uid it was made for to verify it".to_owned());
                SignatureStatus::NotChecked
            }
            Some((channel, uid)) => {
                if !t.matches(channel.as_bytes(), uid.as_bytes()) {
                    notes.push(
                        "the channel name or uid does not match the token's CRC-32 values"
                            .to_owned(),
                    );
                }
                if certs
                    .iter()
                    .any(|c| t.verify(c, channel.as_bytes(), uid.as_bytes()).is_ok())
                {
                    SignatureStatus::Valid
                } else {
                    SignatureStatus::Invalid
                }
            }
        };
        let privileges = t
            .privileges
            .iter()
            .map(|(id, v)| InspectedPrivilege {
                id,
                name: agora_token::v1::privilege_name(id),
                expire: v,
                expires_at: u64::from(v),
            })
            .collect();
        let expires_at = u64::from(t.ts);
        Inspection {
            version: TokenVersion::V006,
            app_id: t.app_id.clone(),
            issued_at: 0,
            expires_at,
            expire: 0,
            salt: t.salt,
            services: vec![InspectedService {
                service_type: 0,
                name: "V1",
                privileges,
                payload: Payload::Other(0),
            }],
            expired: now >= expires_at,
            signature,
            service_count: 0,
            stopped_at_unknown_service_type: None,
            trailing_bytes: 0,
            bytes_after_zlib_stream: 0,
            v1_crc: Some((t.crc_channel_name, t.crc_uid)),
            notes,
        }
    }
}

/// The strict rules for one service of a generic token.
fn check_service(field: &str, s: &Service) -> Result<(), IssueError> {
    let f = |name: &str| format!("{field}.{name}");
    let text = |b: &[u8], name: &str| -> Result<String, IssueError> {
        String::from_utf8(b.to_vec()).map_err(|_| Violation::new(f(name), "must be UTF-8").into())
    };
    let ty = s.service_type();
    if !(1..=8).contains(&ty) {
        return Err(Violation::new(f("type"), "must be a known service type 1..=8").into());
    }
    if s.privileges.is_empty() {
        return Err(Violation::new(f("privileges"), "at least one privilege is required").into());
    }
    for (id, v) in s.privileges.iter() {
        if privilege_name(ty, id).is_none() {
            return Err(Violation::new(
                f("privileges"),
                format!("privilege {id} does not exist for service type {ty}"),
            )
            .into());
        }
        rules::privilege_expire(&f("privileges"), v)?;
    }
    match &s.payload {
        Payload::Rtc { channel_name, uid } => {
            rules::channel_name(&f("channel_name"), &text(channel_name, "channel_name")?)?;
            let uid = text(uid, "uid")?;
            if !uid.is_empty() {
                rules::account(&f("uid"), &uid)?;
            }
        }
        Payload::Streaming {
            channel_name,
            account,
        }
        | Payload::Fcdn {
            channel_name,
            account,
        } => {
            rules::channel_name(&f("channel_name"), &text(channel_name, "channel_name")?)?;
            let a = text(account, "account")?;
            if !a.is_empty() {
                rules::account(&f("account"), &a)?;
            }
        }
        Payload::Rtm { user_id } => rules::user_id(&f("user_id"), &text(user_id, "user_id")?)?,
        Payload::Chat { user_id } => {
            let u = text(user_id, "user_id")?;
            if !u.is_empty() {
                rules::user_id(&f("user_id"), &u)?;
            }
        }
        Payload::Apaas {
            room_uuid,
            user_uuid,
            ..
        } => {
            for (b, name) in [(room_uuid, "room_uuid"), (user_uuid, "user_uuid")] {
                let t = text(b, name)?;
                if !t.is_empty() {
                    rules::bounded_text(&f(name), &t, rules::MAX_UUID_LEN)?;
                }
            }
        }
        Payload::Rtm2 {
            user_id,
            permissions,
        } => {
            rules::user_id(&f("user_id"), &text(user_id, "user_id")?)?;
            for (i, g) in permissions.grants().iter().enumerate() {
                let gf = format!("permissions[{i}]");
                if resource_type_name(g.resource_type).is_none()
                    || permission_type_name(g.permission_type).is_none()
                {
                    return Err(Violation::new(
                        f(&gf),
                        "resource_type must be 0..=4 and permission_type 0..=1",
                    )
                    .into());
                }
                if g.resources.len() > rules::MAX_RESOURCES {
                    return Err(Violation::new(
                        f(&gf),
                        format!("at most {} resources", rules::MAX_RESOURCES),
                    )
                    .into());
                }
                for r in &g.resources {
                    rules::bounded_text(
                        &f(&format!("{gf}.resources")),
                        &text(r, &gf)?,
                        rules::MAX_RESOURCE_LEN,
                    )?;
                }
            }
        }
        Payload::Fpa | Payload::Other(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_salts_are_in_range_and_vary_across_pool_refills() {
        // Several pool refills (64 salts per refill).
        let salts: Vec<u32> = (0..1000).map(|_| RandomSalt.salt()).collect();
        assert!(salts.iter().all(|s| (1..=MAX_SALT).contains(s)));
        let distinct: std::collections::HashSet<_> = salts.iter().collect();
        // 1000 draws from 10^8 values: a repeat is ~0.5% likely; many are a bug.
        assert!(distinct.len() >= 995, "{} distinct", distinct.len());
        // Another thread has its own pool, so it does not replay these.
        let other = std::thread::spawn(|| (0..64).map(|_| RandomSalt.salt()).collect::<Vec<_>>())
            .join()
            .unwrap();
        assert_ne!(other, salts[..64]);
    }
}
