//! The `token` and `inspect` subcommands, driven as a user drives them:
//! the built binary, credentials in the environment, stdout and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use agora_token::{AppCertificate, UnverifiedToken};
use serde_json::Value;

const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_token-authority"));
    // A clean environment: only what each test gives, and no .env.
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    c
}

fn with_creds(mut c: Command) -> Command {
    c.env("SHENGWANG_APP_ID", APP_ID)
        .env("SHENGWANG_APP_CERTIFICATE", CERT);
    c
}

fn run(args: &[&str]) -> Output {
    with_creds(bin()).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn token(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.ends_with('\n') && out.matches('\n').count() == 1,
        "{out:?}"
    );
    out.trim_end().to_owned()
}

fn vectors() -> Value {
    serde_json::from_str(include_str!(
        "../crates/agora-token/tests/data/vectors.json"
    ))
    .unwrap()
}

fn vector(id: &str) -> Value {
    vectors()["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
        .unwrap()
        .clone()
}

#[test]
fn token_kinds_reproduce_the_official_vectors() {
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "rtc_uid_publisher_sample",
            vec![
                "rtc",
                "--channel",
                "7d72365eb983485397e3e3f9d460bdda",
                "--uid",
                "2882341273",
                "--expire",
                "600",
                "--issue-ts",
                "1111111",
                "--salt",
                "1",
            ],
        ),
        (
            "rtc_uid_subscriber_sample",
            vec![
                "rtc",
                "--channel",
                "7d72365eb983485397e3e3f9d460bdda",
                "--uid",
                "2882341273",
                "--role",
                "subscriber",
                "--expire",
                "600",
                "--issue-ts",
                "1111111",
                "--salt",
                "1",
            ],
        ),
        (
            "rtc_uid0_wildcard_publisher",
            vec![
                "rtc",
                "--channel",
                "lobby",
                "--uid",
                "0",
                "--issue-ts",
                "1700000000",
                "--salt",
                "4242",
            ],
        ),
        (
            "rtc_account_zero_string",
            vec![
                "rtc",
                "--channel",
                "zero-acct",
                "--account",
                "0",
                "--expire",
                "600",
                "--issue-ts",
                "1735689600",
                "--salt",
                "60606",
            ],
        ),
        (
            "rtc_uid_and_privilege_distinct",
            vec![], // filled below from the vector
        ),
        (
            "rtc_with_rtm_publisher",
            vec![
                "rtc-rtm",
                "--channel",
                "combo",
                "--account",
                "test_user",
                "--privilege-expire",
                "1800",
                "--issue-ts",
                "1700000000",
                "--salt",
                "14",
            ],
        ),
        (
            "rtm_sample",
            vec![
                "rtm",
                "--user-id",
                "test_user",
                "--expire",
                "600",
                "--issue-ts",
                "1111111",
                "--salt",
                "1",
            ],
        ),
        (
            "rtm2_permissions_sample",
            vec![], // filled below
        ),
        (
            "chat_user_sample",
            vec![
                "chat-user",
                "--user-id",
                "2882341273",
                "--expire",
                "600",
                "--issue-ts",
                "1111111",
                "--salt",
                "1",
            ],
        ),
        (
            "chat_app_sample",
            vec![
                "chat-app",
                "--expire",
                "600",
                "--issue-ts",
                "1111111",
                "--salt",
                "1",
            ],
        ),
        (
            "fpa_sample",
            vec!["fpa", "--issue-ts", "1700000000", "--salt", "29"],
        ),
        (
            "apaas_room_user_sample",
            vec![
                "apaas-room-user",
                "--room",
                "123",
                "--user",
                "2882341273",
                "--role",
                "1",
                "--expire",
                "600",
                "--issue-ts",
                "1111111",
                "--salt",
                "1",
            ],
        ),
    ];
    for (id, mut args) in cases {
        let v = vector(id);
        let i = &v["inputs"];
        let owned: Vec<String>;
        if id == "rtc_uid_and_privilege_distinct" {
            owned = vec![
                "rtc-privileges".into(),
                "--channel".into(),
                i["channel_name"].as_str().unwrap().into(),
                "--uid".into(),
                i["uid"].to_string(),
                "--expire".into(),
                i["token_expire"].to_string(),
                "--join".into(),
                i["join_channel_privilege_expire"].to_string(),
                "--publish-audio".into(),
                i["pub_audio_privilege_expire"].to_string(),
                "--publish-video".into(),
                i["pub_video_privilege_expire"].to_string(),
                "--publish-data".into(),
                i["pub_data_stream_privilege_expire"].to_string(),
                "--issue-ts".into(),
                i["issue_ts"].to_string(),
                "--salt".into(),
                i["salt"].to_string(),
            ];
            args = owned.iter().map(String::as_str).collect();
        } else if id == "rtm2_permissions_sample" {
            let mut o: Vec<String> = vec![
                "rtm".into(),
                "--user-id".into(),
                i["user_id"].as_str().unwrap().into(),
                "--expire".into(),
                i["expire"].to_string(),
            ];
            for g in i["permissions"].as_array().unwrap() {
                let list: Vec<&str> = g["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                o.push("--permission".into());
                o.push(format!(
                    "{}:{}:{}",
                    g["resource_type"],
                    g["permission_type"],
                    list.join(",")
                ));
            }
            o.extend([
                "--issue-ts".into(),
                i["issue_ts"].to_string(),
                "--salt".into(),
                i["salt"].to_string(),
            ]);
            owned = o;
            args = owned.iter().map(String::as_str).collect();
        }
        let mut full = vec!["token"];
        full.extend(args);
        assert_eq!(
            token(&full),
            v["expected"]["token"].as_str().unwrap(),
            "{id}"
        );
    }
}

#[test]
fn issued_tokens_decode_with_the_requested_fields() {
    let t = token(&[
        "token",
        "rtc",
        "--channel",
        "room-7",
        "--account",
        "alice",
        "--role",
        "subscriber",
        "--expire",
        "120",
    ]);
    let p = UnverifiedToken::parse(&t).unwrap();
    assert!(p.verify(&AppCertificate::new(CERT).unwrap()).is_ok());
    assert_eq!(p.expire(), 120);
    assert_eq!(p.services().len(), 1);
    assert_eq!(
        p.services()[0].privileges.iter().collect::<Vec<_>>(),
        [(1, 120)]
    );
    assert!((1..=99_999_999).contains(&p.salt()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(u64::from(p.issue_ts()).abs_diff(now) < 60);

    // --privilege-expire 0 is packed as 0; rtc-rtm defaults the RTM id to the uid string.
    let t = token(&[
        "token",
        "rtc-rtm",
        "--channel",
        "c",
        "--uid",
        "42",
        "--privilege-expire",
        "0",
        "--rtm-expire",
        "60",
    ]);
    let p = UnverifiedToken::parse(&t).unwrap();
    assert_eq!(p.services()[0].privileges.get(1), Some(0));
    assert_eq!(p.services()[1].privileges.get(1), Some(60));
    assert_eq!(
        p.services()[1].payload,
        agora_token::Payload::Rtm {
            user_id: b"42".to_vec()
        }
    );
}

#[test]
fn bad_input_is_a_usage_error_naming_the_flag() {
    for (args, needle) in [
        (vec!["token", "rtc", "--channel", "a/b"], "--channel"),
        (
            vec!["token", "rtc", "--channel", &"x".repeat(65)],
            "--channel",
        ),
        (
            vec!["token", "rtc", "--channel", "c", "--expire", "0"],
            "--expire",
        ),
        (
            vec!["token", "rtc", "--channel", "c", "--expire", "86401"],
            "--expire",
        ),
        (
            vec![
                "token",
                "rtc",
                "--channel",
                "c",
                "--privilege-expire",
                "86401",
            ],
            "--privilege-expire",
        ),
        (
            vec!["token", "rtc", "--channel", "c", "--uid", "-1"],
            "--uid",
        ),
        (
            vec!["token", "rtc", "--channel", "c", "--uid", "4294967296"],
            "--uid",
        ),
        (
            vec![
                "token",
                "rtc",
                "--channel",
                "c",
                "--uid",
                "1",
                "--account",
                "a",
            ],
            "--uid",
        ),
        (
            vec!["token", "rtc", "--channel", "c", "--role", "admin"],
            "--role",
        ),
        (
            vec!["token", "rtc-rtm", "--channel", "c", "--join", "5"],
            "--join",
        ),
        (vec!["token", "rtc-rtm", "--channel", "c"], "--rtm-user-id"),
        (vec!["token", "rtm", "--user-id", ""], "--user-id"),
        (
            vec![
                "token",
                "rtm",
                "--user-id",
                "u",
                "--permission",
                "nope:read:a",
            ],
            "--permission",
        ),
        (
            vec!["token", "chat-user", "--user-id", &"u".repeat(65)],
            "--user-id",
        ),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stdout(&o).is_empty(), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn unchecked_builds_what_the_format_can_pack() {
    let long = "c".repeat(1000);
    let t = token(&[
        "token",
        "rtc",
        "--channel",
        &long,
        "--expire",
        "0",
        "--unchecked",
    ]);
    let p = UnverifiedToken::parse(&t).unwrap();
    assert_eq!(p.expire(), 0);
    let o = run(&[
        "token",
        "rtc",
        "--channel",
        &"c".repeat(65_536),
        "--unchecked",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("65535"), "{}", stderr(&o));
}

#[test]
fn missing_or_malformed_credentials_fail_without_echoing_the_certificate() {
    let o = bin().args(["token", "chat-app"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("SHENGWANG_APP_ID"), "{}", stderr(&o));
    let bad = "5CFd2fd1755d40ecb72977518be15d3Z";
    let o = bin()
        .env("SHENGWANG_APP_ID", APP_ID)
        .env("SHENGWANG_APP_CERTIFICATE", bad)
        .args(["token", "chat-app"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("SHENGWANG_APP_CERTIFICATE"));
    assert!(!stderr(&o).contains(bad));
    // AGORA_* fallbacks.
    let o = bin()
        .env("AGORA_APP_ID", APP_ID)
        .env("AGORA_APP_CERTIFICATE", CERT)
        .args(["token", "chat-app"])
        .output()
        .unwrap();
    assert!(o.status.success());
}

fn inspect_stdin(token: &str, extra: &[&str], creds: bool) -> Output {
    let mut c = bin();
    if creds {
        c = with_creds(c);
    }
    let mut child = c
        .arg("inspect")
        .arg("-")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn inspect_reports_and_verifies() {
    let v = vector("rtc_uid_publisher_sample");
    let t = v["expected"]["token"].as_str().unwrap();
    let o = inspect_stdin(&format!("{t}\n"), &["--json"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["version"], "007");
    assert_eq!(j["appId"], APP_ID);
    assert_eq!(j["issuedAt"], 1_111_111);
    assert_eq!(j["expiresAt"], 1_111_711);
    assert_eq!(j["expired"], true);
    assert_eq!(j["signature"], "SIGNATURE_STATUS_VALID");
    assert_eq!(
        j["services"][0]["channelName"],
        "7d72365eb983485397e3e3f9d460bdda"
    );
    assert_eq!(j["services"][0]["privileges"].as_array().unwrap().len(), 4);

    // Without credentials: NOT_CHECKED, exit 0.
    let o = inspect_stdin(t, &["--json"], false);
    assert!(o.status.success());
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["signature"], "SIGNATURE_STATUS_NOT_CHECKED");

    // A tampered token: INVALID, exit 1.
    let bad = vectors()["parse"]["malformed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "tampered_signature_byte")
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = run(&["inspect", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("INVALID"));

    // Garbage: rejected, exit 1, nothing on stdout.
    let o = run(&["inspect", "007garbage"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("base64"), "{}", stderr(&o));
}

#[test]
fn inspect_recognises_legacy_006() {
    let v: Value = serde_json::from_str(include_str!(
        "../crates/agora-token/tests/data/vectors-006.json"
    ))
    .unwrap();
    let vec = &v["vectors"][0];
    let t = vec["token"].as_str().unwrap();
    let channel = vec["inputs"]["channel_name"].as_str().unwrap();
    let uid = vec["inputs"]["uid"].to_string();
    let o = run(&["inspect", t]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("006"));
    assert!(stdout(&o).contains("NOT_CHECKED"));
    let o = run(&["inspect", t, "--channel", channel, "--uid", &uid, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["version"], "006");
    assert_eq!(j["signature"], "SIGNATURE_STATUS_VALID");
    let o = run(&["inspect", t, "--channel", "other", "--uid", &uid]);
    assert_eq!(o.status.code(), Some(1));
}

/// A 006 token without `--channel`: the signature line says what to give
/// (there is a certificate for its app in the environment), not "no
/// certificate".
#[test]
fn inspect_006_without_channel_says_what_to_give() {
    let v: Value = serde_json::from_str(include_str!(
        "../crates/agora-token/tests/data/vectors-006.json"
    ))
    .unwrap();
    let t = v["vectors"][0]["token"].as_str().unwrap();
    let o = run(&["inspect", t]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("signature:  NOT_CHECKED (a 006 token is verified with the channel and uid it was made for: give --channel and --uid or --account)"),
        "{out}"
    );
    assert!(!out.contains("no certificate"), "{out}");
    // Without credentials it is the certificate that is missing.
    let o = inspect_stdin(t, &[], false);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("NOT_CHECKED (no certificate for this app in the environment)"),
        "{}",
        stdout(&o)
    );
}

/// A token whose embedded app id is not 32 hex characters cannot have been
/// issued for any app: INVALID, exit 1, with or without credentials.
#[test]
fn inspect_refuses_an_app_id_that_is_not_32_hex() {
    let bad = vectors()["parse"]["malformed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "app_id_not_hex32")
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for creds in [true, false] {
        let o = inspect_stdin(&bad, &[], creds);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        let out = stdout(&o);
        assert!(out.contains("signature:  INVALID"), "{out}");
        assert!(
            out.contains("note: the embedded app id is not 32 hexadecimal characters"),
            "{out}"
        );
    }
}
