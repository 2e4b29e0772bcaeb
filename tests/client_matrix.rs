//! The client matrix: real clients of other languages against the real
//! server (in-process, on `127.0.0.1:0`), each calling several RPCs,
//! checking a success and an error, and handing its tokens back here,
//! where they are decoded and their signatures verified with the app
//! certificate (the agora-token crate).
//!
//! What runs: `tests/clients/setup.sh` installs the pinned npm and PyPI
//! packages (node_modules, a venv under target/clients) and generates the
//! stubs from `proto/` (buf + protoc-gen-es, grpcio-tools); it runs once
//! per test binary, quickly when nothing changed. A tool that cannot be
//! installed fails the test, saying which and how (nothing is skipped).
//!
//! | test | client | protocol |
//! |---|---|---|
//! | `connect_node_json` | connect-node (`tests/clients/node/connect.mjs json`) | Connect, JSON, HTTP/1.1 |
//! | `connect_node_binary` | connect-node (`connect.mjs binary`) | Connect, application/proto |
//! | `connect_node_gzip` | connect-node (`connect.mjs gzip`) | Connect, JSON, gzip both ways |
//! | `connect_node_grpc` | connect-node (`connect.mjs grpc`) | gRPC over h2c |
//! | `connect_node_grpc_web` | connect-node (`connect.mjs grpcweb`) | gRPC-Web, HTTP/1.1 |
//! | `connect_python` | connect-python, its defaults (`tests/clients/python/connect_client.py`) | Connect, binary, gzip |
//! | `grpc_js` | @grpc/grpc-js with @grpc/proto-loader | gRPC over h2c |
//! | `grpcio_gzip` | Python grpcio, gzip (`tests/clients/python/grpcio_client.py`) | gRPC over h2c, gzip |
//! | `buf_curl_*` | `buf curl --protocol connect / grpc / grpcweb` | the three protocols |
//! | `browser` | a page on a second origin in headless Chromium (playwright-core): connect-web, gRPC-Web, `fetch` of `GET /api/agora/token` | CORS |
//! | `schemathesis` | schemathesis against `/openapi.json` | every JSON route and the GET endpoint |
//!
//! Each RPC client builds an RTC and an RTM token, inspects the first, and
//! sends a bad request (`expireSeconds: 0`): the error must be
//! `invalid_argument`, name the field, and carry `google.rpc.BadRequest`
//! and `google.rpc.ErrorInfo` details (decoded by the client itself).
//! The server is the in-process debug build (a release build would add
//! minutes of compilation to CI for no difference in what is checked).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use agora_token::{AppCertificate, AppId, UnverifiedToken};
use serde_json::Value;
use token_authority::config::Config;
use token_authority::domain::AppCredentials;
use token_authority::server::{self, ServerHandle};

const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn clients() -> PathBuf {
    root().join("tests/clients")
}

/// Runs tests/clients/setup.sh once for this test binary.
fn setup() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(clients().join("setup.sh"))
            .output()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tests/clients/setup.sh failed ({}): the client matrix needs node and npm, \
                 python3 with venv and chromium (Debian: apt-get install nodejs npm \
                 python3-venv chromium) and the npm and PyPI registries.\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn creds() -> AppCredentials {
    AppCredentials {
        app_id: AppId::new(APP_ID).unwrap(),
        certificate: AppCertificate::new(CERT).unwrap(),
        secondary: None,
    }
}

/// The real server, open mode (no callers), with `cors` origins allowed.
async fn spawn(cors: Vec<String>) -> ServerHandle {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), vec![creds()]);
    config.cors_origins = cors;
    server::spawn(&config).await.unwrap()
}

/// Runs a client to completion (killed after two minutes): its stdout.
async fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (bool, String, String) {
    let program = program.as_ref().to_owned();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(args).current_dir(root()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program:?} {args:?}: no answer in 120 s"))
        .unwrap_or_else(|e| {
            panic!("cannot run {program:?}: {e} (tests/clients/setup.sh installs it)")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `RESULT <json>` line of a client's output.
fn result(stdout: &str, stderr: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Decodes `token` and checks its signature with the app's certificate,
/// its app id, and that its first service is for `channel` (RTC) or the
/// user `user` (RTM).
fn verify(token: &str, channel: Option<&str>, user: &str) {
    let t = UnverifiedToken::parse(token).unwrap_or_else(|e| panic!("{e}: {token}"));
    assert!(
        t.verify(&AppCertificate::new(CERT).unwrap()).is_ok(),
        "signature does not verify: {token}"
    );
    assert_eq!(
        t.app_id_lossy().to_ascii_lowercase(),
        APP_ID.to_ascii_lowercase()
    );
    let s = &t.services()[0];
    if let Some(channel) = channel {
        assert_eq!(
            s.payload.channel_name(),
            Some(channel.as_bytes()),
            "{token}"
        );
    }
    assert_eq!(s.payload.user(), Some(user.as_bytes()), "{token}");
}

/// Checks one client's result: RTC and RTM tokens verify and carry what was
/// asked, InspectToken saw a valid signature, and the bad request
/// (`expireSeconds: 0`) was refused with `invalid_argument` naming the field.
fn check(r: &Value) {
    let client = r["client"].as_str().unwrap();
    verify(r["rtc"].as_str().unwrap(), r["channel"].as_str(), "42");
    verify(
        r["rtm"].as_str().unwrap(),
        None,
        r["rtmUser"].as_str().unwrap(),
    );
    assert_eq!(r["inspect"]["signature"], "VALID", "{client}: {r}");
    assert_eq!(
        r["inspect"]["appId"].as_str().unwrap().to_ascii_lowercase(),
        APP_ID.to_ascii_lowercase(),
        "{client}"
    );
    let e = &r["error"];
    assert_eq!(e["code"], "invalid_argument", "{client}: {r}");
    assert!(
        e["message"].as_str().unwrap().contains("expire_seconds"),
        "{client}: the error names the field: {e}"
    );
    for detail in ["google.rpc.BadRequest", "google.rpc.ErrorInfo"] {
        assert!(
            e["details"].as_array().unwrap().iter().any(|d| d == detail),
            "{client}: no {detail} in the error's details: {e}"
        );
    }
}

fn node() -> PathBuf {
    PathBuf::from("node")
}

fn python() -> PathBuf {
    root().join("target/clients/venv/bin/python")
}

async fn node_client(script: &str, args: &[&str]) -> Value {
    setup();
    let script = clients().join(script);
    let mut all = vec![script.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out, err) = run(node(), &all).await;
    assert!(
        ok,
        "{script:?} {args:?} failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    result(&out, &err)
}

async fn connect_node(mode: &str) {
    let app = spawn(vec![]).await;
    let url = format!("http://{}", app.local_addr());
    check(&node_client("node/connect.mjs", &[&url, mode]).await);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_json() {
    connect_node("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_binary() {
    connect_node("binary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_gzip() {
    connect_node("gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_grpc() {
    connect_node("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_grpc_web() {
    connect_node("grpcweb").await;
}

async fn python_client(script: &str, args: &[&str]) -> Value {
    setup();
    let script = clients().join(script);
    let mut all = vec![script.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out, err) = run(python(), &all).await;
    assert!(
        ok,
        "{script:?} {args:?} failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    result(&out, &err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_python() {
    let app = spawn(vec![]).await;
    let url = format!("http://{}", app.local_addr());
    check(&python_client("python/connect_client.py", &[&url]).await);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js() {
    let app = spawn(vec![]).await;
    let target = app.local_addr().to_string();
    check(&node_client("node/grpc-js.mjs", &[&target]).await);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_gzip() {
    let app = spawn(vec![]).await;
    let target = app.local_addr().to_string();
    check(&python_client("python/grpcio_client.py", &[&target, "gzip"]).await);
    app.shutdown().await.unwrap();
}

/// `buf curl` (from the npm package @bufbuild/buf) in `protocol`: the
/// schema by reflection for gRPC, from the repo's `proto/` for the others
/// (reflection is a gRPC service).
async fn buf_curl(protocol: &str) {
    setup();
    let app = spawn(vec![]).await;
    let buf = clients().join("node_modules/.bin/buf");
    let addr = app.local_addr();
    let call = |method: &str, body: &str| {
        let url = format!("http://{addr}/agora.token.v1.TokenService/{method}");
        let (buf, body, protocol) = (buf.clone(), body.to_owned(), protocol.to_owned());
        async move {
            let mut args = vec!["curl", "--protocol", &protocol, "-d", &body];
            if protocol == "grpc" {
                args.push("--http2-prior-knowledge");
            } else {
                args.extend(["--schema", "proto"]);
            }
            args.push(&url);
            run(&buf, &args).await
        }
    };
    let ok_json = |(ok, out, err): (bool, String, String)| -> Value {
        assert!(ok, "buf curl --protocol {protocol} failed\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let rtc = ok_json(
        call(
            "BuildRtcToken",
            r#"{"channelName":"matrix-buf-curl","uid":42}"#,
        )
        .await,
    );
    let rtm = ok_json(call("BuildRtmToken", r#"{"userId":"user-buf-curl"}"#).await);
    let inspect = ok_json(
        call(
            "InspectToken",
            &serde_json::json!({ "token": rtc["token"] }).to_string(),
        )
        .await,
    );
    let (ok, out, err) = call(
        "BuildRtcToken",
        r#"{"channelName":"matrix","expireSeconds":0}"#,
    )
    .await;
    assert!(!ok, "the bad request succeeded: {out}");
    // buf curl prints the error as JSON on stderr, details with their type.
    let mut error: Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    error["details"] = error["details"]
        .as_array()
        .map(|d| d.iter().map(|d| d["type"].clone()).collect())
        .unwrap_or_default();
    check(&serde_json::json!({
        "client": format!("buf-curl-{protocol}"),
        "channel": "matrix-buf-curl",
        "rtmUser": "user-buf-curl",
        "rtc": rtc["token"],
        "rtm": rtm["token"],
        "inspect": {
            "appId": inspect["appId"],
            "signature": inspect["signature"].as_str().unwrap().trim_start_matches("SIGNATURE_STATUS_"),
        },
        "error": error,
    }));
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_connect() {
    buf_curl("connect").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_grpc() {
    buf_curl("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_grpc_web() {
    buf_curl("grpcweb").await;
}

/// Serves the page (`/`) and its script (`/app.js`) on a loopback port: the
/// page's own origin, another port than the service's.
async fn serve_page() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let html = std::fs::read_to_string(clients().join("browser/index.html")).unwrap();
    let js = std::fs::read_to_string(clients().join("gen/browser/app.js")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (html, js) = (html.clone(), js.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let (status, ctype, body) =
                    if buf[..n].starts_with(b"GET / ") || buf[..n].starts_with(b"GET /?") {
                        ("200 OK", "text/html; charset=utf-8", html)
                    } else if buf[..n].starts_with(b"GET /app.js ") {
                        ("200 OK", "text/javascript", js)
                    } else {
                        ("404 Not Found", "text/plain", String::new())
                    };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

/// A page on a second origin in headless Chromium (Debian's, driven by
/// playwright-core) calls the service across origins (it allows the
/// page's origin only): connect-web (Connect JSON) and gRPC-Web, the same
/// checks as every client, and a plain `fetch` of `GET /api/agora/token`
/// with a 400 naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser() {
    setup();
    let (page, page_task) = serve_page().await;
    let app = spawn(vec![format!("http://{page}")]).await;
    let url = format!(
        "http://{page}/?api=http://{}&cases=fetch,connect,grpcweb",
        app.local_addr()
    );
    let driver = clients().join("browser/run.mjs");
    let (ok, out, err) = run(node(), &[driver.to_str().unwrap(), &url]).await;
    assert!(
        ok,
        "the browser driver failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    let results = result(&out, &err);
    let fetch = &results[0];
    assert_eq!(fetch["client"], "browser-fetch", "{results}");
    verify(
        fetch["rtc"].as_str().unwrap(),
        fetch["channel"].as_str(),
        "42",
    );
    assert_eq!(fetch["error"]["status"], 400, "{results}");
    assert!(
        fetch["error"]["message"].as_str().unwrap().contains("uid"),
        "the error names the parameter: {results}"
    );
    assert_eq!(results[1]["client"], "browser-connect-web", "{results}");
    check(&results[1]);
    assert_eq!(results[2]["client"], "browser-grpc-web", "{results}");
    check(&results[2]);
    app.shutdown().await.unwrap();
    page_task.abort();
}

/// schemathesis fuzzes every operation of `/openapi.json` (served by the
/// server under test): no 5xx, every status, content type and body as the
/// document says. Bounded: 40 examples per operation, a fixed seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis() {
    setup();
    let app = spawn(vec![]).await;
    let schema = format!("http://{}/openapi.json", app.local_addr());
    // Its cache directory (.schemathesis) goes under target/, not the repo.
    let work = root().join("target/clients/schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let bin = root().join("target/clients/venv/bin/schemathesis");
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args([
        "run",
        &schema,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples",
        "40",
        "--seed",
        "16",
        "--generation-database",
        "none",
        "--no-color",
    ])
    .current_dir(&work)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("schemathesis: no answer in 300 s")
        .unwrap_or_else(|e| panic!("cannot run {bin:?}: {e} (tests/clients/setup.sh installs it)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found problems\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("12 selected"),
        "every operation was tested: {stdout}"
    );
    app.shutdown().await.unwrap();
}

/// The AccessToken2 strings in a client's output.
fn tokens_in(out: &str) -> Vec<String> {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let mut found = Vec::new();
    let mut rest = out;
    while let Some(i) = rest.find("007eJ") {
        let t: String = rest[i..].chars().take_while(|c| is_b64(*c)).collect();
        rest = &rest[i + t.len()..];
        found.push(t);
    }
    found
}

/// Runs one snippet of docs/CLIENTS.md (the files in tests/clients/snippets,
/// quoted there verbatim): every token it prints verifies and is for
/// channel `room-1`, uid 42; `expect` tokens; `error` in the output when given.
async fn snippet(program: PathBuf, file: &str, expect: usize, error: Option<&str>) {
    setup();
    let app = spawn(vec![]).await;
    let addr = app.local_addr();
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg(clients().join("snippets").join(file))
        .current_dir(root())
        .env("TOKEN_AUTHORITY", format!("http://{addr}"))
        .env("TOKEN_AUTHORITY_ADDR", addr.to_string())
        .env("PYTHONPATH", clients().join("gen/py"))
        .env(
            "PATH",
            format!("{}:{path}", clients().join("node_modules/.bin").display()),
        )
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("no answer in 120 s")
        .unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{file} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let tokens = tokens_in(&stdout);
    assert_eq!(tokens.len(), expect, "{file}: tokens in\n{stdout}");
    for t in &tokens {
        verify(t, Some("room-1"), "42");
    }
    if let Some(e) = error {
        assert!(stdout.contains(e), "{file}: no {e:?} in\n{stdout}");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_curl() {
    snippet("sh".into(), "curl.sh", 2, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_buf_curl() {
    snippet("sh".into(), "buf_curl.sh", 2, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_grpcio() {
    snippet(
        python(),
        "grpcio.py",
        1,
        Some("INVALID_ARGUMENT expire_seconds must be 1..=86400"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_connect_python() {
    snippet(
        python(),
        "connect_python.py",
        1,
        Some("invalid_argument expire_seconds: must be"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_connect_node() {
    snippet(
        node(),
        "connect_node.mjs",
        1,
        Some("InvalidArgument expire_seconds: must be"),
    )
    .await;
}

/// docs/CLIENTS.md quotes the tested code verbatim: each fenced block after
/// `<!-- tested: PATH -->` is that file, and after `<!-- tested: PATH#NAME -->`
/// the region between `--- snippet: NAME` and `--- end snippet ---` in it.
#[test]
fn clients_md_quotes_the_tested_code() {
    let doc = std::fs::read_to_string(root().join("docs/CLIENTS.md")).unwrap();
    let mut checked = 0;
    let mut rest = doc.as_str();
    while let Some(i) = rest.find("<!-- tested: ") {
        rest = &rest[i + "<!-- tested: ".len()..];
        let target = &rest[..rest.find(" -->").unwrap()];
        let fence = rest.find("```").unwrap();
        let body_start = fence + rest[fence..].find('\n').unwrap() + 1;
        let body_end = body_start + rest[body_start..].find("\n```").unwrap();
        let quoted = &rest[body_start..body_end];
        let (path, region) = match target.split_once('#') {
            Some((p, r)) => (p, Some(r)),
            None => (target, None),
        };
        let file = std::fs::read_to_string(root().join(path))
            .unwrap_or_else(|e| panic!("docs/CLIENTS.md quotes {path}: {e}"));
        let want = match region {
            None => file.trim_end().to_owned(),
            Some(name) => {
                let start = file
                    .find(&format!("--- snippet: {name} "))
                    .unwrap_or_else(|| panic!("{path}: no snippet {name}"));
                let start = start + file[start..].find('\n').unwrap() + 1;
                let end = start + file[start..].find("--- end snippet ---").unwrap();
                // Up to the line holding the end marker.
                let end = file[..end].rfind('\n').unwrap();
                file[start..end].to_owned()
            }
        };
        assert_eq!(
            quoted.trim_end(),
            want.trim_end(),
            "docs/CLIENTS.md's copy of {target} differs from the tested file"
        );
        checked += 1;
    }
    assert!(checked >= 7, "{checked} snippets checked");
}
