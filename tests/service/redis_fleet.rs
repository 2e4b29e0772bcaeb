//! The shared store as operators deploy it (issue 20): Redis Sentinel
//! (a master, a replica and a sentinel; the master killed, the sentinel
//! promotes the replica) and a 3-master Redis Cluster, all real
//! `redis-server` processes on loopback ports, started and killed by the
//! test. Each test runs two server instances ("replicas") with their own
//! store connection and caches.
//!
//! Timing: outcomes only, with bounds where the brief asks for them
//! (shared again within 5 s of the sentinel naming the new master).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use token_authority::policy::store::StoreFailure;

use crate::common::TestApp;
use crate::redis_limits::{KEY, KEY2, count, free_port, ipv4_key, replica, store, token_at};

/// A `redis-server` process with `args`, on `port`, killed when dropped.
struct Proc {
    child: Option<Child>,
    port: u16,
}

impl Proc {
    fn start(port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}); .ci/run installs it"));
        let p = Self {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(port, &["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis on {port} did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// A data node on a free port (no persistence), with `extra` settings.
    fn node(dir: &std::path::Path, extra: &[&str]) -> Self {
        let port = free_port();
        let port_s = port.to_string();
        let dir_s = dir.display().to_string();
        let mut args = vec![
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir_s,
        ];
        args.extend_from_slice(extra);
        Self::start(port, &args)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p PORT ARGS...` (raw output, trimmed), `None` if it failed.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ta-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `f` holds, polling, for at most `secs` seconds.
async fn wait_for(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` requests of `key` spread round-robin over `apps`; the statuses.
async fn spread(apps: &[TestApp], n: usize, key: Option<&str>) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(token_at(apps[i % apps.len()].addr(), key).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_shares_limits_and_follows_a_failover() {
    let dir = temp_dir("sentinel");
    let mut master = Proc::node(&dir, &[]);
    let m_port = master.port.to_string();
    let replica_node = Proc::node(&dir, &["--replicaof", "127.0.0.1", &m_port]);
    let s_port = free_port();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {s_port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor fleet 127.0.0.1 {m_port} 1\n\
             sentinel down-after-milliseconds fleet 1000\n\
             sentinel failover-timeout fleet 5000\n",
            dir.display()
        ),
    )
    .unwrap();
    let _sentinel = Proc::start(s_port, &[conf.to_str().unwrap(), "--sentinel"]);
    // The sentinel must know the replica to promote it.
    wait_for(20, "the sentinel sees the replica", async || {
        cli(s_port, &["SENTINEL", "REPLICAS", "fleet"])
            .is_some_and(|r| r.contains(&replica_node.port.to_string()))
    })
    .await;

    let url = format!("redis+sentinel://127.0.0.1:{s_port}/fleet/0");
    let cfg = store(&url, "s1", StoreFailure::Local, None);
    let apps = [replica(cfg.clone()).await, replica(cfg).await];
    for a in &apps {
        assert_eq!(a.metric("token_authority_rate_limit_store_up").await, 1);
    }
    // One bucket of 10 across both replicas, in the master.
    let statuses = spread(&apps, 16, Some(KEY)).await;
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 6, "{statuses:?}");
    assert_eq!(
        cli(master.port, &["EXISTS", "s1:c:fleet"]).as_deref(),
        Some("1")
    );

    // The master dies; the sentinel promotes the replica.
    master.kill();
    let new_port = replica_node.port.to_string();
    wait_for(30, "the sentinel names the new master", async || {
        cli(s_port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "fleet"])
            .is_some_and(|r| r.lines().nth(1) == Some(new_port.as_str()))
    })
    .await;
    // Each replica notices at its next request (anonymous: not counted
    // below) and follows the sentinel within 5 s.
    for a in &apps {
        let _ = token_at(a.addr(), None).await;
    }
    wait_for(5, "shared again after the failover", async || {
        let mut up = 0;
        for a in &apps {
            if a.metric("token_authority_rate_limit_store_up").await == 1 {
                up += 1;
            } else {
                let _ = token_at(a.addr(), None).await;
            }
        }
        up == apps.len()
    })
    .await;
    // `other` has one bucket of 10 again, in the new master.
    let statuses = spread(&apps, 16, Some(KEY2)).await;
    assert_eq!(count(&statuses, 200), 10, "shared again: {statuses:?}");
    assert_eq!(
        cli(replica_node.port, &["EXISTS", "s1:c:other"]).as_deref(),
        Some("1")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 3-master Redis Cluster on loopback (no replicas), its slots assigned
/// by `redis-cli --cluster create`.
fn cluster(dir: &std::path::Path) -> Vec<Proc> {
    let nodes: Vec<Proc> = (0..3)
        .map(|i| {
            let conf = dir.join(format!("nodes-{i}.conf"));
            Proc::node(
                dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--cluster-node-timeout",
                    "5000",
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .arg("--cluster-yes")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        while !cli(n.port, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster is not ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shares_limits_and_the_throttle() {
    let dir = temp_dir("cluster");
    let nodes = cluster(&dir);
    let url = format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
        nodes[0].port, nodes[1].port
    );
    let cfg = store(&url, "k1", StoreFailure::Local, None);
    let apps = [replica(cfg.clone()).await, replica(cfg).await];
    for a in &apps {
        assert_eq!(a.metric("token_authority_rate_limit_store_up").await, 1);
    }
    // A caller's bucket and an anonymous client's: one each for the fleet.
    let statuses = spread(&apps, 16, Some(KEY)).await;
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 6, "{statuses:?}");
    let statuses = spread(&apps, 8, None).await;
    assert_eq!(count(&statuses, 200), 4, "anonymous: {statuses:?}");

    // The keys are in the cluster (wherever their slots are), with a TTL.
    let anon = format!("k1:a:{:032x}", ipv4_key("127.0.0.1"));
    for key in ["k1:c:fleet", anon.as_str()] {
        let ttl: i64 = cli(nodes[0].port, &["-c", "PTTL", key])
            .unwrap()
            .parse()
            .unwrap();
        assert!(ttl > 0, "{key}: {ttl}");
    }

    // A flushed script cache on every node (NOSCRIPT): loaded again.
    for n in &nodes {
        assert_eq!(cli(n.port, &["SCRIPT", "FLUSH"]).as_deref(), Some("OK"));
    }
    let statuses = spread(&apps, 4, Some(KEY2)).await;
    assert_eq!(count(&statuses, 200), 4, "after SCRIPT FLUSH: {statuses:?}");

    // The failed-authentication throttle (its key in another slot than
    // the caller's bucket): 20 failures over both replicas, then the
    // address is refused everywhere, even with a valid key.
    for i in 0..20 {
        let status = token_at(apps[i % 2].addr(), Some("ta_guess")).await.0;
        assert_eq!(status, 401, "failure {i}");
    }
    for a in &apps {
        let (status, retry, body) = token_at(a.addr(), Some(KEY2)).await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("failed authentications"), "{body}");
        assert!(retry.is_some());
    }
    for a in &apps {
        assert_eq!(a.metric("token_authority_rate_limit_store_up").await, 1);
        assert_eq!(
            a.metric("token_authority_rate_limit_store_errors_total")
                .await,
            0
        );
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

mod watches {
    //! `WatchToken` with the shared store: renewals take from the caller's
    //! shared bucket, and `max_watches_per_caller` holds across the fleet
    //! (leases in Redis that expire when their replica dies).

    use std::sync::Arc;

    use token_authority::domain::ManualClock;
    use token_authority::pb::token_service_client::TokenServiceClient;
    use token_authority::pb::watch_token_request::Request as W;
    use token_authority::pb::{self, WatchTokenRequest, WatchTokenResponse};
    use token_authority::policy::store::StoreConfig;
    use token_authority::policy::{ApiKeyHash, CallerConfig, PolicyConfig};
    use tonic::{Code, Streaming};

    use super::*;
    use crate::common::spawn_app_with;
    use crate::redis_limits::Replica;

    const T0: u32 = 1_800_000_000;

    fn rtc() -> WatchTokenRequest {
        WatchTokenRequest {
            request: Some(W::Rtc(pb::BuildRtcTokenRequest {
                channel_name: "watched".into(),
                user: Some(pb::build_rtc_token_request::User::Uid(42)),
                ..Default::default()
            })),
            renew_before_seconds: None,
        }
    }

    async fn open(
        addr: std::net::SocketAddr,
        key: &str,
    ) -> Result<Streaming<WatchTokenResponse>, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = TokenServiceClient::new(channel);
        let mut r = tonic::Request::new(rtc());
        r.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        c.watch_token(r).await.map(tonic::Response::into_inner)
    }

    async fn next(
        s: &mut Streaming<WatchTokenResponse>,
    ) -> Result<WatchTokenResponse, tonic::Status> {
        match s.message().await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(tonic::Status::ok("the stream ended")),
            Err(e) => Err(e),
        }
    }

    /// A replica on `clock`: `fleet` (KEY: burst 4, no refill during the
    /// test) and `other` (KEY2: burst 10); at most 3 watches per caller.
    async fn replica_on(clock: &Arc<ManualClock>, store: StoreConfig) -> TestApp {
        let clock = Arc::clone(clock);
        spawn_app_with(move |c| {
            let caller = |name: &str, key: &str, burst| CallerConfig {
                name: name.into(),
                api_key_sha256: Some(ApiKeyHash::of_key(key).to_hex()),
                policy: PolicyConfig {
                    kinds: Some(vec!["*".into()]),
                    rate_per_second: Some(0.0001),
                    burst: Some(burst),
                    ..Default::default()
                },
                ..Default::default()
            };
            c.callers = vec![caller("fleet", KEY, 4), caller("other", KEY2, 10)];
            c.connection.max_watches_per_caller = 3;
            c.clock = clock;
            c.rate_limit_store = Some(store);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renewals_take_from_the_shared_bucket_and_the_cap_holds_fleet_wide() {
        let dir = temp_dir("watch-redis");
        let redis = Proc::node(&dir, &[]);
        let url = format!("redis://127.0.0.1:{}/0", redis.port);
        let clock = Arc::new(ManualClock::new(T0));
        let cfg = store(&url, "w1", StoreFailure::Local, None);
        let (a, b) = (
            replica_on(&clock, cfg.clone()).await,
            replica_on(&clock, cfg).await,
        );

        // `fleet` opens a watch on A (one token of 4), then spends the
        // other three on B: the renewal on A finds the shared bucket
        // empty (A's own bucket was never touched: it is full) and, the
        // wait being longer than the token lives, ends the stream.
        let mut s = open(a.addr(), KEY).await.unwrap();
        let m = next(&mut s).await.unwrap();
        for _ in 0..3 {
            assert_eq!(token_at(b.addr(), Some(KEY)).await.0, 200);
        }
        assert_eq!(token_at(b.addr(), Some(KEY)).await.0, 429);
        clock.set(m.renew_at);
        let e = next(&mut s).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("rate limit"), "{}", e.message());

        // `other`: 3 watches at most across A and B.
        let mut streams = Vec::new();
        for app in [&a, &a, &b] {
            let mut s = open(app.addr(), KEY2).await.unwrap();
            next(&mut s).await.unwrap();
            streams.push(s);
        }
        for app in [&a, &b] {
            let e = open(app.addr(), KEY2).await.unwrap_err();
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
            assert!(e.message().contains("max_watches_per_caller"), "{e:?}");
        }
        assert_eq!(
            a.metric("token_authority_rate_limit_store_watch_leases")
                .await,
            2
        );
        assert_eq!(
            cli(redis.port, &["ZCARD", "w1:w:c:other"]).as_deref(),
            Some("3")
        );
        let ttl: i64 = cli(redis.port, &["PTTL", "w1:w:c:other"])
            .unwrap()
            .parse()
            .unwrap();
        assert!(ttl > 0 && ttl <= 15_000, "lease set ttl {ttl}");
        // A watch on A ends: its place is free on B (once A sees it go).
        drop(streams.remove(0));
        wait_for(10, "the closed watch's place", async || {
            match open(b.addr(), KEY2).await {
                Ok(mut s) => {
                    next(&mut s).await.unwrap();
                    streams.push(s);
                    true
                }
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                    false
                }
            }
        })
        .await;
        drop(streams);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_replicas_watches_stop_counting_when_their_leases_expire() {
        let dir = temp_dir("watch-procs");
        let redis = Proc::node(&dir, &[]);
        let config = dir.join("ta.toml");
        std::fs::write(
            &config,
            format!(
                "[[callers]]\nname = \"fleet\"\napi_key_sha256 = \"{}\"\nkinds = [\"*\"]\n\
                 rate_per_second = 1\nburst = 100\n\
                 [limits]\nmax_watches_per_caller = 2\nrate_limit_store_timeout_ms = 1000\n\
                 rate_limit_store_key_prefix = \"w2\"\n",
                ApiKeyHash::of_key(KEY).to_hex()
            ),
        )
        .unwrap();
        let url = format!("redis://127.0.0.1:{}/0", redis.port);
        let env = [("TOKEN_AUTHORITY_RATE_LIMIT_STORE", url.as_str())];
        let mut doomed = Replica::start(&config, &env);
        let survivor = Replica::start(&config, &env);
        // Two watches on the doomed replica: the fleet's cap.
        let mut streams = Vec::new();
        for _ in 0..2 {
            let mut s = open(doomed.addr, KEY).await.unwrap();
            next(&mut s).await.unwrap();
            streams.push(s);
        }
        let e = open(survivor.addr, KEY).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        // SIGKILL: nothing removes its leases...
        doomed.kill();
        drop(streams);
        let e = open(survivor.addr, KEY).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        // ...they expire (15 s without a refresh), and the places are free.
        let mut opened = Vec::new();
        wait_for(
            30,
            "the dead replica's leases expire",
            async || match open(survivor.addr, KEY).await {
                Ok(mut s) => {
                    next(&mut s).await.unwrap();
                    opened.push(s);
                    true
                }
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    false
                }
            },
        )
        .await;
        let mut s = open(survivor.addr, KEY).await.unwrap();
        next(&mut s).await.unwrap();
        let e = open(survivor.addr, KEY).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "cap 2 again: {e:?}");
        drop((s, opened, survivor));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
