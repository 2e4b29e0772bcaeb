//! Unit tests of the parent module.
use std::collections::HashMap;

use super::*;

const ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A scratch directory, removed when dropped.
struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        self.0.path()
    }
}

fn tmpdir(name: &str) -> Scratch {
    Scratch(
        tempfile::Builder::new()
            .prefix(&format!("ta-config-{name}-"))
            .tempdir()
            .unwrap(),
    )
}

#[test]
fn env_only_with_defaults() {
    let c = Config::load(
        &ServeArgs::default(),
        &env(&[(env::APP_ID, ID), (env::APP_CERTIFICATE, CERT)]),
    )
    .unwrap();
    assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(c.apps.len(), 1);
    assert_eq!(
        c.shutdown_grace,
        Duration::from_secs(DEFAULT_SHUTDOWN_GRACE)
    );
    assert_eq!(c.log_format, LogFormat::Text);
}

#[test]
fn missing_certificate_is_explained() {
    let e = Config::load(&ServeArgs::default(), &env(&[(env::APP_ID, ID)])).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("SHENGWANG_APP_CERTIFICATE") && msg.contains("console"),
        "{msg}"
    );
}

#[test]
fn file_then_flags() {
    let d = tmpdir("ok");
    std::fs::write(d.join("cert"), format!("{CERT}\n")).unwrap();
    let path = d.join("ta.toml");
    std::fs::write(
        &path,
        format!(
            "mode = \"open\"\nlisten = \"127.0.0.1:9000\"\nlog_format = \"json\"\nshutdown_grace_seconds = 3\n\
             [[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n"
        ),
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    let c = Config::load(&args, &env(&[])).unwrap();
    assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.shutdown_grace, Duration::from_secs(3));
    assert_eq!(c.apps[0].app_id.as_str(), ID);
    let args = ServeArgs {
        config: Some(path),
        listen: Some("127.0.0.1:9001".into()),
        log_format: Some(LogFormat::Text),
        ..Default::default()
    };
    let c = Config::load(&args, &env(&[])).unwrap();
    assert_eq!(c.listen, "127.0.0.1:9001".parse().unwrap());
    assert_eq!(c.log_format, LogFormat::Text);
}

#[test]
fn bad_file_never_echoes_the_secret() {
    let d = tmpdir("bad");
    let path = d.join("ta.toml");
    std::fs::write(
        &path,
        format!("[[apps]]\napp_id = \"{ID}\"\ncertificate = \"{CERT}\"\n"),
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    let msg = Config::load(&args, &env(&[])).unwrap_err().to_string();
    assert!(msg.contains("certificate") && msg.contains("line"), "{msg}");
    assert!(!msg.contains(CERT), "{msg}");

    std::fs::write(d.join("badcert"), "not-a-certificate\n").unwrap();
    let path = d.join("ta2.toml");
    std::fs::write(
        &path,
        format!("[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"badcert\"\n"),
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    let msg = Config::load(&args, &env(&[])).unwrap_err().to_string();
    assert!(msg.contains("apps[0].certificate_file"), "{msg}");
    assert!(!msg.contains("not-a-certificate"), "{msg}");
}

#[test]
fn secondary_file_may_be_missing_and_files_are_listed_for_reload() {
    let d = tmpdir("secondary");
    std::fs::write(d.join("cert"), format!("{CERT}\n")).unwrap();
    let _ = std::fs::remove_file(d.join("old"));
    let path = d.join("ta.toml");
    std::fs::write(
        &path,
        format!(
            "mode = \"open\"\nshutdown_delay_seconds = 5\n[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n\
             secondary_certificate_file = \"old\"\n"
        ),
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    let c = Config::load(&args, &env(&[])).unwrap();
    assert!(c.apps[0].secondary.is_none());
    assert_eq!(c.shutdown_delay, Duration::from_secs(5));
    assert_eq!(c.watch_files, vec![path, d.join("cert"), d.join("old")]);
    std::fs::write(d.join("old"), "5CFd2fd1755d40ecb72977518be15d3c\n").unwrap();
    let c = Config::load(&args, &env(&[])).unwrap();
    assert!(c.apps[0].secondary.is_some());
    // Present but malformed: an error, like the primary.
    std::fs::write(d.join("old"), "nope\n").unwrap();
    let msg = Config::load(&args, &env(&[])).unwrap_err().to_string();
    assert!(msg.contains("apps[0].secondary_certificate_file"), "{msg}");
    // The primary's file must exist.
    std::fs::remove_file(d.join("cert")).unwrap();
    let msg = Config::load(&args, &env(&[])).unwrap_err().to_string();
    assert!(msg.contains("apps[0].certificate_file"), "{msg}");
    // --shutdown-delay wins over the file.
    let args = ServeArgs {
        shutdown_delay: Some(1),
        ..Default::default()
    };
    let c = Config::load(
        &args,
        &env(&[(env::APP_ID, ID), (env::APP_CERTIFICATE, CERT)]),
    )
    .unwrap();
    assert_eq!(c.shutdown_delay, Duration::from_secs(1));
    assert!(c.watch_files.is_empty());
}

#[test]
fn file_without_apps_takes_the_app_from_the_environment() {
    // The Kubernetes manifests: the file holds callers (or, as shipped,
    // only `mode = "open"`), the certificate is a mounted file named by
    // the environment.
    let d = tmpdir("noapps");
    std::fs::write(d.join("certificate"), format!("{CERT}\n")).unwrap();
    let path = d.join("ta.toml");
    std::fs::write(&path, "mode = \"open\"\n").unwrap();
    let cert = d.join("certificate").display().to_string();
    let missing = d.join("certificate-secondary").display().to_string();
    let args = ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    let c = Config::load(
        &args,
        &env(&[
            (env::APP_ID, ID),
            ("SHENGWANG_APP_CERTIFICATE_FILE", &cert),
            ("SHENGWANG_APP_CERTIFICATE_SECONDARY_FILE", &missing),
        ]),
    )
    .unwrap();
    assert_eq!(c.apps_source, "environment");
    assert_eq!(c.apps[0].app_id.as_str(), ID);
    assert!(c.apps[0].secondary.is_none());
    assert_eq!(
        c.watch_files,
        vec![path, PathBuf::from(cert), PathBuf::from(missing)]
    );
}

/// `body` after an `[[apps]]` entry, as a config file in `d`.
fn load_file(d: &Path, top: &str, rest: &str) -> Result<Config, ConfigError> {
    std::fs::write(d.join("cert"), format!("{CERT}\n")).unwrap();
    let path = d.join("ta.toml");
    std::fs::write(
        &path,
        format!("{top}[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n{rest}"),
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    Config::load(&args, &env(&[]))
}

const CALLER: &str = "[[callers]]\nname = \"svc\"\napi_key_sha256 = \"abababababababababababababababababababababababababababababababab\"\nkinds = [\"rtc\"]\n";

#[test]
fn a_file_without_callers_must_say_mode_open() {
    let d = tmpdir("nomode");
    let e = load_file(&d, "", "").unwrap_err().to_string();
    assert!(
        e.starts_with("callers: ") && e.contains("[[callers]]") && e.contains("mode = \"open\""),
        "{e}"
    );
    let c = load_file(&d, "mode = \"open\"\n", "").unwrap();
    assert!(c.callers.is_empty() && c.snapshot().unwrap().auth.is_open());
    // An unknown mode is a parse error naming the allowed value.
    let e = load_file(&d, "mode = \"closed\"\n", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("`open`"), "{e}");
    // With callers, no mode is needed.
    let c = load_file(&d, "", CALLER).unwrap();
    assert!(!c.snapshot().unwrap().auth.is_open());
}

#[test]
fn mode_open_with_callers_is_a_contradiction() {
    let d = tmpdir("contradiction");
    let e = load_file(&d, "mode = \"open\"\n", CALLER)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("mode: ") && e.contains("contradicts the 1 [[callers]] entry"),
        "{e}"
    );
}

#[test]
fn anonymous_without_callers_is_an_error() {
    let d = tmpdir("anon");
    let anon = "[anonymous]\nchannels = [\"public-*\"]\n";
    for top in ["", "mode = \"open\"\n"] {
        let e = load_file(&d, top, anon).unwrap_err().to_string();
        assert!(
            e.starts_with("anonymous: ") && e.contains("[anonymous] needs [[callers]]"),
            "{e}"
        );
    }
    load_file(&d, "", &format!("{CALLER}{anon}")).unwrap();
}

#[test]
fn without_a_config_file_the_service_stays_open() {
    let c = Config::load(
        &ServeArgs::default(),
        &env(&[(env::APP_ID, ID), (env::APP_CERTIFICATE, CERT)]),
    )
    .unwrap();
    assert!(c.snapshot().unwrap().auth.is_open());
}

#[test]
fn bad_listen_address() {
    let args = ServeArgs {
        listen: Some("localhost".into()),
        ..Default::default()
    };
    let e = Config::load(
        &args,
        &env(&[(env::APP_ID, ID), (env::APP_CERTIFICATE, CERT)]),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("--listen"), "{e}");
}

#[test]
fn jwt_issuers_are_validated_strictly() {
    let d = tmpdir("jwt");
    std::fs::write(
        d.join("jwks.json"),
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .unwrap();
    let issuer = |extra: &str| {
        format!(
            "[[jwt_issuers]]\nname = \"idp\"\nissuer = \"https://idp.example/\"\naudiences = [\"ta\"]\nkinds = [\"rtc\"]\n{extra}\n"
        )
    };
    // A JWKS file relative to the config file; watched for reloads; not open.
    let c = load_file(
        &d,
        "",
        &issuer("jwks_file = \"jwks.json\"\nalgorithms = [\"EdDSA\"]"),
    )
    .unwrap();
    assert!(!c.snapshot().unwrap().auth.is_open());
    assert!(c.watch_files.iter().any(|p| p.ends_with("jwks.json")));
    let err = |extra: &str| load_file(&d, "", &issuer(extra)).unwrap_err().to_string();
    let cases = [
        ("jwks_file = \"jwks.json\"\nsurprise = 1", "surprise"),
        ("jwks_url = \"http://idp.example/jwks\"", "https"),
        (
            "jwks_file = \"jwks.json\"\njwks_url = \"https://idp.example/jwks\"",
            "not both",
        ),
        ("", "jwks_url or jwks_file"),
        (
            "jwks_file = \"jwks.json\"\nleeway_seconds = 301",
            "leeway_seconds",
        ),
        (
            "jwks_file = \"jwks.json\"\nalgorithms = [\"HS256\"]",
            "never none or HMAC",
        ),
        (
            "jwks_file = \"jwks.json\"\nalgorithms = [\"none\"]",
            "never none or HMAC",
        ),
        ("jwks_file = \"jwks.json\"\nalgorithms = []", "algorithms"),
        (
            "jwks_file = \"jwks.json\"\nmax_jwt_bytes = 100",
            "max_jwt_bytes",
        ),
        ("jwks_file = \"missing.json\"", "jwks_file"),
        (
            "jwks_file = \"jwks.json\"\nuid_claim = \"uid\"\nuid_ranges = [\"1-9\"]",
            "uid_ranges",
        ),
        (
            "jwks_file = \"jwks.json\"\nuid_claim = \"uid\"\naccount_claim = \"sub\"",
            "not both",
        ),
        (
            "jwks_file = \"jwks.json\"\nchannels = [\"user-{sub\"]",
            "channels",
        ),
        (
            "jwks_file = \"jwks.json\"\nbound_claims = { groups = [] }",
            "bound_claims.groups",
        ),
        (
            "jwks_file = \"jwks.json\"\njwks_min_refresh_seconds = 0",
            "jwks_min_refresh_seconds",
        ),
    ];
    for (extra, want) in cases {
        let e = err(extra);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    // kinds is required, as for callers.
    let e = load_file(
        &d,
        "",
        "[[jwt_issuers]]\nname = \"idp\"\nissuer = \"i\"\naudiences = [\"ta\"]\njwks_file = \"jwks.json\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("kinds"), "{e}");
    // An HMAC (oct) key in a JWKS is never used.
    std::fs::write(
        d.join("oct.json"),
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
    )
    .unwrap();
    let e = err("jwks_file = \"oct.json\"");
    assert!(e.contains("no usable signing key"), "{e}");
}

#[test]
fn the_workload_identity_overlay_config_loads_and_fails_closed_without_keys() {
    let overlay =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/overlays/workload-identity");
    let toml = std::fs::read_to_string(overlay.join("token-authority.toml")).unwrap();
    let d = tmpdir("overlay");
    // As shipped (no key): refused.
    std::fs::copy(
        overlay.join("cluster-jwks.json"),
        d.join("cluster-jwks.json"),
    )
    .unwrap();
    let e = load_file(&d, "", &toml).unwrap_err().to_string();
    assert!(e.contains("no usable signing key"), "{e}");
    // With a cluster's (RSA) key: loads, two entries of one issuer, not open.
    std::fs::write(
        d.join("cluster-jwks.json"),
        r#"{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"k","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#,
    )
    .unwrap();
    let c = load_file(&d, "", &toml).unwrap();
    assert_eq!(c.jwt_issuers.len(), 2);
    assert!(!c.snapshot().unwrap().auth.is_open());
}

#[test]
fn rate_limit_store_settings_and_password_sources() {
    let d = tmpdir("store");
    std::fs::write(d.join("cert"), format!("{CERT}\n")).unwrap();
    std::fs::write(d.join("pw"), "from-file-s3cret\n").unwrap();
    let path = d.join("ta.toml");
    let write = |limits: &str| {
        std::fs::write(
            &path,
            format!(
                "mode = \"open\"\n[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n\
                 [limits]\n{limits}"
            ),
        )
        .unwrap();
    };
    let args = ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    write(
        "rate_limit_store = \"redis://127.0.0.1:6379/1\"\nrate_limit_store_timeout_ms = 40\n\
         rate_limit_store_failure = \"deny\"\nrate_limit_store_key_prefix = \"fleet\"\n",
    );
    let pw_file = d.join("pw").display().to_string();
    let c = Config::load(
        &args,
        &env(&[("TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD_FILE", &pw_file)]),
    )
    .unwrap();
    let s = c.rate_limit_store.clone().unwrap();
    assert_eq!(s.timeout, Duration::from_millis(40));
    assert_eq!(s.failure, crate::policy::store::StoreFailure::Deny);
    assert_eq!(s.key_prefix, "fleet");
    assert!(!format!("{c:?}").contains("from-file-s3cret"));
    // Both variables: refused; a password in the URL and the environment: refused.
    let both = env(&[
        ("TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD_FILE", &pw_file),
        ("TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD", "x"),
    ]);
    assert!(Config::load(&args, &both).is_err());
    write("rate_limit_store = \"redis://:url-s3cret@127.0.0.1:6379/1\"\n");
    let c = Config::load(&args, &env(&[])).unwrap();
    assert!(!format!("{c:?}").contains("url-s3cret"));
    let e = Config::load(
        &args,
        &env(&[("TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD", "x")]),
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains("url-s3cret"), "{e}");
    // A bad URL is named, never shown.
    write("rate_limit_store = \"http://:url-s3cret@h\"\n");
    let e = Config::load(&args, &env(&[])).unwrap_err().to_string();
    assert!(
        e.contains("limits.rate_limit_store") && !e.contains("url-s3cret"),
        "{e}"
    );
    // A private CA for rediss:// only; a file that is not PEM is refused.
    let ca = rcgen::generate_simple_self_signed(vec!["redis.internal".to_owned()]).unwrap();
    std::fs::write(d.join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(d.join("junk.pem"), "not a certificate").unwrap();
    write(
        "rate_limit_store = \"rediss://redis.internal:6380/0\"\nrate_limit_store_ca_file = \"ca.pem\"\n",
    );
    assert!(
        Config::load(&args, &env(&[]))
            .unwrap()
            .rate_limit_store
            .is_some()
    );
    for (url, file) in [
        ("redis://redis.internal:6379/0", "ca.pem"),
        ("rediss://redis.internal:6380/0", "junk.pem"),
        ("rediss://redis.internal:6380/0", "absent.pem"),
    ] {
        write(&format!(
            "rate_limit_store = \"{url}\"\nrate_limit_store_ca_file = \"{file}\"\n"
        ));
        let e = Config::load(&args, &env(&[])).unwrap_err().to_string();
        assert!(e.contains("limits.rate_limit_store_ca_file"), "{e}");
    }
    // Store settings without the store.
    write("rate_limit_store_failure = \"deny\"\n");
    let e = Config::load(&args, &env(&[])).unwrap_err().to_string();
    assert!(e.contains("need rate_limit_store"), "{e}");
    // Without the setting: no store (the in-process limiters).
    write("");
    assert!(
        Config::load(&args, &env(&[]))
            .unwrap()
            .rate_limit_store
            .is_none()
    );
}
