//! What the built binary says at start-up and in its log lines, as a
//! newcomer meets it: `--listen localhost:PORT` works like `healthcheck
//! --addr`, a taken port is reported once, the start-up line says TLS when
//! it is on, durations print without float noise, lists are plain values,
//! and `[[apps]]` leaving out the environment's app is a WARN.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{APP_ID, CERT};

const BIN: &str = env!("CARGO_BIN_EXE_token-authority");

fn scratch(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ta-msg-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running server: its stdout is collected by a thread; `addr` is the
/// address of its "serving" line.
struct Running {
    child: Child,
    addr: String,
    log: std::thread::JoinHandle<String>,
}

fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .current_dir(scratch(name))
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let m = v["message"].as_str().unwrap_or_default();
                if m.starts_with("serving gRPC") {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {}", log.join().unwrap_or_default());
        }
    };
    Running { child, addr, log }
}

impl Running {
    /// SIGTERM, wait, and the JSON log lines.
    fn stop(mut self) -> Vec<serde_json::Value> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let log = self.log.join().unwrap();
        log.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

fn creds() -> [(&'static str, &'static str); 2] {
    [
        ("SHENGWANG_APP_ID", APP_ID),
        ("SHENGWANG_APP_CERTIFICATE", CERT),
    ]
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

#[test]
fn listen_takes_a_host_name_like_healthcheck() {
    let r = start(
        "localhost",
        &["--listen", "localhost:0", "--log-format", "json"],
        &creds(),
    );
    assert!(r.addr.starts_with("127.0.0.1:"), "{}", r.addr);
    let port = r.addr.rsplit(':').next().unwrap().to_owned();
    let st = Command::new(BIN)
        .args(["healthcheck", "--addr", &format!("localhost:{port}")])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0));
    r.stop();

    // A name that does not resolve, and no port: the flag and the rule.
    for (listen, says) in [
        ("nohost.invalid:8080", "cannot resolve \"nohost.invalid\""),
        ("localhost", "is not HOST:PORT"),
        ("localhost:99999", "a port in 0..=65535"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", listen])
            .current_dir(scratch("badlisten"))
            .env_clear()
            .envs(creds())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--listen: ") && err.contains(says), "{err}");
    }
}

#[test]
fn a_taken_port_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--log-format", "json"])
        .current_dir(scratch("taken"))
        .env_clear()
        .envs(creds())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let both = format!("{stdout}{err}");
    assert_eq!(
        both.matches("Address already in use").count(),
        1,
        "stdout: {stdout}\nstderr: {err}"
    );
    assert!(
        err.contains(&format!("cannot listen on {addr}: Address already in use")),
        "{err}"
    );
}

#[test]
fn log_values_are_plain() {
    let r = start(
        "plain",
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        &creds(),
    );
    // A refused request is logged at info with its elapsed time.
    let resp = http_get(&r.addr, "/api/agora/token?uid=1");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let lines = r.stop();
    let serving = lines
        .iter()
        .find(|v| v["message"].as_str().unwrap_or("").starts_with("serving"))
        .unwrap();
    assert_eq!(serving["message"], "serving gRPC (h2c) and HTTP/1.1");
    let loaded = lines
        .iter()
        .find(|v| v["message"] == "credentials loaded (certificates not shown)")
        .unwrap();
    assert_eq!(loaded["apps"], format!("{APP_ID} (1 certificate)"));
    let request = lines
        .iter()
        .find(|v| v["message"] == "request" && v["status"] == 400)
        .expect("the request line");
    let ms = request["elapsed_ms"].to_string();
    let decimals = ms.split('.').nth(1).map_or(0, str::len);
    assert!(decimals <= 3, "elapsed_ms = {ms}");
}

#[test]
fn the_start_up_line_says_tls_when_it_is_on() {
    let d = scratch("tls");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(d.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
    let cert_path = d.join("cert.pem");
    let key_path = d.join("key.pem");
    let r = start(
        "tls",
        &[
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        &creds(),
    );
    let lines = r.stop();
    let serving: Vec<_> = lines
        .iter()
        .filter_map(|v| v["message"].as_str())
        .filter(|m| m.starts_with("serving"))
        .collect();
    assert_eq!(serving, ["serving gRPC and HTTP/1.1 over TLS"]);
}

#[test]
fn apps_that_leave_out_the_environments_app_are_a_warning() {
    const OTHER: &str = "0123456789abcdef0123456789abcdef";
    let d = scratch("apps");
    std::fs::write(d.join("cert"), format!("{CERT}\n")).unwrap();
    let cfg = d.join("ta.toml");
    std::fs::write(
        &cfg,
        format!("mode = \"open\"\n[[apps]]\napp_id = \"{OTHER}\"\ncertificate_file = \"cert\"\n"),
    )
    .unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let lines = start("apps", &args, &creds()).stop();
    let warn = lines
        .iter()
        .find(|v| v["level"] == "WARN" && v["app_id"] == APP_ID)
        .unwrap_or_else(|| panic!("no WARN: {lines:?}"));
    assert!(
        warn["message"].as_str().unwrap().contains("NOT served"),
        "{warn}"
    );

    // Listed (in any case): no warning.
    std::fs::write(
        &cfg,
        format!(
            "mode = \"open\"\n[[apps]]\napp_id = \"{OTHER}\"\ncertificate_file = \"cert\"\n\
             [[apps]]\napp_id = \"{}\"\ncertificate_file = \"cert\"\n",
            APP_ID.to_ascii_lowercase()
        ),
    )
    .unwrap();
    let lines = start("apps", &args, &creds()).stop();
    assert!(!lines.iter().any(|v| v["app_id"] == APP_ID), "{lines:?}");
}
