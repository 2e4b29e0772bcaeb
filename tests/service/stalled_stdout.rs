//! The built binary with its stdout on a pipe that nobody reads: the main
//! log never blocks a request (health, tokens), drops and counts lines
//! instead, marks the gap with two WARN lines once stdout is read again,
//! and a shutdown does not hang on the stalled pipe.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{APP_ID, CERT};

const BIN: &str = env!("CARGO_BIN_EXE_token-authority");

/// Starts the server (JSON logs) and reads its stdout only up to the line
/// with its address; from then on nobody reads the pipe.
fn start(name: &str) -> (Child, BufReader<ChildStdout>, String) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ta-stall-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--shutdown-grace", "1"])
        .current_dir(dir)
        .env_clear()
        .env("SHENGWANG_APP_ID", APP_ID)
        .env("SHENGWANG_APP_CERTIFICATE", CERT)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("the server did not start");
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["message"] == "serving gRPC (h2c) and HTTP/1.1" {
                break v["addr"].as_str().unwrap().to_owned();
            }
        }
    };
    (child, out, addr)
}

/// A keep-alive HTTP/1.1 connection that fails (rather than hangs) when an
/// answer takes longer than `limit`.
struct Conn(BufReader<TcpStream>);

impl Conn {
    fn new(addr: &str, limit: Duration) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(limit)).unwrap();
        s.set_write_timeout(Some(limit)).unwrap();
        Self(BufReader::new(s))
    }

    /// GETs `path`: (status, body).
    fn get(&mut self, path: &str) -> (u16, String) {
        write!(self.0.get_mut(), "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = self
                .0
                .read_until(b'\n', &mut head)
                .unwrap_or_else(|e| panic!("GET {}: {e}", &path[..path.len().min(60)]));
            assert_ne!(n, 0, "connection closed");
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// A token request that is refused (channel name too long) and logs about
/// 8 KiB: its audit event carries the channel as sent.
fn bad_request() -> String {
    format!("/api/agora/token?channelName={}&uid=1", "x".repeat(8000))
}

fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits for the process to exit, at most `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("no exit within {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stalled_stdout_never_blocks_requests_and_drops_are_counted_and_marked() {
    let (mut child, mut stdout, addr) = start("flood");
    let limit = Duration::from_secs(10);
    let started = Instant::now();
    // ~8 KiB of log per request: ~19 MiB in all, about five times the
    // writer's 4 MiB bound, hundreds of times the pipe's 64 KiB.
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(&addr, limit);
                let path = bad_request();
                for _ in 0..600 {
                    assert_eq!(c.get(&path).0, 400);
                }
            })
        })
        .collect();
    // Meanwhile health and tokens answer promptly, each on a new connection.
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while !flooders.iter().all(|f| f.is_finished()) {
        let t = Instant::now();
        let (st, _) = Conn::new(&addr, limit).get("/healthz");
        assert_eq!(st, 200);
        let (st, body) = Conn::new(&addr, limit).get("/api/agora/token?channelName=x&uid=1");
        assert_eq!(st, 200, "{body}");
        assert!(body.starts_with("007"), "{body}");
        slowest = slowest.max(t.elapsed());
        probes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    for f in flooders {
        f.join().unwrap();
    }
    let flood = started.elapsed();
    assert!(flood < Duration::from_secs(120), "the flood took {flood:?}");
    assert!(
        slowest < Duration::from_secs(5),
        "slowest probe {slowest:?}"
    );
    // After the flood, as during it.
    let (st, _) = Conn::new(&addr, limit).get("/healthz");
    assert_eq!(st, 200);
    let (_, metrics) = Conn::new(&addr, limit).get("/metrics");
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("token_authority_log_lines_dropped_total "))
        .expect("the dropped-lines counter")
        .parse()
        .unwrap();
    assert!(dropped > 1000, "dropped {dropped}:\n{metrics}");
    eprintln!("flood {flood:?}, {probes} probes, slowest {slowest:?}, {dropped} lines dropped");

    // Now read the pipe: what was kept, the gap's two WARN lines, and the
    // shutdown's lines (written within the flush guard's bound).
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        rest
    });
    std::thread::sleep(Duration::from_secs(1));
    sigterm(&child);
    assert_eq!(
        exit_within(&mut child, Duration::from_secs(15)).code(),
        Some(0)
    );
    let log = reader.join().unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let writer = "token_authority::telemetry::logwriter";
    let marks: Vec<_> = lines
        .iter()
        .enumerate()
        .filter(|(_, v)| v["target"] == writer)
        .collect();
    assert!(!marks.is_empty(), "no WARN line of the writer");
    let mut counted = 0;
    for pair in marks.chunks(2) {
        let [(a, start), (b, stop)] = pair else {
            panic!("a gap without its end: {pair:?}");
        };
        assert_eq!(start["level"], "WARN");
        assert!(
            start["message"]
                .as_str()
                .unwrap()
                .starts_with("stdout cannot keep up: dropping log lines"),
            "{start}"
        );
        assert_eq!(stop["level"], "WARN");
        assert_eq!(
            stop["message"],
            "stdout caught up: log lines are written again"
        );
        assert!(a < b);
        counted += stop["dropped"].as_u64().unwrap();
    }
    assert_eq!(counted, dropped, "the WARN lines' counts and the metric");
    // Lines were kept on both sides of the gap, and the shutdown was logged.
    assert!(
        lines[..marks[0].0]
            .iter()
            .any(|v| v["message"] == "token refused")
    );
    assert!(lines.iter().any(|v| v["message"] == "SIGTERM received"));
}

#[test]
fn shutdown_does_not_hang_on_a_stalled_stdout() {
    let (mut child, _stdout, addr) = start("shutdown");
    let mut c = Conn::new(&addr, Duration::from_secs(10));
    let path = bad_request();
    // ~800 KiB of log: the pipe is full, the writer holds the rest.
    for _ in 0..100 {
        assert_eq!(c.get(&path).0, 400);
    }
    drop(c);
    let t = Instant::now();
    sigterm(&child);
    // --shutdown-grace 1, then at most 2 s for the log: well within 15 s.
    assert_eq!(
        exit_within(&mut child, Duration::from_secs(15)).code(),
        Some(0)
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
