//! Reloading the configuration without a restart: certificate rotation,
//! callers added or revoked, apps added.
//!
//! A reload runs [`Config::load`] again with the start-up flags and a fresh
//! environment (the process environment cannot change, but `.env` and the
//! `*_FILE` files can), builds a new [`Snapshot`] and swaps it in with
//! [`Shared::replace`]: one atomic pointer store, so a request uses the old
//! credentials or the new ones, never a mix. A reload that fails keeps the
//! running snapshot, logs why (configuration errors never contain a
//! certificate) and counts the failure in the metrics.
//!
//! What is reloaded: `[[apps]]` (or the environment's app) with their
//! primary and secondary certificates, `[[callers]]` and `[anonymous]`.
//! Everything else (listen addresses, TLS, limits, CORS, logging, shutdown
//! timing) is fixed at start-up: a change is logged as ignored until a
//! restart. Rate-limit buckets start full after a reload.
//!
//! Triggers (wired in [`crate::server`]): SIGHUP, and a change of the
//! CONTENT of a watched file, checked every [`POLL_INTERVAL`]. Watched are
//! the config file, every app's certificate files and the environment's
//! `*_FILE` credential files, whether they exist or not (a secondary
//! certificate appears and disappears during a rotation). Polling contents
//! by path follows symlinks on every read, so it sees the kubelet's atomic
//! `..data` symlink swap of a mounted Secret or ConfigMap, which inotify
//! watches on the old target would miss. Only SHA-256 digests of the files
//! are kept, never their contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::env::Env;
use crate::config::{Config, ConfigError};
use crate::state::Shared;

/// How often watched files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The dotenv file [`crate::config::env::ProcessEnv::load`] reads.
const DOTENV: &str = ".env";

/// What asked for a reload (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// A watched file changed.
    FileChange,
}

impl Trigger {
    /// The log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "SIGHUP",
            Self::FileChange => "file change",
        }
    }
}

/// A successful reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// App ids (default first) and their number of certificates.
    pub apps: Vec<(String, u8)>,
    /// Number of configured callers.
    pub callers: usize,
    /// Settings that changed but need a restart (they were ignored).
    pub ignored: Vec<&'static str>,
}

/// A content digest of a file; `None` when it cannot be read (missing).
type Digest32 = Option<[u8; 32]>;

fn digest(path: &Path) -> Digest32 {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}

/// Reloads the configuration into [`Shared`] on demand ([`Reloader::reload`])
/// or when a watched file changed ([`Reloader::poll`]).
#[derive(Debug)]
pub struct Reloader<F> {
    /// The configuration the server was started with: the flags to load
    /// again, and the settings that only a restart changes.
    running: Config,
    shared: Arc<Shared>,
    load_env: F,
    /// Watched files with the digest seen at the last reload attempt.
    watched: Vec<(PathBuf, Digest32)>,
}

impl<F, E> Reloader<F>
where
    F: Fn() -> E,
    E: Env,
{
    /// A reloader for a server started with `running`, whose state is
    /// `shared`. `load_env` gives the environment for each reload
    /// (`ProcessEnv::load` in the service).
    pub fn new(running: Config, shared: Arc<Shared>, load_env: F) -> Self {
        let watched = watch_list(&running)
            .into_iter()
            .map(|p| {
                let d = digest(&p);
                (p, d)
            })
            .collect();
        Self {
            running,
            shared,
            load_env,
            watched,
        }
    }

    /// The files whose change triggers a reload.
    pub fn watched_files(&self) -> impl Iterator<Item = &Path> {
        self.watched.iter().map(|(p, _)| p.as_path())
    }

    /// Reloads when a watched file's content changed since the last reload
    /// attempt; `None` when nothing changed.
    pub fn poll(&mut self) -> Option<Result<Reloaded, ConfigError>> {
        let now: Vec<Digest32> = self.watched.iter().map(|(p, _)| digest(p)).collect();
        let changed: Vec<&Path> = self
            .watched
            .iter()
            .zip(&now)
            .filter(|((_, before), after)| before != *after)
            .map(|((p, _), _)| p.as_path())
            .collect();
        if changed.is_empty() {
            return None;
        }
        tracing::info!(files = ?changed, "watched file changed");
        Some(self.reload_with(Trigger::FileChange, now))
    }

    /// Reloads now.
    pub fn reload(&mut self, trigger: Trigger) -> Result<Reloaded, ConfigError> {
        let now = self.watched.iter().map(|(p, _)| digest(p)).collect();
        self.reload_with(trigger, now)
    }

    /// Reloads; `digests` are the watched files' digests taken before
    /// loading (so a change while loading triggers another reload).
    fn reload_with(
        &mut self,
        trigger: Trigger,
        digests: Vec<Digest32>,
    ) -> Result<Reloaded, ConfigError> {
        // Whatever the outcome, this state of the files has been tried: a
        // broken file is reported once, not every poll, and the next change
        // (or SIGHUP) tries again.
        for ((_, d), new) in self.watched.iter_mut().zip(digests) {
            *d = new;
        }
        let loaded = Config::load(&self.running.args, &(self.load_env)())
            .and_then(|c| c.snapshot().map(|s| (c, s)));
        let (config, snapshot) = match loaded {
            Ok(x) => x,
            Err(e) => {
                self.shared.metrics.reload(false);
                tracing::error!(
                    trigger = trigger.as_str(),
                    error = %e,
                    "reload failed; still using the previous configuration and credentials"
                );
                return Err(e);
            }
        };
        let ignored = restart_only_changes(&self.running, &config);
        for setting in &ignored {
            tracing::warn!(
                setting,
                "changed in the configuration, but takes effect only after a restart; ignored"
            );
        }
        let result = Reloaded {
            apps: snapshot.app_certificates(),
            callers: config.callers.len(),
            ignored,
        };
        self.shared.replace(snapshot);
        self.shared.metrics.reload(true);
        // The new configuration may name other files (an app added).
        let mut watched = Vec::new();
        for path in watch_list(&config) {
            let d = match self.watched.iter().find(|(p, _)| *p == path) {
                Some((_, d)) => *d,
                None => digest(&path),
            };
            watched.push((path, d));
        }
        self.watched = watched;
        let apps: Vec<String> = result
            .apps
            .iter()
            .map(|(id, n)| format!("{id} ({n} certificate{})", if *n == 1 { "" } else { "s" }))
            .collect();
        tracing::info!(
            trigger = trigger.as_str(),
            apps = ?apps,
            callers = result.callers,
            source = %config.apps_source,
            "configuration reloaded (certificates not shown)"
        );
        Ok(result)
    }
}

/// The files a configuration depends on, plus `.env` (a reload reads it).
fn watch_list(config: &Config) -> Vec<PathBuf> {
    let mut files = config.watch_files.clone();
    files.push(PathBuf::from(DOTENV));
    let mut seen = std::collections::HashSet::new();
    files.retain(|p| seen.insert(p.clone()));
    files
}

/// The settings fixed at start-up that differ between `running` and `new`.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("listen", running.listen != new.listen);
    check("admin_listen", running.admin_listen != new.admin_listen);
    check("tls", running.tls != new.tls);
    check("log_format", running.log_format != new.log_format);
    check(
        "shutdown_delay_seconds",
        running.shutdown_delay != new.shutdown_delay,
    );
    check(
        "shutdown_grace_seconds",
        running.shutdown_grace != new.shutdown_grace,
    );
    check(
        "max_request_bytes",
        running.max_request_bytes != new.max_request_bytes,
    );
    check(
        "limits",
        running.connection != new.connection
            || running.max_concurrent_requests != new.max_concurrent_requests
            || running.request_timeout != new.request_timeout,
    );
    check("cors", running.cors_origins != new.cors_origins);
    changed
}

#[cfg(test)]
mod tests {
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

    /// `top` holds top-level keys (TOML wants them before any table).
    fn app_toml(top: &str) -> String {
        format!(
            "{top}[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"cert\"\n\
             secondary_certificate_file = \"cert-secondary\"\n"
        )
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
        assert!(r.poll().is_none(), "nothing changed");
        assert!(verifies(&token(&shared, None), OLD));
        assert_eq!(shared.current().app_certificates(), vec![(ID.into(), 1)]);

        // Rotation step: sign with NEW, still accept OLD. The secondary file
        // did not exist before: its appearance is a change too.
        d.write("cert", &format!("{NEW}\n"));
        d.write("cert-secondary", &format!("{OLD}\n"));
        let done = r.poll().unwrap().unwrap();
        assert_eq!(done.apps, vec![(ID.into(), 2)]);
        assert!(done.ignored.is_empty());
        let t = token(&shared, None);
        assert!(verifies(&t, NEW) && !verifies(&t, OLD));
        assert_eq!(shared.metrics.reloads(), (1, 0));
        assert!(r.poll().is_none(), "same contents: no second reload");

        // The secondary is removed again.
        std::fs::remove_file(d.0.join("cert-secondary")).unwrap();
        assert_eq!(r.poll().unwrap().unwrap().apps, vec![(ID.into(), 1)]);
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
        let e = r.poll().unwrap().unwrap_err().to_string();
        assert!(e.contains("apps[0].certificate_file"), "{e}");
        assert!(!e.contains(bad), "{e}");
        assert!(verifies(&token(&shared, None), OLD));
        assert_eq!(shared.metrics.reloads(), (0, 1));
        assert!(r.poll().is_none(), "a broken file is reported once");
        // SIGHUP retries it (and fails again).
        assert!(r.reload(Trigger::Signal).is_err());

        // A broken config file, too.
        d.write("cert", NEW);
        d.write("ta.toml", "[[apps]\n");
        assert!(r.poll().unwrap().is_err());
        assert!(verifies(&token(&shared, None), OLD));

        // Fixed: picked up.
        d.write("ta.toml", &app_toml(""));
        assert!(r.poll().unwrap().is_ok());
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
        assert!(r.poll().unwrap().is_ok());
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
        assert_eq!(r.poll().unwrap().unwrap().apps, vec![(ID.into(), 2)]);
        assert!(verifies(&token(&shared, None), NEW));
        // A missing primary file is an error, not "no certificate".
        std::fs::remove_file(&cert).unwrap();
        assert!(r.poll().unwrap().is_err());
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
            &format!("[[apps]]\napp_id = \"{ID}\"\ncertificate_file = \"certificate\"\n"),
        );
        let (c, shared) = start(&cfg);
        let mut r = Reloader::new(c, Arc::clone(&shared), no_env);
        assert!(r.poll().is_none());
        version("..2026_02", NEW);
        std::fs::remove_dir_all(d.0.join("..2026_01")).unwrap();
        assert!(r.poll().unwrap().is_ok());
        assert!(verifies(&token(&shared, None), NEW));
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
}
