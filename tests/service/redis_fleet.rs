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
