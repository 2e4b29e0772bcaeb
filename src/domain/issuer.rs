//! The [`Issuer`]: holds the apps' credentials, the clock and the salt
//! source, applies the defaults and the input rules of [`super::rules`], and
//! calls the official builders of `agora-token`. It knows nothing of gRPC,
//! HTTP or configuration files: every transport and the CLI share it.

use super::*;
use crate::domain::rules::{self, Violation};
use agora_token::service::{permission_type_name, privilege_name, resource_type_name};
use agora_token::{
    AppCertificate, AppId, Grant, Payload, Role, RtcPrivilegeExpires, Rtm2Permissions, Service,
    builders,
};

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

/// The issuer of tokens.
#[derive(Debug)]
pub struct Issuer {
    pub(super) apps: Vec<AppCredentials>,
    pub(super) clock: Box<dyn Clock>,
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
                .ok_or_else(|| IssueError::UnknownApp(rules::redact(id))),
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

    /// Signs a draft this issuer made, within `permit`'s caps (checked
    /// again here, whatever the caller checked before).
    pub fn sign(&self, draft: &Draft<'_>, permit: &Permit) -> Result<Issued, IssueError> {
        permit.covers(draft)?;
        let app = draft.app;
        let issued_at = self.clock.now();
        let token =
            draft
                .grant
                .build(&app.app_id, &app.certificate, issued_at, self.salt.salt())?;
        Ok(Issued {
            token,
            issued_at,
            expires_at: issued_at.saturating_add(draft.grant.expire),
            app_id: app.app_id.as_str().to_owned(),
            kind: draft.kind,
        })
    }

    fn draft<'a>(&self, app: &'a AppCredentials, grant: Grant, kind: TokenKind) -> Draft<'a> {
        Draft::new(app, grant, kind)
    }

    /// An RTC token (`build_token_with_uid` / `_with_user_account`).
    pub fn rtc<'a>(&'a self, req: &RtcRequest, limits: &Limits) -> Result<Draft<'a>, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::channel_name("channel_name", &req.channel_name))?;
        let uid = self.rtc_user(&req.user, "account")?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let pe = self.privilege_expire("privilege_expire_seconds", req.privilege_expire, te)?;
        let grant = builders::rtc_with_user_account(&req.channel_name, &uid, req.role, te, pe);
        Ok(self.draft(app, grant, TokenKind::Rtc))
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
    pub fn rtc_with_privileges<'a>(
        &'a self,
        req: &RtcPrivilegesRequest,
        limits: &Limits,
    ) -> Result<Draft<'a>, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::channel_name("channel_name", &req.channel_name))?;
        let uid = self.rtc_user(&req.user, "account")?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let p = self.privilege_set(&req.privileges, te)?;
        let grant = builders::rtc_with_user_account_and_privilege(&req.channel_name, &uid, te, p);
        Ok(self.draft(app, grant, TokenKind::RtcPrivileges))
    }

    /// RTC + RTM in one token (`build_token_with_rtm` semantics, or
    /// `build_token_with_rtm2` when identities or expiries differ).
    pub fn rtc_rtm<'a>(
        &'a self,
        req: &RtcRtmRequest,
        limits: &Limits,
    ) -> Result<Draft<'a>, IssueError> {
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
        Ok(self.draft(app, grant, TokenKind::RtcRtm))
    }

    /// An RTM token, or RTM2 with permissions.
    pub fn rtm<'a>(&'a self, req: &RtmRequest, limits: &Limits) -> Result<Draft<'a>, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::user_id("user_id", &req.user_id))?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        if !req.rtm2 && req.permissions.is_empty() {
            return Ok(self.draft(app, builders::rtm(&req.user_id, te), TokenKind::Rtm));
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
        Ok(self.draft(app, grant, TokenKind::Rtm2))
    }

    /// A Chat user token.
    pub fn chat_user<'a>(
        &'a self,
        req: &ChatUserRequest,
        limits: &Limits,
    ) -> Result<Draft<'a>, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::user_id("user_id", &req.user_id))?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        Ok(self.draft(
            app,
            builders::chat_user(&req.user_id, te),
            TokenKind::ChatUser,
        ))
    }

    /// A Chat app token.
    pub fn chat_app<'a>(
        &'a self,
        common: &Common,
        limits: &Limits,
    ) -> Result<Draft<'a>, IssueError> {
        let app = self.app(common.app_id.as_deref())?;
        let te = self.token_expire("expire_seconds", common.expire, limits)?;
        Ok(self.draft(app, builders::chat_app(te), TokenKind::ChatApp))
    }

    /// An FPA token (24 h, login privilege 0, as the official builder).
    pub fn fpa<'a>(&'a self, common: &Common, _limits: &Limits) -> Result<Draft<'a>, IssueError> {
        // The official builder's 24 h token: a caller whose maximum is
        // shorter is refused by its policy (`max_expire_seconds`).
        let app = self.app(common.app_id.as_deref())?;
        Ok(self.draft(app, builders::fpa(), TokenKind::Fpa))
    }

    /// An APaaS (Education) room-user token.
    pub fn apaas_room_user<'a>(
        &'a self,
        req: &ApaasRoomUserRequest,
        limits: &Limits,
    ) -> Result<Draft<'a>, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        self.check(rules::bounded_text(
            "room_uuid",
            &req.room_uuid,
            rules::MAX_UUID_LEN,
        ))?;
        self.check(rules::user_id("user_uuid", &req.user_uuid))?;
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let grant = builders::apaas_room_user(&req.room_uuid, &req.user_uuid, req.role, te);
        Ok(self.draft(app, grant, TokenKind::ApaasRoomUser))
    }

    /// An APaaS user token.
    pub fn apaas_user<'a>(
        &'a self,
        common: &Common,
        user_uuid: &str,
        limits: &Limits,
    ) -> Result<Draft<'a>, IssueError> {
        let app = self.app(common.app_id.as_deref())?;
        self.check(rules::bounded_text(
            "user_uuid",
            user_uuid,
            rules::MAX_UUID_LEN,
        ))?;
        let te = self.token_expire("expire_seconds", common.expire, limits)?;
        Ok(self.draft(
            app,
            builders::apaas_user(user_uuid, te),
            TokenKind::ApaasUser,
        ))
    }

    /// An APaaS app token.
    pub fn apaas_app<'a>(
        &'a self,
        common: &Common,
        limits: &Limits,
    ) -> Result<Draft<'a>, IssueError> {
        let app = self.app(common.app_id.as_deref())?;
        let te = self.token_expire("expire_seconds", common.expire, limits)?;
        Ok(self.draft(app, builders::apaas_app(te), TokenKind::ApaasApp))
    }

    /// A token with any services and explicit privileges.
    pub fn generic<'a>(
        &'a self,
        req: &GenericRequest,
        limits: &Limits,
    ) -> Result<Draft<'a>, IssueError> {
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
        Ok(self.draft(app, grant, TokenKind::Generic))
    }

    /// The three tokens of a ConvoAI agent session. The agent's and the
    /// user's RTM user ids are always their RTC identities as packed, so a
    /// token never carries two identities.
    pub fn agent_session<'a>(
        &'a self,
        req: &AgentSessionRequest,
        limits: &Limits,
    ) -> Result<AgentSessionDraft<'a>, IssueError> {
        let app = self.app(req.common.app_id.as_deref())?;
        if self.strict() && req.channel_name.is_empty() {
            return Err(Violation::new(
                "channel_name",
                "is required: an agent joins one channel, and ConvoAI's REST token must name it",
            )
            .into());
        }
        self.check(rules::channel_name("channel_name", &req.channel_name))?;
        let user_of = |field: &str, s: &str| -> Result<RtcUser, IssueError> {
            if req.string_uid {
                self.check(rules::account(field, s))?;
                Ok(RtcUser::Account(s.to_owned()))
            } else {
                Ok(RtcUser::Uid(rules::canonical_uid(field, s)?))
            }
        };
        let agent = user_of("agent_uid", &req.agent_uid)?;
        let user = user_of("user_uid", &req.user_uid)?;
        if self.strict() && agent == RtcUser::Uid(0) {
            return Err(Violation::new(
                "agent_uid",
                "0 (any user) cannot identify an agent: its tokens log in to RTM as the agent's \
                 uid and ConvoAI's REST token is bound to it; give the agent's uid",
            )
            .into());
        }
        if self.strict() && req.enable_rtm && user == RtcUser::Uid(0) {
            return Err(Violation::new(
                "user_uid",
                "0 (any user) has no RTM identity; with enable_rtm give the user's uid",
            )
            .into());
        }
        let agent_str = self.rtc_user(&agent, "agent_uid")?;
        let user_str = self.rtc_user(&user, "user_uid")?;
        self.check(rules::user_id("agent_uid", &agent_str))?;
        if req.enable_rtm {
            self.check(rules::user_id("user_uid", &user_str))?;
        }
        let te = self.token_expire("expire_seconds", req.common.expire, limits)?;
        let all = RtcPrivilegeExpires::all(te);
        let rtc_rtm = |uid: &str| {
            builders::rtc_with_rtm2(&req.channel_name, uid, Role::Publisher, te, all, uid, te)
        };
        let rtc = |uid: &str| {
            builders::rtc_with_user_account(&req.channel_name, uid, Role::Publisher, te, te)
        };
        let kind = TokenKind::AgentSession;
        Ok(if req.enable_rtm {
            AgentSessionDraft {
                agent: self.draft(app, rtc_rtm(&agent_str), kind),
                user: self.draft(app, rtc_rtm(&user_str), kind),
                rest: None,
            }
        } else {
            AgentSessionDraft {
                agent: self.draft(app, rtc(&agent_str), kind),
                user: self.draft(app, rtc(&user_str), kind),
                rest: Some(self.draft(app, rtc_rtm(&agent_str), kind)),
            }
        })
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
