//! The audit file fails closed, tested on the real binary: with a
//! file-size limit (`prlimit --fsize`, the way a full disk fails writes)
//! no token is returned without its record, the file never holds a partial
//! line, readiness and metrics say so, and issuance resumes by itself when
//! the file can be written again; after SIGKILL under load, every token a
//! client received has its record.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use token_authority::domain::fingerprint;

use crate::common::{APP_ID, CERT};

const BIN: &str = env!("CARGO_BIN_EXE_token-authority");

fn scratch(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ta-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts `serve` (under `prefix`, e.g. prlimit) and returns it with its
/// address, read from its JSON log.
fn start(dir: &Path, prefix: &[&str], args: &[&str]) -> (Child, String) {
    let (program, pre) = match prefix.split_first() {
        Some((p, rest)) => (*p, rest.to_vec()),
        None => (BIN, Vec::new()),
    };
    let mut cmd = Command::new(program);
    cmd.args(&pre);
    if !prefix.is_empty() {
        cmd.arg(BIN);
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("SHENGWANG_APP_ID", APP_ID)
        .env("SHENGWANG_APP_CERTIFICATE", CERT)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "serving gRPC (h2c) and HTTP/1.1" {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => (child, addr),
        Err(e) => {
            let _ = child.kill();
            panic!("server did not start: {e}");
        }
    }
}

/// One HTTP/1.1 GET: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Every line of the audit file parses as a complete JSON record.
fn records(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial line: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn issued_fingerprints(path: &Path) -> std::collections::HashSet<String> {
    records(path)
        .iter()
        .filter(|r| r["decision"] == "issued")
        .filter_map(|r| r["token_fp"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_full_audit_file_refuses_tokens_and_recovers() {
    let dir = scratch("full");
    let audit = dir.join("audit.jsonl");
    // 24 KB: room for a few dozen records, then EFBIG like a full disk.
    let (mut child, addr) = start(
        &dir,
        &["prlimit", "--fsize=24000"],
        &["--audit-log", audit.to_str().unwrap()],
    );
    let mut delivered = Vec::new();
    let mut unavailable = 0;
    for i in 0..200 {
        let (status, body) = get(
            &addr,
            &format!("/api/agora/token?channelName=c{i}&uid={}", i + 1),
        );
        match status {
            200 => delivered.push(body),
            503 => {
                assert!(body.contains("audit log"), "{body}");
                unavailable += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        !delivered.is_empty() && unavailable > 0,
        "{} / {unavailable}",
        delivered.len()
    );
    // Every delivered token has its record; no partial line.
    let fps = issued_fingerprints(&audit);
    for t in &delivered {
        assert!(
            fps.contains(&fingerprint(t)),
            "no record for a delivered token"
        );
    }
    assert!(std::fs::metadata(&audit).unwrap().len() <= 24_000);
    // Not ready; metrics count the failures.
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit log"), "{body}");
    let (_, metrics) = get(&addr, "/metrics");
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("token_authority_audit_write_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(failures > 0, "{metrics}");
    // Room again (the file is rotated away): issuance resumes by itself.
    std::fs::rename(&audit, dir.join("audit.jsonl.1")).unwrap();
    let start = Instant::now();
    loop {
        if get(&addr, "/readyz").0 == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no recovery");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, token) = get(&addr, "/api/agora/token?channelName=after&uid=7");
    assert_eq!(status, 200, "{token}");
    assert!(issued_fingerprints(&audit).contains(&fingerprint(&token)));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn after_sigkill_under_load_every_delivered_token_has_its_record() {
    let dir = scratch("kill");
    let audit = dir.join("audit.jsonl");
    let (mut child, addr) = start(&dir, &[], &["--audit-log", audit.to_str().unwrap()]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let addr = addr.clone();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let Ok(mut s) = TcpStream::connect(&addr) else { break };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let req = format!(
                        "GET /api/agora/token?channelName=k{c}&uid={i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                    );
                    if s.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut text = String::new();
                    let _ = s.read_to_string(&mut text);
                    if text.starts_with("HTTP/1.1 200") {
                        if let Some((_, body)) = text.split_once("\r\n\r\n") {
                            got.push(body.to_owned());
                        }
                    }
                }
                got
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL while the clients are still sending.
    let _ = child.kill();
    let _ = child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let delivered: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(delivered.len() > 50, "only {} tokens", delivered.len());
    let fps = issued_fingerprints(&audit);
    let missing = delivered
        .iter()
        .filter(|t| !fps.contains(&fingerprint(t)))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} delivered tokens have no record",
        delivered.len()
    );
}
