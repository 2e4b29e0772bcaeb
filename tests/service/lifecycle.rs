//! The built binary under load: certificate rotation by SIGHUP and by a
//! changed file, a bad file that keeps the old credentials, and a graceful
//! shutdown with `--shutdown-delay`. Signals go to the child process (a
//! signal raised in the test process would hit the test runner).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_token::{AppCertificate, UnverifiedToken};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use token_authority::pb::{self, build_rtc_token_request as rtc_req};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::common::{APP_ID, CERT};

const BIN: &str = env!("CARGO_BIN_EXE_token-authority");
/// The certificate rotated to (made up).
const NEW: &str = "00112233445566778899aabbccddeeff";
/// A second rotation's certificate (made up).
const NEWER: &str = "ffeeddccbbaa99887766554433221100";

/// A scratch directory, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ta-life-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// Replaces `name` atomically (write a temporary file, rename it), as
    /// `kubectl`/the kubelet and careful operators do.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running binary, its JSON log lines and its addresses.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<Value>>>,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Proc {
    /// Starts `serve --listen 127.0.0.1:0 --log-format json <args>` in `dir`
    /// with exactly `env`, and waits until it serves.
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(v);
            }
        });
        let mut p = Self {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
        };
        let serving = p.wait_log_blocking(
            |v| v["message"] == "serving gRPC (h2c) and HTTP/1.1",
            Duration::from_secs(20),
        );
        p.addr = serving["addr"].as_str().unwrap().parse().unwrap();
        p.admin = p
            .find_log(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("admin listener"))
            })
            .map(|v| v["addr"].as_str().unwrap().parse().unwrap());
        p
    }

    fn find_log(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.log.lock().unwrap().iter().find(|v| pred(v)).cloned()
    }

    fn count_log(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|v| pred(v)).count()
    }

    fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|v| format!("{v}\n"))
            .collect()
    }

    fn wait_log_blocking(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.find_log(&pred) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exited with {status}:\n{}", self.log_text());
            }
            assert!(
                start.elapsed() < timeout,
                "log line not seen in {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `pred` matches more log lines than `seen` did.
    async fn wait_new_log(
        &self,
        seen: usize,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let start = Instant::now();
        loop {
            let matching: Vec<Value> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|v| pred(v))
                .cloned()
                .collect();
            if matching.len() > seen {
                return matching[seen].clone();
            }
            assert!(
                start.elapsed() < timeout,
                "log line not seen in {timeout:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < timeout, "no exit in {timeout:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn grpc(
        &self,
    ) -> pb::token_service_client::TokenServiceClient<tonic::transport::Channel> {
        pb::token_service_client::TokenServiceClient::new(channel(self.addr).await)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn is_reloaded(trigger: &'static str) -> impl Fn(&Value) -> bool {
    move |v| {
        v["message"] == "configuration reloaded (certificates not shown)" && v["trigger"] == trigger
    }
}

fn is_reload_failure(v: &Value) -> bool {
    v["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("reload failed"))
}

fn verifies(token: &str, cert: &str) -> bool {
    UnverifiedToken::parse(token)
        .unwrap_or_else(|e| panic!("{e}: {token}"))
        .verify(&AppCertificate::new(cert).unwrap())
        .is_ok()
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET path` on `addr`: (status, body).
async fn http_get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), String> {
    let req = hyper::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One token request of the load.
#[derive(Debug)]
struct Sample {
    transport: &'static str,
    start: Instant,
    end: Instant,
    result: Result<String, String>,
}

/// Requests tokens over gRPC (`grpc` tasks, one HTTP/2 connection each) and
/// `GET /api/agora/token` (`http` tasks, keep-alive) until `stop`.
fn start_load(
    addr: SocketAddr,
    grpc: usize,
    http: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Sample>>> {
    let mut tasks = Vec::new();
    for i in 0..grpc {
        let stop = Arc::clone(stop);
        tasks.push(tokio::spawn(async move {
            let mut client = pb::token_service_client::TokenServiceClient::new(channel(addr).await);
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let r = client
                    .build_rtc_token(pb::BuildRtcTokenRequest {
                        channel_name: format!("load-{i}"),
                        user: Some(rtc_req::User::Uid(7)),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().token)
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                out.push(Sample {
                    transport: "grpc",
                    start,
                    end: Instant::now(),
                    result: r,
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            out
        }));
    }
    for i in 0..http {
        let stop = Arc::clone(stop);
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let r = match http_get(
                    &client,
                    addr,
                    &format!("/api/agora/token?channelName=load-{i}&uid=7"),
                )
                .await
                {
                    Ok((200, token)) => Ok(token),
                    Ok((status, body)) => Err(format!("{status}: {body}")),
                    Err(e) => Err(e),
                };
                out.push(Sample {
                    transport: "http",
                    start,
                    end: Instant::now(),
                    result: r,
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            out
        }));
    }
    tasks
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn assert_no_failures(samples: &[Sample]) {
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
}

/// Tokens of `transport` issued entirely before `before` verify with
/// `old`; those requested after `after` verify with `new` and not `old`.
/// Each phase has tokens.
fn assert_rotation(
    samples: &[Sample],
    transport: &str,
    (before, old): (Instant, &str),
    (after, new): (Instant, &str),
) {
    let (mut n_old, mut n_new) = (0, 0);
    for s in samples.iter().filter(|s| s.transport == transport) {
        let Ok(token) = &s.result else { continue };
        assert!(
            verifies(token, old) || verifies(token, new),
            "{transport}: signed with neither certificate"
        );
        if s.end < before {
            assert!(verifies(token, old), "{transport}: token before the swap");
            n_old += 1;
        } else if s.start > after {
            assert!(
                verifies(token, new) && !verifies(token, old),
                "{transport}: token after the reload"
            );
            n_new += 1;
        }
    }
    assert!(
        n_old > 0 && n_new > 0,
        "{transport}: {n_old} before, {n_new} after"
    );
}

/// `[[apps]]` with the certificate in `cert` and a secondary in
/// `cert-secondary` (absent until a rotation); open mode.
fn config(dir: &Dir) -> PathBuf {
    dir.write(
        "ta.toml",
        &format!(
            "mode = \"open\"\n[[apps]]\napp_id = \"{APP_ID}\"\ncertificate_file = \"cert\"\n\
             secondary_certificate_file = \"cert-secondary\"\n"
        ),
    )
}

async fn metric(addr: SocketAddr, series: &str) -> u64 {
    let (_, body) = http_get(&http_client(), addr, "/metrics").await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_under_load_without_a_failed_request() {
    let dir = Dir::new("hup");
    dir.write("cert", &format!("{CERT}\n"));
    let cfg = config(&dir);
    let mut p = Proc::start(&dir.0, &["--config", cfg.to_str().unwrap()], &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(p.addr, 2, 2, &stop);
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Rotation step 2 of docs/KUBERNETES.md: sign with NEW, accept OLD too.
    let swap = Instant::now();
    dir.write("cert", &format!("{NEW}\n"));
    dir.write("cert-secondary", &format!("{CERT}\n"));
    p.signal("-HUP");
    p.wait_new_log(0, is_reloaded("SIGHUP"), Duration::from_secs(10))
        .await;
    let reloaded = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = collect(load).await;

    assert_no_failures(&samples);
    for transport in ["grpc", "http"] {
        assert_rotation(&samples, transport, (swap, CERT), (reloaded, NEW));
    }
    // InspectToken accepts tokens of both certificates during the rotation.
    let old_token = samples
        .iter()
        .find(|s| s.end < swap)
        .and_then(|s| s.result.clone().ok())
        .unwrap();
    let mut c = p.grpc().await;
    for token in [old_token, samples.last().unwrap().result.clone().unwrap()] {
        let ins = c
            .inspect_token(pb::InspectTokenRequest {
                token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ins.signature, pb::SignatureStatus::Valid as i32);
    }
    assert!(
        metric(
            p.addr,
            "token_authority_config_reloads_total{result=\"ok\"}"
        )
        .await
            >= 1
    );
    assert_eq!(
        metric(
            p.addr,
            &format!("token_authority_app_certificates{{app_id=\"{APP_ID}\"}}")
        )
        .await,
        2
    );

    p.signal("-TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    let log = p.log_text();
    for secret in [CERT, NEW] {
        assert!(!log.contains(secret), "a certificate in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_without_a_signal_and_a_bad_one_keeps_the_old_credentials() {
    let dir = Dir::new("poll");
    let cert = dir.write("certificate", &format!("{CERT}\n"));
    // Env-only setup, as in the Kubernetes manifests; the secondary's file
    // does not exist.
    let secondary = dir.0.join("certificate-secondary");
    let mut p = Proc::start(
        &dir.0,
        &[],
        &[
            ("SHENGWANG_APP_ID", APP_ID),
            ("SHENGWANG_APP_CERTIFICATE_FILE", cert.to_str().unwrap()),
            (
                "SHENGWANG_APP_CERTIFICATE_SECONDARY_FILE",
                secondary.to_str().unwrap(),
            ),
        ],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(p.addr, 1, 1, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let swap = Instant::now();
    dir.write("certificate", &format!("{NEW}\n"));
    // The poller checks every 2 s.
    p.wait_new_log(0, is_reloaded("file change"), Duration::from_secs(8))
        .await;
    let reloaded = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A malformed certificate: the reload fails, the last good one stays.
    let bad = "this-is-not-a-certificate-at-all";
    let bad_at = Instant::now();
    dir.write("certificate", bad);
    let failure = p
        .wait_new_log(0, is_reload_failure, Duration::from_secs(8))
        .await;
    let failed = Instant::now();
    let error = failure["error"].as_str().unwrap();
    assert!(error.contains("SHENGWANG_APP_CERTIFICATE_FILE"), "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = collect(load).await;

    assert_no_failures(&samples);
    for transport in ["grpc", "http"] {
        assert_rotation(&samples, transport, (swap, CERT), (reloaded, NEW));
        // Still NEW while (and after) the bad file is in place.
        let later: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.transport == transport && s.start > failed)
            .collect();
        assert!(!later.is_empty());
        for s in later {
            assert!(verifies(s.result.as_ref().unwrap(), NEW));
        }
    }
    assert!(bad_at > reloaded);
    // Up, ready, and the failure is visible in the metrics; reported once.
    let client = http_client();
    assert_eq!(http_get(&client, p.addr, "/readyz").await.unwrap().0, 200);
    assert_eq!(
        metric(
            p.addr,
            "token_authority_config_reloads_total{result=\"error\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(p.addr, "token_authority_config_last_reload_successful").await,
        0
    );
    assert_eq!(p.count_log(is_reload_failure), 1);

    // Fixed again, with a secondary appearing: picked up.
    dir.write("certificate-secondary", &format!("{NEW}\n"));
    dir.write("certificate", &format!("{NEWER}\n"));
    p.wait_new_log(1, is_reloaded("file change"), Duration::from_secs(8))
        .await;
    let (status, token) = http_get(&client, p.addr, "/api/agora/token?channelName=x")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(verifies(&token, NEWER));

    p.signal("-TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    let log = p.log_text();
    for secret in [CERT, NEW, NEWER, bad] {
        assert!(!log.contains(secret), "a certificate in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_delays_then_drains_and_refuses_new_connections() {
    let dir = Dir::new("term");
    // Long enough for the checks below on a busy machine.
    let delay = Duration::from_secs(3);
    let mut p = Proc::start(
        &dir.0,
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--shutdown-delay",
            "3",
            "--shutdown-grace",
            "5",
        ],
        &[
            ("SHENGWANG_APP_ID", APP_ID),
            ("SHENGWANG_APP_CERTIFICATE", CERT),
        ],
    );
    let (addr, admin) = (p.addr, p.admin.unwrap());
    let client = http_client();
    assert_eq!(http_get(&client, admin, "/readyz").await.unwrap().0, 200);
    let mut health = HealthClient::new(channel(addr).await);
    let serving = |svc: &str| HealthCheckRequest {
        service: svc.to_owned(),
    };
    assert_eq!(
        health
            .check(serving("agora.token.v1.TokenService"))
            .await
            .unwrap()
            .into_inner()
            .status,
        ServingStatus::Serving as i32
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(addr, 3, 3, &stop);
    // A request in flight across the end of the delay: its body arrives
    // after the listeners stopped accepting.
    let body = br#"{"channelName":"drain","uid":8}"#;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /agora.token.v1.TokenService/BuildRtcToken HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let term = Instant::now();
    p.signal("-TERM");
    // NOT_SERVING soon, on both ports and in gRPC health...
    let deadline = term + Duration::from_secs(1);
    loop {
        if http_get(&client, admin, "/readyz").await.unwrap().0 == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still 200");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(http_get(&client, addr, "/readyz").await.unwrap().0, 503);
    assert_eq!(
        health
            .check(serving("agora.token.v1.TokenService"))
            .await
            .unwrap()
            .into_inner()
            .status,
        ServingStatus::NotServing as i32
    );
    // ...while still serving, new connections included.
    let (status, token) = http_get(&http_client(), addr, "/api/agora/token?channelName=late")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(verifies(&token, CERT));
    let mut fresh = p.grpc().await;
    fresh
        .build_rtc_token(pb::BuildRtcTokenRequest {
            channel_name: "late".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(term.elapsed() < delay, "the checks took too long");

    // The load stops shortly before the delay ends: nothing failed.
    tokio::time::sleep(
        (term + delay - Duration::from_millis(400)).saturating_duration_since(Instant::now()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let samples = collect(load).await;
    assert_no_failures(&samples);
    for transport in ["grpc", "http"] {
        assert!(
            samples
                .iter()
                .any(|s| s.transport == transport && s.start > term + Duration::from_millis(500)),
            "{transport}: no request served during the delay"
        );
    }

    // After the delay: new connections are refused (the listener is closed).
    let refused_by = term + delay + Duration::from_secs(2);
    let refused = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) => break (e, Instant::now()),
            Ok(_) => {
                assert!(
                    Instant::now() < refused_by,
                    "still accepting after the delay"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(refused.0.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        refused.1 >= term + delay - Duration::from_millis(100),
        "refused before the delay was over: {:?}",
        refused.1 - term
    );

    // The in-flight request completes during the grace period.
    slow.write_all(&body[10..]).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_string(&mut resp))
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
    assert!(verifies(token, CERT));

    // And the process exits 0 well within delay + grace.
    let status = p.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", p.log_text());
    assert!(term.elapsed() < delay + Duration::from_secs(5));
    let log = p.log_text();
    assert!(
        log.contains("still serving during the shutdown delay"),
        "{log}"
    );
    assert!(log.contains("no longer accepting connections"), "{log}");
}

/// The restricted caller's key (made up) and a second caller's.
const SVC_KEY: &str = "ta_svc-test-key-0123456789abcdef";
const OTHER_KEY: &str = "ta_other-test-key-0123456789abcdef";

/// A locked-down config: the app and the caller `svc`, limited to
/// `channels`, then `extra`.
fn locked_config(channels: &str, extra: &str) -> String {
    format!(
        "[[apps]]\napp_id = \"{APP_ID}\"\ncertificate_file = \"cert\"\n\n\
         [[callers]]\nname = \"svc\"\napi_key_sha256 = \"{}\"\nkinds = [\"rtc\"]\n\
         channels = [{channels}]\n{extra}",
        token_authority::policy::ApiKeyHash::of_key(SVC_KEY).to_hex()
    )
}

/// The status of `GET path` on `addr` with `key` as a bearer token.
async fn status_with(client: &HttpClient, addr: SocketAddr, path: &str, key: Option<&str>) -> u16 {
    let mut req = hyper::Request::get(format!("http://{addr}{path}"));
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    resp.status().as_u16()
}

fn is_access_change(trigger: &'static str) -> impl Fn(&Value) -> bool {
    move |v| {
        v["message"] == "configuration reloaded; ACCESS CHANGED (certificates not shown)"
            && v["trigger"] == trigger
    }
}

const LOBBY: &str = "/api/agora/token?channelName=lobby-1&uid=1";
const AGENT: &str = "/api/agora/token?channelName=agent-1&uid=1";

/// The config file is rewritten in place (truncated, then written in small
/// chunks with pauses shorter than the stability window) while a client
/// keeps asking without a key and with the restricted caller's key for a
/// channel outside its globs. No prefix is applied: no request without a
/// key gets a token, the caller never gets the outside channel, and no
/// reload is even attempted until the file is complete; then the new file
/// is applied, logged at WARN with what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_rewrite_never_widens_access_and_the_complete_file_is_applied() {
    let dir = Dir::new("inplace");
    dir.write("cert", &format!("{CERT}\n"));
    let cfg = dir.write("ta.toml", &locked_config("\"agent-*\"", ""));
    let mut p = Proc::start(&dir.0, &["--config", cfg.to_str().unwrap()], &[]);
    let client = http_client();
    assert_eq!(status_with(&client, p.addr, LOBBY, None).await, 401);
    assert_eq!(
        status_with(&client, p.addr, LOBBY, Some(SVC_KEY)).await,
        403
    );
    assert_eq!(
        status_with(&client, p.addr, AGENT, Some(SVC_KEY)).await,
        200
    );

    // The client: (time, status without a key, status of svc for lobby-1).
    // Its source address changes every 10 rounds (127.0.x.y), so that the
    // failed-authentication throttle (20 a minute per address) does not
    // answer 429 instead.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = p.addr;
    let probe = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n: u16 = 0;
            while !stop.load(Ordering::Relaxed) {
                let [hi, lo] = n.to_be_bytes();
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector
                    .set_local_address(Some(std::net::Ipv4Addr::new(127, 1 + hi, lo, 2).into()));
                let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
                n += 1;
                for _ in 0..10 {
                    let at = Instant::now();
                    let anonymous = status_with(&client, addr, LOBBY, None).await;
                    let svc = status_with(&client, addr, LOBBY, Some(SVC_KEY)).await;
                    seen.push((at, anonymous, svc));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            seen
        })
    };

    // The new file widens svc to lobby-* and adds a caller; many of its
    // prefixes are valid files in which svc has no channel limit at all.
    let new = locked_config(
        "\"agent-*\", \"lobby-*\"",
        &format!(
            "\n[[callers]]\nname = \"other\"\napi_key_sha256 = \"{}\"\nkinds = [\"rtc\"]\n",
            token_authority::policy::ApiKeyHash::of_key(OTHER_KEY).to_hex()
        ),
    );
    let writer = {
        let (cfg, new) = (cfg.clone(), new.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut longest = Duration::ZERO;
            let mut file = std::fs::File::create(&cfg).unwrap();
            let mut last = Instant::now();
            // About 3.5 s in all: longer than the poll interval (2 s),
            // so the poller sees the file mid-rewrite at least once.
            for chunk in new.as_bytes().chunks(3) {
                std::thread::sleep(Duration::from_millis(30));
                file.write_all(chunk).unwrap();
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
            (Instant::now(), longest)
        })
    };
    let started = Instant::now();
    let (written, longest) = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    assert!(
        written - started > Duration::from_millis(2_500),
        "the rewrite was too quick"
    );
    // The stable, complete file is applied within a poll and the window.
    let change = p
        .wait_new_log(0, is_access_change("file change"), Duration::from_secs(10))
        .await;
    stop.store(true, Ordering::Relaxed);
    let seen = probe.await.unwrap();

    let during: Vec<_> = seen.iter().filter(|(at, _, _)| *at < written).collect();
    assert!(during.len() > 20, "too few requests during the rewrite");
    for (at, anonymous, svc) in &during {
        assert!(
            *anonymous == 401 && *svc == 403,
            "{:?} into the rewrite (longest pause {longest:?}): without a key {anonymous}, \
             svc for lobby-1 {svc}\n{}",
            at.duration_since(during[0].0),
            p.log_text()
        );
    }
    assert!(
        longest < Duration::from_millis(500),
        "the writer paused {longest:?}: the machine is too slow for this test"
    );
    assert_eq!(p.count_log(is_reload_failure), 0, "{}", p.log_text());
    assert_eq!(
        metric(
            p.addr,
            "token_authority_config_reloads_total{result=\"error\"}"
        )
        .await,
        0
    );
    assert_eq!(
        metric(
            p.addr,
            "token_authority_config_reloads_total{result=\"ok\"}"
        )
        .await,
        1
    );
    assert_eq!(change["level"], "WARN");
    assert_eq!(
        change["changes"],
        "callers added: [other]; callers changed: [svc (channels)]"
    );
    assert_eq!(change["callers"], 2);
    // The new file is in force.
    assert_eq!(
        status_with(&client, p.addr, LOBBY, Some(SVC_KEY)).await,
        200
    );
    assert_eq!(
        status_with(&client, p.addr, LOBBY, Some(OTHER_KEY)).await,
        200
    );
    assert_eq!(status_with(&client, p.addr, LOBBY, None).await, 401);

    p.signal("-TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
}

/// A reload to a file without callers and without `mode = "open"` is
/// refused (the service stays locked down); open mode on purpose is
/// applied and logged at WARN; so is locking it down again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_no_callers_needs_mode_open_and_access_changes_are_warned() {
    let dir = Dir::new("failclosed");
    dir.write("cert", &format!("{CERT}\n"));
    let cfg = dir.write("ta.toml", &locked_config("\"agent-*\"", ""));
    let mut p = Proc::start(&dir.0, &["--config", cfg.to_str().unwrap()], &[]);
    let client = http_client();
    let app = format!("[[apps]]\napp_id = \"{APP_ID}\"\ncertificate_file = \"cert\"\n");

    // The callers removed, open mode not asked for: refused.
    dir.write("ta.toml", &app);
    p.signal("-HUP");
    let failure = p
        .wait_new_log(0, is_reload_failure, Duration::from_secs(10))
        .await;
    let error = failure["error"].as_str().unwrap();
    assert!(
        error.contains("[[callers]]") && error.contains("mode = \"open\""),
        "{error}"
    );
    assert_eq!(status_with(&client, p.addr, LOBBY, None).await, 401);
    assert_eq!(
        status_with(&client, p.addr, LOBBY, Some(SVC_KEY)).await,
        403
    );
    assert_eq!(
        status_with(&client, p.addr, AGENT, Some(SVC_KEY)).await,
        200
    );

    // Open on purpose: applied, at WARN, saying so.
    dir.write("ta.toml", &format!("mode = \"open\"\n{app}"));
    p.signal("-HUP");
    let open = p
        .wait_new_log(0, is_access_change("SIGHUP"), Duration::from_secs(10))
        .await;
    assert_eq!(open["level"], "WARN");
    let changes = open["changes"].as_str().unwrap();
    assert!(
        changes.starts_with("open mode: ON") && changes.ends_with("callers removed: [svc]"),
        "{changes}"
    );
    assert_eq!(status_with(&client, p.addr, LOBBY, None).await, 200);

    // Locked down again.
    dir.write("ta.toml", &locked_config("\"agent-*\"", ""));
    p.signal("-HUP");
    let locked = p
        .wait_new_log(1, is_access_change("SIGHUP"), Duration::from_secs(10))
        .await;
    assert_eq!(locked["changes"], "open mode: off; callers added: [svc]");
    assert_eq!(status_with(&client, p.addr, LOBBY, None).await, 401);

    // A certificate-only change stays at INFO.
    dir.write("cert", &format!("{NEW}\n"));
    p.signal("-HUP");
    let info = p
        .wait_new_log(0, is_reloaded("SIGHUP"), Duration::from_secs(10))
        .await;
    assert_eq!(info["level"], "INFO");

    p.signal("-TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
}
