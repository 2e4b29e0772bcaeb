//! "Authorize the token, not the request": the bypasses of the former
//! request-field policy, each refused now over gRPC and JSON (and the GET
//! endpoint where it applies), on the real server. Every token issued
//! here is decoded, its signature verified, and its services, identities,
//! privileges and expiry compared with what the policy allows.

use std::net::SocketAddr;

use agora_token::service::{permission_type as perm, privilege, resource_type as res};
use agora_token::{Payload, Privileges, Rtm2Permissions, Service, UnverifiedToken};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use token_authority::pb;
use token_authority::pb::token_service_client::TokenServiceClient;
use token_authority::policy::{ApiKeyHash, CallerConfig, PolicyConfig};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{APP_ID, CERT, TestApp, spawn_app_with, verified};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

pub fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| (*s).to_owned()).collect())
}

/// A caller named `name` whose key is `key-of-<name>`.
pub fn caller(name: &str, policy: PolicyConfig) -> CallerConfig {
    CallerConfig {
        name: name.into(),
        api_key_sha256: Some(ApiKeyHash::of_key(&key(name)).to_hex()),
        policy,
        ..Default::default()
    }
}

/// The API key of caller `name`.
pub fn key(name: &str) -> String {
    format!("ta_grants-{name}-0123456789abcdef")
}

pub async fn app_with(callers: Vec<CallerConfig>) -> TestApp {
    spawn_app_with(|c| c.callers = callers).await
}

fn with_key<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

/// An HTTP/1.1 request with an optional bearer key.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    if method == "POST" {
        b = b.header("content-type", "application/json");
    }
    let resp = client
        .request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// One call of a token RPC, sent over gRPC (the message) and JSON (its
/// proto3 JSON form).
#[derive(Debug, Clone)]
pub enum Rpc {
    Rtc(pb::BuildRtcTokenRequest),
    RtcRtm(pb::BuildRtcRtmTokenRequest),
    Rtm(pb::BuildRtmTokenRequest),
    ChatUser(pb::BuildChatUserTokenRequest),
    ChatApp(pb::BuildChatAppTokenRequest),
    Apaas(pb::BuildApaasTokenRequest),
    Token(pb::BuildTokenRequest),
    Agent(pb::BuildAgentSessionRequest),
}

impl Rpc {
    pub fn name(&self) -> &'static str {
        match self {
            Rpc::Rtc(_) => "BuildRtcToken",
            Rpc::RtcRtm(_) => "BuildRtcRtmToken",
            Rpc::Rtm(_) => "BuildRtmToken",
            Rpc::ChatUser(_) => "BuildChatUserToken",
            Rpc::ChatApp(_) => "BuildChatAppToken",
            Rpc::Apaas(_) => "BuildApaasToken",
            Rpc::Token(_) => "BuildToken",
            Rpc::Agent(_) => "BuildAgentSession",
        }
    }

    pub fn json(&self) -> String {
        match self {
            Rpc::Rtc(r) => serde_json::to_string(r),
            Rpc::RtcRtm(r) => serde_json::to_string(r),
            Rpc::Rtm(r) => serde_json::to_string(r),
            Rpc::ChatUser(r) => serde_json::to_string(r),
            Rpc::ChatApp(r) => serde_json::to_string(r),
            Rpc::Apaas(r) => serde_json::to_string(r),
            Rpc::Token(r) => serde_json::to_string(r),
            Rpc::Agent(r) => serde_json::to_string(r),
        }
        .unwrap()
    }

    /// The tokens of a JSON answer (the three of an agent session).
    fn json_tokens(&self, v: &serde_json::Value) -> Vec<String> {
        let keys: &[&str] = match self {
            Rpc::Agent(_) => &["agentToken", "userToken", "restToken"],
            _ => &["token"],
        };
        keys.iter()
            .map(|k| {
                v[*k]
                    .as_str()
                    .unwrap_or_else(|| panic!("{k}: {v}"))
                    .to_owned()
            })
            .collect()
    }

    pub async fn grpc(
        &self,
        g: &mut TokenServiceClient<Channel>,
        key: &str,
    ) -> Result<Vec<String>, tonic::Status> {
        let k = Some(key);
        Ok(match self.clone() {
            Rpc::Rtc(r) => vec![g.build_rtc_token(with_key(r, k)).await?.into_inner().token],
            Rpc::RtcRtm(r) => vec![
                g.build_rtc_rtm_token(with_key(r, k))
                    .await?
                    .into_inner()
                    .token,
            ],
            Rpc::Rtm(r) => vec![g.build_rtm_token(with_key(r, k)).await?.into_inner().token],
            Rpc::ChatUser(r) => vec![
                g.build_chat_user_token(with_key(r, k))
                    .await?
                    .into_inner()
                    .token,
            ],
            Rpc::ChatApp(r) => vec![
                g.build_chat_app_token(with_key(r, k))
                    .await?
                    .into_inner()
                    .token,
            ],
            Rpc::Apaas(r) => vec![
                g.build_apaas_token(with_key(r, k))
                    .await?
                    .into_inner()
                    .token,
            ],
            Rpc::Token(r) => vec![g.build_token(with_key(r, k)).await?.into_inner().token],
            Rpc::Agent(r) => {
                let s = g.build_agent_session(with_key(r, k)).await?.into_inner();
                vec![s.agent_token, s.user_token, s.rest_token]
            }
        })
    }
}

/// What a call must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Tokens.
    Issued,
    /// PERMISSION_DENIED / 403 by this rule.
    Denied(&'static str),
    /// INVALID_ARGUMENT / 400 naming this field.
    Invalid(&'static str),
}

/// Sends `rpc` as caller `who` over gRPC and JSON and checks both answers
/// against `want`. Returns, for an issued call, the decoded and verified
/// tokens of each transport (gRPC first).
pub async fn check(app: &TestApp, who: &str, rpc: &Rpc, want: Want) -> Vec<Vec<UnverifiedToken>> {
    let key = key(who);
    let mut g = app.grpc().await;
    let json = rpc.json();
    let what = format!("{who} {} {json}", rpc.name());
    let grpc = rpc.grpc(&mut g, &key).await;
    let (status, _, body) = http(
        app.addr(),
        "POST",
        &format!("/agora.token.v1.TokenService/{}", rpc.name()),
        Some(&key),
        &json,
    )
    .await;
    match want {
        Want::Issued => {
            let tokens = grpc.unwrap_or_else(|e| panic!("{what}: gRPC refused: {e:?}"));
            assert_eq!(status, 200, "{what}: JSON: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            [tokens, rpc.json_tokens(&v)]
                .iter()
                .map(|ts| ts.iter().map(|t| verified(t, CERT)).collect())
                .collect()
        }
        Want::Denied(rule) => {
            let e = grpc.expect_err(&what);
            let prefix = format!("permission denied by rule `{rule}`: ");
            assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
            assert!(e.message().starts_with(&prefix), "{what}: {}", e.message());
            assert_eq!(status, 403, "{what}: JSON: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["code"], "permission_denied", "{what}: {body}");
            assert!(
                v["message"].as_str().unwrap().starts_with(&prefix),
                "{what}: {body}"
            );
            Vec::new()
        }
        Want::Invalid(field) => {
            let e = grpc.expect_err(&what);
            let prefix = format!("{field}: ");
            assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
            assert!(e.message().starts_with(&prefix), "{what}: {}", e.message());
            assert_eq!(status, 400, "{what}: JSON: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["code"], "invalid_argument", "{what}: {body}");
            assert!(
                v["message"].as_str().unwrap().starts_with(&prefix),
                "{what}: {body}"
            );
            Vec::new()
        }
    }
}

/// Checks one decoded token: the app, the lifetime, an issue time of
/// now, and exactly `services`.
pub fn assert_token(t: &UnverifiedToken, expire: u32, services: &[Service]) {
    assert_eq!(t.app_id(), APP_ID.as_bytes());
    assert_eq!(t.expire(), expire, "token expire");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        u64::from(t.issue_ts()).abs_diff(now) < 120,
        "issue time {}",
        t.issue_ts()
    );
    assert_eq!(t.stopped_at_unknown_service_type(), None);
    assert_eq!(t.services(), services);
}

/// Each token of each transport: [`assert_token`] with the same services.
pub fn assert_tokens(issued: &[Vec<UnverifiedToken>], expire: u32, each: &[&[Service]]) {
    assert_eq!(issued.len(), 2, "gRPC and JSON");
    for tokens in issued {
        assert_eq!(tokens.len(), each.len());
        for (t, services) in tokens.iter().zip(each) {
            assert_token(t, expire, services);
        }
    }
}

pub fn privs(p: &[(u16, u32)]) -> Privileges {
    p.iter()
        .fold(Privileges::new(), |acc, &(id, v)| acc.with(id, v))
}

pub fn rtc_service(channel: &str, uid: &str, p: &[(u16, u32)]) -> Service {
    Service::new(
        Payload::Rtc {
            channel_name: channel.into(),
            uid: uid.into(),
        },
        privs(p),
    )
}

pub fn rtm_service(user: &str, expire: u32) -> Service {
    Service::new(
        Payload::Rtm {
            user_id: user.into(),
        },
        privs(&[(privilege::RTM_LOGIN, expire)]),
    )
}

/// The RTC privileges of a publisher (all four) or subscriber (join only).
pub fn rtc_privs(publisher: bool, expire: u32) -> Vec<(u16, u32)> {
    let n = if publisher { 4 } else { 1 };
    (1..=n).map(|id| (id, expire)).collect()
}

fn rtc_req(channel: &str, uid: u32, role: pb::Role) -> pb::BuildRtcTokenRequest {
    pb::BuildRtcTokenRequest {
        channel_name: channel.into(),
        user: Some(pb::build_rtc_token_request::User::Uid(uid)),
        role: role as i32,
        expire_seconds: Some(600),
        ..Default::default()
    }
}

pub fn pb_priv(id: u32, expire: u32) -> pb::Privilege {
    pb::Privilege {
        id,
        expire_seconds: expire,
    }
}

pub fn pb_perm(resource_type: u32, permission_type: u32, resources: &[&str]) -> pb::Rtm2Permission {
    pb::Rtm2Permission {
        resource_type,
        permission_type,
        resources: resources.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// A BuildToken call of one service, lasting 600 seconds.
pub fn token_of(service: pb::Service) -> Rpc {
    Rpc::Token(pb::BuildTokenRequest {
        services: vec![service],
        expire_seconds: Some(600),
        ..Default::default()
    })
}

fn rtm2_req(user: &str, perms: Vec<pb::Rtm2Permission>) -> Rpc {
    Rpc::Rtm(pb::BuildRtmTokenRequest {
        user_id: user.into(),
        rtm2: true,
        permissions: perms,
        expire_seconds: Some(600),
        ..Default::default()
    })
}

pub fn rtm2_service(user: &str, perms: &[(u16, u16, &[&str])], expire: u32) -> Service {
    let mut p = Rtm2Permissions::new();
    for (rt, pt, r) in perms {
        p.add(*rt, *pt, r.iter().copied());
    }
    Service::new(
        Payload::Rtm2 {
            user_id: user.into(),
            permissions: p,
        },
        privs(&[(privilege::RTM2_LOGIN, expire)]),
    )
}

// ---------------------------------------------------------------------------
// The former bypasses
// ---------------------------------------------------------------------------

/// A caller bound to uids 1000-1999 could get an RTM login for anyone by
/// naming another `rtmUserId`: now the RTM user id must be the token's own
/// RTC identity.
#[tokio::test]
async fn rtm_user_id_must_be_the_tokens_own_rtc_identity() {
    let app = app_with(vec![caller(
        "ranged",
        PolicyConfig {
            kinds: strs(&["*"]),
            uid_ranges: strs(&["1000-1999"]),
            ..Default::default()
        },
    )])
    .await;
    let req = |rtm: Option<&str>| pb::BuildRtcRtmTokenRequest {
        channel_name: "agent-1".into(),
        user: Some(pb::build_rtc_rtm_token_request::User::Uid(1000)),
        rtm_user_id: rtm.map(str::to_owned),
        expire_seconds: Some(600),
        ..Default::default()
    };
    // The JSON spelled by hand once (the table below uses the generated mapping).
    let (status, _, body) = http(
        app.addr(),
        "POST",
        "/agora.token.v1.TokenService/BuildRtcRtmToken",
        Some(&key("ranged")),
        r#"{"channelName":"agent-1","uid":1000,"rtmUserId":"ceo"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("permission denied by rule `user_ids`"),
        "{body}"
    );
    for other in ["ceo", "1001", "01000", "1000 "] {
        check(
            &app,
            "ranged",
            &Rpc::RtcRtm(req(Some(other))),
            Want::Denied("user_ids"),
        )
        .await;
    }
    // Its own identity, given or by default.
    for rtm in [Some("1000"), None] {
        let issued = check(&app, "ranged", &Rpc::RtcRtm(req(rtm)), Want::Issued).await;
        assert_tokens(
            &issued,
            600,
            &[&[
                rtc_service("agent-1", "1000", &rtc_privs(true, 600)),
                rtm_service("1000", 600),
            ]],
        );
    }
    // The RTC uid itself is still checked.
    let mut r = req(Some("999"));
    r.user = Some(pb::build_rtc_rtm_token_request::User::Uid(999));
    check(&app, "ranged", &Rpc::RtcRtm(r), Want::Denied("uid_ranges")).await;
}

/// The caller of the next tests: one channel prefix, one uid, subscriber
/// only, every non-app-wide kind; with variants that also list `generic`
/// or have `user_ids`.
fn bound_callers() -> Vec<CallerConfig> {
    let bound = |kinds: &[&str], user_ids: Option<Vec<String>>| PolicyConfig {
        kinds: strs(kinds),
        channels: strs(&["only-*"]),
        uid_ranges: strs(&["42"]),
        roles: strs(&["subscriber"]),
        user_ids,
        ..Default::default()
    };
    vec![
        caller("bound", bound(&["*"], None)),
        caller("bound-generic", bound(&["*", "generic"], None)),
        caller("bound-users", bound(&["*"], strs(&["42"]))),
    ]
}

/// App-wide tokens (Chat app, APaaS), tokens without an RTC identity
/// (Chat user, RTM, RTM2) and generic tokens that publish are refused to a
/// caller bound to channels `only-*`, uid 42 and the subscriber role.
#[tokio::test]
async fn a_bound_caller_gets_no_app_wide_or_foreign_grants() {
    let app = app_with(bound_callers()).await;
    // Chat: the app token is app-wide; a user token has no RTC identity.
    check(
        &app,
        "bound",
        &Rpc::ChatApp(pb::BuildChatAppTokenRequest {
            expire_seconds: Some(600),
            ..Default::default()
        }),
        Want::Denied("kinds"),
    )
    .await;
    for user in ["admin", "42"] {
        check(
            &app,
            "bound",
            &Rpc::ChatUser(pb::BuildChatUserTokenRequest {
                user_id: user.into(),
                expire_seconds: Some(600),
                ..Default::default()
            }),
            Want::Denied("user_ids"),
        )
        .await;
    }
    // RTM: any user, even its own uid (an RTM token carries no RTC identity).
    for user in ["admin", "42"] {
        check(
            &app,
            "bound",
            &Rpc::Rtm(pb::BuildRtmTokenRequest {
                user_id: user.into(),
                expire_seconds: Some(600),
                ..Default::default()
            }),
            Want::Denied("user_ids"),
        )
        .await;
        check(
            &app,
            "bound",
            &rtm2_req(user, vec![pb_perm(0, 1, &["only-1"])]),
            Want::Denied("user_ids"),
        )
        .await;
    }
    // RTM2 with user_ids ["42"]: write needs publisher, channels are channels.
    let rtm2 = |perms| rtm2_req("42", perms);
    for (perms, want) in [
        (vec![pb_perm(0, 1, &["only-1"])], Want::Denied("roles")),
        (vec![pb_perm(1, 1, &["only-1"])], Want::Denied("roles")),
        (vec![pb_perm(0, 0, &["other"])], Want::Denied("channels")),
        (vec![pb_perm(2, 0, &["*"])], Want::Denied("channels")),
        (vec![pb_perm(3, 0, &["only-?"])], Want::Denied("channels")),
        (
            vec![pb_perm(0, 0, &["only-1", "x"])],
            Want::Denied("channels"),
        ),
        (vec![pb_perm(4, 0, &["admin"])], Want::Denied("user_ids")),
    ] {
        check(&app, "bound-users", &rtm2(perms), want).await;
    }
    let issued = check(&app, "bound-users", &rtm2(Vec::new()), Want::Issued).await;
    assert_tokens(&issued, 600, &[&[rtm2_service("42", &[], 600)]]);
    let issued = check(
        &app,
        "bound-users",
        &rtm2(vec![
            pb_perm(0, 0, &["only-1"]),
            pb_perm(1, 0, &["only-*"]),
            pb_perm(4, 0, &["42"]),
        ]),
        Want::Issued,
    )
    .await;
    assert_tokens(
        &issued,
        600,
        &[&[rtm2_service(
            "42",
            &[
                (res::MESSAGE_CHANNELS, perm::READ, &["only-1"]),
                (res::STREAM_CHANNELS, perm::READ, &["only-*"]),
                (res::USERS, perm::READ, &["42"]),
            ],
            600,
        )]],
    );
    // APaaS: every kind is app-wide.
    use pb::ApaasTokenKind as K;
    for (kind, room, user, role) in [
        (K::App, "", "", 0),
        (K::User, "", "42", 0),
        (K::RoomUser, "only-1", "42", 1),
    ] {
        check(
            &app,
            "bound",
            &Rpc::Apaas(pb::BuildApaasTokenRequest {
                kind: kind as i32,
                room_uuid: room.into(),
                user_uuid: user.into(),
                role,
                expire_seconds: Some(600),
                ..Default::default()
            }),
            Want::Denied("kinds"),
        )
        .await;
    }
    // Streaming publish privileges: generic is not listed; when it is, the
    // subscriber role refuses them.
    let streaming = |p: Vec<pb::Privilege>| {
        token_of(pb::Service {
            r#type: pb::ServiceType::Streaming as i32,
            privileges: p,
            channel_name: "only-1".into(),
            account: "42".into(),
            ..Default::default()
        })
    };
    for p in [
        vec![pb_priv(1, 0)],
        vec![pb_priv(2, 0)],
        vec![pb_priv(1, 0), pb_priv(2, 0)],
    ] {
        check(&app, "bound", &streaming(p.clone()), Want::Denied("kinds")).await;
        check(&app, "bound-generic", &streaming(p), Want::Denied("roles")).await;
    }
    // FCDN play only is a subscriber grant: issued with generic.
    let issued = check(
        &app,
        "bound-generic",
        &token_of(pb::Service {
            r#type: pb::ServiceType::Fcdn as i32,
            privileges: vec![pb_priv(2, 0)],
            channel_name: "only-1".into(),
            account: "42".into(),
            ..Default::default()
        }),
        Want::Issued,
    )
    .await;
    assert_tokens(
        &issued,
        600,
        &[&[Service::new(
            Payload::Fcdn {
                channel_name: "only-1".into(),
                account: "42".into(),
            },
            privs(&[(privilege::FCDN_PLAY, 0)]),
        )]],
    );
    // RTC: the role and the channel, on every transport.
    let sub = pb::Role::Subscriber;
    for (req, want) in [
        (rtc_req("only-1", 42, pb::Role::Publisher), "roles"),
        (rtc_req("other", 42, sub), "channels"),
        (rtc_req("only-1", 43, sub), "uid_ranges"),
    ] {
        check(&app, "bound", &Rpc::Rtc(req), Want::Denied(want)).await;
    }
    let issued = check(
        &app,
        "bound",
        &Rpc::Rtc(rtc_req("only-1", 42, sub)),
        Want::Issued,
    )
    .await;
    assert_tokens(
        &issued,
        600,
        &[&[rtc_service("only-1", "42", &rtc_privs(false, 600))]],
    );
    let k = key("bound");
    for (query, status, rule) in [
        ("channelName=only-1&uid=42", 403, "roles"),
        ("channelName=only-1&uid=42&role=publisher", 403, "roles"),
        ("channelName=other&uid=42&role=subscriber", 403, "channels"),
        (
            "channelName=only-1&uid=7&role=subscriber",
            403,
            "uid_ranges",
        ),
    ] {
        let (s, _, body) = http(
            app.addr(),
            "GET",
            &format!("/api/agora/token?{query}"),
            Some(&k),
            "",
        )
        .await;
        assert_eq!(s, status, "{query}: {body}");
        assert!(
            body.starts_with(&format!("permission denied by rule `{rule}`")),
            "{query}: {body}"
        );
    }
}

/// `"0042"` is packed as the account `"0042"`, not uid 42: refused to a
/// caller with uid_ranges ["42"] and no accounts, on every RPC that packs
/// it. The GET endpoint's `uid=0042` is the number 42, packed as "42".
#[tokio::test]
async fn a_uid_with_leading_zeros_is_an_account() {
    let app = app_with(bound_callers()).await;
    let rtc = |uid: &str| {
        token_of(pb::Service {
            r#type: pb::ServiceType::Rtc as i32,
            privileges: vec![pb_priv(1, 0)],
            channel_name: "only-1".into(),
            uid: uid.into(),
            ..Default::default()
        })
    };
    for uid in ["0042", "042", "0", "42 ", "+42", "4294967338"] {
        check(&app, "bound-generic", &rtc(uid), Want::Denied("uid_ranges")).await;
    }
    let issued = check(&app, "bound-generic", &rtc("42"), Want::Issued).await;
    assert_tokens(&issued, 600, &[&[rtc_service("only-1", "42", &[(1, 0)])]]);
    // Without generic, the kind refuses first.
    check(&app, "bound", &rtc("42"), Want::Denied("kinds")).await;
    // The account oneof of the RTC RPCs.
    let account = pb::BuildRtcTokenRequest {
        user: Some(pb::build_rtc_token_request::User::Account("0042".into())),
        ..rtc_req("only-1", 0, pb::Role::Subscriber)
    };
    check(
        &app,
        "bound",
        &Rpc::Rtc(account),
        Want::Denied("uid_ranges"),
    )
    .await;
    let rtc_rtm = pb::BuildRtcRtmTokenRequest {
        channel_name: "only-1".into(),
        user: Some(pb::build_rtc_rtm_token_request::User::Account(
            "0042".into(),
        )),
        role: pb::Role::Subscriber as i32,
        expire_seconds: Some(600),
        ..Default::default()
    };
    check(
        &app,
        "bound",
        &Rpc::RtcRtm(rtc_rtm.clone()),
        Want::Denied("uid_ranges"),
    )
    .await;
    // Uid 42 with its own RTM identity is the one allowed RTC + RTM token.
    let ok = pb::BuildRtcRtmTokenRequest {
        user: Some(pb::build_rtc_rtm_token_request::User::Uid(42)),
        ..rtc_rtm
    };
    let issued = check(&app, "bound", &Rpc::RtcRtm(ok), Want::Issued).await;
    assert_tokens(
        &issued,
        600,
        &[&[
            rtc_service("only-1", "42", &rtc_privs(false, 600)),
            rtm_service("42", 600),
        ]],
    );
    let (s, _, body) = http(
        app.addr(),
        "GET",
        "/api/agora/token?channelName=only-1&uid=0042&role=subscriber&expireSeconds=600",
        Some(&key("bound")),
        "",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_token(
        &verified(&body, CERT),
        600,
        &[rtc_service("only-1", "42", &rtc_privs(false, 600))],
    );
}

/// BuildAgentSession: identities are canonical and explicit, the channel
/// is required; each RTM user id is its token's packed RTC identity.
#[tokio::test]
async fn agent_session_input_is_refused_by_field() {
    let app = app_with(vec![caller(
        "agents",
        PolicyConfig {
            kinds: strs(&["*"]),
            ..Default::default()
        },
    )])
    .await;
    let session = |channel: &str, agent: &str, user: &str, rtm: bool, string_uid: bool| {
        Rpc::Agent(pb::BuildAgentSessionRequest {
            channel_name: channel.into(),
            agent_uid: agent.into(),
            user_uid: user.into(),
            enable_rtm: rtm,
            string_uid,
            expire_seconds: Some(600),
            ..Default::default()
        })
    };
    for (rpc, field) in [
        (session("c", "01001", "1002", false, false), "agent_uid"),
        (session("c", "01001", "1002", true, false), "agent_uid"),
        (session("c", "1001", "01002", true, false), "user_uid"),
        (session("c", "0", "1002", true, false), "agent_uid"),
        (session("c", "0", "1002", false, false), "agent_uid"),
        (session("c", "00", "1002", false, false), "agent_uid"),
        (session("c", "1001", "0", true, false), "user_uid"),
        (session("", "1001", "1002", true, false), "channel_name"),
        (session("", "1001", "1002", false, false), "channel_name"),
        (session("c", "", "1002", false, true), "agent_uid"),
    ] {
        check(&app, "agents", &rpc, Want::Invalid(field)).await;
    }
    let all = rtc_privs(true, 600);
    // With RTM: agent and user tokens, each RTC + RTM as itself; REST = agent.
    let issued = check(
        &app,
        "agents",
        &session("c", "1001", "1002", true, false),
        Want::Issued,
    )
    .await;
    let agent = [rtc_service("c", "1001", &all), rtm_service("1001", 600)];
    let user = [rtc_service("c", "1002", &all), rtm_service("1002", 600)];
    assert_tokens(&issued, 600, &[&agent, &user, &agent]);
    // Without RTM: RTC only for both, the REST token RTC + RTM as the agent;
    // user uid 0 is the wildcard here.
    let issued = check(
        &app,
        "agents",
        &session("c", "1001", "0", false, false),
        Want::Issued,
    )
    .await;
    assert_tokens(
        &issued,
        600,
        &[
            &[rtc_service("c", "1001", &all)],
            &[rtc_service("c", "", &all)],
            &agent,
        ],
    );
    // String uids are accounts, packed as given ("01001" stays "01001").
    let issued = check(
        &app,
        "agents",
        &session("c", "01001", "0", true, true),
        Want::Issued,
    )
    .await;
    let agent = [rtc_service("c", "01001", &all), rtm_service("01001", 600)];
    let user = [rtc_service("c", "0", &all), rtm_service("0", 600)];
    assert_tokens(&issued, 600, &[&agent, &user, &agent]);
}

/// Authentication happens before the body is read: a bad (or missing) key
/// with a malformed body is 401, never 400.
#[tokio::test]
async fn a_bad_key_is_refused_before_the_body_is_read() {
    let app = app_with(vec![caller(
        "good",
        PolicyConfig {
            kinds: strs(&["*"]),
            ..Default::default()
        },
    )])
    .await;
    for body in ["{", "not json", r#"{"channelName":7}"#, r#"{"uid":-1}"#] {
        for k in [Some("wrong-key"), None] {
            let (s, _, text) = http(
                app.addr(),
                "POST",
                "/agora.token.v1.TokenService/BuildRtcToken",
                k,
                body,
            )
            .await;
            assert_eq!(s, 401, "{k:?} {body}: {text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["code"], "unauthenticated", "{text}");
        }
        // The right key with the same body: now the body is read.
        let (s, _, text) = http(
            app.addr(),
            "POST",
            "/agora.token.v1.TokenService/BuildRtcToken",
            Some(&key("good")),
            body,
        )
        .await;
        assert_eq!(s, 400, "{body}: {text}");
    }
    // gRPC: a bad key with an invalid request is UNAUTHENTICATED too.
    let mut g = app.grpc().await;
    let e = g
        .build_agent_session(with_key(
            pb::BuildAgentSessionRequest {
                agent_uid: "01001".into(),
                ..Default::default()
            },
            Some("wrong-key"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

/// 20 failed authentications within 60 s from one address: the 21st
/// request from it gets 429 with Retry-After, whatever its key (its own
/// server, so the throttle touches no other test).
#[tokio::test]
async fn failed_authentications_are_throttled() {
    let app = app_with(vec![caller(
        "good",
        PolicyConfig {
            kinds: strs(&["*"]),
            ..Default::default()
        },
    )])
    .await;
    let path = "/agora.token.v1.TokenService/BuildRtcToken";
    let body = r#"{"channelName":"c","uid":1}"#;
    // The right key works before.
    let (s, _, text) = http(app.addr(), "POST", path, Some(&key("good")), body).await;
    assert_eq!(s, 200, "{text}");
    for i in 0..20 {
        let (s, _, text) = http(app.addr(), "POST", path, Some("wrong-key"), "{").await;
        assert_eq!(s, 401, "request {i}: {text}");
    }
    let (s, headers, text) = http(app.addr(), "POST", path, Some("wrong-key"), "{").await;
    assert_eq!(s, 429, "{text}");
    let wait: u64 = headers
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "retry-after {wait}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["code"], "resource_exhausted", "{text}");
    // The address is throttled, not the key: the right key too, on every transport.
    let (s, headers, _) = http(app.addr(), "POST", path, Some(&key("good")), body).await;
    assert_eq!(s, 429);
    assert!(headers.get("retry-after").is_some());
    let (s, _, _) = http(
        app.addr(),
        "GET",
        "/api/agora/token?channelName=c&uid=1",
        Some(&key("good")),
        "",
    )
    .await;
    assert_eq!(s, 429);
    let mut g = app.grpc().await;
    let e = g
        .build_rtc_token(with_key(
            rtc_req("c", 1, pb::Role::Publisher),
            Some(&key("good")),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.metadata().get("retry-after").is_some());
}

// ---------------------------------------------------------------------------
// Every service and field of BuildToken against restricted callers
// ---------------------------------------------------------------------------

mod table {
    use super::*;
    use pb::ServiceType as T;

    fn svc(t: T, p: &[(u32, u32)]) -> pb::Service {
        pb::Service {
            r#type: t as i32,
            privileges: p.iter().map(|&(id, e)| pb_priv(id, e)).collect(),
            ..Default::default()
        }
    }
    fn rtc(ch: &str, uid: &str, p: &[(u32, u32)]) -> pb::Service {
        pb::Service {
            channel_name: ch.into(),
            uid: uid.into(),
            ..svc(T::Rtc, p)
        }
    }
    fn rtm(user: &str) -> pb::Service {
        pb::Service {
            user_id: user.into(),
            ..svc(T::Rtm, &[(1, 0)])
        }
    }
    fn streaming(ch: &str, account: &str, p: &[(u32, u32)]) -> pb::Service {
        pb::Service {
            channel_name: ch.into(),
            account: account.into(),
            ..svc(T::Streaming, p)
        }
    }
    fn fcdn(ch: &str, account: &str, p: &[(u32, u32)]) -> pb::Service {
        pb::Service {
            r#type: T::Fcdn as i32,
            ..streaming(ch, account, p)
        }
    }
    fn chat(user: &str, p: &[(u32, u32)]) -> pb::Service {
        pb::Service {
            user_id: user.into(),
            ..svc(T::Chat, p)
        }
    }
    fn apaas(room: &str, user: &str, role: i32, p: &[(u32, u32)]) -> pb::Service {
        pb::Service {
            room_uuid: room.into(),
            user_uuid: user.into(),
            role: Some(role),
            ..svc(T::Apaas, p)
        }
    }
    fn rtm2(user: &str, perms: &[(u32, u32, &[&str])]) -> pb::Service {
        pb::Service {
            user_id: user.into(),
            permissions: perms.iter().map(|(r, p, x)| pb_perm(*r, *p, x)).collect(),
            ..svc(T::Rtm2, &[(1, 0)])
        }
    }

    /// What a service must decode to: written from the proto message,
    /// field by field, independently of the server's conversion.
    fn expected(s: &pb::Service) -> Service {
        let b = |x: &str| x.as_bytes().to_vec();
        let payload = match T::try_from(s.r#type).unwrap() {
            T::Rtc => Payload::Rtc {
                channel_name: b(&s.channel_name),
                uid: b(&s.uid),
            },
            T::Rtm => Payload::Rtm {
                user_id: b(&s.user_id),
            },
            T::Streaming => Payload::Streaming {
                channel_name: b(&s.channel_name),
                account: b(&s.account),
            },
            T::Fcdn => Payload::Fcdn {
                channel_name: b(&s.channel_name),
                account: b(&s.account),
            },
            T::Fpa => Payload::Fpa,
            T::Chat => Payload::Chat {
                user_id: b(&s.user_id),
            },
            T::Apaas => Payload::Apaas {
                room_uuid: b(&s.room_uuid),
                user_uuid: b(&s.user_uuid),
                role: i16::try_from(s.role.unwrap_or(-1)).unwrap(),
            },
            T::Rtm2 => {
                let mut p = Rtm2Permissions::new();
                for g in &s.permissions {
                    p.add(
                        u16::try_from(g.resource_type).unwrap(),
                        u16::try_from(g.permission_type).unwrap(),
                        g.resources.iter().map(String::as_str),
                    );
                }
                Payload::Rtm2 {
                    user_id: b(&s.user_id),
                    permissions: p,
                }
            }
            T::Unspecified => unreachable!(),
        };
        let p: Vec<(u16, u32)> = s
            .privileges
            .iter()
            .map(|p| (u16::try_from(p.id).unwrap(), p.expire_seconds))
            .collect();
        Service::new(payload, privs(&p))
    }

    fn restricted(roles: &[&str]) -> PolicyConfig {
        PolicyConfig {
            kinds: strs(&[
                "generic",
                "rtc",
                "rtm",
                "rtm2",
                "chat_user",
                "fpa",
                "apaas_room_user",
                "apaas_user",
            ]),
            channels: strs(&["room-*", "lobby"]),
            allow_wildcard: Some(false),
            uid_ranges: strs(&["100-199"]),
            accounts: strs(&["acct-*"]),
            user_ids: strs(&["u-*", "150"]),
            roles: strs(roles),
            max_expire_seconds: Some(600),
            ..Default::default()
        }
    }

    fn callers() -> Vec<CallerConfig> {
        vec![
            // Subscriber only.
            caller("sub", restricted(&["subscriber"])),
            // Publisher only.
            caller("pub", restricted(&["publisher"])),
            // Only generic: Streaming and FCDN, nothing with a kind of its own.
            caller(
                "generic",
                PolicyConfig {
                    kinds: strs(&["generic"]),
                    ..Default::default()
                },
            ),
            // Every kind but generic.
            caller(
                "no-generic",
                PolicyConfig {
                    kinds: strs(&[
                        "*",
                        "chat_app",
                        "fpa",
                        "apaas_room_user",
                        "apaas_user",
                        "apaas_app",
                    ]),
                    ..Default::default()
                },
            ),
            // Identities bound, no user_ids: user ids are the token's RTC identity.
            caller(
                "bound",
                PolicyConfig {
                    kinds: strs(&["*", "generic", "apaas_user"]),
                    uid_ranges: strs(&["100-199"]),
                    ..Default::default()
                },
            ),
        ]
    }

    use Want::{Denied as D, Invalid as I, Issued as OK};

    #[allow(clippy::too_many_lines)]
    fn rows() -> Vec<(&'static str, Vec<pb::Service>, Want)> {
        let one = |who, s: pb::Service, w| (who, vec![s], w);
        let mut rows = vec![
            // RTC: channel, uid / account, role, privilege expiry.
            one("sub", rtc("room-1", "150", &[(1, 0)]), OK),
            one("sub", rtc("lobby", "acct-x", &[(1, 600)]), OK),
            one("sub", rtc("other", "150", &[(1, 0)]), D("channels")),
            one("sub", rtc("room", "150", &[(1, 0)]), D("channels")),
            one("sub", rtc("lobby2", "150", &[(1, 0)]), D("channels")),
            one("sub", rtc("", "150", &[(1, 0)]), D("allow_wildcard")),
            one("sub", rtc("room-1", "", &[(1, 0)]), D("allow_wildcard")),
            one("sub", rtc("room-1", "99", &[(1, 0)]), D("uid_ranges")),
            one("sub", rtc("room-1", "200", &[(1, 0)]), D("uid_ranges")),
            one("sub", rtc("room-1", "0150", &[(1, 0)]), D("accounts")),
            one("sub", rtc("room-1", "0", &[(1, 0)]), D("accounts")),
            one("sub", rtc("room-1", "ceo", &[(1, 0)]), D("accounts")),
            one(
                "sub",
                rtc("room-1", "150", &[(1, 601)]),
                D("max_expire_seconds"),
            ),
            one("pub", rtc("room-1", "150", &[(1, 0)]), D("roles")),
            one(
                "pub",
                rtc("room-1", "150", &[(1, 0), (2, 0), (3, 0), (4, 0)]),
                OK,
            ),
            one("sub", rtc("room-1", "150", &[(1, 0), (2, 0)]), D("roles")),
            one("sub", rtc("room-1", "150", &[(3, 0)]), D("roles")),
            one("sub", rtc("room-1", "150", &[(4, 0)]), D("roles")),
            one("generic", rtc("any", "", &[(1, 0)]), D("kinds")),
            one("no-generic", rtc("any", "1", &[(1, 0)]), D("kinds")),
            // RTM: user id.
            one("sub", rtm("u-1"), OK),
            one("sub", rtm("150"), OK),
            one("sub", rtm("ceo"), D("user_ids")),
            one("sub", rtm("u"), D("user_ids")),
            one("generic", rtm("u-1"), D("kinds")),
            // Streaming: both privileges publish.
            one("sub", streaming("room-1", "150", &[(1, 0)]), D("roles")),
            one("sub", streaming("room-1", "150", &[(2, 0)]), D("roles")),
            one("pub", streaming("room-1", "150", &[(1, 0), (2, 600)]), OK),
            one("pub", streaming("room-1", "acct-1", &[(1, 0)]), OK),
            one("pub", streaming("other", "150", &[(1, 0)]), D("channels")),
            one("pub", streaming("", "150", &[(1, 0)]), D("allow_wildcard")),
            one(
                "pub",
                streaming("room-1", "", &[(1, 0)]),
                D("allow_wildcard"),
            ),
            one("pub", streaming("room-1", "99", &[(1, 0)]), D("uid_ranges")),
            one("pub", streaming("room-1", "bob", &[(2, 0)]), D("accounts")),
            one(
                "pub",
                streaming("room-1", "150", &[(1, 601)]),
                D("max_expire_seconds"),
            ),
            one("generic", streaming("", "", &[(1, 0)]), OK),
            one("no-generic", streaming("c", "1", &[(1, 0)]), D("kinds")),
            // FCDN: publish (1) or play (2).
            one("sub", fcdn("room-1", "150", &[(2, 0)]), OK),
            one("sub", fcdn("room-1", "acct-2", &[(2, 0)]), OK),
            one("sub", fcdn("room-1", "150", &[(1, 0)]), D("roles")),
            one("sub", fcdn("room-1", "150", &[(1, 0), (2, 0)]), D("roles")),
            one("pub", fcdn("room-1", "150", &[(1, 0)]), OK),
            one("pub", fcdn("room-1", "150", &[(2, 0)]), D("roles")),
            one("sub", fcdn("other", "150", &[(2, 0)]), D("channels")),
            one("sub", fcdn("", "150", &[(2, 0)]), D("allow_wildcard")),
            one("sub", fcdn("room-1", "", &[(2, 0)]), D("allow_wildcard")),
            one("sub", fcdn("room-1", "7", &[(2, 0)]), D("uid_ranges")),
            one("sub", fcdn("room-1", "bob", &[(2, 0)]), D("accounts")),
            one("generic", fcdn("", "", &[(1, 0)]), OK),
            // FPA.
            one("sub", svc(T::Fpa, &[(1, 0)]), OK),
            one("sub", svc(T::Fpa, &[(1, 601)]), D("max_expire_seconds")),
            one("generic", svc(T::Fpa, &[(1, 0)]), D("kinds")),
            // Chat: user (1) or app (2); an empty user id is not checked.
            one("sub", chat("u-1", &[(1, 0)]), OK),
            one("sub", chat("", &[(1, 0)]), OK),
            one("sub", chat("ceo", &[(1, 0)]), D("user_ids")),
            one("sub", chat("", &[(2, 0)]), D("kinds")),
            one("sub", chat("u-1", &[(2, 0)]), D("kinds")),
            one("sub", chat("u-1", &[(1, 0), (2, 0)]), D("kinds")),
            one("generic", chat("u-1", &[(1, 0)]), D("kinds")),
            one("no-generic", chat("", &[(2, 0)]), D("kinds")),
            // APaaS: room user (1), user (2), app (3); rooms are channels.
            one("sub", apaas("room-1", "u-1", 1, &[(1, 0)]), OK),
            one("sub", apaas("", "", -1, &[(1, 0)]), OK),
            one("sub", apaas("other", "u-1", 1, &[(1, 0)]), D("channels")),
            one("sub", apaas("room-1", "ceo", 1, &[(1, 0)]), D("user_ids")),
            one("sub", apaas("", "u-2", -1, &[(2, 0)]), OK),
            one("sub", apaas("lobby", "u-2", 2, &[(2, 0)]), OK),
            one("sub", apaas("", "ceo", -1, &[(2, 0)]), D("user_ids")),
            one("sub", apaas("", "", -1, &[(3, 0)]), D("kinds")),
            one(
                "sub",
                apaas("room-1", "u-1", 1, &[(1, 0), (3, 0)]),
                D("kinds"),
            ),
            one(
                "sub",
                apaas("room-1", "u-1", 1, &[(1, 601)]),
                D("max_expire_seconds"),
            ),
            one("generic", apaas("", "u-1", -1, &[(1, 0)]), D("kinds")),
            one("generic", apaas("", "u-1", -1, &[(2, 0)]), D("kinds")),
            // RTM2: user id and the users resource.
            one("sub", rtm2("u-1", &[]), OK),
            one("sub", rtm2("ceo", &[]), D("user_ids")),
            one("sub", rtm2("u-1", &[(4, 0, &["u-2", "150"])]), OK),
            one(
                "sub",
                rtm2("u-1", &[(4, 0, &["u-2", "ceo"])]),
                D("user_ids"),
            ),
            one("sub", rtm2("u-1", &[(4, 1, &["u-2"])]), D("roles")),
            one("pub", rtm2("u-1", &[(4, 1, &["u-2"])]), OK),
            one("generic", rtm2("u-1", &[]), D("kinds")),
            // Input rules come before policy: a malformed service is 400.
            one(
                "sub",
                rtc("room-1", "150", &[]),
                I("services[0].privileges"),
            ),
            one(
                "sub",
                rtc("room/1", "150", &[(1, 0)]),
                I("services[0].channel_name"),
            ),
            one(
                "sub",
                rtm2("u-1", &[(5, 0, &["x"])]),
                I("services[0].permissions[0]"),
            ),
            // Every service a subscriber caller may have, in one token.
            (
                "sub",
                vec![
                    rtc("room-1", "150", &[(1, 0)]),
                    rtm("150"),
                    fcdn("lobby", "acct-1", &[(2, 300)]),
                    svc(T::Fpa, &[(1, 0)]),
                    chat("u-9", &[(1, 0)]),
                    apaas("room-2", "u-9", 0, &[(1, 0)]),
                    rtm2("u-9", &[(0, 0, &["room-3"]), (4, 0, &["u-1"])]),
                ],
                OK,
            ),
            // One forbidden service refuses the whole token.
            (
                "sub",
                vec![
                    rtc("room-1", "150", &[(1, 0)]),
                    rtm("150"),
                    rtm2("u-9", &[(0, 0, &["room-3"]), (1, 0, &["nope"])]),
                ],
                D("channels"),
            ),
            // User ids bound to the token's own RTC identity.
            one("bound", rtm("150"), D("user_ids")),
            ("bound", vec![rtc("c", "150", &[(1, 0)]), rtm("150")], OK),
            (
                "bound",
                vec![rtc("c", "150", &[(1, 0)]), rtm("151")],
                D("user_ids"),
            ),
            (
                "bound",
                vec![rtc("c", "150", &[(1, 0)]), chat("0150", &[(1, 0)])],
                D("user_ids"),
            ),
            (
                "bound",
                vec![
                    rtc("c", "150", &[(1, 0)]),
                    rtc("d", "151", &[(1, 0)]),
                    rtm2("151", &[(4, 0, &["150"])]),
                ],
                OK,
            ),
            (
                "bound",
                vec![rtc("c", "150", &[(1, 0)]), rtm2("150", &[(4, 0, &["151"])])],
                D("user_ids"),
            ),
            (
                "bound",
                vec![rtc("c", "150", &[(1, 0)]), apaas("", "150", -1, &[(2, 0)])],
                OK,
            ),
            // Streaming and FCDN accounts are RTC identities too.
            ("bound", vec![fcdn("c", "150", &[(2, 0)]), rtm("150")], OK),
            (
                "bound",
                vec![streaming("c", "acct", &[(1, 0)]), rtm("acct")],
                D("uid_ranges"),
            ),
            (
                "bound",
                vec![streaming("c", "151", &[(1, 0)]), chat("151", &[(1, 0)])],
                OK,
            ),
            (
                "bound",
                vec![fcdn("c", "150", &[(2, 0)]), rtm("151")],
                D("user_ids"),
            ),
            // A wildcard RTC identity is no identity.
            (
                "bound",
                vec![rtc("c", "", &[(1, 0)]), rtm("")],
                I("services[1].user_id"),
            ),
            (
                "bound",
                vec![rtc("c", "", &[(1, 0)]), chat("", &[(1, 0)])],
                OK,
            ),
        ];
        // RTM2 channel resources, every type and permission type.
        for rt in 0..=3 {
            rows.extend([
                one("sub", rtm2("u-1", &[(rt, 0, &["room-1", "lobby"])]), OK),
                one("sub", rtm2("u-1", &[(rt, 1, &["room-1"])]), D("roles")),
                one("pub", rtm2("u-1", &[(rt, 1, &["room-1"])]), OK),
                one(
                    "pub",
                    rtm2("u-1", &[(rt, 0, &["room-1"]), (rt, 1, &["lobby"])]),
                    OK,
                ),
                one("sub", rtm2("u-1", &[(rt, 0, &["other"])]), D("channels")),
                one("sub", rtm2("u-1", &[(rt, 0, &["room-*"])]), OK),
                one("sub", rtm2("u-1", &[(rt, 0, &["room-?"])]), D("channels")),
                one("sub", rtm2("u-1", &[(rt, 0, &["*"])]), D("channels")),
                one("sub", rtm2("u-1", &[(rt, 0, &["room-1*"])]), D("channels")),
                one("pub", rtm2("u-1", &[(rt, 1, &["lob*"])]), D("channels")),
                one("generic", rtm2("u-1", &[(rt, 1, &["*"])]), D("kinds")),
            ]);
        }
        rows
    }

    /// Each row: a BuildToken call of a caller, refused by the rule (or
    /// field) named, or issued as exactly the services asked for.
    #[tokio::test]
    async fn every_build_token_service_and_field_against_restricted_callers() {
        let app = app_with(callers()).await;
        for (who, services, want) in rows() {
            let rpc = Rpc::Token(pb::BuildTokenRequest {
                services: services.clone(),
                expire_seconds: Some(600),
                ..Default::default()
            });
            let issued = check(&app, who, &rpc, want).await;
            if want == Want::Issued {
                // Packed in service-type order (stable), as the official builders do.
                let mut each: Vec<Service> = services.iter().map(expected).collect();
                each.sort_by_key(Service::service_type);
                assert_tokens(&issued, 600, &[&each]);
            }
        }
        // The token's own lifetime is capped too.
        let rpc = Rpc::Token(pb::BuildTokenRequest {
            services: vec![rtm("u-1")],
            expire_seconds: Some(601),
            ..Default::default()
        });
        check(&app, "sub", &rpc, Want::Denied("max_expire_seconds")).await;
        // Without an expiry: min(3600, the caller's maximum).
        let rpc = Rpc::Token(pb::BuildTokenRequest {
            services: vec![rtm("u-1")],
            ..Default::default()
        });
        let issued = check(&app, "sub", &rpc, Want::Issued).await;
        assert_tokens(&issued, 600, &[&[expected(&rtm("u-1"))]]);
    }
}
