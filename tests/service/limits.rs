//! Connection-level limits (issue 14): the caps on open connections (in
//! total and per client; the admin listener keeps its own budget), the
//! timeouts of every phase (first request, idle keep-alive, the request
//! body on every route), and the in-flight limit per caller.
//!
//! Real sockets, so real time: short configured timeouts and generous
//! margins (an assertion fails only if something stays open for seconds).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use token_authority::policy::{ApiKeyHash, CallerConfig, PolicyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{TestApp, spawn_app_with};

/// Opens a connection from `source` (a loopback address) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{source}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

/// Whether the server closes `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// An HTTP/1.1 request on a fresh connection to `addr`; the status code.
async fn status_of(addr: SocketAddr, source: &str, path: &str) -> u16 {
    let mut s = connect_from(source, addr).await;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

async fn admin_metric(app: &TestApp, series: &str) -> u64 {
    let admin = app.handle.admin_addr().unwrap();
    let m = app
        .request_to(admin, "GET", "/metrics", None, Vec::new())
        .await;
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn the_connection_past_the_per_client_cap_is_closed_and_others_are_served() {
    let app = spawn_app_with(|c| {
        c.connection.max_connections_per_client = 3;
        c.connection.first_request_timeout = Duration::from_secs(30);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.3", app.addr()).await);
    }
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect_from("127.0.0.3", app.addr()).await;
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await);
    // The held connections are still open.
    assert!(!closed_within(&mut held[0], Duration::from_millis(200)).await);
    // Another client address is served; so is the admin port.
    assert_eq!(status_of(app.addr(), "127.0.0.4", "/healthz").await, 200);
    let admin = app.handle.admin_addr().unwrap();
    assert_eq!(status_of(admin, "127.0.0.3", "/healthz").await, 200);
    assert_eq!(
        admin_metric(
            &app,
            "token_authority_connections_rejected_total{listener=\"main\",reason=\"max_connections_per_client\"}"
        )
        .await,
        1
    );
    assert_eq!(
        admin_metric(&app, "token_authority_connections_open{listener=\"main\"}").await,
        3
    );
    // A freed place can be taken again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status_of(app.addr(), "127.0.0.3", "/healthz").await, 200);
}

#[tokio::test]
async fn the_connection_past_the_total_cap_is_closed_and_the_admin_port_answers() {
    let app = spawn_app_with(|c| {
        c.connection.max_connections = 4;
        c.connection.first_request_timeout = Duration::from_secs(30);
    })
    .await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(connect_from(&format!("127.0.1.{}", i + 1), app.addr()).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect_from("127.0.1.9", app.addr()).await;
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await);
    let admin = app.handle.admin_addr().unwrap();
    for _ in 0..3 {
        assert_eq!(status_of(admin, "127.0.1.10", "/readyz").await, 200);
    }
    assert_eq!(
        admin_metric(
            &app,
            "token_authority_connections_rejected_total{listener=\"main\",reason=\"max_connections\"}"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn silent_connections_and_partial_http2_prefaces_are_closed() {
    let app =
        spawn_app_with(|c| c.connection.first_request_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(app.addr()).await.unwrap();
    let mut partial = TcpStream::connect(app.addr()).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // The full preface, but no HEADERS.
    let mut preface = TcpStream::connect(app.addr()).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let start = Instant::now();
    for s in [&mut silent, &mut partial, &mut preface] {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert!(
        admin_metric(
            &app,
            "token_authority_connections_timed_out_total{listener=\"main\",phase=\"first_request\"}"
        )
        .await
            >= 3
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let app = spawn_app_with(|c| {
        c.connection.idle_timeout = Duration::from_millis(400);
        // hyper's own HTTP/1.1 header timer must not be what closes it.
        c.connection.header_read_timeout = Duration::from_secs(30);
    })
    .await;
    let mut s = TcpStream::connect(app.addr()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let start = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert!(
        admin_metric(
            &app,
            "token_authority_connections_timed_out_total{listener=\"main\",phase=\"idle\"}"
        )
        .await
            >= 1
    );
}

/// The request timeout covers every route, the JSON health check
/// included: a body that never completes gets 504.
#[tokio::test]
async fn a_slow_body_on_the_health_route_times_out() {
    let app = spawn_app_with(|c| c.request_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(app.addr()).await.unwrap();
    s.write_all(
        b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: t\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"serv",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
}

const KEY_A: &str = "ta_limits-test-key-a-0123456789";
const KEY_B: &str = "ta_limits-test-key-b-0123456789";

fn caller(name: &str, key: &str) -> CallerConfig {
    CallerConfig {
        name: name.into(),
        api_key_sha256: Some(ApiKeyHash::of_key(key).to_hex()),
        policy: PolicyConfig {
            kinds: Some(vec!["*".into()]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// One caller holding its in-flight limit with unfinished bodies gets 429
/// for more; another caller is served.
#[tokio::test]
async fn one_caller_cannot_take_every_slot() {
    let app = spawn_app_with(|c| {
        c.callers = vec![caller("a", KEY_A), caller("b", KEY_B)];
        c.connection.max_in_flight_per_caller = 2;
        c.request_timeout = Duration::from_secs(30);
    })
    .await;
    let slow = |key: &'static str| {
        let addr = app.addr();
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!(
                    "POST /agora.token.v1.TokenService/BuildRtcToken HTTP/1.1\r\nHost: t\r\n\
                     Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
                     Content-Length: 100\r\n\r\n{{"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            s
        }
    };
    let _held = [slow(KEY_A).await, slow(KEY_A).await];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let get = |key: &str| {
        let addr = app.addr();
        let key = key.to_owned();
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!(
                    "GET /api/agora/token?channelName=c&uid=1 HTTP/1.1\r\nHost: t\r\n\
                     Authorization: Bearer {key}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    let a = get(KEY_A).await;
    assert!(a.starts_with("HTTP/1.1 429"), "{a}");
    assert!(a.contains("in progress"), "{a}");
    let b = get(KEY_B).await;
    assert!(b.starts_with("HTTP/1.1 200"), "{b}");
}

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A client that never opens its flow-control window (a zero-window
/// reader) cannot hold a connection and its response buffers: the response
/// not sent within twice the request timeout closes the connection
/// (`phase="stalled"`), and other clients are served meanwhile.
#[tokio::test]
async fn a_zero_window_reader_is_disconnected() {
    let app = spawn_app_with(|c| {
        c.request_timeout = Duration::from_millis(300);
        c.connection.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let mut s = TcpStream::connect(app.addr()).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0: no stream may send DATA.
    out.extend(h2_frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]));
    // HEADERS (END_STREAM | END_HEADERS) GET /api/agora/token?...: a
    // response with a body, which the window never lets out.
    let path = b"/api/agora/token?channelName=zero-window&uid=7";
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, 1, b't']);
    out.extend(h2_frame(0x1, 0x5, 1, &block));
    s.write_all(&out).await.unwrap();
    let start = Instant::now();
    // Meanwhile, another client is served.
    assert_eq!(app.get("/healthz").await.status, 200);
    assert!(closed_within(&mut s, Duration::from_secs(10)).await);
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert!(
        admin_metric(
            &app,
            "token_authority_connections_timed_out_total{listener=\"main\",phase=\"stalled\"}"
        )
        .await
            >= 1
    );
}
