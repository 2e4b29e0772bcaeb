//! Validated issuance requests and what the issuer returns: request types,
//! token kinds, limits and the issuer's error.

use crate::domain::rules::{self, Violation};
use agora_token::{BuildError, Role, Service};
use std::fmt;

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
    /// The draft goes beyond the permit it was signed with.
    #[error("permission denied by rule `{rule}`: {detail}")]
    NotPermitted {
        /// The policy key whose cap was exceeded.
        rule: &'static str,
        /// What was exceeded.
        detail: String,
    },
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
    Fingerprint::of(token).to_string()
}

/// [`fingerprint`] without a heap allocation (the audit line's field).
#[derive(Clone, Copy)]
pub struct Fingerprint([u8; 12]);

impl Fingerprint {
    /// The fingerprint of `token`.
    pub fn of(token: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut hex = [b'0'; 12];
        // Invariant: 6 bytes encode to exactly 12 hex digits.
        let _ = hex::encode_to_slice(&Sha256::digest(token.as_bytes())[..6], &mut hex);
        Self(hex)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&self.0).unwrap_or("000000000000"))
    }
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
