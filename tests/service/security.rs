//! Caller authentication, policy, rate limits, CORS and mTLS, over both
//! transports (gRPC and HTTP: JSON routes and the GET endpoint), plus
//! property tests of the HTTP query and JSON handling, and a check that
//! logs never carry the certificate, an API key or a whole token.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use token_authority::pb;
use token_authority::policy::{AnonymousConfig, ApiKeyHash, CallerConfig, PolicyConfig};
use tonic::Code;

use crate::common::{APP_ID, APP_ID2, CERT, TestApp, http, spawn_app_with, verified};

const KEY: &str = "ta_orchestrator-test-key-0123456789";
const REVOKED_KEY: &str = "ta_revoked-test-key-0123456789";
const LIMITED_KEY: &str = "ta_limited-test-key-0123456789";
const ORIGIN: &str = "https://app.example.com";

fn hash(key: &str) -> Option<String> {
    Some(ApiKeyHash::of_key(key).to_hex())
}

fn callers() -> Vec<CallerConfig> {
    vec![
        CallerConfig {
            name: "orchestrator".into(),
            api_key_sha256: hash(KEY),
            tls_client_names: vec!["orchestrator.internal".into()],
            policy: PolicyConfig {
                rpcs: Some(vec![
                    "BuildRtcToken".into(),
                    "BuildRtcRtmToken".into(),
                    "BuildAgentSession".into(),
                    "InspectToken".into(),
                ]),
                kinds: Some(vec!["*".into()]),
                apps: Some(vec![APP_ID.into()]),
                channels: Some(vec!["agent-*".into(), "support-?".into()]),
                allow_wildcard: Some(false),
                uid_ranges: Some(vec!["1000-1999".into()]),
                max_expire_seconds: Some(3600),
                roles: Some(vec!["publisher".into()]),
                ..Default::default()
            },
            ..Default::default()
        },
        CallerConfig {
            name: "old".into(),
            api_key_sha256: hash(REVOKED_KEY),
            revoked: true,
            policy: PolicyConfig {
                kinds: Some(vec!["*".into()]),
                ..Default::default()
            },
            ..Default::default()
        },
        CallerConfig {
            name: "limited".into(),
            api_key_sha256: hash(LIMITED_KEY),
            policy: PolicyConfig {
                kinds: Some(vec!["*".into()]),
                rate_per_second: Some(4.0),
                burst: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    ]
}

async fn secured() -> TestApp {
    spawn_app_with(|c| {
        c.callers = callers();
        c.anonymous = Some(AnonymousConfig {
            channels: Some(vec!["public-*".into()]),
            rate_per_second: Some(1.0),
            burst: Some(3),
            ..Default::default()
        });
        c.cors_origins = vec![ORIGIN.into()];
    })
    .await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn rtc(channel: &str, uid: u32) -> pb::BuildRtcTokenRequest {
    pb::BuildRtcTokenRequest {
        channel_name: channel.into(),
        user: Some(pb::build_rtc_token_request::User::Uid(uid)),
        expire_seconds: Some(600),
        ..Default::default()
    }
}

fn with_key<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", bearer(k).parse().unwrap());
    }
    r
}

#[tokio::test]
async fn credentials_are_required_on_every_transport() {
    let app = secured().await;
    let mut g = app.grpc().await;
    for key in [None, Some("wrong-key"), Some(REVOKED_KEY)] {
        let e = g
            .build_rtc_token(with_key(rtc("agent-1", 1500), key))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{key:?}: {e:?}");
        let auth = key.map(bearer);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (status, _, body) = http(
            app.addr(),
            "POST",
            "/agora.token.v1.TokenService/BuildRtcToken",
            &headers,
            r#"{"channelName":"agent-1","uid":1500}"#,
        )
        .await;
        assert_eq!(status, 401, "{key:?}: {body}");
        assert!(body.contains("unauthenticated"), "{body}");
        if key.is_some() {
            // A wrong key on the GET endpoint is refused, not treated as anonymous.
            let (status, _, body) = http(
                app.addr(),
                "GET",
                "/api/agora/token?channelName=public-1&role=subscriber",
                &headers,
                "",
            )
            .await;
            assert_eq!(status, 401, "{key:?}: {body}");
        }
    }
    // The right key works on both transports, and the token verifies.
    let t = g
        .build_rtc_token(with_key(rtc("agent-1", 1500), Some(KEY)))
        .await
        .unwrap()
        .into_inner();
    verified(&t.token, CERT);
    let (status, _, body) = http(
        app.addr(),
        "POST",
        "/agora.token.v1.TokenService/BuildRtcToken",
        &[("authorization", &bearer(KEY))],
        r#"{"channelName":"agent-1","uid":1500}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http(
        app.addr(),
        "GET",
        "/api/agora/token?channelName=agent-7&uid=1001",
        &[("authorization", &bearer(KEY))],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    verified(&body, CERT);
    // Health, readiness, metrics and reflection need no credentials.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http(app.addr(), "GET", path, &[], "").await.0,
            200,
            "{path}"
        );
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let s = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(s.into_inner().status, 1);
}

#[tokio::test]
async fn each_policy_rule_denies_by_name_on_both_transports() {
    let app = secured().await;
    let mut g = app.grpc().await;
    let cases: Vec<(&str, pb::BuildRtcTokenRequest, &str)> = vec![
        (
            "channels",
            rtc("other", 1500),
            r#"{"channelName":"other","uid":1500}"#,
        ),
        (
            "channels",
            rtc("support-77", 1500),
            r#"{"channelName":"support-77","uid":1500}"#,
        ),
        (
            "allow_wildcard",
            rtc("", 1500),
            r#"{"channelName":"","uid":1500}"#,
        ),
        (
            "allow_wildcard",
            rtc("agent-1", 0),
            r#"{"channelName":"agent-1","uid":0}"#,
        ),
        (
            "uid_ranges",
            rtc("agent-1", 5),
            r#"{"channelName":"agent-1","uid":5}"#,
        ),
        (
            "uid_ranges",
            pb::BuildRtcTokenRequest {
                user: Some(pb::build_rtc_token_request::User::Account("bob".into())),
                ..rtc("agent-1", 0)
            },
            r#"{"channelName":"agent-1","account":"bob"}"#,
        ),
        (
            "max_expire_seconds",
            pb::BuildRtcTokenRequest {
                expire_seconds: Some(7200),
                ..rtc("agent-1", 1500)
            },
            r#"{"channelName":"agent-1","uid":1500,"expireSeconds":7200}"#,
        ),
        (
            "roles",
            pb::BuildRtcTokenRequest {
                role: pb::Role::Subscriber as i32,
                ..rtc("agent-1", 1500)
            },
            r#"{"channelName":"agent-1","uid":1500,"role":"ROLE_SUBSCRIBER"}"#,
        ),
        (
            "apps",
            pb::BuildRtcTokenRequest {
                app_id: APP_ID2.into(),
                ..rtc("agent-1", 1500)
            },
            String::leak(format!(
                r#"{{"channelName":"agent-1","uid":1500,"appId":"{APP_ID2}"}}"#
            )),
        ),
    ];
    for (rule, req, json) in cases {
        let e = g
            .build_rtc_token(with_key(req, Some(KEY)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{rule}: {e:?}");
        assert!(
            e.message().contains(&format!("`{rule}`")),
            "{rule}: {}",
            e.message()
        );
        assert!(
            !e.message().contains("limited") && !e.message().contains("old"),
            "leaks other callers: {}",
            e.message()
        );
        let (status, _, body) = http(
            app.addr(),
            "POST",
            "/agora.token.v1.TokenService/BuildRtcToken",
            &[("authorization", &bearer(KEY))],
            json,
        )
        .await;
        assert_eq!(status, 403, "{rule}: {body}");
        assert!(
            body.contains("permission_denied") && body.contains(rule),
            "{body}"
        );
    }
    // rpcs: a method the caller may not call.
    let e = g
        .build_chat_user_token(with_key(
            pb::BuildChatUserTokenRequest {
                user_id: "u".into(),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("`rpcs`"), "{}", e.message());
    let (status, _, body) = http(
        app.addr(),
        "POST",
        "/agora.token.v1.TokenService/BuildChatUserToken",
        &[("authorization", &bearer(KEY))],
        r#"{"userId":"u"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // An absent expiry defaults to min(3600, the caller's maximum).
    let t = g
        .build_rtc_token(with_key(
            pb::BuildRtcTokenRequest {
                expire_seconds: None,
                ..rtc("agent-1", 1500)
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified(&t.token, CERT).expire(), 3600);
    // BuildAgentSession: both uids are checked.
    let e = g
        .build_agent_session(with_key(
            pb::BuildAgentSessionRequest {
                channel_name: "agent-1".into(),
                agent_uid: "1001".into(),
                user_uid: "42".into(),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap_err();
    assert!(e.message().contains("uid_ranges"), "{}", e.message());
    let s = g
        .build_agent_session(with_key(
            pb::BuildAgentSessionRequest {
                channel_name: "agent-1".into(),
                agent_uid: "1001".into(),
                user_uid: "1002".into(),
                enable_rtm: true,
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    verified(&s.agent_token, CERT);
    verified(&s.user_token, CERT);
    // Tokens are counted per caller.
    let (_, _, metrics) = http(app.addr(), "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains(&format!("token_authority_tokens_issued_total{{kind=\"agent_session\",app_id=\"{APP_ID}\",caller=\"orchestrator\"}}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn rate_limits_refuse_with_retry_after_and_recover() {
    let app = secured().await;
    let mut g = app.grpc().await;
    // Burst 2 at 4/s: two pass, the third is refused.
    for _ in 0..2 {
        g.build_rtc_token(with_key(rtc("x", 1), Some(LIMITED_KEY)))
            .await
            .unwrap();
    }
    let e = g
        .build_rtc_token(with_key(rtc("x", 1), Some(LIMITED_KEY)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.metadata().get("retry-after").is_some());
    let (status, headers, body) = http(
        app.addr(),
        "POST",
        "/agora.token.v1.TokenService/BuildRtcToken",
        &[("authorization", &bearer(LIMITED_KEY))],
        r#"{"channelName":"x","uid":1}"#,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    // Recovery: one token refills in 250 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    g.build_rtc_token(with_key(rtc("x", 1), Some(LIMITED_KEY)))
        .await
        .unwrap();
    let (status, _, body) = http(
        app.addr(),
        "POST",
        "/agora.token.v1.TokenService/BuildRtcToken",
        &[("authorization", &bearer(LIMITED_KEY))],
        r#"{"channelName":"x","uid":1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Anonymous GET: its own policy and a per-IP bucket (burst 3, 1/s).
    let q = "/api/agora/token?channelName=public-lobby&role=subscriber";
    let (status, _, body) = http(app.addr(), "GET", q, &[], "").await;
    assert_eq!(
        status, 403,
        "uid 0 is a wildcard, not allowed anonymously: {body}"
    );
    let q = "/api/agora/token?channelName=public-lobby&role=subscriber&uid=9";
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(http(app.addr(), "GET", q, &[], "").await.0);
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
    let (status, _, _) = http(
        app.addr(),
        "GET",
        "/api/agora/token?channelName=agent-1&uid=9&role=subscriber",
        &[],
        "",
    )
    .await;
    assert!(status == 403 || status == 429, "{status}");
    let (status, _, body) = http(
        app.addr(),
        "GET",
        "/api/agora/token?channelName=public-1&uid=9",
        &[],
        "",
    )
    .await;
    assert!(
        status == 403 || status == 429,
        "publisher is not allowed anonymously: {status} {body}"
    );
    // Anonymous callers get nothing but the GET endpoint.
    let (status, _, _) = http(
        app.addr(),
        "POST",
        "/agora.token.v1.TokenService/BuildRtcToken",
        &[],
        r#"{"channelName":"public-1","uid":9}"#,
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = secured().await;
    let q = "/api/agora/token?channelName=agent-1&uid=1001";
    let auth = bearer(KEY);
    let (status, h, _) = http(
        app.addr(),
        "GET",
        q,
        &[("authorization", &auth), ("origin", ORIGIN)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h.get("access-control-allow-origin").unwrap(), ORIGIN);
    let (status, h, _) = http(
        app.addr(),
        "GET",
        q,
        &[("authorization", &auth), ("origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(
        status, 200,
        "the server answers; the browser withholds the response"
    );
    assert!(h.get("access-control-allow-origin").is_none());
    // Server-to-server: no Origin, no CORS headers, works.
    let (status, h, _) = http(app.addr(), "GET", q, &[("authorization", &auth)], "").await;
    assert_eq!(status, 200);
    assert!(h.get("access-control-allow-origin").is_none());
    // Preflight.
    let pre = [
        ("origin", ORIGIN),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "authorization"),
    ];
    let (status, h, _) = http(app.addr(), "OPTIONS", q, &pre, "").await;
    assert_eq!(status, 200);
    assert_eq!(h.get("access-control-allow-origin").unwrap(), ORIGIN);
    assert!(
        h.get("access-control-allow-headers")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let (status, h, _) = http(
        app.addr(),
        "OPTIONS",
        q,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
        "",
    )
    .await;
    // Answered (no 405, no authentication), but without the origin: the
    // browser refuses.
    assert_eq!(status, 200);
    assert!(h.get("access-control-allow-origin").is_none());
}

/// A CA, a server certificate for localhost, and client certificates.
struct Pki {
    ca: rcgen::Certificate,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
    dir: std::path::PathBuf,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        let ca_params = p;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "ta-pki-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Self {
            ca,
            ca_params,
            ca_key,
            dir,
        }
    }

    fn issue(&self, name: &str, client: bool) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        (p.signed_by(&key, &issuer).unwrap(), key)
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn client_config(
    pki: &Pki,
    client: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
    alpn: &[u8],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut c = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(c)
}

async fn tls_get(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn tls_grpc(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<pb::BuildRtcTokenResponse, String> {
    let connector = tower::service_fn(move |_: http::Uri| {
        let cfg = Arc::clone(&cfg);
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .map_err(|e| e.to_string())?;
    let mut g = pb::token_service_client::TokenServiceClient::new(channel);
    g.build_rtc_token(rtc("agent-1", 1500))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
}

#[tokio::test]
async fn mtls_client_certificates_identify_callers() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue("localhost", false);
    std::fs::write(pki.dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(pki.dir.join("server.key"), server_key.serialize_pem()).unwrap();
    let dir = pki.dir.clone();
    let app = spawn_app_with(|c| {
        c.callers = callers();
        c.tls = Some(token_authority::config::tls::TlsConfig {
            cert_file: dir.join("server.pem").display().to_string(),
            key_file: dir.join("server.key").display().to_string(),
            client_ca_file: Some(dir.join("ca.pem").display().to_string()),
            client_auth: Some(token_authority::config::tls::ClientAuth::Optional),
        });
    })
    .await;
    let (good, good_key) = pki.issue("orchestrator.internal", true);
    let (stranger, stranger_key) = pki.issue("stranger.internal", true);
    let other = Pki::new();
    let (untrusted, untrusted_key) = other.issue("orchestrator.internal", true);
    let q = "/api/agora/token?channelName=agent-1&uid=1500";

    // A trusted certificate naming a caller: tokens on both transports.
    let (status, body) = tls_get(
        app.addr(),
        client_config(&pki, Some((&good, &good_key)), b"http/1.1"),
        q,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    verified(&body, CERT);
    let t = tls_grpc(
        app.addr(),
        client_config(&pki, Some((&good, &good_key)), b"h2"),
    )
    .await
    .unwrap();
    verified(&t.token, CERT);
    // Trusted, but no caller has that name: 401 / UNAUTHENTICATED.
    let (status, _) = tls_get(
        app.addr(),
        client_config(&pki, Some((&stranger, &stranger_key)), b"http/1.1"),
        q,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let e = tls_grpc(
        app.addr(),
        client_config(&pki, Some((&stranger, &stranger_key)), b"h2"),
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("Unauthenticated"), "{e}");
    // Signed by an untrusted CA: the handshake (or the first request) fails.
    assert!(
        tls_get(
            app.addr(),
            client_config(&pki, Some((&untrusted, &untrusted_key)), b"http/1.1"),
            q
        )
        .await
        .is_err()
    );
    assert!(
        tls_grpc(
            app.addr(),
            client_config(&pki, Some((&untrusted, &untrusted_key)), b"h2")
        )
        .await
        .is_err()
    );
    // No certificate (optional mode): an API key still works, nothing else does.
    let (status, _) = tls_get(app.addr(), client_config(&pki, None, b"http/1.1"), q)
        .await
        .unwrap();
    assert_eq!(status, 401);
    // Plaintext on the TLS port does not get a token.
    assert!(http_plain_fails(app.addr()).await);
}

async fn http_plain_fails(addr: SocketAddr) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return true;
    };
    let Ok((mut send, conn)) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
    else {
        return true;
    };
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("/healthz")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .map_or(true, |r| r.is_err())
}

mod props {
    use axum::body::Body;
    use proptest::prelude::*;
    use token_authority::api::TokenApi;
    use token_authority::policy::{Authn, Identity};
    use token_authority::transport::http::{HttpState, router};
    use tower::ServiceExt as _;

    fn app() -> axum::Router {
        let issuer =
            token_authority::domain::Issuer::new(vec![token_authority::domain::AppCredentials {
                app_id: agora_token::AppId::new(super::APP_ID).unwrap(),
                certificate: agora_token::AppCertificate::new(super::CERT).unwrap(),
                secondary: None,
            }]);
        let shared = std::sync::Arc::new(token_authority::state::Shared::new(
            token_authority::state::Snapshot::open(issuer),
        ));
        shared.set_ready(true);
        router(HttpState::new(TokenApi::new(shared), 64 * 1024))
    }

    fn send(app: &axum::Router, req: http::Request<Body>) -> (u16, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut req = req;
            req.extensions_mut().insert(Authn::new(Ok(Identity::Open)));
            let resp = app.clone().oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_query_gets_a_token_or_a_clear_400(
            pairs in prop::collection::vec(
                (prop_oneof![Just("channelName".to_owned()), Just("uid".to_owned()), Just("role".to_owned()), Just("expireSeconds".to_owned()), "[a-z]{1,5}"],
                 "[ -~]{0,80}"),
                0..6),
        ) {
            let app = app();
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                q.append_pair(k, v);
            }
            let uri = format!("/api/agora/token?{}", q.finish());
            let (status, body) = send(&app, http::Request::get(&uri).body(Body::empty()).unwrap());
            prop_assert!(status == 200 || status == 400, "{uri}: {status} {body}");
            if status == 400 {
                let first = body.split(':').next().unwrap_or("");
                prop_assert!(["channelName", "uid", "role", "expireSeconds"].contains(&first), "{uri}: {body}");
            } else {
                prop_assert!(body.starts_with("007"));
            }
        }

        #[test]
        fn any_json_body_gets_an_answer_or_a_clear_4xx(
            method in prop_oneof![Just("BuildRtcToken"), Just("BuildToken"), Just("BuildRtmToken"), Just("InspectToken"), Just("BuildAgentSession")],
            body in prop_oneof![
                "[ -~]{0,200}",
                Just("{}".to_owned()),
                r#"\{"(channelName|uid|account|role|expireSeconds|services|userId|token|agentUid)":("[ -~]{0,20}"|-?[0-9]{1,12}|null|true|\[\]|\{\})\}"#,
            ],
        ) {
            let app = app();
            let req = http::Request::post(format!("/agora.token.v1.TokenService/{method}"))
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let (status, text) = send(&app, req);
            prop_assert!(status == 200 || (400..500).contains(&status), "{method} {body}: {status} {text}");
            if status != 200 {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                prop_assert!(v["code"].is_string() && v["message"].is_string(), "{text}");
            }
        }
    }
}

/// Drives normal and failing requests against the built binary and checks
/// its whole log output for secrets.
#[test]
fn logs_never_contain_secrets_or_whole_tokens() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ta-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert"), format!("{CERT}\n")).unwrap();
    std::fs::write(
        dir.join("ta.toml"),
        format!(
            "[[apps]]\napp_id = \"{APP_ID}\"\ncertificate_file = \"cert\"\n\n[[callers]]\nname = \"svc\"\napi_key_sha256 = \"{}\"\nkinds = [\"*\"]\n",
            ApiKeyHash::of_key(KEY).to_hex()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_token-authority"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(dir.join("ta.toml"))
        .env_clear()
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "serving gRPC (h2c) and HTTP/1.1" {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server started")
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tokens = rt.block_on(async {
        let mut tokens = Vec::new();
        let auth = bearer(KEY);
        let (s, _, t) = http(
            addr,
            "GET",
            "/api/agora/token?channelName=c&uid=7",
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(s, 200);
        tokens.push(t);
        let (s, _, t) = http(
            addr,
            "POST",
            "/agora.token.v1.TokenService/BuildAgentSession",
            &[("authorization", &auth)],
            r#"{"channelName":"c","agentUid":"1","userUid":"2","enableRtm":true}"#,
        )
        .await;
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        for k in ["agentToken", "userToken", "restToken"] {
            tokens.push(v[k].as_str().unwrap().to_owned());
        }
        // Failures: wrong key, bad input, a token to inspect.
        let _ = http(
            addr,
            "GET",
            "/api/agora/token?channelName=c",
            &[("authorization", "Bearer wrong-key-123")],
            "",
        )
        .await;
        let _ = http(
            addr,
            "GET",
            "/api/agora/token?channelName=a/b",
            &[("authorization", &auth)],
            "",
        )
        .await;
        let body = format!(r#"{{"token":"{}"}}"#, tokens[0]);
        let (s, _, _) = http(
            addr,
            "POST",
            "/agora.token.v1.TokenService/InspectToken",
            &[("authorization", &auth)],
            &body,
        )
        .await;
        assert_eq!(s, 200);
        tokens
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let logs = out.join().unwrap() + &err.join().unwrap();
    assert!(logs.contains("token issued"), "no issuance logged:\n{logs}");
    assert!(
        logs.contains("\"target\":\"audit\"") || logs.contains("audit"),
        "no audit events:\n{logs}"
    );
    assert!(!logs.contains(CERT), "certificate in the logs");
    assert!(
        !logs.to_lowercase().contains(&CERT.to_lowercase()),
        "certificate in the logs"
    );
    assert!(!logs.contains(KEY), "API key in the logs");
    assert!(
        !logs.contains("wrong-key-123"),
        "a presented key in the logs"
    );
    for t in &tokens {
        assert!(!logs.contains(t.as_str()), "a whole token in the logs");
        // Not even a long piece of one.
        assert!(!logs.contains(&t[..40]), "a token prefix in the logs");
    }
}

/// Revoking a caller (and removing one) in the config file takes effect on
/// reload (what SIGHUP runs), over both transports; a broken file keeps the
/// old callers.
#[tokio::test]
async fn revocation_takes_effect_on_reload() {
    use token_authority::config::{Config, ServeArgs};
    use token_authority::server::reload::{Reloader, Trigger};
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "ta-revoke-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert"), format!("{CERT}\n")).unwrap();
    let write_config = |revoked: bool, extra: &str| {
        std::fs::write(
            dir.join("ta.toml"),
            format!(
                "listen = \"127.0.0.1:0\"\n{extra}\n[[apps]]\napp_id = \"{APP_ID}\"\ncertificate_file = \"cert\"\n\n\
                 [[callers]]\nname = \"svc\"\napi_key_sha256 = \"{}\"\nkinds = [\"*\"]\nrevoked = {revoked}\n\n\
                 [[callers]]\nname = \"other\"\napi_key_sha256 = \"{}\"\nkinds = [\"*\"]\n",
                ApiKeyHash::of_key(KEY).to_hex(),
                ApiKeyHash::of_key(LIMITED_KEY).to_hex(),
            ),
        )
        .unwrap();
    };
    write_config(false, "");
    let args = ServeArgs {
        config: Some(dir.join("ta.toml")),
        ..Default::default()
    };
    let empty = std::collections::HashMap::<String, String>::new;
    let config = Config::load(&args, &empty()).unwrap();
    let handle = token_authority::server::spawn(&config).await.unwrap();
    let app = TestApp { handle };
    let mut reloader = Reloader::new(config, Arc::clone(app.handle.shared()), empty);
    let mut g = app.grpc().await;
    let get = "/api/agora/token?channelName=c&uid=1";
    g.build_rtc_token(with_key(rtc("c", 1), Some(KEY)))
        .await
        .unwrap();
    assert_eq!(
        http(
            app.addr(),
            "GET",
            get,
            &[("authorization", &bearer(KEY))],
            ""
        )
        .await
        .0,
        200
    );

    write_config(true, "");
    reloader.reload(Trigger::Signal).unwrap();
    let e = g
        .build_rtc_token(with_key(rtc("c", 1), Some(KEY)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(
        http(
            app.addr(),
            "GET",
            get,
            &[("authorization", &bearer(KEY))],
            ""
        )
        .await
        .0,
        401
    );
    let (s, _, _) = http(
        app.addr(),
        "POST",
        "/agora.token.v1.TokenService/BuildRtcToken",
        &[("authorization", &bearer(KEY))],
        r#"{"channelName":"c","uid":1}"#,
    )
    .await;
    assert_eq!(s, 401);
    // The other caller is unaffected.
    g.build_rtc_token(with_key(rtc("c", 1), Some(LIMITED_KEY)))
        .await
        .unwrap();

    // A broken file keeps the last good callers (still revoked, other still valid).
    std::fs::write(dir.join("ta.toml"), "[[callers]\n").unwrap();
    assert!(reloader.reload(Trigger::Signal).is_err());
    assert!(
        g.build_rtc_token(with_key(rtc("c", 1), Some(KEY)))
            .await
            .is_err()
    );
    g.build_rtc_token(with_key(rtc("c", 1), Some(LIMITED_KEY)))
        .await
        .unwrap();
    app.handle.shutdown().await.unwrap();
}

/// A client that opens a TCP connection to the TLS port and never
/// completes the handshake (silent, or a partial ClientHello) is closed
/// after the TLS handshake timeout (`phase="tls_handshake"`).
#[tokio::test]
async fn unfinished_tls_handshakes_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue("localhost", false);
    std::fs::write(pki.dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(pki.dir.join("server.key"), server_key.serialize_pem()).unwrap();
    let dir = pki.dir.clone();
    let app = spawn_app_with(|c| {
        c.connection.tls_handshake_timeout = std::time::Duration::from_millis(300);
        c.connection.first_request_timeout = std::time::Duration::from_secs(30);
        c.tls = Some(token_authority::config::tls::TlsConfig {
            cert_file: dir.join("server.pem").display().to_string(),
            key_file: dir.join("server.key").display().to_string(),
            client_ca_file: None,
            client_auth: None,
        });
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    // A TLS record header announcing a ClientHello that never comes.
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let start = std::time::Instant::now();
    for s in [&mut silent, &mut partial] {
        let mut buf = [0u8; 256];
        let closed = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(_)) => {}
            }
        };
        assert!(closed, "still open after 10 s");
    }
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    // A real client is still served.
    let (status, body) = tls_get(
        app.addr(),
        client_config(&pki, None, b"http/1.1"),
        "/api/agora/token?channelName=tls-timeout&uid=9",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let metrics = app
        .request_to(
            app.handle.admin_addr().unwrap(),
            "GET",
            "/metrics",
            None,
            Vec::new(),
        )
        .await
        .body;
    let timed_out = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "token_authority_connections_timed_out_total{listener=\"main\",phase=\"tls_handshake\"} ",
            )
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(timed_out >= 2, "{timed_out}");
}
