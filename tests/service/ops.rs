//! Reflection (v1 and v1alpha), health, readiness, metrics, the admin
//! port, plain 404s and shutdown.

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::common::*;

const SERVICE: &str = "agora.token.v1.TokenService";

#[tokio::test]
async fn reflection_v1_lists_services_and_describes() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let app = spawn_app().await;
    let mut c = ServerReflectionClient::new(app.channel().await);
    let reqs = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(SERVICE.into())),
        },
    ];
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("unexpected {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [SERVICE, "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let second = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(fd)) = second.message_response else {
        panic!("unexpected {second:?}");
    };
    assert!(!fd.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn reflection_v1alpha_lists_services() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let app = spawn_app().await;
    let mut c = ServerReflectionClient::new(app.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected {resp:?}");
    };
    assert!(list.service.iter().any(|s| s.name == SERVICE), "{list:?}");
}

#[tokio::test]
async fn grpc_health_overall_and_per_service() {
    let app = spawn_app().await;
    let mut h = HealthClient::new(app.channel().await);
    for service in ["", SERVICE] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let e = h
        .check(HealthCheckRequest {
            service: "nope.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn http_ops_endpoints_and_404() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("ready (OPEN"), "{}", r.body);
    let r = app.get("/no/such/path").await;
    assert_eq!(r.status, 404);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(r.headers.get("grpc-status").is_none());
    let r = app.post_json("NoSuchMethod", "{}").await;
    assert_eq!(r.status, 404);
    assert!(r.headers.contains_key("x-request-id"));

    // The admin port serves health, readiness and metrics only.
    let admin = app.handle.admin_addr().unwrap();
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/api/agora/token?channelName=", 404),
    ] {
        let r = app.request_to(admin, "GET", path, None, Vec::new()).await;
        assert_eq!(r.status, status, "{path}");
    }
}

#[tokio::test]
async fn metrics_move() {
    let app = spawn_app().await;
    let get_ok = r#"token_authority_requests_total{transport="http",method="GetToken",code="ok"}"#;
    let get_bad = r#"token_authority_requests_total{transport="http",method="GetToken",code="invalid_argument"}"#;
    let grpc_ok =
        r#"token_authority_requests_total{transport="grpc",method="BuildRtcToken",code="ok"}"#;
    let json_ok =
        r#"token_authority_requests_total{transport="json",method="BuildChatAppToken",code="ok"}"#;
    let issued = format!(
        r#"token_authority_tokens_issued_total{{kind="rtc",app_id="{APP_ID}",caller="open"}}"#
    );
    let chat_issued = format!(
        r#"token_authority_tokens_issued_total{{kind="chat_app",app_id="{APP_ID}",caller="open"}}"#
    );
    assert_eq!(app.metric(get_ok).await, 0);
    app.get("/api/agora/token?channelName=a").await;
    app.get("/api/agora/token?channelName=a").await;
    app.get("/api/agora/token?uid=1").await;
    app.grpc()
        .await
        .build_rtc_token(token_authority::pb::BuildRtcTokenRequest::default())
        .await
        .unwrap();
    app.post_json("BuildChatAppToken", "{}").await;
    assert_eq!(app.metric(get_ok).await, 2);
    assert_eq!(app.metric(get_bad).await, 1);
    assert_eq!(app.metric(grpc_ok).await, 1);
    assert_eq!(app.metric(json_ok).await, 1);
    assert_eq!(app.metric(&issued).await, 3);
    assert_eq!(app.metric(&chat_issued).await, 1);
    for (transport, method) in [("grpc", "BuildRtcToken"), ("json", "BuildChatAppToken")] {
        let count = format!(
            r#"token_authority_request_duration_seconds_count{{transport="{transport}",method="{method}"}}"#
        );
        assert_eq!(app.metric(&count).await, 1, "{transport}");
    }
    // Every request took under 2.5 s: the last finite bucket holds them all.
    let get = r#"transport="http",method="GetToken""#;
    assert_eq!(
        app.metric(&format!(
            r#"token_authority_request_duration_seconds_bucket{{{get},le="2.5"}}"#
        ))
        .await,
        3
    );
    assert_eq!(
        app.metric(&format!(
            r#"token_authority_request_duration_seconds_count{{{get}}}"#
        ))
        .await,
        3
    );
    let text = app.get("/metrics").await.body;
    // The standard process series, read from /proc at scrape time.
    for series in [
        "\nprocess_cpu_seconds_total ",
        "\nprocess_resident_memory_bytes ",
        "\nprocess_open_fds ",
        "\nprocess_max_fds ",
        "\nprocess_start_time_seconds ",
        "\nprocess_virtual_memory_bytes ",
    ] {
        assert!(text.contains(series), "no{series}in\n{text}");
    }
    assert!(
        text.contains("token_authority_build_info{version="),
        "{text}"
    );
    assert!(text.contains("token_authority_ready 1"));
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_app_with(|c| c.metrics = false).await;
    assert_eq!(app.get("/api/agora/token?channelName=a").await.status, 200);
    assert_eq!(app.get("/metrics").await.status, 404);
    assert_eq!(
        app.handle.shared().metrics.requests_total(
            token_authority::telemetry::metrics::Transport::Http,
            token_authority::telemetry::metrics::Method::GetToken,
            tonic::Code::Ok
        ),
        0
    );
}

#[tokio::test]
async fn json_health_check_is_the_trivial_json_route() {
    let app = spawn_app().await;
    let post = |body: &'static str| {
        app.request_to(
            app.addr(),
            "POST",
            "/grpc.health.v1.Health/Check",
            Some("application/json"),
            body.as_bytes().to_vec(),
        )
    };
    for body in [
        "{}",
        r#"{"service":""}"#,
        r#"{"service":"agora.token.v1.TokenService"}"#,
    ] {
        let r = post(body).await;
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(r.json()["status"], "SERVING");
    }
    let r = post(r#"{"service":"nope.Nope"}"#).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = post(r#"{"nope":1}"#).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let addr = app.addr();
    // An idle HTTP/2 connection must not hold shutdown up.
    let mut grpc = app.grpc().await;
    grpc.build_chat_app_token(token_authority::pb::BuildChatAppTokenRequest::default())
        .await
        .unwrap();
    // An HTTP/1.1 request whose body is still arriving when shutdown starts.
    let body = br#"{"channelName":"drain","uid":8}"#;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /agora.token.v1.TokenService/BuildRtcToken HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shared = std::sync::Arc::clone(app.handle.shared());
    let shutdown = tokio::spawn(app.handle.shutdown());
    while shared.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.write_all(&body[10..]).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let token = resp
        .split("\"token\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    verified(token, CERT);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finished within the grace period")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let app = spawn_app().await;
    let addr = app.addr();
    let shared = std::sync::Arc::clone(app.handle.shared());
    assert!(shared.is_ready());
    app.handle.shutdown().await.unwrap();
    assert!(!shared.is_ready());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app =
        spawn_app_with(|c| c.connection.header_read_timeout = Duration::from_millis(300)).await;
    let mut s = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(start.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Other clients are unaffected.
    assert_eq!(app.get("/healthz").await.status, 200);
}

/// A token request that stalls (its JSON body never completes) is cut off
/// by the request timeout with 504, and the timer does not fire for
/// requests that complete.
#[tokio::test]
async fn stalled_token_requests_time_out() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.request_timeout = Duration::from_millis(300)).await;
    let mut s = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    s.write_all(
        b"POST /agora.token.v1.TokenService/BuildRtcToken HTTP/1.1\r\nHost: t\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"channelName\"",
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer within 5 s")
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("timeout"), "{text}");
    // Complete requests are unaffected, well past the timeout's length.
    for _ in 0..3 {
        let r = app.get("/api/agora/token?channelName=c&uid=1").await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn grace_period_bounds_shutdown() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.shutdown_grace = Duration::from_millis(300)).await;
    // A request whose body never completes.
    let mut s = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    s.write_all(
        b"POST /agora.token.v1.TokenService/BuildChatAppToken HTTP/1.1\r\nHost: t\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), app.handle.shutdown())
        .await
        .expect("shutdown is bounded by the grace period")
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    // The stuck connection was dropped.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open");
}
