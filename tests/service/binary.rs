//! The built binary: start-up fails fast with a clear message and exit code
//! 78 on missing or malformed credentials (never echoing the certificate);
//! `serve --help` documents the flags; a running server answers
//! `healthcheck` and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{APP_ID, CERT};

const BIN: &str = env!("CARGO_BIN_EXE_token-authority");

/// A scratch directory (no `.env` in it).
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ta-bin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn serve(name: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(scratch(name))
        .env_clear()
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_certificate_fails_start_up() {
    let (code, err) = serve("missing", &[("SHENGWANG_APP_ID", APP_ID)], &[]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("SHENGWANG_APP_CERTIFICATE is not set"),
        "{err}"
    );
    assert!(err.contains("console"), "{err}");
}

#[test]
fn malformed_certificate_fails_without_echoing_it() {
    let bad = "5CFd2fd1755d40ecb72977518be15d3!";
    let (code, err) = serve(
        "malformed",
        &[
            ("SHENGWANG_APP_ID", APP_ID),
            ("SHENGWANG_APP_CERTIFICATE", bad),
        ],
        &[],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("SHENGWANG_APP_CERTIFICATE"), "{err}");
    assert!(!err.contains(bad), "{err}");

    let (code, err) = serve(
        "badid",
        &[
            ("SHENGWANG_APP_ID", "nope"),
            ("SHENGWANG_APP_CERTIFICATE", CERT),
        ],
        &[],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("SHENGWANG_APP_ID"), "{err}");
    assert!(!err.contains(CERT), "{err}");
}

#[test]
fn config_file_errors_fail_start_up() {
    let d = scratch("cfg");
    std::fs::write(d.join("cert"), "zz\n").unwrap();
    std::fs::write(
        d.join("ta.toml"),
        format!("[[apps]]\napp_id = \"{APP_ID}\"\ncertificate_file = \"cert\"\n"),
    )
    .unwrap();
    let cfg = d.join("ta.toml");
    let (code, err) = serve("cfg", &[], &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("apps[0].certificate_file"), "{err}");

    let (code, err) = serve("cfg", &[], &["--config", "/nonexistent/ta.toml"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("/nonexistent/ta.toml"), "{err}");
}

#[test]
fn serve_help_documents_every_flag() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--admin-listen",
        "--config",
        "--log-format",
        "--shutdown-delay",
        "--shutdown-grace",
        "--max-request-bytes",
        "SHENGWANG_APP_CERTIFICATE_FILE",
        "78",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn healthcheck_and_sigterm() {
    // Nothing listens: unhealthy.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let st = Command::new(BIN)
        .args(["healthcheck", "--addr", &addr, "--timeout", "1"])
        .output()
        .unwrap();
    assert_ne!(st.status.code(), Some(0));

    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--shutdown-grace",
            "2",
        ])
        .current_dir(scratch("run"))
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
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "serving gRPC (h2c) and HTTP/1.1" {
                    let _ = tx.send(Ok(v["addr"].as_str().unwrap_or_default().to_owned()));
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(Err(all));
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(a)) => a,
        other => {
            let _ = child.kill();
            panic!("server did not start: {other:?}");
        }
    };
    let st = Command::new(BIN)
        .args(["healthcheck", "--addr", &addr])
        .output()
        .unwrap();
    assert_eq!(
        st.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st = Command::new(BIN)
        .args(["healthcheck", "--ready", "--addr", &addr])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0));

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("no exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    // The log never holds the certificate.
    let rest = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| Err(String::new()));
    if let Err(log) = rest {
        assert!(!log.contains(CERT), "{log}");
        assert!(log.contains("SIGTERM received"), "{log}");
    }
}
