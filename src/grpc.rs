//! The gRPC `TokenService`: proto messages <-> [`crate::issuer`] requests.
//!
//! Thin by design: every default and input rule lives in the issuer; this
//! module only maps fields (and proto shapes such as enums and oneofs) and
//! maps [`IssueError`] to a gRPC status in one place. The JSON routes call
//! the same [`TokenApi`] methods, so both transports answer identically.

use std::sync::Arc;
use std::time::Instant;

use agora_token::{Payload, Privileges, Rtm2Permissions, Service};
use tonic::{Code, Request, Response, Status};

use crate::audit;
use crate::auth::{AccessRequest, Authn, Denial, Identity};
use crate::issuer::{
    self, AgentSession, AgentSessionRequest, ApaasRoomUserRequest, ChatUserRequest, Common,
    GenericRequest, IssueError, Issued, Issuer, Limits, PrivilegeExpires, RtcPrivilegesRequest,
    RtcRequest, RtcRtmRequest, RtcUser, RtmRequest, TokenKind,
};
use crate::metrics::{Method, Transport, code_name};
use crate::pb;
use crate::rules::Violation;
use crate::state::Shared;

pub use pb::token_service_server::{TokenService, TokenServiceServer};

/// The one mapping from issuer errors to gRPC status codes: bad input is
/// INVALID_ARGUMENT naming the field and the rule, an unknown app NOT_FOUND.
impl From<IssueError> for Status {
    fn from(e: IssueError) -> Self {
        match &e {
            IssueError::Invalid(_) => Status::invalid_argument(e.to_string()),
            IssueError::UnknownApp(_) => Status::not_found(e.to_string()),
        }
    }
}

/// Why a call failed: the request (from the issuer), or the caller's
/// credentials, policy or rate limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Bad input or an unknown app.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// Refused for the caller.
    #[error(transparent)]
    Denied(#[from] Denial),
}

/// Name of the metadata / header that carries the rate-limit wait, in seconds.
pub const RETRY_AFTER: &str = "retry-after";

/// The one mapping of caller refusals to gRPC codes: UNAUTHENTICATED,
/// PERMISSION_DENIED naming the rule, RESOURCE_EXHAUSTED with `retry-after`.
impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Issue(e) => e.into(),
            ApiError::Denied(d @ Denial::Unauthenticated(_)) => {
                Status::unauthenticated(d.to_string())
            }
            ApiError::Denied(d @ Denial::Policy { .. }) => Status::permission_denied(d.to_string()),
            ApiError::Denied(d @ Denial::RateLimited { retry_after }) => {
                let mut s = Status::resource_exhausted(d.to_string());
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                if let Ok(v) = secs.max(1).to_string().parse() {
                    s.metadata_mut().insert(RETRY_AFTER, v);
                }
                s
            }
        }
    }
}

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

/// The caller of a gRPC request, as the server's middleware identified it.
/// Absent (a request that did not pass the middleware) fails closed.
fn authn<T>(request: &Request<T>) -> Authn {
    request
        .extensions()
        .get::<Authn>()
        .cloned()
        .unwrap_or(Authn::new(Err(Denial::Unauthenticated(
            "the request was not authenticated",
        ))))
}

/// The API implementation shared by gRPC and JSON.
#[derive(Debug, Clone)]
pub struct TokenApi {
    shared: Arc<Shared>,
}

macro_rules! token_response {
    ($($t:ident),* $(,)?) => {$(
        impl From<Issued> for pb::$t {
            fn from(i: Issued) -> Self {
                Self { token: i.token, issued_at: i.issued_at, expires_at: i.expires_at, app_id: i.app_id }
            }
        }
    )*};
}

token_response!(
    BuildRtcTokenResponse,
    BuildRtcTokenWithPrivilegesResponse,
    BuildRtcRtmTokenResponse,
    BuildRtmTokenResponse,
    BuildChatUserTokenResponse,
    BuildChatAppTokenResponse,
    BuildFpaTokenResponse,
    BuildApaasTokenResponse,
    BuildTokenResponse,
);

/// The `user` oneof of a request as an issuer [`RtcUser`] (absent: uid 0).
macro_rules! rtc_user {
    ($user:expr, $module:ident) => {
        match $user {
            None => RtcUser::Uid(0),
            Some(pb::$module::User::Uid(u)) => RtcUser::Uid(u),
            Some(pb::$module::User::Account(a)) => RtcUser::Account(a),
        }
    };
}

fn role(v: i32) -> Result<agora_token::Role, IssueError> {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Unspecified | pb::Role::Publisher) => Ok(agora_token::Role::Publisher),
        Ok(pb::Role::Subscriber) => Ok(agora_token::Role::Subscriber),
        Err(_) => Err(Violation::new("role", "must be ROLE_PUBLISHER or ROLE_SUBSCRIBER").into()),
    }
}

fn common(app_id: String, expire: Option<u32>) -> Common {
    Common {
        app_id: Some(app_id),
        expire,
    }
}

/// An official RTM2 number given as `uint32`; values beyond `u16` become
/// `u16::MAX`, which the issuer rejects with its own rule.
fn rtm2_number(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

fn rtm2_permissions(perms: &[pb::Rtm2Permission]) -> Vec<(u16, u16, Vec<String>)> {
    perms
        .iter()
        .map(|p| {
            (
                rtm2_number(p.resource_type),
                rtm2_number(p.permission_type),
                p.resources.clone(),
            )
        })
        .collect()
}

/// A generic service from its proto form: picks the payload of its type and
/// refuses payload fields that type does not have (they would be dropped).
fn service_from_pb(i: usize, s: pb::Service) -> Result<Service, IssueError> {
    use pb::ServiceType as T;
    let field = |n: &str| format!("services[{i}].{n}");
    let ty = T::try_from(s.r#type).unwrap_or(T::Unspecified);
    let set: [(&str, bool); 7] = [
        ("channel_name", !s.channel_name.is_empty()),
        ("uid", !s.uid.is_empty()),
        ("account", !s.account.is_empty()),
        ("user_id", !s.user_id.is_empty()),
        ("room_uuid", !s.room_uuid.is_empty()),
        ("user_uuid", !s.user_uuid.is_empty()),
        ("permissions", !s.permissions.is_empty()),
    ];
    let allowed: &[&str] = match ty {
        T::Rtc => &["channel_name", "uid"],
        T::Rtm | T::Chat => &["user_id"],
        T::Streaming | T::Fcdn => &["channel_name", "account"],
        T::Fpa => &[],
        T::Apaas => &["room_uuid", "user_uuid"],
        T::Rtm2 => &["user_id", "permissions"],
        T::Unspecified => {
            return Err(Violation::new(
                field("type"),
                "must be a service type: SERVICE_TYPE_RTC, _RTM, _STREAMING, _FPA, _CHAT, _FCDN, _APAAS or _RTM2",
            )
            .into());
        }
    };
    if let Some((name, _)) = set
        .iter()
        .find(|(name, is_set)| *is_set && !allowed.contains(name))
    {
        return Err(Violation::new(
            field(name),
            format!("is not a field of a {} service", ty.as_str_name()),
        )
        .into());
    }
    if s.role.is_some() && ty != T::Apaas {
        return Err(Violation::new(
            field("role"),
            format!("is not a field of a {} service", ty.as_str_name()),
        )
        .into());
    }
    let payload = match ty {
        T::Rtc => Payload::Rtc {
            channel_name: s.channel_name.into_bytes(),
            uid: s.uid.into_bytes(),
        },
        T::Rtm => Payload::Rtm {
            user_id: s.user_id.into_bytes(),
        },
        T::Streaming => Payload::Streaming {
            channel_name: s.channel_name.into_bytes(),
            account: s.account.into_bytes(),
        },
        T::Fpa => Payload::Fpa,
        T::Chat => Payload::Chat {
            user_id: s.user_id.into_bytes(),
        },
        T::Fcdn => Payload::Fcdn {
            channel_name: s.channel_name.into_bytes(),
            account: s.account.into_bytes(),
        },
        T::Apaas => Payload::Apaas {
            room_uuid: s.room_uuid.into_bytes(),
            user_uuid: s.user_uuid.into_bytes(),
            role: i16::try_from(s.role.unwrap_or(-1))
                .map_err(|_| Violation::new(field("role"), "must be -32768..=32767"))?,
        },
        T::Rtm2 => {
            let mut p = Rtm2Permissions::new();
            for g in &s.permissions {
                p.add(
                    rtm2_number(g.resource_type),
                    rtm2_number(g.permission_type),
                    g.resources.iter().map(String::as_str),
                );
            }
            Payload::Rtm2 {
                user_id: s.user_id.into_bytes(),
                permissions: p,
            }
        }
        T::Unspecified => Payload::Other(0),
    };
    let mut privileges = Privileges::new();
    for (j, p) in s.privileges.iter().enumerate() {
        let id = u16::try_from(p.id).map_err(|_| {
            Violation::new(
                field(&format!("privileges[{j}].id")),
                format!("privilege {} does not exist", p.id),
            )
        })?;
        privileges.set(id, p.expire_seconds);
    }
    Ok(Service::new(payload, privileges))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn saturate(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The proto form of an inspection (also the JSON of `InspectToken`).
pub fn inspection_to_pb(ins: &issuer::Inspection) -> pb::InspectTokenResponse {
    let services = ins
        .services
        .iter()
        .map(|s| {
            let mut out = pb::InspectedService {
                r#type: i32::from(s.service_type),
                name: s.name.to_owned(),
                privileges: s
                    .privileges
                    .iter()
                    .map(|p| pb::InspectedPrivilege {
                        id: u32::from(p.id),
                        name: p.name.unwrap_or_default().to_owned(),
                        expire_seconds: p.expire,
                        expires_at: saturate(p.expires_at),
                    })
                    .collect(),
                ..Default::default()
            };
            match &s.payload {
                Payload::Rtc { channel_name, uid } => {
                    out.channel_name = lossy(channel_name);
                    out.uid = lossy(uid);
                }
                Payload::Rtm { user_id } | Payload::Chat { user_id } => {
                    out.user_id = lossy(user_id)
                }
                Payload::Streaming {
                    channel_name,
                    account,
                }
                | Payload::Fcdn {
                    channel_name,
                    account,
                } => {
                    out.channel_name = lossy(channel_name);
                    out.account = lossy(account);
                }
                Payload::Apaas {
                    room_uuid,
                    user_uuid,
                    role,
                } => {
                    out.room_uuid = lossy(room_uuid);
                    out.user_uuid = lossy(user_uuid);
                    out.role = i32::from(*role);
                }
                Payload::Rtm2 {
                    user_id,
                    permissions,
                } => {
                    out.user_id = lossy(user_id);
                    out.permissions = permissions
                        .grants()
                        .iter()
                        .map(|g| pb::Rtm2Permission {
                            resource_type: u32::from(g.resource_type),
                            permission_type: u32::from(g.permission_type),
                            resources: g.resources.iter().map(|r| lossy(r)).collect(),
                        })
                        .collect();
                }
                Payload::Fpa | Payload::Other(_) => {}
            }
            out
        })
        .collect();
    pb::InspectTokenResponse {
        version: match ins.version {
            issuer::TokenVersion::V007 => agora_token::VERSION.to_owned(),
            issuer::TokenVersion::V006 => agora_token::v1::VERSION.to_owned(),
        },
        app_id: ins.app_id.clone(),
        issued_at: ins.issued_at,
        expires_at: saturate(ins.expires_at),
        salt: ins.salt,
        services,
        expired: ins.expired,
        signature: match ins.signature {
            issuer::SignatureStatus::Valid => pb::SignatureStatus::Valid,
            issuer::SignatureStatus::Invalid => pb::SignatureStatus::Invalid,
            issuer::SignatureStatus::NotChecked => pb::SignatureStatus::NotChecked,
        } as i32,
        expire_seconds: ins.expire,
        service_count: u32::from(ins.service_count),
        stopped_at_unknown_service_type: ins.stopped_at_unknown_service_type.map(u32::from),
        trailing_bytes: saturate(ins.trailing_bytes as u64),
        bytes_after_zlib_stream: saturate(ins.bytes_after_zlib_stream as u64),
        v1_crc_channel_name: ins.v1_crc.map(|c| c.0),
        v1_crc_uid: ins.v1_crc.map(|c| c.1),
        notes: ins.notes.clone(),
    }
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
                .map_err(|d| ApiError::Denied(d.clone()))?;
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

    /// `BuildRtcToken` (and, through the same path, the GET endpoint).
    pub fn build_rtc_token(
        &self,
        who: &Authn,
        r: pb::BuildRtcTokenRequest,
    ) -> Result<pb::BuildRtcTokenResponse, ApiError> {
        let req = RtcRequest {
            common: common(r.app_id, r.expire_seconds),
            channel_name: r.channel_name,
            user: rtc_user!(r.user, build_rtc_token_request),
            role: role(r.role)?,
            privilege_expire: r.privilege_expire_seconds,
        };
        Ok(self.rtc(who, Method::BuildRtcToken, &req)?.into())
    }

    /// An RTC token for `method` (`BuildRtcToken` or `GetToken`).
    pub fn rtc(&self, who: &Authn, method: Method, req: &RtcRequest) -> Result<Issued, ApiError> {
        let access = AccessRequest::rtc(Method::BuildRtcToken.as_str(), req);
        self.issue(who, method, req.common.app_id.as_deref(), access, |i, l| {
            i.rtc(req, l)
        })
    }

    /// `BuildRtcTokenWithPrivileges`.
    pub fn build_rtc_token_with_privileges(
        &self,
        who: &Authn,
        r: pb::BuildRtcTokenWithPrivilegesRequest,
    ) -> Result<pb::BuildRtcTokenWithPrivilegesResponse, ApiError> {
        let req = RtcPrivilegesRequest {
            common: common(r.app_id, r.expire_seconds),
            channel_name: r.channel_name,
            user: rtc_user!(r.user, build_rtc_token_with_privileges_request),
            privileges: PrivilegeExpires {
                join_channel: r.join_channel_expire_seconds,
                publish_audio: r.publish_audio_expire_seconds,
                publish_video: r.publish_video_expire_seconds,
                publish_data: r.publish_data_expire_seconds,
            },
        };
        let m = Method::BuildRtcTokenWithPrivileges;
        let access = AccessRequest::rtc_privileges(m.as_str(), &req);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l| {
            i.rtc_with_privileges(&req, l)
        })?;
        Ok(issued.into())
    }

    /// `BuildRtcRtmToken`.
    pub fn build_rtc_rtm_token(
        &self,
        who: &Authn,
        r: pb::BuildRtcRtmTokenRequest,
    ) -> Result<pb::BuildRtcRtmTokenResponse, ApiError> {
        let req = RtcRtmRequest {
            common: common(r.app_id, r.expire_seconds),
            channel_name: r.channel_name,
            user: rtc_user!(r.user, build_rtc_rtm_token_request),
            role: role(r.role)?,
            privilege_expire: r.privilege_expire_seconds,
            privileges: None,
            rtm_user_id: r.rtm_user_id,
            rtm_expire: r.rtm_expire_seconds,
        };
        let m = Method::BuildRtcRtmToken;
        let access = AccessRequest::rtc_rtm(m.as_str(), &req);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l| {
            i.rtc_rtm(&req, l)
        })?;
        Ok(issued.into())
    }

    /// `BuildRtmToken`.
    pub fn build_rtm_token(
        &self,
        who: &Authn,
        r: pb::BuildRtmTokenRequest,
    ) -> Result<pb::BuildRtmTokenResponse, ApiError> {
        let req = RtmRequest {
            common: common(r.app_id, r.expire_seconds),
            user_id: r.user_id,
            rtm2: r.rtm2,
            permissions: rtm2_permissions(&r.permissions),
        };
        let m = Method::BuildRtmToken;
        let access = AccessRequest::rtm(m.as_str(), &req);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l| {
            i.rtm(&req, l)
        })?;
        Ok(issued.into())
    }

    /// `BuildChatUserToken`.
    pub fn build_chat_user_token(
        &self,
        who: &Authn,
        r: pb::BuildChatUserTokenRequest,
    ) -> Result<pb::BuildChatUserTokenResponse, ApiError> {
        let req = ChatUserRequest {
            common: common(r.app_id, r.expire_seconds),
            user_id: r.user_id,
        };
        let m = Method::BuildChatUserToken;
        let access = AccessRequest::plain(m.as_str(), TokenKind::ChatUser, req.common.expire);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l| {
            i.chat_user(&req, l)
        })?;
        Ok(issued.into())
    }

    /// `BuildChatAppToken`.
    pub fn build_chat_app_token(
        &self,
        who: &Authn,
        r: pb::BuildChatAppTokenRequest,
    ) -> Result<pb::BuildChatAppTokenResponse, ApiError> {
        let c = common(r.app_id, r.expire_seconds);
        let m = Method::BuildChatAppToken;
        let access = AccessRequest::plain(m.as_str(), TokenKind::ChatApp, c.expire);
        let issued = self.issue(who, m, c.app_id.as_deref(), access, |i, l| {
            i.chat_app(&c, l)
        })?;
        Ok(issued.into())
    }

    /// `BuildFpaToken`.
    pub fn build_fpa_token(
        &self,
        who: &Authn,
        r: pb::BuildFpaTokenRequest,
    ) -> Result<pb::BuildFpaTokenResponse, ApiError> {
        let c = common(r.app_id, None);
        let m = Method::BuildFpaToken;
        let access = AccessRequest::plain(
            m.as_str(),
            TokenKind::Fpa,
            Some(agora_token::builders::FPA_TOKEN_EXPIRE),
        );
        let issued = self.issue(who, m, c.app_id.as_deref(), access, |i, l| i.fpa(&c, l))?;
        Ok(issued.into())
    }

    /// `BuildApaasToken`.
    pub fn build_apaas_token(
        &self,
        who: &Authn,
        r: pb::BuildApaasTokenRequest,
    ) -> Result<pb::BuildApaasTokenResponse, ApiError> {
        use pb::ApaasTokenKind as K;
        let kind = K::try_from(r.kind).unwrap_or(K::Unspecified);
        let unused = |field: &str, is_set: bool| -> Result<(), IssueError> {
            if is_set {
                return Err(Violation::new(
                    field,
                    format!("is not used by {}", kind.as_str_name()),
                )
                .into());
            }
            Ok(())
        };
        let c = common(r.app_id, r.expire_seconds);
        let m = Method::BuildApaasToken;
        let app = c.app_id.clone();
        let issued = match kind {
            K::RoomUser => {
                let role = i16::try_from(r.role).map_err(|_| {
                    IssueError::from(Violation::new("role", "must be -32768..=32767"))
                })?;
                let req = ApaasRoomUserRequest {
                    common: c,
                    room_uuid: r.room_uuid,
                    user_uuid: r.user_uuid,
                    role,
                };
                let access = AccessRequest::apaas_room_user(m.as_str(), &req);
                self.issue(who, m, app.as_deref(), access, |i, l| {
                    i.apaas_room_user(&req, l)
                })?
            }
            K::User => {
                unused("room_uuid", !r.room_uuid.is_empty())?;
                unused("role", r.role != 0)?;
                let access = AccessRequest::plain(m.as_str(), TokenKind::ApaasUser, c.expire);
                self.issue(who, m, app.as_deref(), access, |i, l| {
                    i.apaas_user(&c, &r.user_uuid, l)
                })?
            }
            K::App => {
                unused("room_uuid", !r.room_uuid.is_empty())?;
                unused("user_uuid", !r.user_uuid.is_empty())?;
                unused("role", r.role != 0)?;
                let access = AccessRequest::plain(m.as_str(), TokenKind::ApaasApp, c.expire);
                self.issue(who, m, app.as_deref(), access, |i, l| i.apaas_app(&c, l))?
            }
            K::Unspecified => {
                return Err(IssueError::from(Violation::new(
                    "kind",
                    "must be APAAS_TOKEN_KIND_ROOM_USER, APAAS_TOKEN_KIND_USER or APAAS_TOKEN_KIND_APP",
                ))
                .into());
            }
        };
        Ok(issued.into())
    }

    /// `BuildToken`.
    pub fn build_token(
        &self,
        who: &Authn,
        r: pb::BuildTokenRequest,
    ) -> Result<pb::BuildTokenResponse, ApiError> {
        let services = r
            .services
            .into_iter()
            .enumerate()
            .map(|(i, s)| service_from_pb(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        let req = GenericRequest {
            common: common(r.app_id, r.expire_seconds),
            services,
        };
        let m = Method::BuildToken;
        let access = AccessRequest::generic(m.as_str(), &req);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l| {
            i.generic(&req, l)
        })?;
        Ok(issued.into())
    }

    /// `InspectToken`: needs an authenticated caller (or open mode) but
    /// issues nothing, so no token policy applies.
    pub fn inspect_token(
        &self,
        who: &Authn,
        r: pb::InspectTokenRequest,
    ) -> Result<pb::InspectTokenResponse, ApiError> {
        who.identity
            .as_ref()
            .map_err(|d| ApiError::Denied(d.clone()))?;
        let uid = match r.user {
            None => None,
            Some(pb::inspect_token_request::User::Uid(u)) => {
                Some(agora_token::service::uid_string(u))
            }
            Some(pb::inspect_token_request::User::Account(a)) => Some(a),
        };
        let identity = match (&uid, r.channel_name.is_empty()) {
            (None, true) => None,
            (uid, _) => Some((r.channel_name.as_str(), uid.as_deref().unwrap_or(""))),
        };
        let snap = who
            .snapshot
            .clone()
            .unwrap_or_else(|| self.shared.current_full());
        let ins = snap
            .issuer
            .inspect(&r.token, identity)
            .map_err(|e| IssueError::Invalid(Violation::new("token", e.0.to_string())))?;
        Ok(inspection_to_pb(&ins))
    }

    /// `BuildAgentSession`.
    pub fn build_agent_session(
        &self,
        who: &Authn,
        r: pb::BuildAgentSessionRequest,
    ) -> Result<pb::BuildAgentSessionResponse, ApiError> {
        let req = AgentSessionRequest {
            common: common(r.app_id, r.expire_seconds),
            channel_name: r.channel_name,
            agent_uid: r.agent_uid,
            user_uid: r.user_uid,
            string_uid: r.string_uid,
            enable_rtm: r.enable_rtm,
        };
        let m = Method::BuildAgentSession;
        let access = AccessRequest::agent_session(m.as_str(), &req);
        let s = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l| {
            i.agent_session(&req, l)
        })?;
        Ok(pb::BuildAgentSessionResponse {
            agent_token: s.agent.token,
            user_token: s.user.token,
            rest_token: s.rest.token,
            issued_at: s.rest.issued_at,
            expires_at: s.rest.expires_at,
            app_id: s.rest.app_id,
        })
    }

    /// Runs one call for `transport`: times it, counts it and maps the error.
    pub fn observe<T>(
        &self,
        transport: Transport,
        method: Method,
        f: impl FnOnce(&Self) -> Result<T, ApiError>,
    ) -> Result<T, Status> {
        let start = Instant::now();
        let result = f(self).map_err(Status::from);
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.shared
            .metrics
            .request(transport, method, code, start.elapsed());
        if let Err(s) = &result {
            tracing::info!(
                rpc = method.as_str(),
                code = code_name(code),
                reason = s.message(),
                "request refused"
            );
        }
        result
    }

    fn grpc<T>(
        &self,
        method: Method,
        f: impl FnOnce(&Self) -> Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        self.observe(Transport::Grpc, method, f).map(Response::new)
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn build_rtc_token(
        &self,
        request: Request<pb::BuildRtcTokenRequest>,
    ) -> Result<Response<pb::BuildRtcTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildRtcToken, |a| {
            a.build_rtc_token(&who, request.into_inner())
        })
    }

    async fn build_rtc_token_with_privileges(
        &self,
        request: Request<pb::BuildRtcTokenWithPrivilegesRequest>,
    ) -> Result<Response<pb::BuildRtcTokenWithPrivilegesResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildRtcTokenWithPrivileges, |a| {
            a.build_rtc_token_with_privileges(&who, request.into_inner())
        })
    }

    async fn build_rtc_rtm_token(
        &self,
        request: Request<pb::BuildRtcRtmTokenRequest>,
    ) -> Result<Response<pb::BuildRtcRtmTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildRtcRtmToken, |a| {
            a.build_rtc_rtm_token(&who, request.into_inner())
        })
    }

    async fn build_rtm_token(
        &self,
        request: Request<pb::BuildRtmTokenRequest>,
    ) -> Result<Response<pb::BuildRtmTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildRtmToken, |a| {
            a.build_rtm_token(&who, request.into_inner())
        })
    }

    async fn build_chat_user_token(
        &self,
        request: Request<pb::BuildChatUserTokenRequest>,
    ) -> Result<Response<pb::BuildChatUserTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildChatUserToken, |a| {
            a.build_chat_user_token(&who, request.into_inner())
        })
    }

    async fn build_chat_app_token(
        &self,
        request: Request<pb::BuildChatAppTokenRequest>,
    ) -> Result<Response<pb::BuildChatAppTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildChatAppToken, |a| {
            a.build_chat_app_token(&who, request.into_inner())
        })
    }

    async fn build_fpa_token(
        &self,
        request: Request<pb::BuildFpaTokenRequest>,
    ) -> Result<Response<pb::BuildFpaTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildFpaToken, |a| {
            a.build_fpa_token(&who, request.into_inner())
        })
    }

    async fn build_apaas_token(
        &self,
        request: Request<pb::BuildApaasTokenRequest>,
    ) -> Result<Response<pb::BuildApaasTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildApaasToken, |a| {
            a.build_apaas_token(&who, request.into_inner())
        })
    }

    async fn build_token(
        &self,
        request: Request<pb::BuildTokenRequest>,
    ) -> Result<Response<pb::BuildTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildToken, |a| {
            a.build_token(&who, request.into_inner())
        })
    }

    async fn inspect_token(
        &self,
        request: Request<pb::InspectTokenRequest>,
    ) -> Result<Response<pb::InspectTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::InspectToken, |a| {
            a.inspect_token(&who, request.into_inner())
        })
    }

    async fn build_agent_session(
        &self,
        request: Request<pb::BuildAgentSessionRequest>,
    ) -> Result<Response<pb::BuildAgentSessionResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildAgentSession, |a| {
            a.build_agent_session(&who, request.into_inner())
        })
    }
}

#[cfg(test)]
mod tests {
    use agora_token::{AppCertificate, AppId};

    use super::*;
    use crate::issuer::{AppCredentials, Issuer};

    fn api() -> TokenApi {
        let issuer = Issuer::new(vec![AppCredentials {
            app_id: AppId::new("970CA35de60c44645bbae8a215061b33").unwrap(),
            certificate: AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap(),
            secondary: None,
        }]);
        TokenApi::new(Arc::new(Shared::new(crate::state::Snapshot::open(issuer))))
    }

    #[test]
    fn issue_errors_map_to_status_codes() {
        let s = Status::from(IssueError::Invalid(Violation::new("uid", "bad")));
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "uid: bad"));
        let s = Status::from(IssueError::UnknownApp("x".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().starts_with("app_id"));
        let s = Status::from(ApiError::Denied(Denial::RateLimited {
            retry_after: std::time::Duration::from_millis(1500),
        }));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get(RETRY_AFTER).unwrap(), "2");
        let s = Status::from(ApiError::Denied(Denial::Unauthenticated("x")));
        assert_eq!(s.code(), Code::Unauthenticated);
    }

    fn open_request<T>(msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.extensions_mut().insert(Authn::new(Ok(Identity::Open)));
        r
    }

    #[tokio::test]
    async fn requests_that_skipped_authentication_fail_closed() {
        let e = TokenService::build_rtc_token(
            &api(),
            Request::new(pb::BuildRtcTokenRequest {
                channel_name: "c".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn service_methods_can_be_called_directly() {
        let api = api();
        let r = TokenService::build_rtc_token(
            &api,
            open_request(pb::BuildRtcTokenRequest {
                channel_name: "c".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner();
        assert!(r.token.starts_with("007"));
        let e = TokenService::build_rtc_token(
            &api,
            open_request(pb::BuildRtcTokenRequest {
                role: 42,
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            api.shared().metrics.requests_total(
                Transport::Grpc,
                Method::BuildRtcToken,
                Code::InvalidArgument
            ),
            1
        );
    }

    #[test]
    fn generic_service_payloads() {
        let e = service_from_pb(
            0,
            pb::Service {
                r#type: 99,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("services[0].type"), "{e}");
        let e = service_from_pb(
            1,
            pb::Service {
                r#type: pb::ServiceType::Rtc as i32,
                privileges: vec![pb::Privilege {
                    id: 70_000,
                    expire_seconds: 1,
                }],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("services[1].privileges[0].id"),
            "{e}"
        );
        let s = service_from_pb(
            0,
            pb::Service {
                r#type: pb::ServiceType::Apaas as i32,
                user_uuid: "u".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(s.payload, Payload::Apaas { role: -1, .. }));
    }
}
