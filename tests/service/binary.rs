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
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ta-bin-{name}-{}", std::process::id()));
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

/// Fail closed: a config file that would run open without saying so, or
/// that contradicts itself, stops start-up with exit 78 naming the key.
#[test]
fn open_mode_must_be_explicit_and_consistent() {
    let d = scratch("mode");
    std::fs::write(d.join("cert"), format!("{CERT}\n")).unwrap();
    let app = format!("[[apps]]\napp_id = \"{APP_ID}\"\ncertificate_file = \"cert\"\n");
    let caller = format!(
        "[[callers]]\nname = \"svc\"\napi_key_sha256 = \"{}\"\nkinds = [\"rtc\"]\n",
        "ab".repeat(32)
    );
    let anonymous = "[anonymous]\nchannels = [\"public-*\"]\n";
    let open = "mode = \"open\"\n";
    let cases = [
        (
            "no callers, no mode",
            app.clone(),
            "callers: ",
            "mode = \"open\"",
        ),
        (
            "mode open with callers",
            format!("{open}{app}{caller}"),
            "mode: ",
            "contradicts the 1 [[callers]] entry",
        ),
        (
            "anonymous without callers",
            format!("{app}{anonymous}"),
            "anonymous: ",
            "[anonymous] needs [[callers]]",
        ),
        (
            "anonymous in open mode",
            format!("{open}{app}{anonymous}"),
            "anonymous: ",
            "[anonymous] needs [[callers]]",
        ),
        (
            "a mode that does not exist",
            format!("mode = \"closed\"\n{app}"),
            "line 1",
            "`open`",
        ),
    ];
    let cfg = d.join("ta.toml");
    for (case, text, key, hint) in cases {
        std::fs::write(&cfg, text).unwrap();
        let (code, err) = serve("mode", &[], &["--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 78, "{case}: {err}");
        assert!(
            err.contains(&format!("configuration error: {key}"))
                || (key == "line 1" && err.contains(key)),
            "{case}: {err}"
        );
        assert!(err.contains(hint), "{case}: {err}");
    }
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

/// Starts the binary with `--log-format <format>` (default `RUST_LOG`),
/// sends `requests` (raw HTTP/1.1 request heads) one connection each, stops
/// it with SIGTERM and returns its stdout.
fn logs_of(format: &str, requests: &[String]) -> String {
    use std::io::{Read, Write};
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", format])
        .current_dir(scratch(&format!("logs-{format}")))
        .env_clear()
        .env("SHENGWANG_APP_ID", APP_ID)
        .env("SHENGWANG_APP_CERTIFICATE", CERT)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.split("serving gRPC (h2c) and HTTP/1.1").nth(1) {
                // Text: ` addr=127.0.0.1:N`; JSON: `","addr":"127.0.0.1:N"}`.
                let addr: String = addr
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                let _ = tx.send(addr);
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("started");
    for r in requests {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(r.as_bytes()).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1"), "{resp}");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    reader.join().unwrap()
}

fn get(path_and_query: &str, request_id: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: x\r\nx-request-id: {request_id}\r\nConnection: close\r\n\r\n"
    )
}

/// Every line logged while serving a request carries its request id and
/// peer; the audit events have their fields; caller input is escaped, so a
/// newline in a channel name cannot start a forged line.
#[test]
fn log_lines_carry_the_request_context_in_both_formats() {
    let requests = [
        get("/api/agora/token?channelName=room-1&uid=42", "req-ok-1"),
        get(
            "/api/agora/token?channelName=a%0AINFO%20forged%22x&uid=7",
            "req-bad-2",
        ),
        // A right-to-left override (reorders what a viewer shows).
        get(
            "/api/agora/token?channelName=x%E2%80%AEcba&uid=8",
            "req-bad-3",
        ),
    ];
    let json = logs_of("json", &requests);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let issued = lines
        .iter()
        .find(|v| v["message"] == "token issued")
        .expect("an issued event");
    assert_eq!(issued["target"], "audit");
    assert_eq!(issued["level"], "INFO");
    assert_eq!(issued["request_id"], "req-ok-1");
    assert!(issued["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(issued["channel"], "room-1");
    assert_eq!(issued["uid"], "42");
    assert_eq!(issued["role"], "publisher");
    assert_eq!(issued["caller"], "open");
    assert_eq!(issued["token_fp"].as_str().unwrap().len(), 12);
    assert!(issued["expires_at"].as_u64().unwrap() > 1_700_000_000);
    assert!(issued["timestamp"].as_str().unwrap().ends_with('Z'));
    // The refusal: its audit event, the refusal and the request line, all
    // with the request's id; the channel as sent, escaped.
    let refused: Vec<_> = lines
        .iter()
        .filter(|v| v["request_id"] == "req-bad-2")
        .collect();
    let messages: Vec<_> = refused.iter().map(|v| v["message"].clone()).collect();
    assert_eq!(
        messages,
        ["token refused", "request refused", "request"],
        "{json}"
    );
    assert_eq!(refused[0]["channel"], "a\nINFO forged\"x");
    // JSON escapes the override (`\u202e`), and it decodes to what was sent.
    assert!(json.contains(r#""channel":"x\u202ecba""#), "{json}");
    let rlo = lines
        .iter()
        .find(|v| v["request_id"] == "req-bad-3")
        .unwrap();
    assert_eq!(rlo["channel"], "x\u{202e}cba");
    assert_eq!(refused[2]["status"], 400);
    // A successful token request has no separate request line at info.
    assert!(
        !lines
            .iter()
            .any(|v| v["request_id"] == "req-ok-1" && v["message"] == "request")
    );

    let text = logs_of("text", &requests);
    let line = text
        .lines()
        .find(|l| l.contains("token issued"))
        .expect("issued line");
    assert!(
        line.contains(" INFO audit: token issued decision=\"issued\""),
        "{line}"
    );
    assert!(
        line.contains(" channel=room-1 uid=42 role=publisher "),
        "{line}"
    );
    assert!(
        line.contains(" request_id=req-ok-1 peer=127.0.0.1:"),
        "{line}"
    );
    let forged: Vec<_> = text.lines().filter(|l| l.starts_with("INFO")).collect();
    assert!(forged.is_empty(), "a forged line: {forged:?}");
    let refused = text
        .lines()
        .find(|l| l.contains("token refused"))
        .expect("refused line");
    assert!(
        refused.contains(r#"channel="a\nINFO forged\"x""#),
        "{refused}"
    );
    assert!(text.contains(r#"channel="x\u{202e}cba""#), "{text}");
    assert!(!text.contains('\u{202e}'), "a raw override in the text log");
}
