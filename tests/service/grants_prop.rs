//! Property test of "authorize the token, not the request": random caller
//! policies and random requests over six RPCs, driven in-process through
//! [`TokenApi`]. Whatever the service issues is decoded from the token
//! itself (never from the request) and must be allowed by an oracle
//! written here from the rules; every refusal is PERMISSION_DENIED,
//! INVALID_ARGUMENT, NOT_FOUND or RESOURCE_EXHAUSTED. For BuildToken the
//! converse holds too: the token packs exactly the services asked for, and
//! a PERMISSION_DENIED means the oracle refuses them.

use std::net::IpAddr;
use std::sync::Arc;

use agora_token::service::{permission_type, service_type as st};
use agora_token::{Payload, Privileges, Rtm2Permissions, Service, UnverifiedToken};
use proptest::prelude::*;
use token_authority::api::{ApiError, Code, TokenApi};
use token_authority::domain::{AppCredentials, Issuer};
use token_authority::pb;
use token_authority::policy::{ApiKeyHash, Authenticator, Authn, CallerConfig, PolicyConfig};
use token_authority::state::{Shared, Snapshot};

use crate::common::{APP_ID, CERT, cert};

const KEY: &str = "ta_grants-prop-key-0123456789abcdef";

/// The policy, as the oracle reads it.
#[derive(Debug, Clone)]
struct Pol {
    kinds: Vec<&'static str>,
    channels: Option<Vec<&'static str>>,
    allow_wildcard: Option<bool>,
    uid_ranges: Option<Vec<(u32, u32)>>,
    accounts: Option<Vec<&'static str>>,
    user_ids: Option<Vec<&'static str>>,
    roles: Option<Vec<&'static str>>,
    max_expire: Option<u32>,
}

impl Pol {
    fn config(&self) -> PolicyConfig {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        PolicyConfig {
            kinds: Some(v(&self.kinds)),
            channels: self.channels.as_deref().map(v),
            allow_wildcard: self.allow_wildcard,
            uid_ranges: self.uid_ranges.as_ref().map(|r| {
                r.iter()
                    .map(|&(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect()
            }),
            accounts: self.accounts.as_deref().map(v),
            user_ids: self.user_ids.as_deref().map(v),
            roles: self.roles.as_deref().map(v),
            max_expire_seconds: self.max_expire,
            ..Default::default()
        }
    }
}

// ---------------------------------------------------------------------------
// The oracle: the rules, read from a decoded token
// ---------------------------------------------------------------------------

const EXPLICIT: [&str; 6] = [
    "chat_app",
    "fpa",
    "apaas_room_user",
    "apaas_user",
    "apaas_app",
    "generic",
];

/// `*` and `?` globs, written independently (recursive).
fn glob(p: &[u8], t: &[u8]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], t) || (!t.is_empty() && glob(p, &t[1..])),
        (Some(&c), Some(&d)) if c == b'?' || c == d => glob(&p[1..], &t[1..]),
        _ => false,
    }
}

fn any_glob(globs: &[&str], t: &[u8]) -> bool {
    globs.iter().any(|g| glob(g.as_bytes(), t))
}

type Verdict = Result<(), &'static str>;

fn deny(cond: bool, rule: &'static str) -> Verdict {
    if cond { Err(rule) } else { Ok(()) }
}

impl Pol {
    fn kind(&self, k: &str) -> Verdict {
        let ok = self.kinds.contains(&k) || (self.kinds.contains(&"*") && !EXPLICIT.contains(&k));
        deny(!ok, "kinds")
    }

    fn max(&self) -> u32 {
        self.max_expire.unwrap_or(86_400)
    }

    fn wildcard(&self) -> bool {
        self.allow_wildcard.unwrap_or(true)
    }

    fn channel(&self, c: &[u8]) -> Verdict {
        if c.is_empty() {
            return deny(!self.wildcard(), "allow_wildcard");
        }
        match &self.channels {
            Some(g) => deny(!any_glob(g, c), "channels"),
            None => Ok(()),
        }
    }

    fn resource_channel(&self, r: &[u8]) -> Verdict {
        if r.contains(&b'*') || r.contains(&b'?') {
            return match &self.channels {
                Some(g) => deny(
                    !g.iter().any(|g| *g == "*" || g.as_bytes() == r),
                    "channels",
                ),
                None => Ok(()),
            };
        }
        match &self.channels {
            Some(g) => deny(!any_glob(g, r), "channels"),
            None => Ok(()),
        }
    }

    fn identity(&self, id: &[u8]) -> Verdict {
        if id.is_empty() {
            return deny(!self.wildcard(), "allow_wildcard");
        }
        let s = std::str::from_utf8(id).map_err(|_| "accounts")?;
        let uid = if s.as_bytes()[0] != b'0' && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u32>().ok()
        } else {
            None
        };
        match uid {
            Some(n) => match &self.uid_ranges {
                Some(r) => deny(!r.iter().any(|&(a, b)| a <= n && n <= b), "uid_ranges"),
                None => Ok(()),
            },
            None => match (&self.accounts, &self.uid_ranges) {
                (Some(g), _) => deny(!any_glob(g, id), "accounts"),
                (None, Some(_)) => Err("uid_ranges"),
                (None, None) => Ok(()),
            },
        }
    }

    fn user(&self, id: &[u8], own: &[&[u8]]) -> Verdict {
        match &self.user_ids {
            Some(g) => deny(!any_glob(g, id), "user_ids"),
            None if self.uid_ranges.is_some() || self.accounts.is_some() => {
                deny(id.is_empty() || !own.contains(&id), "user_ids")
            }
            None => Ok(()),
        }
    }

    fn role(&self, publisher: bool) -> Verdict {
        let r = if publisher { "publisher" } else { "subscriber" };
        match &self.roles {
            Some(roles) => deny(!roles.contains(&r), "roles"),
            None => Ok(()),
        }
    }

    /// Whether a token of `kind` with these decoded services is allowed.
    fn allows(&self, kind: &str, expire: u32, services: &[Service]) -> Verdict {
        self.kind(kind)?;
        deny(expire > self.max(), "max_expire_seconds")?;
        let own: Vec<&[u8]> = services
            .iter()
            .filter_map(|s| match &s.payload {
                Payload::Rtc { uid: a, .. }
                | Payload::Streaming { account: a, .. }
                | Payload::Fcdn { account: a, .. } => Some(a.as_slice()),
                _ => None,
            })
            .collect();
        for s in services {
            let has = |id: u16| s.privileges.get(id).is_some();
            if kind == "generic" {
                match s.service_type() {
                    st::RTC => self.kind("rtc")?,
                    st::RTM => self.kind("rtm")?,
                    st::RTM2 => self.kind("rtm2")?,
                    st::FPA => self.kind("fpa")?,
                    st::CHAT if has(2) => self.kind("chat_app")?,
                    st::CHAT => self.kind("chat_user")?,
                    st::APAAS if has(3) => self.kind("apaas_app")?,
                    st::APAAS if has(2) => self.kind("apaas_user")?,
                    st::APAAS => self.kind("apaas_room_user")?,
                    _ => {}
                }
            }
            for (_, v) in s.privileges.iter() {
                deny(v > self.max(), "max_expire_seconds")?;
            }
            match &s.payload {
                Payload::Rtc { channel_name, uid } => {
                    self.role(has(2) || has(3) || has(4))?;
                    self.channel(channel_name)?;
                    self.identity(uid)?;
                }
                Payload::Streaming {
                    channel_name,
                    account,
                } => {
                    self.role(has(1) || has(2))?;
                    self.channel(channel_name)?;
                    self.identity(account)?;
                }
                Payload::Fcdn {
                    channel_name,
                    account,
                } => {
                    self.role(has(1))?;
                    self.channel(channel_name)?;
                    self.identity(account)?;
                }
                Payload::Rtm { user_id } => self.user(user_id, &own)?,
                Payload::Chat { user_id } => {
                    if !user_id.is_empty() {
                        self.user(user_id, &own)?;
                    }
                }
                Payload::Rtm2 {
                    user_id,
                    permissions,
                } => {
                    self.user(user_id, &own)?;
                    for g in permissions.grants() {
                        if g.permission_type == permission_type::WRITE {
                            self.role(true)?;
                        }
                        for r in &g.resources {
                            if g.resource_type == 4 {
                                self.user(r, &own)?;
                            } else {
                                self.resource_channel(r)?;
                            }
                        }
                    }
                }
                Payload::Apaas {
                    room_uuid,
                    user_uuid,
                    ..
                } => {
                    if !room_uuid.is_empty() {
                        self.channel(room_uuid)?;
                    }
                    if !user_uuid.is_empty() {
                        self.user(user_uuid, &own)?;
                    }
                }
                Payload::Fpa => {}
                Payload::Other(_) => return Err("kinds"),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn opt_subset<T: Clone + std::fmt::Debug + 'static>(
    pool: &'static [T],
) -> impl Strategy<Value = Option<Vec<T>>> {
    prop::option::of(prop::sample::subsequence(pool.to_vec(), 0..=pool.len()))
}

static KINDS: [&str; 14] = [
    "*",
    "rtc",
    "rtc_privileges",
    "rtc_rtm",
    "rtm",
    "rtm2",
    "chat_user",
    "chat_app",
    "fpa",
    "apaas_room_user",
    "apaas_user",
    "apaas_app",
    "generic",
    "agent_session",
];
static CHANNEL_GLOBS: [&str; 6] = ["c-*", "c-1", "lobby", "*", "c-?", "r*m"];
static RANGES: [(u32, u32); 3] = [(1, 10), (42, 42), (100, 199)];
static ACCOUNT_GLOBS: [&str; 4] = ["acct-*", "0042", "a?", "*"];
static USER_GLOBS: [&str; 4] = ["u-*", "42", "acct-1", "*"];
static ROLES: [&str; 2] = ["publisher", "subscriber"];

fn policy() -> impl Strategy<Value = Pol> {
    (
        prop::sample::subsequence(KINDS.to_vec(), 0..=KINDS.len()),
        opt_subset(&CHANNEL_GLOBS),
        prop::option::of(any::<bool>()),
        opt_subset(&RANGES),
        opt_subset(&ACCOUNT_GLOBS),
        opt_subset(&USER_GLOBS),
        opt_subset(&ROLES),
        prop::option::of(prop::sample::select(vec![60u32, 600, 3600, 86_400])),
    )
        .prop_map(
            |(kinds, channels, allow_wildcard, uid_ranges, accounts, user_ids, roles, max)| Pol {
                kinds,
                channels,
                allow_wildcard,
                uid_ranges,
                accounts,
                user_ids,
                roles,
                max_expire: max,
            },
        )
}

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(pool).prop_map(str::to_owned)
}

static CHANNELS: [&str; 8] = ["", "c-1", "c-2", "lobby", "other", "room", "c-?", "x y"];
static IDENTITIES: [&str; 9] = ["", "42", "0042", "0", "5", "150", "acct-1", "ceo", "a1"];
static USERS: [&str; 7] = ["u-1", "42", "150", "acct-1", "ceo", "0042", "5"];
static RESOURCES: [&str; 9] = [
    "c-1", "lobby", "other", "c-*", "*", "c-?", "u-1", "42", "ceo",
];
static EXPIRES: [u32; 6] = [0, 5, 60, 600, 601, 3600];
static UIDS: [u32; 6] = [0, 1, 5, 42, 150, u32::MAX];

fn expire() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(prop::sample::select(&EXPIRES[1..]))
}

fn privileges(ids: &'static [u16]) -> impl Strategy<Value = Privileges> {
    prop::sample::subsequence(ids, 1..=ids.len())
        .prop_flat_map(|ids| {
            let n = ids.len();
            (
                Just(ids),
                prop::collection::vec(prop::sample::select(&EXPIRES[..]), n),
            )
        })
        .prop_map(|(ids, exp)| {
            ids.into_iter()
                .zip(exp)
                .fold(Privileges::new(), |p, (id, e)| p.with(id, e))
        })
}

fn rtm2_permissions() -> impl Strategy<Value = Vec<(u16, u16, Vec<String>)>> {
    prop::collection::vec(
        (
            0u16..=4,
            0u16..=1,
            prop::collection::vec(pick(&RESOURCES), 0..3),
        ),
        0..3,
    )
}

fn service() -> impl Strategy<Value = Service> {
    let b = |s: String| s.into_bytes();
    prop_oneof![
        (
            pick(&CHANNELS),
            pick(&IDENTITIES),
            privileges(&[1, 2, 3, 4])
        )
            .prop_map(move |(c, u, p)| Service::new(
                Payload::Rtc {
                    channel_name: b(c),
                    uid: b(u)
                },
                p
            )),
        (pick(&USERS), privileges(&[1]))
            .prop_map(move |(u, p)| Service::new(Payload::Rtm { user_id: b(u) }, p)),
        (pick(&CHANNELS), pick(&IDENTITIES), privileges(&[1, 2])).prop_map(move |(c, a, p)| {
            Service::new(
                Payload::Streaming {
                    channel_name: b(c),
                    account: b(a),
                },
                p,
            )
        }),
        privileges(&[1]).prop_map(|p| Service::new(Payload::Fpa, p)),
        (
            prop_oneof![Just(String::new()), pick(&USERS)],
            privileges(&[1, 2])
        )
            .prop_map(move |(u, p)| Service::new(Payload::Chat { user_id: b(u) }, p)),
        (pick(&CHANNELS), pick(&IDENTITIES), privileges(&[1, 2])).prop_map(move |(c, a, p)| {
            Service::new(
                Payload::Fcdn {
                    channel_name: b(c),
                    account: b(a),
                },
                p,
            )
        }),
        (
            pick(&CHANNELS),
            prop_oneof![Just(String::new()), pick(&USERS)],
            -1i16..=2,
            privileges(&[1, 2, 3])
        )
            .prop_map(move |(r, u, role, p)| Service::new(
                Payload::Apaas {
                    room_uuid: b(r),
                    user_uuid: b(u),
                    role
                },
                p
            )),
        (pick(&USERS), rtm2_permissions(), privileges(&[1])).prop_map(move |(u, perms, p)| {
            let mut rp = Rtm2Permissions::new();
            for (rt, pt, r) in perms {
                rp.add(rt, pt, r);
            }
            Service::new(
                Payload::Rtm2 {
                    user_id: b(u),
                    permissions: rp,
                },
                p,
            )
        }),
    ]
}

fn to_pb(s: &Service) -> pb::Service {
    let t = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let mut out = pb::Service {
        r#type: i32::from(s.service_type()),
        privileges: s
            .privileges
            .iter()
            .map(|(id, e)| pb::Privilege {
                id: u32::from(id),
                expire_seconds: e,
            })
            .collect(),
        ..Default::default()
    };
    match &s.payload {
        Payload::Rtc { channel_name, uid } => {
            out.channel_name = t(channel_name);
            out.uid = t(uid);
        }
        Payload::Streaming {
            channel_name,
            account,
        }
        | Payload::Fcdn {
            channel_name,
            account,
        } => {
            out.channel_name = t(channel_name);
            out.account = t(account);
        }
        Payload::Rtm { user_id } | Payload::Chat { user_id } => out.user_id = t(user_id),
        Payload::Apaas {
            room_uuid,
            user_uuid,
            role,
        } => {
            out.room_uuid = t(room_uuid);
            out.user_uuid = t(user_uuid);
            out.role = Some(i32::from(*role));
        }
        Payload::Rtm2 {
            user_id,
            permissions,
        } => {
            out.user_id = t(user_id);
            out.permissions = permissions
                .grants()
                .iter()
                .map(|g| pb::Rtm2Permission {
                    resource_type: u32::from(g.resource_type),
                    permission_type: u32::from(g.permission_type),
                    resources: g.resources.iter().map(|r| t(r)).collect(),
                })
                .collect();
        }
        Payload::Fpa | Payload::Other(_) => {}
    }
    out
}

#[derive(Debug, Clone)]
enum Req {
    Rtc(pb::BuildRtcTokenRequest),
    RtcRtm(pb::BuildRtcRtmTokenRequest),
    Rtm(pb::BuildRtmTokenRequest),
    ChatUser(pb::BuildChatUserTokenRequest),
    Token(Vec<Service>, Option<u32>),
    Agent(pb::BuildAgentSessionRequest),
}

fn role() -> impl Strategy<Value = i32> {
    prop::sample::select(vec![0, 1, 2])
}

fn request() -> impl Strategy<Value = Req> {
    prop_oneof![
        (
            pick(&CHANNELS),
            prop_oneof![
                prop::sample::select(&UIDS[..]).prop_map(pb::build_rtc_token_request::User::Uid),
                pick(&IDENTITIES).prop_map(pb::build_rtc_token_request::User::Account),
            ],
            role(),
            expire(),
            expire(),
        )
            .prop_map(|(c, u, r, e, pe)| Req::Rtc(pb::BuildRtcTokenRequest {
                channel_name: c,
                user: Some(u),
                role: r,
                expire_seconds: e,
                privilege_expire_seconds: pe,
                ..Default::default()
            })),
        (
            pick(&CHANNELS),
            prop_oneof![
                prop::sample::select(&UIDS[..])
                    .prop_map(pb::build_rtc_rtm_token_request::User::Uid),
                pick(&IDENTITIES).prop_map(pb::build_rtc_rtm_token_request::User::Account),
            ],
            role(),
            expire(),
            prop::option::of(pick(&USERS)),
            expire(),
        )
            .prop_map(
                |(c, u, r, e, rtm, re)| Req::RtcRtm(pb::BuildRtcRtmTokenRequest {
                    channel_name: c,
                    user: Some(u),
                    role: r,
                    expire_seconds: e,
                    rtm_user_id: rtm,
                    rtm_expire_seconds: re,
                    ..Default::default()
                })
            ),
        (pick(&USERS), any::<bool>(), rtm2_permissions(), expire()).prop_map(
            |(u, rtm2, perms, e)| Req::Rtm(pb::BuildRtmTokenRequest {
                user_id: u,
                rtm2,
                permissions: perms
                    .into_iter()
                    .map(|(rt, pt, r)| pb::Rtm2Permission {
                        resource_type: u32::from(rt),
                        permission_type: u32::from(pt),
                        resources: r,
                    })
                    .collect(),
                expire_seconds: e,
                ..Default::default()
            })
        ),
        (pick(&USERS), expire()).prop_map(|(u, e)| Req::ChatUser(pb::BuildChatUserTokenRequest {
            user_id: u,
            expire_seconds: e,
            ..Default::default()
        })),
        (prop::collection::vec(service(), 1..4), expire()).prop_map(|(s, e)| Req::Token(s, e)),
        (
            pick(&CHANNELS),
            pick(&IDENTITIES),
            pick(&IDENTITIES),
            any::<bool>(),
            any::<bool>(),
            expire(),
        )
            .prop_map(
                |(c, a, u, s, rtm, e)| Req::Agent(pb::BuildAgentSessionRequest {
                    channel_name: c,
                    agent_uid: a,
                    user_uid: u,
                    string_uid: s,
                    enable_rtm: rtm,
                    expire_seconds: e,
                    ..Default::default()
                })
            ),
    ]
}

// ---------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------

/// Calls `req`: the kind the oracle applies, and the tokens or the error.
fn call(api: &TokenApi, who: &Authn, req: &Req) -> (&'static str, Result<Vec<String>, ApiError>) {
    match req.clone() {
        Req::Rtc(r) => ("rtc", api.build_rtc_token(who, r).map(|t| vec![t.token])),
        Req::RtcRtm(r) => (
            "rtc_rtm",
            api.build_rtc_rtm_token(who, r).map(|t| vec![t.token]),
        ),
        Req::Rtm(r) => {
            let kind = if r.rtm2 || !r.permissions.is_empty() {
                "rtm2"
            } else {
                "rtm"
            };
            (kind, api.build_rtm_token(who, r).map(|t| vec![t.token]))
        }
        Req::ChatUser(r) => (
            "chat_user",
            api.build_chat_user_token(who, r).map(|t| vec![t.token]),
        ),
        Req::Token(services, e) => {
            let r = pb::BuildTokenRequest {
                services: services.iter().map(to_pb).collect(),
                expire_seconds: e,
                ..Default::default()
            };
            ("generic", api.build_token(who, r).map(|t| vec![t.token]))
        }
        Req::Agent(r) => (
            "agent_session",
            api.build_agent_session(who, r)
                .map(|s| vec![s.agent_token, s.user_token, s.rest_token]),
        ),
    }
}

fn run_case(pol: &Pol, reqs: &[Req]) -> Result<(), TestCaseError> {
    let caller = CallerConfig {
        name: "prop".into(),
        api_key_sha256: Some(ApiKeyHash::of_key(KEY).to_hex()),
        policy: pol.config(),
        ..Default::default()
    };
    let auth = Authenticator::new(&[caller], None).map_err(TestCaseError::fail)?;
    let issuer = Issuer::new(vec![AppCredentials {
        app_id: agora_token::AppId::new(APP_ID).unwrap(),
        certificate: cert(CERT),
        secondary: None,
    }]);
    let api = TokenApi::new(Arc::new(Shared::new(Snapshot { issuer, auth })));
    let snap = api.shared().current_full();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let identity = snap.auth.authenticate(Some(KEY), &[], ip, false);
    prop_assert!(identity.is_ok());
    let who = Authn::pinned(identity, snap);
    for req in reqs {
        let (kind, result) = call(&api, &who, req);
        count(kind, &result);
        match result {
            Ok(tokens) => {
                for token in &tokens {
                    let t = UnverifiedToken::parse(token)
                        .map_err(|e| TestCaseError::fail(format!("{e}: {req:?}")))?;
                    prop_assert!(t.verify(&cert(CERT)).is_ok(), "signature: {req:?}");
                    prop_assert_eq!(t.app_id(), APP_ID.as_bytes());
                    prop_assert_eq!(t.stopped_at_unknown_service_type(), None);
                    prop_assert_eq!(t.trailing_bytes(), 0);
                    let verdict = pol.allows(kind, t.expire(), t.services());
                    prop_assert!(
                        verdict.is_ok(),
                        "issued what the policy forbids ({:?}): {:?}\npolicy {:?}\nrequest {:?}",
                        verdict,
                        t.services(),
                        pol,
                        req
                    );
                    if let Req::Rtm(_) = req {
                        let want = if kind == "rtm" { st::RTM } else { st::RTM2 };
                        prop_assert_eq!(t.services()[0].service_type(), want);
                    }
                    if let Req::Agent(_) = req {
                        // Each RTM user id is the token's packed RTC identity.
                        let rtc = t.services().iter().find_map(|s| match &s.payload {
                            Payload::Rtc { uid, .. } => Some(uid.clone()),
                            _ => None,
                        });
                        for s in t.services() {
                            if let Payload::Rtm { user_id } = &s.payload {
                                prop_assert_eq!(Some(user_id), rtc.as_ref());
                            }
                        }
                    }
                }
                if let Req::Token(services, e) = req {
                    // Exactly the services asked for, in service-type order.
                    let t = UnverifiedToken::parse(&tokens[0]).unwrap();
                    let mut want = services.clone();
                    want.sort_by_key(Service::service_type);
                    prop_assert_eq!(t.services(), &want[..]);
                    if let Some(e) = e {
                        prop_assert_eq!(t.expire(), *e);
                    }
                }
            }
            Err(e) => {
                prop_assert!(
                    matches!(
                        e.code,
                        Code::PermissionDenied
                            | Code::InvalidArgument
                            | Code::NotFound
                            | Code::ResourceExhausted
                    ),
                    "{e:?}: {req:?}"
                );
                if e.code == Code::PermissionDenied {
                    prop_assert!(
                        e.message.starts_with("permission denied by rule `"),
                        "{}",
                        e.message
                    );
                }
                if let (Req::Token(services, exp), Code::PermissionDenied) = (req, e.code) {
                    // The converse: the oracle refuses these services too.
                    let exp = exp.unwrap_or(3600.min(pol.max()));
                    prop_assert!(
                        pol.allows("generic", exp, services).is_err(),
                        "refused what the policy allows: {}\npolicy {:?}\nservices {:?}",
                        e.message,
                        pol,
                        services
                    );
                }
            }
        }
    }
    Ok(())
}

/// Outcomes by RPC kind: (issued, denied, invalid).
type Tally = std::collections::BTreeMap<&'static str, (u32, u32, u32)>;

static TALLY: std::sync::Mutex<Tally> = std::sync::Mutex::new(Tally::new());

fn count(kind: &'static str, r: &Result<Vec<String>, ApiError>) {
    let mut t = TALLY.lock().unwrap();
    let e = t.entry(kind).or_default();
    match r {
        Ok(_) => e.0 += 1,
        Err(e2) if e2.code == Code::PermissionDenied => e.1 += 1,
        Err(_) => e.2 += 1,
    }
}

/// Random policies and requests: whatever is issued, the policy allows.
/// 1024 cases of 1..8 requests each; the test then checks it was not
/// vacuous: every RPC both issued and was refused by policy.
#[test]
fn whatever_is_issued_the_policy_allows() {
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 1024,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (policy(), prop::collection::vec(request(), 1..8));
    let result = runner.run(&strategy, |(pol, reqs)| run_case(&pol, &reqs));
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = TALLY.lock().unwrap().clone();
    eprintln!("outcomes (issued, denied, invalid) by kind: {tally:?}");
    for kind in [
        "rtc",
        "rtc_rtm",
        "rtm",
        "rtm2",
        "chat_user",
        "generic",
        "agent_session",
    ] {
        let (ok, denied, _) = tally.get(kind).copied().unwrap_or_default();
        assert!(ok >= 5 && denied >= 5, "{kind}: {tally:?}");
    }
}

/// The oracle's glob agrees with the obvious cases (a sanity check of the
/// test itself).
#[test]
fn the_oracle_glob_is_sane() {
    assert!(glob(b"c-*", b"c-1"));
    assert!(glob(b"c-*", b"c-"));
    assert!(!glob(b"c-*", b"c"));
    assert!(glob(b"c-?", b"c-1"));
    assert!(!glob(b"c-?", b"c-12"));
    assert!(glob(b"*", b""));
    assert!(glob(b"r*m", b"room"));
    assert!(!glob(b"r*m", b"rooms"));
}
