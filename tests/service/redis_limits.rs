//! Fleet-wide rate limits in a real Redis (issue 20): several server
//! instances ("replicas", each with its own limiters, connection and
//! over-limit cache) share one `redis-server` that the test starts on a
//! free port and kills itself. No mock: Redis is the Debian package
//! (`.ci/run` installs it).
//!
//! Timing: real sockets and a real Redis; assertions on outcomes, with
//! generous bounds where time matters (recovery within 10 s, a request
//! within 2 s while the store is silent).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use token_authority::policy::store::{StoreConfig, StoreFailure};
use token_authority::policy::{AnonymousConfig, ApiKeyHash, CallerConfig, PolicyConfig};

use crate::common::{TestApp, spawn_app_with};

pub(crate) const KEY: &str = "ta_fleet-test-key-0123456789";
pub(crate) const KEY2: &str = "ta_fleet-other-key-0123456789";
const PASSWORD: &str = "fleet-redis-s3cret";

/// A `redis-server` on a loopback port, killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    password: Option<&'static str>,
    /// With TLS only (`--tls-port`): the server's certificate and key.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start(password: Option<&'static str>) -> Self {
        let mut r = Self {
            child: None,
            port: free_port(),
            password,
            tls: None,
        };
        r.restart();
        r
    }

    /// A Redis that speaks TLS only, with `cert` and `key`.
    fn start_tls(cert: std::path::PathBuf, key: std::path::PathBuf) -> Self {
        let mut r = Self {
            child: None,
            port: free_port(),
            password: None,
            tls: Some((cert, key)),
        };
        r.restart();
        r
    }

    /// (Re)starts the server on its port (empty: no persistence).
    fn restart(&mut self) {
        let dir = std::env::temp_dir();
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): install it (`apt-get install redis-server`; .ci/run does)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let up = if self.tls.is_some() {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                self.command(&["PING"]).is_some_and(|r| r == "+PONG")
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command over RESP; the first line of the answer (with
    /// `*N` arrays, the first element).
    fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut send = |args: &[&str]| {
            let mut out = format!("*{}\r\n", args.len());
            for a in args {
                out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            s.write_all(out.as_bytes()).ok()
        };
        if let Some(p) = self.password {
            send(&["AUTH", p])?;
        }
        send(args)?;
        let mut r = BufReader::new(s.try_clone().ok()?);
        let mut line = String::new();
        if self.password.is_some() {
            r.read_line(&mut line).ok()?;
            line.clear();
        }
        r.read_line(&mut line).ok()?;
        let mut line = line.trim_end().to_owned();
        if line.starts_with('*') || line.starts_with('$') {
            if line.starts_with('*') {
                line.clear();
                r.read_line(&mut line).ok()?;
                line = line.trim_end().to_owned();
            }
            if line.starts_with('$') && line != "$-1" {
                line.clear();
                r.read_line(&mut line).ok()?;
                line = line.trim_end().to_owned();
            }
        }
        Some(line)
    }

    fn pttl(&self, key: &str) -> i64 {
        let r = self.command(&["PTTL", key]).unwrap();
        r.trim_start_matches(':').parse().unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The store settings of a test. The timeout is generous (1 s) where a test
/// counts shared decisions: on a loaded machine (parallel tests, CI) a
/// 25 ms answer is not guaranteed, and one late answer would switch a
/// replica to its own limits. The silent-store test uses the default.
pub(crate) fn store(
    url: &str,
    prefix: &str,
    failure: StoreFailure,
    password: Option<&str>,
) -> StoreConfig {
    store_with(url, prefix, failure, password, 1000)
}

fn store_with(
    url: &str,
    prefix: &str,
    failure: StoreFailure,
    password: Option<&str>,
    timeout_ms: u64,
) -> StoreConfig {
    StoreConfig::new(
        url,
        password.map(str::to_owned),
        Some(timeout_ms),
        Some(failure),
        Some(prefix.to_owned()),
        None,
    )
    .unwrap()
}

/// A replica: the callers `fleet` and `other` (each burst 10, one token per 100 s: no refill
/// during a test) and anonymous GET (burst 4, same rate).
pub(crate) async fn replica(store: StoreConfig) -> TestApp {
    replica_with(store, 0.01, 10).await
}

/// [`replica`] with the caller's rate and burst.
async fn replica_with(store: StoreConfig, rate: f64, burst: u32) -> TestApp {
    spawn_app_with(|c| {
        let caller = |name: &str, key: &str| CallerConfig {
            name: name.into(),
            api_key_sha256: Some(ApiKeyHash::of_key(key).to_hex()),
            policy: PolicyConfig {
                kinds: Some(vec!["*".into()]),
                rate_per_second: Some(rate),
                burst: Some(burst),
                ..Default::default()
            },
            ..Default::default()
        };
        // `other` (KEY2): a second caller with the same limits.
        c.callers = vec![caller("fleet", KEY), caller("other", KEY2)];
        c.anonymous = Some(AnonymousConfig {
            channels: Some(vec!["public-*".into()]),
            rate_per_second: Some(0.01),
            burst: Some(4),
            ..Default::default()
        });
        c.rate_limit_store = Some(store);
    })
    .await
}

/// A token request of the caller (`key`), or anonymous; status,
/// Retry-After and body.
async fn token(app: &TestApp, key: Option<&str>) -> (u16, Option<String>, String) {
    token_at(app.addr(), key).await
}

pub(crate) async fn token_at(addr: SocketAddr, key: Option<&str>) -> (u16, Option<String>, String) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .uri("/api/agora/token?channelName=public-1&uid=9&role=subscriber")
        .header("host", "localhost");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    let resp = send
        .send_request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

/// `n` requests spread round-robin over `apps`; the statuses.
async fn spread(apps: &[&TestApp], n: usize, key: Option<&str>) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        let (status, retry, body) = token(apps[i % apps.len()], key).await;
        if status == 429 {
            assert!(retry.is_some(), "429 without Retry-After: {body}");
        }
        out.push(status);
    }
    out
}

pub(crate) fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn wait_store_up(app: &TestApp, up: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if app.metric("token_authority_rate_limit_store_up").await == up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rate_limit_store_up did not become {up} within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_and_anonymous_limits_hold_in_total_across_replicas() {
    let redis = Redis::start(Some(PASSWORD));
    // The password comes from outside the URL (as from *_FILE).
    let cfg = store(&redis.url(), "t1", StoreFailure::Local, Some(PASSWORD));
    let apps = [
        replica(cfg.clone()).await,
        replica(cfg.clone()).await,
        replica(cfg).await,
    ];
    let refs: Vec<&TestApp> = apps.iter().collect();
    for a in &apps {
        assert_eq!(a.metric("token_authority_rate_limit_store_up").await, 1);
    }
    // Burst 10 for the caller: 10 tokens in total over three replicas.
    let statuses = spread(&refs, 30, Some(KEY)).await;
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 20, "{statuses:?}");
    assert!(statuses[..10].iter().all(|s| *s == 200), "{statuses:?}");
    let (_, retry, body) = token(&apps[0], Some(KEY)).await;
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry), "{retry} {body}");
    // Refused keys are refused locally: after each replica's first
    // refusal, no round trip.
    let mut cached = 0;
    for a in &apps {
        cached += a
            .metric("token_authority_rate_limit_store_cached_refusals_total")
            .await;
    }
    assert!(cached >= 17, "cached refusals: {cached}");

    // Anonymous (per client address): burst 4 in total.
    let statuses = spread(&refs, 12, None).await;
    assert_eq!(count(&statuses, 200), 4, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 8, "{statuses:?}");

    // Keys are namespaced and expire when idle (a bucket when it is full
    // again: 10 tokens at 0.01/s is 1000 s).
    let ttl = redis.pttl("t1:c:fleet");
    assert!(ttl > 0 && ttl <= 1_001_000, "caller bucket ttl {ttl}");
    let anon_key = format!("t1:a:{:032x}", ipv4_key("127.0.0.1"));
    let ttl = redis.pttl(&anon_key);
    assert!(ttl > 0 && ttl <= 401_000, "anonymous bucket ttl {ttl}");

    // A flushed script cache (NOSCRIPT) is loaded again, the state kept.
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).unwrap(), "+OK");
    let (status, _, body) = token_at(apps[1].addr(), None).await;
    assert_eq!(status, 429, "{body}");
    let (status, _, _) = token_at(apps[1].addr(), Some("ta_wrong-key")).await;
    assert_eq!(status, 401);
    assert!(redis.pttl(&format!("t1:f:{:032x}", ipv4_key("127.0.0.1"))) > 0);
    for a in &apps {
        assert_eq!(a.metric("token_authority_rate_limit_store_up").await, 1);
        assert_eq!(
            a.metric("token_authority_rate_limit_store_errors_total")
                .await,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_buckets_refill_at_their_rate() {
    let redis = Redis::start(None);
    let cfg = store(&redis.url(), "t7", StoreFailure::Local, None);
    // 4 tokens a second, burst 2, over two replicas.
    let apps = [
        replica_with(cfg.clone(), 4.0, 2).await,
        replica_with(cfg, 4.0, 2).await,
    ];
    let refs: Vec<&TestApp> = apps.iter().collect();
    let statuses = spread(&refs, 4, Some(KEY)).await;
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    // A refusal says when: a token refills in 250 ms (Retry-After rounds up).
    let (status, retry, _) = token(&apps[0], Some(KEY)).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")));
    // After 600 ms at least one more token (two at most: the burst).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let statuses = spread(&refs, 4, Some(KEY)).await;
    let ok = count(&statuses, 200);
    assert!((1..=2).contains(&ok), "{statuses:?}");
}

/// The anonymous limiter's key of an IPv4 address (as the server keys it).
pub(crate) fn ipv4_key(ip: &str) -> u128 {
    token_authority::policy::client_key(ip.parse().unwrap(), 64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failed_authentication_throttle_is_shared() {
    let redis = Redis::start(None);
    let cfg = store(&redis.url(), "t2", StoreFailure::Local, None);
    let apps = [replica(cfg.clone()).await, replica(cfg).await];
    // 20 failures in the window, spread over both replicas: all 401.
    for i in 0..20 {
        let (status, _, body) = token_at(apps[i % 2].addr(), Some("ta_guess")).await;
        assert_eq!(status, 401, "failure {i}: {body}");
    }
    // Now the address is throttled on both, even with a valid key.
    for a in &apps {
        let (status, retry, body) = token(a, Some(KEY)).await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("failed authentications"), "{body}");
        let retry: u64 = retry.unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    let ttl = redis.pttl(&format!("t2:f:{:032x}", ipv4_key("127.0.0.1")));
    assert!(ttl > 0 && ttl <= 60_000, "throttle ttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_to_local_limits_and_shares_again_when_back() {
    let mut redis = Redis::start(None);
    let cfg = store(&redis.url(), "t3", StoreFailure::Local, None);
    let apps = [replica(cfg.clone()).await, replica(cfg).await];
    let refs: Vec<&TestApp> = apps.iter().collect();
    let statuses = spread(&refs, 4, Some(KEY)).await;
    assert_eq!(count(&statuses, 200), 4);

    redis.kill();
    // Each replica falls back to its own bucket (burst 10): never
    // unlimited, at most replicas × limit.
    for a in &apps {
        let statuses = spread(&[a], 15, Some(KEY)).await;
        assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
        assert_eq!(count(&statuses, 429), 5, "{statuses:?}");
        assert_eq!(a.metric("token_authority_rate_limit_store_up").await, 0);
        assert!(
            a.metric("token_authority_rate_limit_store_errors_total")
                .await
                >= 1
        );
        // Readiness is unaffected.
        assert_eq!(a.get("/readyz").await.status, 200);
    }

    // Redis back (empty: a restart): shared again within seconds.
    redis.restart();
    for a in &apps {
        wait_store_up(a, 1).await;
    }
    let statuses = spread(&refs, 20, Some(KEY)).await;
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 10, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_refuses_with_503_while_redis_is_down() {
    let mut redis = Redis::start(None);
    let app = replica(store(&redis.url(), "t4", StoreFailure::Deny, None)).await;
    assert_eq!(token(&app, Some(KEY)).await.0, 200);
    redis.kill();
    let (status, _, body) = token(&app, Some(KEY)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("rate_limit_store_failure"), "{body}");
    let (status, _, body) = token(&app, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(app.get("/readyz").await.status, 200);
    redis.restart();
    wait_store_up(&app, 1).await;
    assert_eq!(token(&app, Some(KEY)).await.0, 200);
}

/// Accepts connections and never answers (a hung Redis, a black hole).
fn silent_listener() -> (TcpListener, std::thread::JoinHandle<()>, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let l2 = l.try_clone().unwrap();
    l2.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            match l2.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            if held.len() > 64 {
                break;
            }
        }
    });
    (l, t, addr)
}

/// `n` requests of the caller, each answered within 2 s (a generous bound:
/// a stalled store would hold them for good); their statuses.
async fn prompt_statuses(app: &TestApp, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        statuses.push(token(app, Some(KEY)).await.0);
        assert!(start.elapsed() < Duration::from_secs(2), "{statuses:?}");
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_store_never_stalls_requests() {
    // A listener that accepts and never answers, from the start: the
    // replica starts (after at most its 1 s connect wait) in fallback.
    let (_l, _t, addr) = silent_listener();
    let url = format!("redis://{addr}/0");
    let app = replica(store_with(&url, "t5", StoreFailure::Local, None, 25)).await;
    let statuses = prompt_statuses(&app, 12).await;
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(app.metric("token_authority_rate_limit_store_up").await, 0);
    let deny = replica(store_with(&url, "t5", StoreFailure::Deny, None, 25)).await;
    let start = Instant::now();
    assert_eq!(token(&deny, Some(KEY)).await.0, 503);
    assert!(start.elapsed() < Duration::from_secs(2));

    // A connected Redis that stops answering (SIGSTOP): the request in
    // flight waits at most the timeout (250 ms here), then local; SIGCONT:
    // shared again.
    let redis = Redis::start(None);
    let app = replica(store_with(
        &redis.url(),
        "t6",
        StoreFailure::Local,
        None,
        250,
    ))
    .await;
    assert_eq!(token(&app, Some(KEY)).await.0, 200);
    redis.signal("-STOP");
    let statuses = prompt_statuses(&app, 12).await;
    // The local bucket is full (10): never unlimited.
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(app.metric("token_authority_rate_limit_store_up").await, 0);
    redis.signal("-CONT");
    wait_store_up(&app, 1).await;
    // Shared again: the store's bucket had 9 left, less the decision that
    // timed out while Redis was stopped: Redis ran it when it woke up (a
    // timed-out call may still count; it never counts less).
    let statuses = spread(&[&app], 12, Some(KEY)).await;
    let ok = count(&statuses, 200);
    assert!((8..=9).contains(&ok), "{statuses:?}");
}

/// The built binary as a replica: `serve` with a config file and the
/// environment, its log lines collected; killed when dropped.
pub(crate) struct Replica {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub(crate) addr: SocketAddr,
}

impl Replica {
    // The child is killed and waited for by `Drop` once it is a `Replica`,
    // and before the panic when it never serves.
    #[allow(clippy::zombie_processes)]
    pub(crate) fn start(config: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_token-authority"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--config")
            .arg(config)
            .current_dir(config.parent().unwrap())
            .env_clear()
            .env("RUST_LOG", "info")
            .env("SHENGWANG_APP_ID", crate::common::APP_ID)
            .env("SHENGWANG_APP_CERTIFICATE", crate::common::CERT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let addr = log.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "serving gRPC (h2c) and HTTP/1.1")
                    .then(|| v["addr"].as_str()?.parse().ok())?
            });
            if let Some(addr) = addr {
                return Self { child, log, addr };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the replica did not serve: {:?}", log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lines_with(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Waits (up to 10 s: the log is written in batches) until a line
    /// with `text` is there.
    async fn wait_line(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.lines_with(text) == 0 {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in {}",
                self.whole_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn whole_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Replica {
    /// SIGKILL: the process ends without a word (a crash).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_processes_share_limits_warn_once_and_never_log_the_password() {
    let mut redis = Redis::start(Some(PASSWORD));
    let dir = std::env::temp_dir().join(format!("ta-redis-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ta.toml");
    std::fs::write(
        &config,
        format!(
            "[[callers]]\nname = \"fleet\"\napi_key_sha256 = \"{}\"\nkinds = [\"*\"]\n\
             rate_per_second = 0.01\nburst = 10\n\
             [[callers]]\nname = \"other\"\napi_key_sha256 = \"{}\"\nkinds = [\"*\"]\n\
             rate_per_second = 0.01\nburst = 10\n\
             [limits]\nrate_limit_store_timeout_ms = 1000\nrate_limit_store_key_prefix = \"bin\"\n",
            ApiKeyHash::of_key(KEY).to_hex(),
            ApiKeyHash::of_key(KEY2).to_hex()
        ),
    )
    .unwrap();
    let pw = dir.join("redis-password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let url = redis.url();
    let pw_path = pw.display().to_string();
    let env = [
        ("TOKEN_AUTHORITY_RATE_LIMIT_STORE", url.as_str()),
        (
            "TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD_FILE",
            pw_path.as_str(),
        ),
    ];
    let replicas = [Replica::start(&config, &env), Replica::start(&config, &env)];
    for r in &replicas {
        assert_eq!(
            r.lines_with("rate limits are shared in the rate limit store"),
            1
        );
    }
    // Two processes, one bucket of 10.
    let mut statuses = Vec::new();
    for i in 0..16 {
        statuses.push(token_at(replicas[i % 2].addr, Some(KEY)).await.0);
    }
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 6, "{statuses:?}");

    // Redis down: each falls back (one WARN each, however many requests).
    // `fleet` stays refused (its refusal is cached until its retry time);
    // `other` gets its own full bucket on each replica.
    redis.kill();
    for r in &replicas {
        assert_eq!(token_at(r.addr, Some(KEY)).await.0, 429);
        for _ in 0..3 {
            let (status, _, body) = token_at(r.addr, Some(KEY2)).await;
            assert_eq!(status, 200, "its own full bucket: {body}");
        }
        r.wait_line("the rate limit store failed").await;
    }
    // Back: one WARN each, within seconds.
    redis.restart();
    for r in &replicas {
        r.wait_line("the rate limit store answers again").await;
    }
    // The restarted Redis is empty: `other` has one shared bucket of 10 again.
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(token_at(replicas[i % 2].addr, Some(KEY2)).await.0);
    }
    assert_eq!(count(&statuses, 200), 10, "shared again: {statuses:?}");
    // Every line so far is out (the requests above waited for their own).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in &replicas {
        assert_eq!(r.lines_with("the rate limit store failed"), 1);
        assert_eq!(r.lines_with("the rate limit store answers again"), 1);
        let log = r.whole_log();
        assert!(!log.contains(PASSWORD), "the password is logged: {log}");
        assert!(
            log.contains(&format!("redis://127.0.0.1:{}/0", redis.port)),
            "{log}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_is_shared_and_an_untrusted_certificate_is_not_used() {
    // A private CA and a server certificate for 127.0.0.1.
    let dir = std::env::temp_dir().join(format!("ta-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "redis test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let redis = Redis::start_tls(dir.join("server.pem"), dir.join("server.key"));
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);

    let trusted = store(&url, "tls", StoreFailure::Local, None)
        .with_ca_pem("ca", ca.pem().into_bytes())
        .unwrap();
    let apps = [replica(trusted.clone()).await, replica(trusted).await];
    let refs: Vec<&TestApp> = apps.iter().collect();
    for a in &apps {
        assert_eq!(a.metric("token_authority_rate_limit_store_up").await, 1);
    }
    let statuses = spread(&refs, 16, Some(KEY)).await;
    assert_eq!(count(&statuses, 200), 10, "shared over TLS: {statuses:?}");

    // The system's roots do not know this CA: the store is not used (its
    // own limits), never an unverified connection.
    let untrusted = replica(store(&url, "tls2", StoreFailure::Local, None)).await;
    assert_eq!(
        untrusted
            .metric("token_authority_rate_limit_store_up")
            .await,
        0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
