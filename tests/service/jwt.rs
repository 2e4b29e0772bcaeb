//! JWT callers: keys generated here (RSA, EC P-256 / P-384, Ed25519), a
//! JWKS served by a real HTTPS server on loopback whose certificate comes
//! from a CA made here (the service trusts only that CA), JWTs minted here.
//! Covers every bad input of the issue (each a 401 naming its check, never
//! echoing the token), key rotation, a JWKS outage and readiness, and the
//! claims-to-policy mapping over gRPC, JSON and GET.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agora_token::Payload;
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use token_authority::pb;
use token_authority::policy::PolicyConfig;
use token_authority::policy::jwt::JwtIssuerConfig;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::common::{CERT, TestApp, http, spawn_app_with, verified};

const ISS: &str = "https://idp.test.example/";
const AUD: &str = "token-authority";

/// A signing key, its algorithm and its public JWK.
#[derive(Clone)]
struct Key {
    alg: Algorithm,
    enc: EncodingKey,
    jwk: Value,
}

impl Key {
    fn with_kid(&self, kid: &str) -> Value {
        let mut j = self.jwk.clone();
        j["kid"] = json!(kid);
        j
    }
}

fn key_from(alg: Algorithm, enc: EncodingKey, typed: bool) -> Key {
    // As the service does when it compiles an issuer: ring verifies. Here
    // first, because minting uses jsonwebtoken before any server starts.
    token_authority::policy::jwt::use_ring_for_signatures();
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
    if !typed {
        // No `alg`: the service infers the allowed ones from the key type.
        jwk.as_object_mut().unwrap().remove("alg");
    }
    Key { alg, enc, jwk }
}

fn rsa_der() -> &'static Vec<u8> {
    static K: OnceLock<Vec<u8>> = OnceLock::new();
    K.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        k.to_pkcs1_der().unwrap().as_bytes().to_vec()
    })
}

fn rsa(alg: Algorithm) -> Key {
    key_from(alg, EncodingKey::from_rsa_der(rsa_der()), false)
}

fn ec(alg: Algorithm) -> Key {
    let curve = match alg {
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        _ => &rcgen::PKCS_ECDSA_P384_SHA384,
    };
    let kp = rcgen::KeyPair::generate_for(curve).unwrap();
    key_from(alg, EncodingKey::from_ec_der(&kp.serialize_der()), true)
}

fn ed() -> Key {
    token_authority::policy::jwt::use_ring_for_signatures();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    // jsonwebtoken cannot derive an OKP JWK: written from the raw key.
    Key {
        alg: Algorithm::EdDSA,
        enc: EncodingKey::from_ed_der(&kp.serialize_der()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "use": "sig",
            "x": b64(kp.public_key_raw())}),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Standard claims valid for this service, plus `extra`.
fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISS, "aud": AUD, "sub": "alice", "uid": 1001,
        "team": "red", "email_verified": true, "exp": now() + 600, "iat": now() - 5});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn mint(key: &Key, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(key.alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &key.enc).unwrap()
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// A JWKS on a loopback HTTPS server, with a certificate from a CA made
/// here; `up` false answers 503 (an outage).
struct JwksServer {
    addr: SocketAddr,
    ca_file: std::path::PathBuf,
    keys: Arc<Mutex<Vec<Value>>>,
    up: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "JWKS test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&p, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut lp = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        lp.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let leaf = lp.signed_by(&leaf_key, &issuer).unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "ta-jwks-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = Arc::new(Mutex::new(keys));
        let up = Arc::new(AtomicBool::new(true));
        let hits = Arc::new(AtomicUsize::new(0));
        let (k, u, h) = (Arc::clone(&keys), Arc::clone(&up), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, k, u, h) = (
                    acceptor.clone(),
                    Arc::clone(&k),
                    Arc::clone(&u),
                    Arc::clone(&h),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::Relaxed);
                        let resp = if u.load(Ordering::Relaxed) {
                            let body = json!({"keys": *k.lock().unwrap()}).to_string();
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .header("cache-control", "public, max-age=1")
                                .body(Full::new(Bytes::from(body)))
                        } else {
                            hyper::Response::builder()
                                .status(503)
                                .body(Full::new(Bytes::from("down")))
                        };
                        async move { resp }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_file,
            keys,
            up,
            hits,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/jwks", self.addr.port())
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }
}

static N: AtomicUsize = AtomicUsize::new(0);

/// The issuer of these tests: bound to the `uid` claim, channels from
/// templates (`user-{sub}`, `team-{claims.team}-*`) and the `channels`
/// claim, `email_verified` required.
fn issuer_config(jwks: &JwksServer) -> JwtIssuerConfig {
    JwtIssuerConfig {
        name: "idp".into(),
        issuer: ISS.into(),
        audiences: vec![AUD.into()],
        jwks_url: Some(jwks.url()),
        jwks_ca_file: Some(jwks.ca_file.clone()),
        jwks_min_refresh_seconds: Some(1),
        jwks_max_refresh_seconds: Some(1),
        jwks_refetch_min_seconds: Some(1),
        algorithms: Some(
            [
                "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
            ]
            .map(String::from)
            .to_vec(),
        ),
        uid_claim: Some("uid".into()),
        channels_claim: Some("channels".into()),
        bound_claims: [("email_verified".to_owned(), json!(true))].into(),
        policy: PolicyConfig {
            kinds: Some(vec!["rtc".into(), "rtm".into(), "rtc_rtm".into()]),
            channels: Some(vec!["user-{sub}".into(), "team-{claims.team}-*".into()]),
            max_expire_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn spawn(issuer: JwtIssuerConfig) -> TestApp {
    spawn_app_with(move |c| {
        c.jwt_issuers = vec![issuer];
        c.cors_origins = vec!["https://app.example.com".into()];
    })
    .await
}

/// Waits (bounded) until `f` holds; panics with `what` otherwise.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting: {what}");
}

async fn grpc_health(app: &TestApp) -> ServingStatus {
    let mut h = HealthClient::new(app.channel().await);
    let r = h
        .check(HealthCheckRequest {
            service: "agora.token.v1.TokenService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    r.status()
}

async fn readyz(app: &TestApp) -> (u16, String) {
    let r = app.get("/readyz").await;
    (r.status, r.body)
}

async fn get_token(app: &TestApp, jwt: &str, query: &str) -> (u16, String) {
    let auth = format!("Bearer {jwt}");
    let (s, _, b) = http(
        app.addr(),
        "GET",
        &format!("/api/agora/token?{query}"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    (s, b)
}

async fn post(app: &TestApp, jwt: &str, rpc: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {jwt}");
    let (s, _, b) = http(
        app.addr(),
        "POST",
        &format!("/agora.token.v1.TokenService/{rpc}"),
        &[("authorization", &auth)],
        body,
    )
    .await;
    (s, b)
}

fn with_jwt<T>(msg: T, jwt: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
    r
}

fn rtc_payload(token: &str) -> Payload {
    verified(token, CERT).services()[0].payload.clone()
}

fn rtc(channel: &str, uid: &str) -> Payload {
    Payload::Rtc {
        channel_name: channel.as_bytes().to_vec(),
        uid: uid.as_bytes().to_vec(),
    }
}

async fn ready_app(keys: Vec<Value>) -> (JwksServer, TestApp) {
    let jwks = JwksServer::start(keys).await;
    let app = spawn(issuer_config(&jwks)).await;
    eventually("ready", || async { readyz(&app).await.0 == 200 }).await;
    (jwks, app)
}

#[tokio::test]
async fn claims_become_the_policy_on_grpc_json_and_get() {
    let rs = rsa(Algorithm::RS256);
    let (_jwks, app) = ready_app(vec![rs.with_kid("r1")]).await;
    let jwt = mint(&rs, Some("r1"), &claims(json!({})));

    // gRPC: no uid given -> the bound uid 1001; another uid -> denied.
    let mut g = app.grpc().await;
    let ok = g
        .build_rtc_token(with_jwt(
            pb::BuildRtcTokenRequest {
                channel_name: "user-alice".into(),
                ..Default::default()
            },
            &jwt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rtc_payload(&ok.token), rtc("user-alice", "1001"));
    let denied = |uid: u32, ch: &str| pb::BuildRtcTokenRequest {
        channel_name: ch.into(),
        user: Some(pb::build_rtc_token_request::User::Uid(uid)),
        ..Default::default()
    };
    let e = g
        .build_rtc_token(with_jwt(denied(1002, "user-alice"), &jwt))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("uid_ranges"), "{}", e.message());
    // uid 0 (any user) is refused too.
    let e = g
        .build_rtc_token(with_jwt(denied(0, "user-alice"), &jwt))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Templates: the team channel glob, not another team's, not another user's.
    let ok = g
        .build_rtc_token(with_jwt(denied(1001, "team-red-standup"), &jwt))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rtc_payload(&ok.token), rtc("team-red-standup", "1001"));
    for ch in ["team-blue-standup", "user-bob"] {
        let e = g
            .build_rtc_token(with_jwt(denied(1001, ch), &jwt))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{ch}");
        assert!(e.message().contains("channels"), "{}", e.message());
    }
    // RTM: an empty user id is the bound identity; another is refused.
    let ok = g
        .build_rtm_token(with_jwt(pb::BuildRtmTokenRequest::default(), &jwt))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        verified(&ok.token, CERT).services()[0].payload,
        Payload::Rtm {
            user_id: b"1001".to_vec()
        }
    );
    let e = g
        .build_rtm_token(with_jwt(
            pb::BuildRtmTokenRequest {
                user_id: "ceo".into(),
                ..Default::default()
            },
            &jwt,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Kinds: chat is not granted.
    let e = g
        .build_chat_user_token(with_jwt(
            pb::BuildChatUserTokenRequest {
                user_id: "1001".into(),
                ..Default::default()
            },
            &jwt,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("kinds"), "{}", e.message());

    // JSON.
    let (s, b) = post(
        &app,
        &jwt,
        "BuildRtcToken",
        r#"{"channelName":"user-alice"}"#,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let token: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        rtc_payload(token["token"].as_str().unwrap()),
        rtc("user-alice", "1001")
    );
    let (s, b) = post(
        &app,
        &jwt,
        "BuildRtcToken",
        r#"{"channelName":"user-alice","uid":7}"#,
    )
    .await;
    assert_eq!(s, 403, "{b}");

    // GET (what a browser page sends).
    let (s, b) = get_token(&app, &jwt, "channelName=user-alice").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(rtc_payload(&b), rtc("user-alice", "1001"));
    let (s, b) = get_token(&app, &jwt, "channelName=user-alice&uid=1002").await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("uid_ranges"), "{b}");

    // The `channels` claim adds channels (names or globs).
    let jwt2 = mint(
        &rs,
        Some("r1"),
        &claims(json!({"channels": ["lobby", "room-*"]})),
    );
    for ch in ["lobby", "room-9", "user-alice"] {
        let (s, b) = get_token(&app, &jwt2, &format!("channelName={ch}")).await;
        assert_eq!(s, 200, "{ch}: {b}");
    }
    let (s, _) = get_token(&app, &jwt, "channelName=lobby").await;
    assert_eq!(s, 403);

    // A claim value is literal in a template: sub "bob?" grants the
    // channel "user-bob?" only, not "user-bobX".
    let jwt3 = mint(&rs, Some("r1"), &claims(json!({"sub": "bob?"})));
    let (s, b) = get_token(&app, &jwt3, "channelName=user-bob%3F").await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = get_token(&app, &jwt3, "channelName=user-bobX").await;
    assert_eq!(s, 403);

    // Every other algorithm, with its own key in the JWKS.
    let others = [
        rsa(Algorithm::RS384),
        rsa(Algorithm::RS512),
        rsa(Algorithm::PS256),
        ec(Algorithm::ES256),
        ec(Algorithm::ES384),
        ed(),
    ];
    let mut published = vec![rs.with_kid("r1")];
    for (i, k) in others.iter().enumerate() {
        published.push(k.with_kid(&format!("k{i}")));
    }
    _jwks.publish(published);
    for (i, k) in others.iter().enumerate() {
        let jwt = mint(k, Some(&format!("k{i}")), &claims(json!({})));
        // The first one triggers the refetch of the JWKS (unknown kid).
        let (s, b) = get_token(&app, &jwt, "channelName=user-alice").await;
        assert_eq!(s, 200, "{:?}: {b}", k.alg);
        assert_eq!(rtc_payload(&b), rtc("user-alice", "1001"));
    }
}

#[tokio::test]
async fn bad_jwts_are_refused_naming_the_check() {
    let rs = rsa(Algorithm::RS256);
    let (_jwks, app) = ready_app(vec![rs.with_kid("r1")]).await;
    let good = |extra: Value| mint(&rs, Some("r1"), &claims(extra));
    let header = |h: Value| b64(h.to_string().as_bytes());
    let body = b64(claims(json!({})).to_string().as_bytes());
    // HS256 keyed with the RSA public key (the classic confusion attack).
    let public_pem = {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::EncodePublicKey;
        let k = rsa::RsaPrivateKey::from_pkcs1_der(rsa_der()).unwrap();
        k.to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("r1".into());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &claims(json!({})),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", good(json!({"exp": now() - 120})), "exp"),
        ("not yet valid", good(json!({"nbf": now() + 120})), "nbf"),
        (
            "issued in the future",
            good(json!({"iat": now() + 120})),
            "iat",
        ),
        ("no exp", good(json!({"exp": null})), "exp"),
        (
            "exp of the wrong type",
            good(json!({"exp": "never"})),
            "exp",
        ),
        (
            "nbf of the wrong type",
            good(json!({"nbf": "99999999999"})),
            "nbf",
        ),
        (
            "wrong issuer",
            good(json!({"iss": "https://evil.example/"})),
            "iss",
        ),
        (
            "wrong audience",
            good(json!({"aud": "someone-else"})),
            "aud",
        ),
        (
            "unknown kid",
            mint(&rs, Some("nope"), &claims(json!({}))),
            "kid",
        ),
        (
            "alg none",
            format!("{}.{body}.", header(json!({"alg": "none", "kid": "r1"}))),
            "alg",
        ),
        ("HS256 with the RSA public key", hs256, "alg"),
        (
            "oversized",
            good(json!({"pad": "x".repeat(9000)})),
            "max_jwt_bytes",
        ),
        (
            "malformed base64",
            format!("{}.@@@.sig", header(json!({"alg": "RS256"}))),
            "format",
        ),
        (
            "malformed JSON",
            format!("{}.{}.sig", header(json!({"alg": "RS256"})), b64(b"{nope")),
            "format",
        ),
        (
            "uid claim of the wrong type",
            good(json!({"uid": true})),
            "uid_claim",
        ),
        (
            "bound claim not met",
            good(json!({"email_verified": false})),
            "bound_claims",
        ),
        (
            "bad signature",
            {
                let t = good(json!({}));
                let (rest, _) = t.rsplit_once('.').unwrap();
                format!("{rest}.{}", b64(&[7u8; 256]))
            },
            "signature",
        ),
    ];
    let mut g = app.grpc().await;
    for (i, (what, jwt, check)) in cases.iter().enumerate() {
        // Alternate transports; every refusal is a 401 naming the check.
        let want = format!("check `{check}`");
        let secret_part = jwt.rsplit('.').next().unwrap_or("");
        let msg = match i % 3 {
            0 => {
                let (s, b) = get_token(&app, jwt, "channelName=user-alice").await;
                assert_eq!(s, 401, "{what}: {b}");
                b
            }
            1 => {
                let (s, b) = post(
                    &app,
                    jwt,
                    "BuildRtcToken",
                    r#"{"channelName":"user-alice"}"#,
                )
                .await;
                assert_eq!(s, 401, "{what}: {b}");
                b
            }
            _ => {
                let e = g
                    .build_rtc_token(with_jwt(
                        pb::BuildRtcTokenRequest {
                            channel_name: "user-alice".into(),
                            ..Default::default()
                        },
                        jwt,
                    ))
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
                e.message().to_owned()
            }
        };
        assert!(msg.contains(&want), "{what}: {msg}");
        assert!(!msg.contains(jwt.as_str()), "{what}: the token is echoed");
        if secret_part.len() > 8 {
            assert!(
                !msg.contains(secret_part),
                "{what}: the signature is echoed"
            );
        }
    }
    // The service still works for a good JWT.
    let (s, b) = get_token(&app, &good(json!({})), "channelName=user-alice").await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn keys_rotate_and_an_outage_keeps_cached_keys() {
    let old = rsa(Algorithm::RS256);
    let new = ec(Algorithm::ES256);
    let (jwks, app) = ready_app(vec![old.with_kid("old")]).await;
    let old_jwt = mint(&old, Some("old"), &claims(json!({})));
    let new_jwt = mint(&new, Some("new"), &claims(json!({})));
    assert_eq!(
        get_token(&app, &old_jwt, "channelName=user-alice").await.0,
        200
    );
    // Not published yet: unknown kid (after a refetch).
    let (s, b) = get_token(&app, &new_jwt, "channelName=user-alice").await;
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("check `kid`"), "{b}");
    // The new key is published beside the old one: both work.
    jwks.publish(vec![old.with_kid("old"), new.with_kid("new")]);
    eventually("the new kid is accepted", || async {
        get_token(&app, &new_jwt, "channelName=user-alice").await.0 == 200
    })
    .await;
    assert_eq!(
        get_token(&app, &old_jwt, "channelName=user-alice").await.0,
        200
    );
    // The old key is withdrawn: refused after the next refresh.
    jwks.publish(vec![new.with_kid("new")]);
    eventually("the old kid is refused", || async {
        get_token(&app, &old_jwt, "channelName=user-alice").await.0 == 401
    })
    .await;
    assert_eq!(
        get_token(&app, &new_jwt, "channelName=user-alice").await.0,
        200
    );

    // Outage: cached keys keep working; readiness says so.
    let hits = jwks.hits.load(Ordering::Relaxed);
    jwks.up.store(false, Ordering::Relaxed);
    eventually("readiness reports the outage", || async {
        let (s, b) = readyz(&app).await;
        s == 200 && b.contains("degraded") && b.contains("unreachable")
    })
    .await;
    assert!(jwks.hits.load(Ordering::Relaxed) > hits);
    let (s, b) = get_token(&app, &new_jwt, "channelName=user-alice").await;
    assert_eq!(s, 200, "{b}");
    // Back: readiness is plain again.
    jwks.up.store(true, Ordering::Relaxed);
    eventually("readiness recovers", || async {
        readyz(&app).await == (200, "ready\n".to_owned())
    })
    .await;
}

#[tokio::test]
async fn not_ready_until_keys_load_and_stale_keys_expire() {
    let rs = rsa(Algorithm::RS256);
    let jwks = JwksServer::start(vec![rs.with_kid("r1")]).await;
    jwks.up.store(false, Ordering::Relaxed);
    let mut cfg = issuer_config(&jwks);
    cfg.jwks_max_stale_seconds = Some(2);
    let app = spawn(cfg).await;
    let jwt = mint(&rs, Some("r1"), &claims(json!({})));
    eventually("a failed fetch", || async {
        jwks.hits.load(Ordering::Relaxed) > 0
    })
    .await;
    let (s, b) = readyz(&app).await;
    assert_eq!(s, 503, "{b}");
    assert!(b.contains("JWT keys") && b.contains("not loaded"), "{b}");
    // gRPC health says the same.
    eventually("gRPC health NOT_SERVING", || async {
        grpc_health(&app).await == ServingStatus::NotServing
    })
    .await;
    let (s, b) = get_token(&app, &jwt, "channelName=user-alice").await;
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("check `jwks`"), "{b}");
    jwks.up.store(true, Ordering::Relaxed);
    eventually("ready", || async { readyz(&app).await.0 == 200 }).await;
    eventually("gRPC health SERVING", || async {
        grpc_health(&app).await == ServingStatus::Serving
    })
    .await;
    assert_eq!(get_token(&app, &jwt, "channelName=user-alice").await.0, 200);
    // An outage longer than jwks_max_stale_seconds: keys expire, not ready.
    jwks.up.store(false, Ordering::Relaxed);
    eventually("not ready after the keys expire", || async {
        readyz(&app).await.0 == 503
    })
    .await;
    let (s, b) = get_token(&app, &jwt, "channelName=user-alice").await;
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("expired"), "{b}");
}

#[tokio::test]
async fn a_jwks_file_and_api_keys_work_side_by_side() {
    let ed = ed();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "ta-jwksfile-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, json!({"keys": [ed.with_kid("e1")]}).to_string()).unwrap();
    let (key, hash) = token_authority::policy::generate_key().unwrap();
    let app = spawn_app_with(move |c| {
        // One entry per service account of the same cluster issuer.
        let sa = |name: &str, sub: &str, channels: &str, rate: Option<f64>| JwtIssuerConfig {
            name: name.into(),
            issuer: ISS.into(),
            audiences: vec![AUD.into()],
            jwks_file: Some(file.clone()),
            algorithms: Some(vec!["EdDSA".into()]),
            account_claim: Some("sub".into()),
            bound_claims: [("sub".to_owned(), json!(sub))].into(),
            policy: PolicyConfig {
                kinds: Some(vec!["rtc".into()]),
                channels: Some(vec![channels.into()]),
                rate_per_second: rate,
                burst: rate.map(|_| 2),
                ..Default::default()
            },
            ..Default::default()
        };
        c.jwt_issuers = vec![
            sa(
                "recorder",
                "system:serviceaccount:media:recorder",
                "rec-*",
                None,
            ),
            sa(
                "bot",
                "system:serviceaccount:media:bot",
                "bot-*",
                Some(0.001),
            ),
        ];
        c.callers = vec![token_authority::policy::CallerConfig {
            name: "backend".into(),
            api_key_sha256: Some(hash.to_hex()),
            policy: PolicyConfig {
                kinds: Some(vec!["*".into()]),
                ..Default::default()
            },
            ..Default::default()
        }];
    })
    .await;
    let sa = "system:serviceaccount:media:recorder";
    let jwt = mint(&ed, Some("e1"), &claims(json!({"sub": sa})));
    let (s, b) = get_token(&app, &jwt, "channelName=rec-1").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(rtc_payload(&b), rtc("rec-1", sa));
    // Its policy, not the bot's.
    assert_eq!(get_token(&app, &jwt, "channelName=bot-1").await.0, 403);
    let bot = mint(
        &ed,
        Some("e1"),
        &claims(json!({"sub": "system:serviceaccount:media:bot"})),
    );
    assert_eq!(get_token(&app, &bot, "channelName=bot-1").await.0, 200);
    // The bot's rate limit (burst 2) is its own: the recorder is unaffected.
    assert_eq!(get_token(&app, &bot, "channelName=bot-1").await.0, 200);
    let (s, b) = get_token(&app, &bot, "channelName=bot-1").await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(get_token(&app, &jwt, "channelName=rec-1").await.0, 200);
    // Another service account of the cluster matches no entry.
    let other = mint(
        &ed,
        Some("e1"),
        &claims(json!({"sub": "system:serviceaccount:default:default"})),
    );
    let (s, b) = get_token(&app, &other, "channelName=rec-1").await;
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("check `bound_claims`"), "{b}");
    // The API key still works, with its own policy.
    let (s, b) = get_token(&app, &key, "channelName=any&uid=5").await;
    assert_eq!(s, 200, "{b}");
    // Readiness does not wait on a file.
    assert_eq!(readyz(&app).await.0, 200);
}

/// The path of a Chromium binary, if installed.
fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Serves `page` as text/html to every request on a loopback port: the
/// browser app's own origin.
async fn serve_page(page: Arc<Mutex<String>>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let page = Arc::clone(&page);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let (status, body) = if buf[..n].starts_with(b"GET / ") {
                    ("200 OK", page.lock().unwrap().clone())
                } else {
                    ("404 Not Found", String::new())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

/// End to end in a real browser: a page on another origin (another port)
/// sends its user's JWT to the GET endpoint (CORS preflight for the
/// `authorization` header included), gets a token bound to its own uid,
/// and is refused another user's uid (403, readable by the page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_on_another_origin_gets_its_own_token_only() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed (.ci/run installs it)"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
        return;
    };
    let ed = ed();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "ta-browser-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, json!({"keys": [ed.with_kid("e1")]}).to_string()).unwrap();
    let jwt = mint(&ed, Some("e1"), &claims(json!({})));
    // The page's origin (another port) must be known before the service
    // starts (CORS); the page must know the service's address.
    let page = Arc::new(Mutex::new(String::new()));
    let (page_addr, page_task) = serve_page(Arc::clone(&page)).await;
    let cors = format!("http://{page_addr}");
    let app = spawn_app_with(move |c| {
        c.jwt_issuers = vec![JwtIssuerConfig {
            name: "web".into(),
            issuer: ISS.into(),
            audiences: vec![AUD.into()],
            jwks_file: Some(file),
            algorithms: Some(vec!["EdDSA".into()]),
            uid_claim: Some("uid".into()),
            policy: PolicyConfig {
                kinds: Some(vec!["rtc".into()]),
                channels: Some(vec!["user-{sub}".into()]),
                ..Default::default()
            },
            ..Default::default()
        }];
        c.cors_origins = vec![cors];
    })
    .await;
    let api = format!("http://{}", app.addr());
    *page.lock().unwrap() = format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const jwt = "{jwt}";
async function token(query) {{
  const r = await fetch("{api}/api/agora/token?" + query, {{ headers: {{ authorization: "Bearer " + jwt }} }});
  return {{ status: r.status, body: (await r.text()).trim() }};
}}
(async () => {{
  const own = await token("channelName=user-alice");
  const other = await token("channelName=user-alice&uid=1002");
  document.getElementById("out").textContent = "RESULT " + JSON.stringify({{ own, other }});
}})().catch(e => {{ document.getElementById("out").textContent = "ERROR " + e; }});
</script></body></html>"#
    );
    let profile = dir.join("profile");
    let url = format!("http://{page_addr}/");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--virtual-time-budget=15000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    page_task.abort();
    let dom = String::from_utf8_lossy(&out.stdout);
    let Some(result) = dom
        .split("RESULT ")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
    else {
        panic!(
            "no result in the page: {dom}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let result: Value = serde_json::from_str(&result.replace("&quot;", "\"")).unwrap();
    assert_eq!(result["own"]["status"], 200, "{result}");
    assert_eq!(
        rtc_payload(result["own"]["body"].as_str().unwrap()),
        rtc("user-alice", "1001")
    );
    assert_eq!(result["other"]["status"], 403, "{result}");
    assert!(
        result["other"]["body"]
            .as_str()
            .unwrap()
            .contains("uid_ranges"),
        "{result}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Signatures are checked by ring (installed as jsonwebtoken's provider),
/// which refuses RSA keys under 2048 bits: a JWT signed with a 1024-bit
/// key that the JWKS publishes is still refused.
#[tokio::test]
async fn rsa_keys_under_2048_bits_are_refused() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let weak = key_from(
        Algorithm::RS256,
        EncodingKey::from_rsa_der(k.to_pkcs1_der().unwrap().as_bytes()),
        true,
    );
    let strong = rsa(Algorithm::RS256);
    let (_jwks, app) = ready_app(vec![weak.with_kid("weak"), strong.with_kid("strong")]).await;
    let (s, b) = get_token(
        &app,
        &mint(&weak, Some("weak"), &claims(json!({}))),
        "channelName=user-alice",
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("check `signature`"), "{b}");
    let (s, b) = get_token(
        &app,
        &mint(&strong, Some("strong"), &claims(json!({}))),
        "channelName=user-alice",
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// A `WatchToken` stream opened with a JWT verifies it again at each
/// renewal: renewals flow while it is valid, bound to its identity, and the
/// stream ends with UNAUTHENTICATED once the JWT has expired (the client
/// reconnects with a fresh one). The issuer's clock is a manual one (the
/// renewals); the JWT's expiry is real time (a few seconds).
#[tokio::test]
async fn a_watch_lives_no_longer_than_its_jwt() {
    use pb::watch_token_request::Request as W;
    use pb::watch_token_response::Response as D;
    let key = ed();
    let jwks = JwksServer::start(vec![key.with_kid("e1")]).await;
    let mut issuer = issuer_config(&jwks);
    issuer.leeway_seconds = Some(0);
    let clock = Arc::new(token_authority::domain::ManualClock::new(
        u32::try_from(now()).unwrap(),
    ));
    let app_clock = Arc::clone(&clock);
    let app = spawn_app_with(move |c| {
        c.jwt_issuers = vec![issuer];
        c.clock = app_clock;
    })
    .await;
    eventually("ready", || async { readyz(&app).await.0 == 200 }).await;
    let exp = now() + 4;
    let jwt = mint(&key, Some("e1"), &claims(json!({"exp": exp})));
    let req = pb::WatchTokenRequest {
        request: Some(W::Rtc(pb::BuildRtcTokenRequest {
            channel_name: "user-alice".into(),
            expire_seconds: Some(600),
            ..Default::default()
        })),
        renew_before_seconds: None,
    };
    let mut s = app
        .grpc()
        .await
        .watch_token(with_jwt(req, &jwt))
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    let Some(D::Rtc(r)) = &first.response else {
        panic!("not an RTC token: {first:?}")
    };
    assert_eq!(rtc_payload(&r.token), rtc("user-alice", "1001"));
    // A renewal while the JWT is valid.
    clock.set(first.renew_at);
    let second = s.message().await.unwrap().unwrap();
    assert_eq!(second.sequence, 2);
    let Some(D::Rtc(r)) = &second.response else {
        panic!("not an RTC token: {second:?}")
    };
    assert_eq!(rtc_payload(&r.token), rtc("user-alice", "1001"));
    // The JWT expires: the next renewal ends the stream.
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    clock.set(second.renew_at);
    let e = s.message().await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("exp"), "{}", e.message());
    assert!(!e.message().contains(&jwt), "the JWT is never echoed");
}
