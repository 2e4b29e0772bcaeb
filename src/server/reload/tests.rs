//! Unit tests of the parent module.
use std::collections::HashMap;

use agora_token::UnverifiedToken;

use super::*;
use crate::config::ServeArgs;
use crate::domain::{AppCredentials, RtcRequest, RtcUser};

const ID: &str = "970CA35de60c44645bbae8a215061b33";
const ID2: &str = "0123456789abcdef0123456789abcdef";
const OLD: &str = "5CFd2fd1755d40ecb72977518be15d3b";
const NEW: &str = "fedcba9876543210fedcba9876543210";

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ta-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        // Atomic, like a kubelet update or `mv`.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

fn start(config: &Path) -> (Config, Arc<Shared>) {
    let args = ServeArgs {
        config: Some(config.to_path_buf()),
        ..Default::default()
    };
    let c = Config::load(&args, &no_env()).unwrap();
    let shared = Arc::new(Shared::new(c.snapshot().unwrap()));
    (c, shared)
}

fn token(shared: &Shared, app: Option<&str>) -> String {
    let req = RtcRequest {
        common: crate::domain::Common {
            app_id: app.map(str::to_owned),
            expire: None,
        },
        channel_name: "c".into(),
        user: RtcUser::Uid(1),
        role: agora_token::Role::Publisher,
        privilege_expire: None,
    };
    let snap = shared.current();
    let draft = snap
        .issuer
        .rtc(&req, &crate::domain::Limits::default())
        .unwrap();
    snap.issuer
        .sign(&draft, &crate::domain::Permit::local())
        .unwrap()
        .token
}

fn verifies(token: &str, cert: &str) -> bool {
    UnverifiedToken::parse(token)
        .unwrap()
        .verify(&agora_token::AppCertificate::new(cert).unwrap())
        .is_ok()
}

/// `top` holds top-level keys (TOML wants them before any table). No
/// callers: open mode, said explicitly.
fn app_toml(top: &str) -> String {
    format!(
        "mode = \"open\"\n{top}[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n\
         secondary_certificate_file = \"cert-secondary\"\n"
    )
}

/// Polls twice, [`STABLE_WINDOW`] apart on the poller's clock: a
/// change (made atomically) is applied by the second poll.
fn settle<F: Fn() -> E, E: Env>(r: &mut Reloader<F>) -> Option<Result<Reloaded, ConfigError>> {
    let t = Instant::now();
    if let Some(done) = r.poll_at(t) {
        return Some(done);
    }
    r.poll_at(t + STABLE_WINDOW)
}

#[test]
fn rotation_through_files_and_poll() {
    let d = Dir::new("rotate");
    d.write("cert", &format!("{OLD}\n"));
    let cfg = d.write("ta.toml", &app_toml(""));
    let (c, shared) = start(&cfg);
    let mut r = Reloader::new(c, Arc::clone(&shared), no_env);
    let files: Vec<&Path> = r.watched_files().collect();
    assert!(files.contains(&cfg.as_path()));
    assert!(files.contains(&d.0.join("cert").as_path()));
    assert!(files.contains(&d.0.join("cert-secondary").as_path()));
    assert!(settle(&mut r).is_none(), "nothing changed");
    assert!(verifies(&token(&shared, None), OLD));
    assert_eq!(shared.current().app_certificates(), vec![(ID.into(), 1)]);

    // Rotation step: sign with NEW, still accept OLD. The secondary file
    // did not exist before: its appearance is a change too.
    d.write("cert", &format!("{NEW}\n"));
    d.write("cert-secondary", &format!("{OLD}\n"));
    let done = settle(&mut r).unwrap().unwrap();
    assert_eq!(done.apps, vec![(ID.into(), 2)]);
    assert!(done.ignored.is_empty());
    let t = token(&shared, None);
    assert!(verifies(&t, NEW) && !verifies(&t, OLD));
    assert_eq!(shared.metrics.reloads(), (1, 0));
    assert!(settle(&mut r).is_none(), "same contents: no second reload");

    // The secondary is removed again.
    std::fs::remove_file(d.0.join("cert-secondary")).unwrap();
    assert_eq!(settle(&mut r).unwrap().unwrap().apps, vec![(ID.into(), 1)]);
}

#[test]
fn failed_reload_keeps_the_old_snapshot_and_says_why() {
    let d = Dir::new("bad");
    d.write("cert", &format!("{OLD}\n"));
    let cfg = d.write("ta.toml", &app_toml(""));
    let (c, shared) = start(&cfg);
    let mut r = Reloader::new(c, Arc::clone(&shared), no_env);

    let bad = "zz-not-a-certificate-zz";
    d.write("cert", bad);
    let e = settle(&mut r).unwrap().unwrap_err().to_string();
    assert!(e.contains("apps[0].certificate_file"), "{e}");
    assert!(!e.contains(bad), "{e}");
    assert!(verifies(&token(&shared, None), OLD));
    assert_eq!(shared.metrics.reloads(), (0, 1));
    assert!(settle(&mut r).is_none(), "a broken file is reported once");
    // SIGHUP retries it (and fails again).
    assert!(r.reload(Trigger::Signal).is_err());

    // A broken config file, too.
    d.write("cert", NEW);
    d.write("ta.toml", "[[apps]\n");
    assert!(settle(&mut r).unwrap().is_err());
    assert!(verifies(&token(&shared, None), OLD));

    // Fixed: picked up.
    d.write("ta.toml", &app_toml(""));
    assert!(settle(&mut r).unwrap().is_ok());
    assert!(verifies(&token(&shared, None), NEW));
    assert_eq!(shared.metrics.reloads(), (1, 3));
}

#[test]
fn apps_and_callers_are_reloaded_restart_only_settings_are_not() {
    let d = Dir::new("apps");
    d.write("cert", OLD);
    d.write("cert2", NEW);
    let cfg = d.write("ta.toml", &app_toml("listen = \"127.0.0.1:1\"\n"));
    let (c, shared) = start(&cfg);
    assert!(shared.current().auth.is_open());
    let mut r = Reloader::new(c, Arc::clone(&shared), no_env);
    let text = format!(
        "listen = \"127.0.0.1:2\"\n[limits]\nmax_concurrent_requests = 5\n\
         [[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n\
         [[apps]]\napp_id = \"{ID2}\"\ncertificate_file = \"cert2\"\n\
         [[callers]]\nname = \"x\"\napi_key_sha256 = \"{}\"\nkinds = [\"*\"]\n",
        "ab".repeat(32)
    );
    d.write("ta.toml", &text);
    let done = r.reload(Trigger::Signal).unwrap();
    assert_eq!(done.ignored, vec!["listen", "limits"]);
    assert_eq!(done.callers, 1);
    assert_eq!(done.apps, vec![(ID.into(), 1), (ID2.into(), 1)]);
    assert!(!shared.current().auth.is_open());
    assert!(verifies(&token(&shared, Some(ID2)), NEW));
    // The new app's certificate file is watched now.
    assert!(r.watched_files().any(|p| p == d.0.join("cert2")));
    d.write("cert2", OLD);
    assert!(settle(&mut r).unwrap().is_ok());
    assert!(verifies(&token(&shared, Some(ID2)), OLD));
}

#[test]
fn environment_files_are_watched() {
    let d = Dir::new("env");
    let cert = d.write("certificate", &format!("{OLD}\n"));
    let secondary = d.0.join("certificate-secondary");
    let env = move || -> HashMap<String, String> {
        [
            ("SHENGWANG_APP_ID", ID.to_owned()),
            (
                "SHENGWANG_APP_CERTIFICATE_FILE",
                d.0.join("certificate").display().to_string(),
            ),
            (
                "SHENGWANG_APP_CERTIFICATE_SECONDARY_FILE",
                d.0.join("certificate-secondary").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let c = Config::load(&ServeArgs::default(), &env()).unwrap();
    let shared = Arc::new(Shared::new(c.snapshot().unwrap()));
    let mut r = Reloader::new(c, Arc::clone(&shared), env);
    assert!(r.watched_files().any(|p| p == cert));
    assert!(r.watched_files().any(|p| p == secondary));
    std::fs::write(&secondary, OLD).unwrap();
    std::fs::write(&cert, NEW).unwrap();
    assert_eq!(settle(&mut r).unwrap().unwrap().apps, vec![(ID.into(), 2)]);
    assert!(verifies(&token(&shared, None), NEW));
    // A missing primary file is an error, not "no certificate".
    std::fs::remove_file(&cert).unwrap();
    assert!(settle(&mut r).unwrap().is_err());
    assert!(verifies(&token(&shared, None), NEW));
}

/// A Kubernetes Secret volume: `certificate -> ..data/certificate`,
/// `..data -> ..<timestamp>`; an update writes a new timestamped
/// directory and renames a new `..data` symlink over the old one.
#[cfg(unix)]
#[test]
fn kubelet_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let d = Dir::new("kubelet");
    let version = |name: &str, cert: &str| {
        std::fs::create_dir_all(d.0.join(name)).unwrap();
        std::fs::write(d.0.join(name).join("certificate"), format!("{cert}\n")).unwrap();
        symlink(name, d.0.join("..data_tmp")).unwrap();
        std::fs::rename(d.0.join("..data_tmp"), d.0.join("..data")).unwrap();
    };
    version("..2026_01", OLD);
    symlink("..data/certificate", d.0.join("certificate")).unwrap();
    let cfg = d.write(
        "ta.toml",
        &format!(
            "mode = \"open\"\n[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"certificate\"\n"
        ),
    );
    let (c, shared) = start(&cfg);
    let mut r = Reloader::new(c, Arc::clone(&shared), no_env);
    assert!(settle(&mut r).is_none());
    version("..2026_02", NEW);
    std::fs::remove_dir_all(d.0.join("..2026_01")).unwrap();
    assert!(settle(&mut r).unwrap().is_ok());
    assert!(verifies(&token(&shared, None), NEW));
}

/// An app and the caller `svc` limited to `channels`, plus `extra`.
fn locked_toml(channels: &str, extra: &str) -> String {
    format!(
        "[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n\n\
         [[callers]]\nname = \"svc\"\napi_key_sha256 = \"{}\"\nkinds = [\"rtc\"]\n\
         channels = [{channels}]\n{extra}",
        "ab".repeat(32)
    )
}

/// The snapshot in use is still `before` (nothing was swapped in).
fn same_snapshot(shared: &Shared, before: &Arc<Snapshot>) -> bool {
    Arc::ptr_eq(&shared.current(), before)
}

#[test]
fn a_file_without_callers_or_mode_open_is_refused_and_the_callers_stay() {
    let d = Dir::new("failclosed");
    d.write("cert", OLD);
    let cfg = d.write("ta.toml", &locked_toml("\"agent-*\"", ""));
    let (c, shared) = start(&cfg);
    let before = Arc::clone(&shared.current());
    let mut r = Reloader::new(c, Arc::clone(&shared), no_env);

    // The callers deleted (or a prefix of the file without them).
    d.write(
        "ta.toml",
        &format!("[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n"),
    );
    let e = settle(&mut r).unwrap().unwrap_err().to_string();
    assert!(
        e.contains("[[callers]]") && e.contains("mode = \"open\""),
        "{e}"
    );
    assert!(r.reload(Trigger::Signal).is_err());
    // `[anonymous]` alone does not lock it down either.
    d.write(
        "ta.toml",
        &format!(
            "[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n\
             [anonymous]\nchannels = [\"public-*\"]\n"
        ),
    );
    let e = settle(&mut r).unwrap().unwrap_err().to_string();
    assert!(e.starts_with("anonymous: "), "{e}");
    assert!(same_snapshot(&shared, &before));
    assert!(!shared.current().auth.is_open());
    assert_eq!(shared.metrics.reloads(), (0, 3));

    // Open on purpose: applied, and the summary says what changed.
    d.write("ta.toml", &app_toml(""));
    let done = settle(&mut r).unwrap().unwrap();
    assert!(shared.current().auth.is_open());
    assert_eq!(done.access.open_mode, Some(true));
    assert_eq!(done.access.callers_removed, vec!["svc"]);
}

#[test]
fn a_change_is_applied_only_after_it_stayed_the_same_for_the_window() {
    let d = Dir::new("window");
    d.write("cert", OLD);
    let cfg = d.write("ta.toml", &locked_toml("\"agent-*\"", ""));
    let (c, shared) = start(&cfg);
    let mut r = Reloader::new(c, Arc::clone(&shared), no_env);
    let t0 = Instant::now();
    let ms = Duration::from_millis;

    d.write("ta.toml", &locked_toml("\"agent-*\", \"lobby-*\"", ""));
    assert!(r.poll_at(t0).is_none());
    assert!(r.settling());
    assert!(r.poll_at(t0 + ms(499)).is_none());
    assert_eq!(shared.metrics.reloads(), (0, 0), "nothing loaded yet");
    let done = r.poll_at(t0 + ms(500)).unwrap().unwrap();
    assert!(!r.settling());
    assert_eq!(
        done.access.callers_changed,
        vec![("svc".to_owned(), vec!["channels"])]
    );

    // A second change before the window is over restarts it.
    let t1 = t0 + ms(10_000);
    d.write("ta.toml", &locked_toml("\"a-*\"", ""));
    assert!(r.poll_at(t1).is_none());
    d.write("ta.toml", &locked_toml("\"b-*\"", ""));
    assert!(r.poll_at(t1 + ms(600)).is_none());
    assert!(r.poll_at(t1 + ms(1_000)).is_none());
    assert_eq!(shared.metrics.reloads(), (1, 0));
    assert!(r.poll_at(t1 + ms(1_100)).unwrap().is_ok());
    assert_eq!(shared.metrics.reloads(), (2, 0));

    // A change undone before it was stable: nothing to do.
    let t2 = t1 + ms(10_000);
    d.write("ta.toml", &locked_toml("\"c-*\"", ""));
    assert!(r.poll_at(t2).is_none());
    d.write("ta.toml", &locked_toml("\"b-*\"", ""));
    assert!(r.poll_at(t2 + ms(600)).is_none());
    assert!(!r.settling());
    assert!(r.poll_at(t2 + ms(1_200)).is_none());
    assert_eq!(shared.metrics.reloads(), (2, 0));
}

/// The config file rewritten in place byte by byte, polled between
/// bytes at intervals shorter than the window: no prefix is ever
/// loaded, although many of them are complete, valid configurations
/// that grant more than the old file or the new one.
#[test]
fn an_in_place_rewrite_never_applies_a_prefix() {
    use std::io::Write;
    let d = Dir::new("inplace");
    d.write("cert", OLD);
    let old = locked_toml("\"agent-*\"", "");
    let cfg = d.write("ta.toml", &old);
    let (c, shared) = start(&cfg);
    let before = Arc::clone(&shared.current());
    let mut r = Reloader::new(c.clone(), Arc::clone(&shared), no_env);
    // New: svc also gets lobby-*, a second caller is added.
    let new = locked_toml(
        "\"agent-*\", \"lobby-*\"",
        &format!(
            "\n[[callers]]\nname = \"other\"\napi_key_sha256 = \"{}\"\nkinds = [\"rtc\"]\n",
            "cd".repeat(32)
        ),
    );

    let mut t = Instant::now();
    let mut file = std::fs::File::create(&cfg).unwrap(); // truncates: "" is a prefix too
    let mut wider_prefixes = 0;
    for (i, chunk) in new.as_bytes().chunks(1).enumerate() {
        assert!(r.poll_at(t).is_none(), "a prefix was loaded at chunk {i}");
        assert!(same_snapshot(&shared, &before), "chunk {i}");
        assert_eq!(shared.metrics.reloads(), (0, 0), "chunk {i}");
        // Would this prefix, loaded, be a valid configuration that
        // widens svc (no channel restriction yet)?
        if let Ok(p) = Config::load(&c.args, &no_env()) {
            if p.callers
                .first()
                .is_some_and(|s| s.policy.channels.is_none())
            {
                wider_prefixes += 1;
            }
        }
        file.write_all(chunk).unwrap();
        t += Duration::from_millis(300);
    }
    drop(file);
    assert!(
        wider_prefixes > 0,
        "the test should cross dangerous prefixes"
    );
    // Complete: seen once, then the same 500 ms later, applied.
    assert!(r.poll_at(t).is_none());
    let done = r.poll_at(t + STABLE_WINDOW).unwrap().unwrap();
    assert_eq!(done.callers, 2);
    assert_eq!(
        done.access.to_string(),
        "callers added: [other]; callers changed: [svc (channels)]"
    );
    assert_eq!(shared.metrics.reloads(), (1, 0));
}

#[test]
fn a_change_while_loading_is_not_applied_and_waits_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = Dir::new("midload");
    d.write("cert", OLD);
    let cfg = d.write("ta.toml", &locked_toml("\"agent-*\"", ""));
    let (c, shared) = start(&cfg);
    let before = Arc::clone(&shared.current());
    // The environment is read at the start of each load: the writer
    // strikes then, once.
    let armed = Arc::new(AtomicBool::new(false));
    let (trigger, dir) = (Arc::clone(&armed), d.0.clone());
    let env = move || {
        if trigger.swap(false, Ordering::SeqCst) {
            std::fs::write(dir.join("ta.toml"), locked_toml("\"late-*\"", "")).unwrap();
        }
        no_env()
    };
    let mut r = Reloader::new(c, Arc::clone(&shared), env);
    let t0 = Instant::now();
    d.write("ta.toml", &locked_toml("\"first-*\"", ""));
    assert!(r.poll_at(t0).is_none());
    armed.store(true, Ordering::SeqCst);
    assert!(r.poll_at(t0 + STABLE_WINDOW).is_none(), "discarded");
    assert!(same_snapshot(&shared, &before));
    assert_eq!(shared.metrics.reloads(), (0, 0));
    // The file that is there now goes through the window again.
    let t1 = t0 + STABLE_WINDOW + Duration::from_millis(100);
    assert!(r.poll_at(t1).is_none());
    let done = r.poll_at(t1 + STABLE_WINDOW).unwrap().unwrap();
    assert_eq!(done.access.callers_changed[0].1, vec!["channels"]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("late-*"));
}

#[test]
fn sighup_reloads_at_once() {
    let d = Dir::new("hupnow");
    d.write("cert", OLD);
    let cfg = d.write("ta.toml", &app_toml(""));
    let (c, shared) = start(&cfg);
    let mut r = Reloader::new(c, Arc::clone(&shared), no_env);
    d.write("cert", NEW);
    assert!(r.poll_at(Instant::now()).is_none());
    let done = r.reload(Trigger::Signal).unwrap();
    assert!(done.access.is_empty());
    assert!(!r.settling());
    assert!(verifies(&token(&shared, None), NEW));
    assert!(settle(&mut r).is_none(), "already applied");
}

#[test]
fn credentials_in_code_have_nothing_to_watch_but_dotenv() {
    let c = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![AppCredentials {
            app_id: agora_token::AppId::new(ID).unwrap(),
            certificate: agora_token::AppCertificate::new(OLD).unwrap(),
            secondary: None,
        }],
    );
    let shared = Arc::new(Shared::new(c.snapshot().unwrap()));
    let r = Reloader::new(c, shared, no_env);
    assert_eq!(
        r.watched_files().collect::<Vec<_>>(),
        vec![Path::new(DOTENV)]
    );
}

/// An Ed25519 key: its signing key and its public JWK with `kid`.
fn ed_key(kid: &str) -> (jsonwebtoken::EncodingKey, String) {
    use base64::Engine as _;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key_raw());
    (
        jsonwebtoken::EncodingKey::from_ed_der(&kp.serialize_der()),
        format!(r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"{x}"}}"#),
    )
}

#[test]
fn a_changed_jwks_file_reloads_and_a_broken_one_keeps_the_keys() {
    let d = Dir::new("jwks");
    d.write("cert", &format!("{OLD}\n"));
    let (a, a_jwk) = ed_key("a");
    let (b, b_jwk) = ed_key("b");
    d.write("jwks.json", &format!(r#"{{"keys":[{a_jwk}]}}"#));
    let cfg = d.write(
        "ta.toml",
        &format!(
            "[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n\n[[jwt_issuers]]\n\
             name = \"k8s\"\nissuer = \"https://k8s.example\"\naudiences = [\"ta\"]\n\
             jwks_file = \"jwks.json\"\nalgorithms = [\"EdDSA\"]\nkinds = [\"rtc\"]\n"
        ),
    );
    let (c, shared) = start(&cfg);
    let mut r = Reloader::new(c, Arc::clone(&shared), no_env);
    assert!(r.watched_files().any(|p| p == d.0.join("jwks.json")));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mint = |key: &jsonwebtoken::EncodingKey, kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(kid.into());
        let claims = serde_json::json!({"iss": "https://k8s.example", "aud": "ta",
            "sub": "system:serviceaccount:ns:sa", "exp": now + 600});
        jsonwebtoken::encode(&h, &claims, key).unwrap()
    };
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let accepts = |jwt: &str| {
        shared
            .current()
            .auth
            .authenticate(Some(jwt), &[], ip, false)
            .is_ok()
    };
    let (ja, jb) = (mint(&a, "a"), mint(&b, "b"));
    assert!(accepts(&ja) && !accepts(&jb));
    // Rotation: b published, a withdrawn.
    d.write("jwks.json", &format!(r#"{{"keys":[{b_jwk}]}}"#));
    let done = settle(&mut r).unwrap().unwrap();
    assert!(done.access.is_empty(), "{}", done.access);
    assert!(!accepts(&ja) && accepts(&jb));
    // A broken file is refused; the keys stay.
    d.write("jwks.json", "{not json");
    let e = settle(&mut r).unwrap().unwrap_err().to_string();
    assert!(
        e.contains("jwks_file") && e.contains("not a JSON document"),
        "{e}"
    );
    assert!(accepts(&jb));
}
