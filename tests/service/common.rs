//! Test helpers: a server on an ephemeral port and clients for it.

use std::net::SocketAddr;

use agora_token::{AppCertificate, AppId, UnverifiedToken};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use token_authority::config::Config;
use token_authority::domain::AppCredentials;
use token_authority::pb::token_service_client::TokenServiceClient;
use token_authority::server::{self, ServerHandle};
use tonic::transport::Channel;

/// The public SAMPLE app id (not a real project).
pub const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
/// The public SAMPLE certificate (not a real project).
pub const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
/// A second, made-up app.
pub const APP_ID2: &str = "0123456789abcdef0123456789abcdef";
/// Its made-up certificate.
pub const CERT2: &str = "fedcba9876543210fedcba9876543210";

pub fn cert(s: &str) -> AppCertificate {
    AppCertificate::new(s).unwrap()
}

fn creds(id: &str, c: &str) -> AppCredentials {
    AppCredentials {
        app_id: AppId::new(id).unwrap(),
        certificate: cert(c),
        secondary: None,
    }
}

pub struct TestApp {
    pub handle: ServerHandle,
}

/// A server with two apps (the sample app is the default) and an admin port.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with a changed configuration.
pub async fn spawn_app_with(change: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![creds(APP_ID, CERT), creds(APP_ID2, CERT2)],
    );
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    change(&mut config);
    let handle = server::spawn(&config).await.unwrap();
    TestApp { handle }
}

pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl TestApp {
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr()))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn grpc(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel().await)
    }

    pub async fn request_to(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let resp = client
            .request(b.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request_to(self.addr(), "GET", path, None, Vec::new())
            .await
    }

    pub async fn post_json(&self, rpc: &str, body: &str) -> Resp {
        self.request_to(
            self.addr(),
            "POST",
            &format!("/agora.token.v1.TokenService/{rpc}"),
            Some("application/json"),
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// The value of one metrics series (0 when absent).
    pub async fn metric(&self, series: &str) -> u64 {
        let m = self.get("/metrics").await;
        m.body
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

/// Parses a token and checks its signature with `c`.
pub fn verified(token: &str, c: &str) -> UnverifiedToken {
    let t = UnverifiedToken::parse(token).unwrap_or_else(|e| panic!("{e}: {token}"));
    assert!(t.verify(&cert(c)).is_ok(), "signature does not verify");
    t
}

/// The privileges of service `i` as (id, expire) pairs.
pub fn privileges(t: &UnverifiedToken, i: usize) -> Vec<(u16, u32)> {
    t.services()[i].privileges.iter().collect()
}

/// One HTTP/1.1 request on a connection of its own: status, headers and
/// body (POST bodies are JSON).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if method == "POST" {
        b = b.header("content-type", "application/json");
    }
    let resp = send
        .send_request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}
