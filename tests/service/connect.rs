//! The protocols of issue 16 with real HTTP clients on a real server: the
//! Connect protocol (JSON and binary protobuf, gzip both ways, GET, the
//! Connect headers, errors with structured details), gRPC-Web (binary
//! and text, unary and WatchToken), gRPC with gzip and rich error
//! details, CORS on every browser-facing route, and HTTP/1.1 keep-alive
//! across error responses.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use token_authority::pb;
use token_authority::policy::{ApiKeyHash, CallerConfig, PolicyConfig};
use tonic::Code;

use crate::common::*;

const KEY: &str = "ta_connect-test-key-0123456789abcdef";
const LIMITED_KEY: &str = "ta_connect-limited-key-0123456789abc";
const ORIGIN: &str = "https://page.example.com";
const PATH: &str = "/agora.token.v1.TokenService";

/// A server with one caller limited to `agent-*` channels, one with a
/// tight rate limit, and a CORS origin.
async fn secured() -> TestApp {
    spawn_app_with(|c| {
        c.callers = vec![
            CallerConfig {
                name: "web".into(),
                api_key_sha256: Some(ApiKeyHash::of_key(KEY).to_hex()),
                policy: PolicyConfig {
                    kinds: Some(vec!["*".into()]),
                    channels: Some(vec!["agent-*".into()]),
                    ..Default::default()
                },
                ..Default::default()
            },
            CallerConfig {
                name: "limited".into(),
                api_key_sha256: Some(ApiKeyHash::of_key(LIMITED_KEY).to_hex()),
                policy: PolicyConfig {
                    kinds: Some(vec!["*".into()]),
                    rate_per_second: Some(0.01),
                    burst: Some(1),
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        c.cors_origins = vec![ORIGIN.into()];
    })
    .await
}

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a new connection.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    on(&mut s, method, path, headers, body).await
}

/// One request on an open HTTP/1.1 connection.
async fn on(
    s: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = s
        .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(b).unwrap();
    z.finish().unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The `details` of a Connect error, decoded: (type, protobuf bytes).
fn details(v: &serde_json::Value) -> Vec<(String, Vec<u8>)> {
    v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let value = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(d["value"].as_str().unwrap())
                .unwrap();
            (d["type"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

fn error_info(v: &serde_json::Value) -> tonic_types::pb::ErrorInfo {
    let (t, b) = details(v).into_iter().next().unwrap();
    assert_eq!(t, "google.rpc.ErrorInfo");
    tonic_types::pb::ErrorInfo::decode(b.as_slice()).unwrap()
}

fn rtc_json(channel: &str, uid: u32) -> Vec<u8> {
    format!(r#"{{"channelName":"{channel}","uid":{uid},"expireSeconds":600}}"#).into_bytes()
}

#[tokio::test]
async fn connect_unary_json_proto_and_gzip() {
    let app = spawn_app().await;
    let url = format!("{PATH}/BuildRtcToken");
    // JSON, with the Connect headers.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("connect-protocol-version", "1"),
            ("connect-timeout-ms", "5000"),
        ],
        rtc_json("c1", 7),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    verified(r.json()["token"].as_str().unwrap(), CERT);
    // Binary protobuf.
    let req = pb::BuildRtcTokenRequest {
        channel_name: "c2".into(),
        user: Some(pb::build_rtc_token_request::User::Uid(8)),
        expire_seconds: Some(600),
        ..Default::default()
    };
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/proto"),
            ("connect-protocol-version", "1"),
        ],
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/proto");
    let resp = pb::BuildRtcTokenResponse::decode(r.body.as_slice()).unwrap();
    let t = verified(&resp.token, CERT);
    assert_eq!(resp.expires_at - resp.issued_at, 600);
    assert!(!t.services().is_empty());
    // A gzipped request (connect-python's default, connect-node's
    // sendCompression), proto and JSON.
    for (ct, body) in [
        ("application/proto", req.encode_to_vec()),
        ("application/json", rtc_json("c3", 9)),
    ] {
        let r = send(
            app.addr(),
            "POST",
            &url,
            &[("content-type", ct), ("content-encoding", "gzip")],
            gzip(&body),
        )
        .await;
        assert_eq!(r.status, 200, "{ct}: {}", r.text());
    }
    // A response large enough is gzipped when the client accepts it.
    let session = br#"{"channelName":"convo","agentUid":"1001","userUid":"2002","enableRtm":true}"#;
    let r = send(
        app.addr(),
        "POST",
        &format!("{PATH}/BuildAgentSession"),
        &[
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
        ],
        session.to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-encoding"], "gzip");
    let v: serde_json::Value = serde_json::from_slice(&gunzip(&r.body)).unwrap();
    verified(
        v["agentToken"]["token"]
            .as_str()
            .unwrap_or_else(|| v["agentToken"].as_str().unwrap()),
        CERT,
    );
    // Not without Accept-Encoding.
    let r = send(
        app.addr(),
        "POST",
        &format!("{PATH}/BuildAgentSession"),
        &[("content-type", "application/json")],
        session.to_vec(),
    )
    .await;
    assert!(r.headers.get("content-encoding").is_none());
    r.json();
    // proto3 JSON as Google's parser takes it: null is the default,
    // integral floats and numbers as strings are numbers.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[("content-type", "application/json")],
        br#"{"channelName":"c4","appId":null,"uid":"11","expireSeconds":3600.0,"role":null}"#
            .to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["expiresAt"].as_u64().unwrap() - v["issuedAt"].as_u64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn connect_get_for_inspect_token_only() {
    let app = spawn_app().await;
    let issued = app
        .post_json("BuildRtcToken", r#"{"channelName":"g","uid":5}"#)
        .await;
    let token = issued.json()["token"].as_str().unwrap().to_owned();
    // encoding=json, the message percent-encoded.
    let msg = serde_json::json!({ "token": token }).to_string();
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("connect", "v1")
        .append_pair("encoding", "json")
        .append_pair("message", &msg)
        .finish();
    let r = send(
        app.addr(),
        "GET",
        &format!("{PATH}/InspectToken?{q}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["appId"], APP_ID);
    assert_eq!(v["signature"], "SIGNATURE_STATUS_VALID", "{v}");
    assert!(
        r.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    // encoding=proto, base64 (URL-safe, unpadded), gzipped.
    let req = pb::InspectTokenRequest {
        token: token.clone(),
        ..Default::default()
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(gzip(&req.encode_to_vec()));
    let r = send(
        app.addr(),
        "GET",
        &format!(
            "{PATH}/InspectToken?connect=v1&encoding=proto&base64=1&compression=gzip&message={b64}"
        ),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = pb::InspectTokenResponse::decode(r.body.as_slice()).unwrap();
    assert_eq!(resp.app_id, APP_ID);
    // Methods with side effects: POST only.
    let r = send(
        app.addr(),
        "GET",
        &format!("{PATH}/BuildRtcToken?encoding=json&message=%7B%7D"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
    // A bad query names the parameter.
    let r = send(
        app.addr(),
        "GET",
        &format!("{PATH}/InspectToken?message=x"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("encoding")
    );
}

#[tokio::test]
async fn connect_errors_follow_the_specification() {
    let app = spawn_app().await;
    let url = format!("{PATH}/BuildRtcToken");
    let json = [("content-type", "application/json")];
    // Invalid input: 400, ErrorInfo + BadRequest naming the field.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &json,
        br#"{"channelName":"c","uid":-1}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["code"], "invalid_argument");
    let info = error_info(&v);
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("INVALID_ARGUMENT", "token-authority")
    );
    assert_eq!(info.metadata["field"], "uid");
    let (t, b) = details(&v).remove(1);
    assert_eq!(t, "google.rpc.BadRequest");
    let bad = tonic_types::pb::BadRequest::decode(b.as_slice()).unwrap();
    assert_eq!(bad.field_violations[0].field, "uid");
    assert_eq!(
        v["details"][1]["debug"]["fieldViolations"][0]["field"],
        "uid"
    );
    // Unsupported codec: 415 with Accept-Post, no Connect code.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[("content-type", "application/xml")],
        b"<a/>".to_vec(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(
        r.headers["accept-post"],
        "application/json, application/proto"
    );
    assert!(!r.text().contains("invalid_argument"));
    // Unsupported compression: unimplemented.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 501);
    assert_eq!(r.json()["code"], "unimplemented");
    // Connect headers.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("connect-protocol-version", "2"),
        ],
        rtc_json("c", 1),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("connect-protocol-version")
    );
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("connect-timeout-ms", "0"),
        ],
        rtc_json("c", 1),
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["code"], "deadline_exceeded");
    // Not gzip although it says so.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("gzip"));
    // A gzip bomb is cut at max_request_bytes.
    let bomb = gzip(&vec![b' '; 1 << 20]);
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        bomb,
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], "resource_exhausted");
    // Unknown method: 404 (Connect clients read unimplemented).
    let r = send(
        app.addr(),
        "POST",
        &format!("{PATH}/Nope"),
        &json,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "unimplemented");
}

#[tokio::test]
async fn refusals_carry_reasons_and_challenges_on_every_transport() {
    let app = secured().await;
    let url = format!("{PATH}/BuildRtcToken");
    let json = ("content-type", "application/json");
    // No credentials: 401 with the RFC 6750 challenge.
    let r = send(app.addr(), "POST", &url, &[json], rtc_json("agent-1", 1)).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer realm=\"token-authority\""
    );
    assert_eq!(error_info(&r.json()).reason, "UNAUTHENTICATED");
    // A wrong key: invalid_token.
    let bad = "Bearer ta_wrong-key-000000000000000000000";
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[json, ("authorization", bad)],
        rtc_json("agent-1", 1),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer realm=\"token-authority\", error=\"invalid_token\""
    );
    assert_eq!(error_info(&r.json()).reason, "INVALID_CREDENTIALS");
    // The GET endpoint: the same challenge, and the reason in a header.
    let r = send(
        app.addr(),
        "GET",
        "/api/agora/token?channelName=agent-1&uid=1",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.headers.contains_key("www-authenticate"));
    assert_eq!(r.headers["x-error-reason"], "UNAUTHENTICATED");
    // Policy: 403, POLICY_<RULE> with the rule.
    let auth = format!("Bearer {KEY}");
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[json, ("authorization", &auth)],
        rtc_json("other", 1),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let info = error_info(&r.json());
    assert_eq!(info.reason, "POLICY_CHANNELS");
    assert_eq!(info.metadata["rule"], "channels");
    let ok = send(
        app.addr(),
        "POST",
        &url,
        &[json, ("authorization", &auth)],
        rtc_json("agent-1", 1),
    )
    .await;
    assert_eq!(ok.status, 200);
    // Rate limit: 429, RATE_LIMITED and RetryInfo.
    let limited = format!("Bearer {LIMITED_KEY}");
    let first = send(
        app.addr(),
        "POST",
        &url,
        &[json, ("authorization", &limited)],
        rtc_json("x", 1),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[json, ("authorization", &limited)],
        rtc_json("x", 1),
    )
    .await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    let v = r.json();
    assert_eq!(error_info(&v).reason, "RATE_LIMITED");
    let (t, b) = details(&v).pop().unwrap();
    assert_eq!(t, "google.rpc.RetryInfo");
    let retry = tonic_types::pb::RetryInfo::decode(b.as_slice()).unwrap();
    assert!(retry.retry_delay.unwrap().seconds > 0);

    // gRPC: the same details in grpc-status-details-bin (tonic-types reads them).
    use tonic_types::StatusExt as _;
    let mut g = app.grpc().await;
    let req = |channel: &str, key: Option<&str>| {
        let mut r = tonic::Request::new(pb::BuildRtcTokenRequest {
            channel_name: channel.into(),
            user: Some(pb::build_rtc_token_request::User::Uid(1)),
            ..Default::default()
        });
        if let Some(k) = key {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        r
    };
    let e = g
        .build_rtc_token(req("other", Some(KEY)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.get_error_details().error_info().unwrap().reason,
        "POLICY_CHANNELS"
    );
    let e = g.build_rtc_token(req("agent-1", None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(
        e.get_error_details().error_info().unwrap().reason,
        "UNAUTHENTICATED"
    );
    let e = g
        .build_rtc_token(tonic::Request::new(pb::BuildRtcTokenRequest {
            role: 42,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn grpc_gzip_both_ways_and_bad_input_details() {
    use tonic::codec::CompressionEncoding::Gzip;
    use tonic_types::StatusExt as _;
    let app = spawn_app().await;
    let mut g = pb::token_service_client::TokenServiceClient::new(app.channel().await)
        .send_compressed(Gzip)
        .accept_compressed(Gzip);
    let r = g
        .build_rtc_token(pb::BuildRtcTokenRequest {
            channel_name: "z".into(),
            user: Some(pb::build_rtc_token_request::User::Uid(3)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.metadata().get("grpc-encoding").unwrap(), "gzip");
    verified(&r.into_inner().token, CERT);
    let e = g
        .build_rtc_token(pb::BuildRtcTokenRequest {
            role: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let d = e.get_error_details();
    assert_eq!(d.bad_request().unwrap().field_violations[0].field, "role");
    assert_eq!(d.error_info().unwrap().reason, "INVALID_ARGUMENT");
}

/// A client that accepts gzip (grpcio, grpc-go and grpc-java do by
/// default) gets a token uncompressed: its message's flag byte says so.
/// Compressing a response that small saves nothing and cost more than the
/// whole call.
#[tokio::test]
async fn small_grpc_responses_are_not_compressed_for_clients_that_accept_gzip() {
    let app = secured().await;
    let auth = format!("Bearer {KEY}");
    let msg = pb::BuildRtcTokenRequest {
        channel_name: "agent-small".into(),
        user: Some(pb::build_rtc_token_request::User::Uid(77)),
        ..Default::default()
    }
    .encode_to_vec();
    let r = send(
        app.addr(),
        "POST",
        &format!("{PATH}/BuildRtcToken"),
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("grpc-accept-encoding", "gzip"),
            ("authorization", &auth),
        ],
        frame(0, &msg),
    )
    .await;
    assert_eq!(r.status, 200);
    let f = frames(&r.body);
    assert_eq!(grpc_web_status(&r, &f), "0");
    assert_eq!(f[0].0, 0, "the token's message is not compressed");
    let resp = pb::BuildRtcTokenResponse::decode(f[0].1.as_slice()).unwrap();
    verified(&resp.token, CERT);
}

/// A gRPC-Web frame: flag, big-endian length, payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The frames of a gRPC-Web body: (flag, payload).
fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        out.push((b[0], b[5..5 + len].to_vec()));
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing bytes");
    out
}

/// A grpc-web-text body: base64 chunks, each padded, concatenated.
fn decode_text(text: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut out, mut chunk) = (Vec::new(), String::new());
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        chunk.push(c);
        if c == '=' && chars.peek() != Some(&'=') {
            out.extend(b64.decode(&chunk).unwrap());
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        out.extend(b64.decode(&chunk).unwrap());
    }
    out
}

/// The gRPC status of a gRPC-Web response: from its trailer frame, or
/// its headers (a trailers-only response).
fn grpc_web_status(r: &Reply, frames: &[(u8, Vec<u8>)]) -> String {
    if let Some((_, t)) = frames.iter().find(|(f, _)| f & 0x80 != 0) {
        let t = String::from_utf8_lossy(t).to_lowercase();
        let line = t
            .lines()
            .find(|l| l.starts_with("grpc-status:"))
            .unwrap()
            .to_owned();
        return line["grpc-status:".len()..].trim().to_owned();
    }
    r.headers["grpc-status"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn grpc_web_binary_and_text_over_http1() {
    let app = secured().await;
    let url = format!("{PATH}/BuildRtcToken");
    let auth = format!("Bearer {KEY}");
    let msg = pb::BuildRtcTokenRequest {
        channel_name: "agent-web".into(),
        user: Some(pb::build_rtc_token_request::User::Uid(77)),
        ..Default::default()
    }
    .encode_to_vec();
    // Binary.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("authorization", &auth),
            ("origin", ORIGIN),
        ],
        frame(0, &msg),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
    let f = frames(&r.body);
    assert_eq!(grpc_web_status(&r, &f), "0");
    let resp = pb::BuildRtcTokenResponse::decode(f[0].1.as_slice()).unwrap();
    verified(&resp.token, CERT);
    // Text (base64 of the same frames).
    let b64 = base64::engine::general_purpose::STANDARD;
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/grpc-web-text"),
            ("accept", "application/grpc-web-text"),
            ("authorization", &auth),
        ],
        b64.encode(frame(0, &msg)).into_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web-text")
    );
    // Each chunk is base64-encoded on its own (padded): decode them one by one.
    let raw = decode_text(&r.text());
    let f = frames(&raw);
    assert_eq!(grpc_web_status(&r, &f), "0");
    verified(
        &pb::BuildRtcTokenResponse::decode(f[0].1.as_slice())
            .unwrap()
            .token,
        CERT,
    );
    // Refused before routing (no credentials): a gRPC-Web status with details.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[("content-type", "application/grpc-web+proto")],
        frame(0, &msg),
    )
    .await;
    assert_eq!(r.status, 200);
    let f = frames(&r.body);
    assert_eq!(grpc_web_status(&r, &f), "16");
    // Policy refusal inside the API: code 7, details in the trailers.
    let other = pb::BuildRtcTokenRequest {
        channel_name: "other".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("authorization", &auth),
        ],
        frame(0, &other),
    )
    .await;
    let f = frames(&r.body);
    assert_eq!(grpc_web_status(&r, &f), "7");
    let trailers = f
        .iter()
        .find(|(fl, _)| fl & 0x80 != 0)
        .map(|(_, t)| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_else(|| format!("{:?}", r.headers));
    assert!(trailers.contains("grpc-status-details-bin"), "{trailers}");
}

#[tokio::test]
async fn watch_token_over_grpc_web() {
    let app = spawn_app().await;
    let msg = pb::WatchTokenRequest {
        request: Some(pb::watch_token_request::Request::Rtc(
            pb::BuildRtcTokenRequest {
                channel_name: "w".into(),
                user: Some(pb::build_rtc_token_request::User::Uid(5)),
                expire_seconds: Some(600),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
    .encode_to_vec();
    let stream = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("{PATH}/WatchToken"))
        .header("host", "localhost")
        .header("content-type", "application/grpc-web+proto")
        .body(Full::new(Bytes::from(frame(0, &msg))))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The first message arrives at once; the stream stays open.
    let mut buf = Vec::new();
    while buf.len() < 5
        || buf.len() < 5 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize
    {
        let f = body.frame().await.unwrap().unwrap();
        if let Ok(d) = f.into_data() {
            buf.extend_from_slice(&d);
        }
    }
    let (flag, payload) =
        frames(&buf[..5 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize]).remove(0);
    assert_eq!(flag, 0);
    let first = pb::WatchTokenResponse::decode(payload.as_slice()).unwrap();
    let token = match first.response.unwrap() {
        pb::watch_token_response::Response::Rtc(r) => r.token,
        other => panic!("{other:?}"),
    };
    verified(&token, CERT);
}

#[tokio::test]
async fn cors_on_every_browser_facing_route() {
    let app = secured().await;
    let preflight = |path: String, headers: &'static str| {
        let addr = app.addr();
        async move {
            send(
                addr,
                "OPTIONS",
                &path,
                &[
                    ("origin", ORIGIN),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", headers),
                ],
                vec![],
            )
            .await
        }
    };
    // Connect (POST routes: no 405), gRPC-Web, the GET endpoint.
    for (path, headers) in [
        (
            format!("{PATH}/BuildRtcToken"),
            "authorization,content-type,connect-protocol-version,connect-timeout-ms,x-request-id",
        ),
        (
            format!("{PATH}/WatchToken"),
            "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout",
        ),
        ("/api/agora/token".to_owned(), "authorization"),
    ] {
        let r = preflight(path.clone(), headers).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.headers["access-control-allow-origin"], ORIGIN, "{path}");
        let allowed = r.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_owned();
        for h in headers.split(',') {
            assert!(allowed.contains(h), "{path}: {h} not in {allowed}");
        }
        assert!(
            r.headers["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }
    // A simple request from the page: allowed origin, exposed headers.
    let auth = format!("Bearer {KEY}");
    let r = send(
        app.addr(),
        "POST",
        &format!("{PATH}/BuildRtcToken"),
        &[
            ("content-type", "application/json"),
            ("origin", ORIGIN),
            ("authorization", &auth),
        ],
        rtc_json("agent-2", 2),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
    let exposed = r.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for h in [
        "x-request-id",
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "retry-after",
        "www-authenticate",
    ] {
        assert!(exposed.contains(h), "{h} not in {exposed}");
    }
    // Refusals carry CORS too (so the page can read the error).
    let r = send(
        app.addr(),
        "POST",
        &format!("{PATH}/BuildRtcToken"),
        &[("content-type", "application/json"), ("origin", ORIGIN)],
        rtc_json("agent-2", 2),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
    // Another origin: no CORS headers.
    let r = preflight(format!("{PATH}/BuildRtcToken"), "content-type").await;
    assert_eq!(r.status, 200);
    let r2 = send(
        app.addr(),
        "OPTIONS",
        &format!("{PATH}/BuildRtcToken"),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        vec![],
    )
    .await;
    assert!(r2.headers.get("access-control-allow-origin").is_none());
    // Operations routes are not browser-facing.
    let r = send(app.addr(), "GET", "/metrics", &[("origin", ORIGIN)], vec![]).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn keep_alive_survives_error_responses() {
    let app = secured().await;
    let stream = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let auth = format!("Bearer {KEY}");
    // Errors after the body was read keep the connection.
    for body in [&b"{not json"[..], br#"{"channelName":"other"}"#] {
        let r = on(
            &mut s,
            "POST",
            &format!("{PATH}/BuildRtcToken"),
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            body.to_vec(),
        )
        .await;
        assert!(r.status == 400 || r.status == 403, "{}", r.status);
        assert!(r.headers.get("connection").is_none());
    }
    let r = on(&mut s, "GET", "/healthz", &[], vec![]).await;
    assert_eq!(r.status, 200);
    // Errors that answer without reading the body close it, and say so.
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: [Case; 4] = [
        (
            "POST",
            "/nope".to_owned(),
            vec![("content-type", "application/json")],
        ),
        (
            "POST",
            format!("{PATH}/BuildRtcToken"),
            vec![("content-type", "text/plain"), ("authorization", &auth)],
        ),
        (
            "POST",
            format!("{PATH}/BuildRtcToken"),
            vec![("content-type", "application/json")],
        ),
        (
            "PUT",
            format!("{PATH}/BuildRtcToken"),
            vec![("authorization", &auth)],
        ),
    ];
    for (method, path, headers) in cases {
        let stream = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let r = on(
            &mut s,
            method,
            &path,
            &headers,
            b"{\"channelName\":\"agent-1\"}".to_vec(),
        )
        .await;
        assert!(r.status >= 400, "{method} {path}");
        assert_eq!(
            r.headers.get("connection").map(|v| v.to_str().unwrap()),
            Some("close"),
            "{method} {path}: {}",
            r.status
        );
    }
}

#[tokio::test]
async fn watch_token_over_connect_streaming() {
    let app = spawn_app().await;
    let url = format!("{PATH}/WatchToken");
    // A refusal before the first delivery: HTTP 200, the end message only.
    let r = send(
        app.addr(),
        "POST",
        &url,
        &[("content-type", "application/connect+json")],
        frame(0, b"{}"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/connect+json");
    let f = frames(&r.body);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, 2, "end-stream flag");
    let end: serde_json::Value = serde_json::from_slice(&f[0].1).unwrap();
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    // A stream: the first delivery at once, JSON, in an envelope.
    let msg = br#"{"rtc":{"channelName":"cw","uid":6,"expireSeconds":600}}"#;
    let stream = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(&url)
        .header("host", "localhost")
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .body(Full::new(Bytes::from(frame(0, msg))))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let need = |b: &Vec<u8>| {
        b.len() >= 5 && b.len() >= 5 + u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize
    };
    while !need(&buf) {
        if let Ok(d) = body.frame().await.unwrap().unwrap().into_data() {
            buf.extend_from_slice(&d);
        }
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    assert_eq!(buf[0], 0);
    let v: serde_json::Value = serde_json::from_slice(&buf[5..5 + len]).unwrap();
    verified(v["rtc"]["token"].as_str().unwrap(), CERT);
    // uint64: a string in proto3 JSON.
    assert_eq!(v["sequence"], "1", "{v}");
}
