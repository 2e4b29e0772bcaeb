//! Service configuration: flags, an optional TOML file and the environment
//! become one validated [`Config`] (DESIGN 5), before anything binds.
//!
//! Precedence: flags > config file > environment / built-in defaults.
//! Apps come from the file's `[[apps]]` when it has any, otherwise from the
//! environment (`SHENGWANG_APP_ID` / `SHENGWANG_APP_CERTIFICATE`, see
//! [`crate::config::env`]). Errors say what is missing or malformed and where to get
//! it; they never contain a certificate.
//!
//! Fail closed: a config file without `[[callers]]` is an error unless it
//! says `mode = "open"` at the top level; `mode = "open"` with `[[callers]]`
//! and `[anonymous]` without `[[callers]]` are errors too. Only the
//! environment-only setup (no `--config`) runs open without saying so (it
//! warns at start-up). A reload applies the same rules.
//!
//! ```toml
//! listen = "0.0.0.0:8080"          # --listen
//! admin_listen = "127.0.0.1:9090"  # --admin-listen
//! log_format = "json"              # --log-format: text | json
//! shutdown_delay_seconds = 5       # --shutdown-delay
//! shutdown_grace_seconds = 20      # --shutdown-grace
//! max_request_bytes = 65536        # --max-request-bytes
//! metrics = true                   # --no-metrics turns them off
//!
//! [[apps]]                          # the first app is the default
//! app_id = "970CA35de60c44645bbae8a215061b33"
//! certificate_file = "/run/secrets/agora-cert"       # relative: to this file
//! secondary_certificate_file = "/run/secrets/old"    # optional (rotation);
//!                                                     # a missing file = none
//!
//! # mode = "open"                   # only without [[callers]]: run open on purpose
//!
//! [[callers]]                       # required unless mode = "open" (fail closed)
//! name = "convoai-orchestrator"
//! api_key_sha256 = "<64 hex>"       # `token-authority keygen` makes one
//! channels = ["agent-*"]            # see crate::policy for every policy key
//!
//! [anonymous]                       # optional, needs [[callers]]: browsers on the GET endpoint
//! channels = ["public-*"]
//!
//! [tls]                             # optional: TLS / mTLS on the main port
//! cert_file = "server.pem"
//! key_file = "server.key"
//! client_ca_file = "clients-ca.pem"
//!
//! [cors]
//! allowed_origins = ["https://app.example.com"]
//!
//! [limits]                              # every key: docs/CONFIGURATION.md
//! max_concurrent_requests = 1024
//! request_timeout_seconds = 10          # 1 ..= 86400
//! max_connections = 4096
//! max_connections_per_client = 64
//! ```

pub mod access;
mod args;
pub mod env;
mod file;
pub mod tls;

pub use crate::telemetry::logging::LogFormat;
pub use args::*;
pub use file::*;

use crate::config::env::{Env, EnvError};
use crate::config::tls::TlsConfig;
use crate::domain::{AppCredentials, Issuer};
use crate::policy::{AnonymousConfig, Authenticator, CallerConfig};
use crate::state::Snapshot;
use agora_token::{AppCertificate, AppId};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Exit code for configuration errors (`EX_CONFIG` from `sysexits.h`).
pub const EXIT_CONFIG: u8 = 78;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default graceful-shutdown grace period, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE: u64 = 10;
/// Default delay between SIGTERM and no longer accepting, in seconds.
pub const DEFAULT_SHUTDOWN_DELAY: u64 = 0;

const WHERE: &str =
    "find the App ID and App Certificate in the Agora / Shengwang console, project settings";

/// Per-connection limits of the listeners, and the per-caller in-flight
/// limits (`[limits]`). SECURITY.md ("a slow or hostile client") says what
/// they bound together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// HTTP/1.1: time allowed to receive a request's headers (slow-client
    /// protection).
    pub header_read_timeout: Duration,
    /// HTTP/1.1 read buffer and HTTP/2 header list limit, in bytes.
    pub max_header_bytes: usize,
    /// HTTP/2: concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2: keep-alive ping interval (idle peers that do not answer are
    /// dropped).
    pub keep_alive_interval: Option<Duration>,
    /// Open connections of the main listener; past it new ones are closed
    /// at once.
    pub max_connections: usize,
    /// Open connections of the main listener per client (an IPv4 address,
    /// an IPv6 prefix of `client_ipv6_prefix` bits).
    pub max_connections_per_client: usize,
    /// Open connections of the admin listener (its own budget).
    pub admin_max_connections: usize,
    /// The IPv6 prefix length that identifies one client (connection caps,
    /// in-flight limits, the anonymous rate limit).
    pub client_ipv6_prefix: u8,
    /// TLS handshake, from accept.
    pub tls_handshake_timeout: Duration,
    /// From accept (or the end of the TLS handshake) to the first request's
    /// headers (HTTP/1.1) or the HTTP/2 preface and first HEADERS.
    pub first_request_timeout: Duration,
    /// A connection without a request in progress (HTTP/1.1 between
    /// requests, HTTP/2 without open streams) is closed after this.
    pub idle_timeout: Duration,
    /// HTTP/2 flow-control window per stream, in bytes.
    pub http2_stream_window: u32,
    /// HTTP/2 flow-control window per connection, in bytes.
    pub http2_connection_window: u32,
    /// HTTP/2 send buffer per stream, in bytes.
    pub http2_max_send_buf: usize,
    /// Requests in progress per caller (and per anonymous client); 0: an
    /// eighth of `max_concurrent_requests`.
    pub max_in_flight_per_caller: usize,
    /// Requests in progress from unauthenticated clients together
    /// (anonymous GET, health, metrics, reflection on the main port); 0: a
    /// quarter of `max_concurrent_requests`.
    pub max_in_flight_anonymous: usize,
    /// `WatchToken` streams open at once per caller (per client address in
    /// open mode); past it a new watch is refused (RESOURCE_EXHAUSTED).
    pub max_watches_per_caller: usize,
    /// The longest a `WatchToken` stream lasts; then it ends (OK) and the
    /// client reconnects.
    pub max_watch: Duration,
}

/// Default `max_watches_per_caller`.
pub const DEFAULT_MAX_WATCHES_PER_CALLER: usize = 1000;
/// Default `max_watch_seconds` (a day: at least one renewal of the longest
/// token).
pub const DEFAULT_MAX_WATCH_SECONDS: u64 = 86_400;

/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default `max_connections_per_client`.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 64;
/// Default `admin_max_connections`.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 32;

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_concurrent_streams: 16,
            keep_alive_interval: Some(Duration::from_secs(60)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            admin_max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            client_ipv6_prefix: 64,
            tls_handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_stream_window: 64 * 1024,
            http2_connection_window: 256 * 1024,
            http2_max_send_buf: 64 * 1024,
            max_in_flight_per_caller: 0,
            max_in_flight_anonymous: 0,
            max_watches_per_caller: DEFAULT_MAX_WATCHES_PER_CALLER,
            max_watch: Duration::from_secs(DEFAULT_MAX_WATCH_SECONDS),
        }
    }
}

impl ConnectionLimits {
    /// `max_in_flight_per_caller`, resolved against the global limit.
    pub fn in_flight_per_caller(&self, global: usize) -> usize {
        match self.max_in_flight_per_caller {
            0 => (global / 8).max(1),
            n => n.min(global),
        }
    }

    /// `max_in_flight_anonymous`, resolved against the global limit.
    pub fn in_flight_anonymous(&self, global: usize) -> usize {
        match self.max_in_flight_anonymous {
            0 => (global / 4).max(1),
            n => n.min(global),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Main listen address.
    pub listen: SocketAddr,
    /// Admin listen address.
    pub admin_listen: Option<SocketAddr>,
    /// Apps; the first is the default. Never empty.
    pub apps: Vec<AppCredentials>,
    /// Log format.
    pub log_format: LogFormat,
    /// Time between SIGTERM and no longer accepting connections, during
    /// which readiness is NOT_SERVING but requests are still served.
    pub shutdown_delay: Duration,
    /// Grace period for in-flight requests at shutdown (after the delay).
    pub shutdown_grace: Duration,
    /// Largest JSON request body and gRPC message, in bytes.
    pub max_request_bytes: usize,
    /// Where the apps came from (for the start-up log).
    pub apps_source: String,
    /// The app id the environment names (`SHENGWANG_APP_ID`, ...) when
    /// `[[apps]]` in the config file replace the environment's app and do
    /// not list it: that app is not served (the start-up log warns).
    pub replaced_env_app: Option<String>,
    /// Per-connection limits (`[limits]` in the config file).
    pub connection: ConnectionLimits,
    /// Callers and their policies (empty: open mode).
    pub callers: Vec<CallerConfig>,
    /// The anonymous policy for the GET endpoint.
    pub anonymous: Option<AnonymousConfig>,
    /// JWT issuers whose tokens identify callers (paths resolved).
    pub jwt_issuers: Vec<crate::policy::jwt::JwtIssuerConfig>,
    /// TLS on the main port.
    pub tls: Option<TlsConfig>,
    /// Origins allowed to call the GET endpoint from browsers.
    pub cors_origins: Vec<String>,
    /// Requests in progress at once before new ones get RESOURCE_EXHAUSTED / 429.
    pub max_concurrent_requests: usize,
    /// Longest time a request may take (reading its body included).
    pub request_timeout: Duration,
    /// The flags this config was loaded from (a reload loads them again).
    pub args: ServeArgs,
    /// Audit events also go to this file; a token is returned only after
    /// its record is written there.
    pub audit_log: Option<PathBuf>,
    /// Whether the audit file is synced (fdatasync) before a token is returned.
    pub audit_fsync: bool,
    /// The files the reloadable settings were read from (the config file,
    /// the apps' certificate files, the environment's `*_FILE` files),
    /// existing or not: a reload is due when one of them changes.
    pub watch_files: Vec<PathBuf>,
    /// Whether metrics are recorded and served (default true).
    pub metrics: bool,
    /// The clock of the issuer and of `WatchToken` schedules (the system
    /// clock; tests move a [`crate::domain::ManualClock`] by hand).
    pub clock: Arc<dyn crate::domain::Timer>,
    /// The shared rate-limit store (`[limits] rate_limit_store`): every
    /// rate limit is then one decision for the whole fleet.
    pub rate_limit_store: Option<crate::policy::store::StoreConfig>,
}

/// Default `max_concurrent_requests`.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Largest `request_timeout_seconds` (one day); larger values are capped.
pub const MAX_REQUEST_TIMEOUT: u64 = 86_400;

/// Default `request_timeout_seconds`.
pub const DEFAULT_REQUEST_TIMEOUT: u64 = 10;

impl Config {
    /// A config for `apps` with the defaults, listening on `listen`.
    pub fn new(listen: SocketAddr, apps: Vec<AppCredentials>) -> Self {
        Self {
            listen,
            admin_listen: None,
            apps,
            log_format: LogFormat::Text,
            shutdown_delay: Duration::from_secs(DEFAULT_SHUTDOWN_DELAY),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE),
            max_request_bytes: crate::transport::http::DEFAULT_MAX_BODY,
            apps_source: "code".to_owned(),
            replaced_env_app: None,
            connection: ConnectionLimits::default(),
            callers: Vec::new(),
            anonymous: None,
            jwt_issuers: Vec::new(),
            tls: None,
            cors_origins: Vec::new(),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT),
            args: ServeArgs::default(),
            audit_log: None,
            audit_fsync: false,
            watch_files: Vec::new(),
            metrics: true,
            clock: Arc::new(crate::domain::SystemClock),
            rate_limit_store: None,
        }
    }

    /// The issuer and compiled caller policies this config describes.
    pub fn snapshot(&self) -> Result<Snapshot, ConfigError> {
        let auth = Authenticator::new(&self.callers, self.anonymous.as_ref())
            .map_err(|e| ConfigError::Invalid {
                what: "callers".to_owned(),
                problem: e,
            })?
            .with_jwt_issuers(&self.jwt_issuers, Path::new(""))
            .map_err(|e| ConfigError::Invalid {
                what: "jwt_issuers".to_owned(),
                problem: e,
            })?
            .with_client_ipv6_prefix(self.connection.client_ipv6_prefix);
        Ok(Snapshot {
            issuer: Issuer::new(self.apps.clone())
                .with_clock(crate::domain::SharedClock(Arc::clone(&self.clock))),
            auth,
        })
    }

    /// The callers and the anonymous policy (what a reload compares).
    pub fn access(&self) -> access::Access {
        access::Access {
            callers: self.callers.clone(),
            anonymous: self.anonymous.clone(),
            jwt_issuers: self.jwt_issuers.clone(),
        }
    }

    /// Flags, then the config file they name, then `env`.
    pub fn load(args: &ServeArgs, env: &impl Env) -> Result<Self, ConfigError> {
        let (file, base) = match &args.config {
            Some(path) => (
                read_file(path)?,
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
            ),
            None => (FileConfig::default(), PathBuf::new()),
        };
        let listen_str = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = parse_addr("--listen", &listen_str)?;
        let admin_listen = args
            .admin_listen
            .clone()
            .or(file.admin_listen)
            .map(|a| parse_addr("--admin-listen", &a))
            .transpose()?;
        let max_request_bytes = args
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(crate::transport::http::DEFAULT_MAX_BODY);
        if max_request_bytes < 1024 {
            return Err(ConfigError::Invalid {
                what: "--max-request-bytes".to_owned(),
                problem: "must be at least 1024".to_owned(),
            });
        }
        let mut watch_files: Vec<PathBuf> = args.config.iter().cloned().collect();
        let mut replaced_env_app = None;
        let (apps, apps_source) = if file.apps.is_empty() {
            watch_files.extend(env::credential_files(env));
            (vec![env::credentials(env)?], "environment".to_owned())
        } else {
            let source = args
                .config
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string());
            let apps = file_apps(&file.apps, &base, &mut watch_files)?;
            // `[[apps]]` replace the environment's credentials; an app the
            // environment names that they do not list is not served.
            if let Ok(Some(id)) = env::app_id(env) {
                if !apps
                    .iter()
                    .any(|a| a.app_id.as_str().eq_ignore_ascii_case(id.as_str()))
                {
                    replaced_env_app = Some(id.as_str().to_owned());
                }
            }
            (apps, source)
        };
        let limits = file.limits.unwrap_or_default();
        let rate_limit_store = rate_limit_store(&limits, env, &base)?;
        let defaults = ConnectionLimits::default();
        let secs = |v: Option<u64>, d: Duration| v.map_or(d, |s| Duration::from_secs(s.max(1)));
        let connection = ConnectionLimits {
            header_read_timeout: limits
                .header_read_timeout_seconds
                .map_or(defaults.header_read_timeout, Duration::from_secs),
            max_header_bytes: limits.max_header_bytes.unwrap_or(defaults.max_header_bytes),
            max_concurrent_streams: limits
                .max_concurrent_streams
                .unwrap_or(defaults.max_concurrent_streams)
                .max(1),
            keep_alive_interval: match limits.keep_alive_interval_seconds {
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
                None => defaults.keep_alive_interval,
            },
            max_connections: limits
                .max_connections
                .unwrap_or(defaults.max_connections)
                .max(1),
            max_connections_per_client: limits
                .max_connections_per_client
                .unwrap_or(defaults.max_connections_per_client)
                .max(1),
            admin_max_connections: limits
                .admin_max_connections
                .unwrap_or(defaults.admin_max_connections)
                .max(1),
            client_ipv6_prefix: limits
                .client_ipv6_prefix
                .unwrap_or(defaults.client_ipv6_prefix)
                .min(128),
            tls_handshake_timeout: secs(
                limits.tls_handshake_timeout_seconds,
                defaults.tls_handshake_timeout,
            ),
            first_request_timeout: secs(
                limits.first_request_timeout_seconds,
                defaults.first_request_timeout,
            ),
            idle_timeout: secs(limits.idle_timeout_seconds, defaults.idle_timeout),
            http2_stream_window: limits
                .http2_stream_window_bytes
                .unwrap_or(defaults.http2_stream_window)
                .clamp(16 * 1024, 16 * 1024 * 1024),
            http2_connection_window: limits
                .http2_connection_window_bytes
                .unwrap_or(defaults.http2_connection_window)
                .clamp(16 * 1024, 64 * 1024 * 1024),
            http2_max_send_buf: limits
                .http2_max_send_buf_bytes
                .unwrap_or(defaults.http2_max_send_buf)
                .clamp(16 * 1024, 16 * 1024 * 1024),
            max_in_flight_per_caller: limits.max_in_flight_per_caller.unwrap_or(0),
            max_in_flight_anonymous: limits.max_in_flight_anonymous.unwrap_or(0),
            max_watches_per_caller: limits
                .max_watches_per_caller
                .unwrap_or(defaults.max_watches_per_caller)
                .max(1),
            max_watch: match limits.max_watch_seconds {
                Some(s) if !(60..=604_800).contains(&s) => {
                    return Err(ConfigError::Invalid {
                        what: "limits.max_watch_seconds".to_owned(),
                        problem: format!("must be 60..=604800 seconds, got {s}"),
                    });
                }
                Some(s) => Duration::from_secs(s),
                None => defaults.max_watch,
            },
        };
        let rel = |p: &Path| -> String {
            if p.is_relative() {
                base.join(p).display().to_string()
            } else {
                p.display().to_string()
            }
        };
        let tls = match (&args.tls_cert, &args.tls_key, file.tls) {
            (Some(cert), Some(key), from_file) => Some(TlsConfig {
                cert_file: cert.display().to_string(),
                key_file: key.display().to_string(),
                client_ca_file: args
                    .tls_client_ca
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .or_else(|| {
                        from_file
                            .as_ref()
                            .and_then(|t| t.client_ca_file.as_deref().map(|p| rel(Path::new(p))))
                    }),
                client_auth: from_file.and_then(|t| t.client_auth),
            }),
            (_, _, Some(t)) => Some(TlsConfig {
                cert_file: rel(Path::new(&t.cert_file)),
                key_file: rel(Path::new(&t.key_file)),
                client_ca_file: args
                    .tls_client_ca
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .or_else(|| t.client_ca_file.as_deref().map(|p| rel(Path::new(p)))),
                client_auth: t.client_auth,
            }),
            _ => None,
        };
        if let Some(t) = &tls {
            // Fail fast on unreadable or mismatched files.
            crate::config::tls::server_config(t).map_err(|problem| ConfigError::Invalid {
                what: "tls".to_owned(),
                problem,
            })?;
        }
        if args.config.is_some() {
            access_mode(
                file.mode,
                file.callers.len() + file.jwt_issuers.len(),
                file.anonymous.is_some(),
            )?;
        }
        // JWKS and CA files resolve against the config file's folder; a
        // changed JWKS file reloads like the config file.
        let mut jwt_issuers = file.jwt_issuers;
        for j in &mut jwt_issuers {
            for p in [&mut j.jwks_file, &mut j.jwks_ca_file]
                .into_iter()
                .flatten()
            {
                *p = PathBuf::from(rel(p));
            }
            if let Some(f) = &j.jwks_file {
                watch_files.push(f.clone());
            }
        }
        let cors_origins = file.cors.map(|c| c.allowed_origins).unwrap_or_default();
        for o in &cors_origins {
            if o != "*" && axum::http::HeaderValue::from_str(o).is_err() {
                return Err(ConfigError::Invalid {
                    what: "cors.allowed_origins".to_owned(),
                    problem: format!("{o:?} is not a valid origin"),
                });
            }
        }
        let config = Self {
            listen,
            admin_listen,
            apps,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            shutdown_delay: Duration::from_secs(
                args.shutdown_delay
                    .or(file.shutdown_delay_seconds)
                    .unwrap_or(DEFAULT_SHUTDOWN_DELAY),
            ),
            shutdown_grace: Duration::from_secs(
                args.shutdown_grace
                    .or(file.shutdown_grace_seconds)
                    .unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            ),
            max_request_bytes,
            apps_source,
            replaced_env_app,
            connection,
            callers: file.callers,
            anonymous: file.anonymous,
            jwt_issuers,
            tls,
            cors_origins,
            max_concurrent_requests: limits
                .max_concurrent_requests
                .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS)
                .max(1),
            request_timeout: Duration::from_secs(
                limits
                    .request_timeout_seconds
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT)
                    .clamp(1, MAX_REQUEST_TIMEOUT),
            ),
            args: args.clone(),
            audit_log: args
                .audit_log
                .clone()
                .or_else(|| file.audit_log.as_deref().map(|p| PathBuf::from(rel(p)))),
            audit_fsync: args.audit_fsync || file.audit_fsync.unwrap_or(false),
            watch_files,
            metrics: !args.no_metrics && file.metrics.unwrap_or(true),
            clock: Arc::new(crate::domain::SystemClock),
            rate_limit_store,
        };
        // Compile the caller policies now, so mistakes stop start-up.
        config.snapshot()?;
        Ok(config)
    }
}

/// Why the configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Credentials from the environment.
    #[error("{0}")]
    Env(#[from] EnvError),
    /// The config file cannot be read.
    #[error("config file {path}: cannot read it: {reason}")]
    ReadFile {
        /// The path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The config file is not valid TOML or has unknown or mistyped keys.
    #[error("config file {path}: {problem}")]
    ParseFile {
        /// The path.
        path: String,
        /// What is wrong (the parser's message and line; never the line's text).
        problem: String,
    },
    /// A value is malformed.
    #[error("{what}: {problem}")]
    Invalid {
        /// Which setting.
        what: String,
        /// What is wrong.
        problem: String,
    },
}

/// Fail closed: a config file runs open only when it says `mode = "open"`
/// and has no `[[callers]]`. Without a config file (the environment-only
/// quickstart) there is nothing to check: the service runs open and warns.
fn access_mode(mode: Option<Mode>, callers: usize, anonymous: bool) -> Result<(), ConfigError> {
    match (mode, callers) {
        (Some(Mode::Open), 0) if anonymous => Err(ConfigError::Invalid {
            what: "anonymous".to_owned(),
            problem: "[anonymous] needs [[callers]]: with mode = \"open\" every request is \
                      allowed and [anonymous] would restrict nothing; remove [anonymous], or \
                      remove mode = \"open\" and add [[callers]]"
                .to_owned(),
        }),
        (Some(Mode::Open), 0) => Ok(()),
        (Some(Mode::Open), n) => Err(ConfigError::Invalid {
            what: "mode".to_owned(),
            problem: format!(
                "mode = \"open\" contradicts the {n} [[callers]] entr{}: open mode lets anyone \
                 get tokens, callers require a key; remove mode = \"open\" to require a key, \
                 or remove every [[callers]] entry to run open",
                if n == 1 { "y" } else { "ies" }
            ),
        }),
        (None, 0) if anonymous => Err(ConfigError::Invalid {
            what: "anonymous".to_owned(),
            problem: "[anonymous] needs [[callers]]: without callers the service would run \
                      open and [anonymous] would restrict nothing; add [[callers]] (each with \
                      api_key_sha256 or tls_client_names, and kinds; docs/POLICY.md), or \
                      remove [anonymous]"
                .to_owned(),
        }),
        (None, 0) => Err(ConfigError::Invalid {
            what: "callers".to_owned(),
            problem: "the config file has no [[callers]], so anyone could get tokens; add \
                      [[callers]] (each with api_key_sha256 or tls_client_names, and kinds; \
                      `token-authority keygen` makes a key; docs/POLICY.md), or, to run open on \
                      purpose, put mode = \"open\" at the top level of the file"
                .to_owned(),
        }),
        (None, _) => Ok(()),
    }
}

/// The variable holding the rate-limit store's URL (also as `*_FILE`),
/// when the config file sets none (a Kubernetes Secret, see
/// deploy/kubernetes/components).
pub const RATE_LIMIT_STORE: &str = "TOKEN_AUTHORITY_RATE_LIMIT_STORE";
/// The variable holding the rate-limit store's password (also as
/// `*_FILE`), when the URL holds none.
pub const RATE_LIMIT_STORE_PASSWORD: &str = "TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD";

/// A secret from `name` or the file `name_FILE` (not both; the value is
/// never shown). With `missing_ok`, a `name_FILE` naming a file that does
/// not exist means "not set" (an optional Secret key).
fn secret_var(env: &impl Env, name: &str, missing_ok: bool) -> Result<Option<String>, ConfigError> {
    let file_var = format!("{name}_FILE");
    match (env.var(name), env.var(&file_var)) {
        (None, Some(path)) if missing_ok && !Path::new(&path).try_exists().unwrap_or(true) => {
            Ok(None)
        }
        (Some(_), Some(_)) => Err(ConfigError::Invalid {
            what: name.to_owned(),
            problem: format!("set it or {file_var}, not both"),
        }),
        (Some(p), None) => Ok(Some(p)),
        (None, Some(path)) => env::read_secret_file(&file_var, &path)
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                what: file_var.clone(),
                problem: match e {
                    EnvError::File { path, reason, .. } => format!("cannot read {path}: {reason}"),
                    other => other.to_string(),
                },
            }),
        (None, None) => Ok(None),
    }
}

/// `[limits] rate_limit_store*` (the URL from the file, else from the
/// environment), with the password from the environment.
fn rate_limit_store(
    limits: &FileLimits,
    env: &impl Env,
    base: &Path,
) -> Result<Option<crate::policy::store::StoreConfig>, ConfigError> {
    let invalid = |(what, problem): (&str, String)| ConfigError::Invalid {
        what: what.to_owned(),
        problem,
    };
    let url = match &limits.rate_limit_store {
        Some(u) => Some(u.0.clone()),
        None => secret_var(env, RATE_LIMIT_STORE, false)?,
    };
    let Some(url) = url else {
        let other = limits.rate_limit_store_timeout_ms.is_some()
            || limits.rate_limit_store_failure.is_some()
            || limits.rate_limit_store_key_prefix.is_some()
            || limits.rate_limit_store_local_cache.is_some()
            || limits.rate_limit_store_ca_file.is_some();
        if other {
            return Err(invalid((
                "limits.rate_limit_store",
                "rate_limit_store_* settings need rate_limit_store (the Redis URL)".to_owned(),
            )));
        }
        return Ok(None);
    };
    let password = secret_var(env, RATE_LIMIT_STORE_PASSWORD, true)?;
    let store = crate::policy::store::StoreConfig::new(
        &url,
        password,
        limits.rate_limit_store_timeout_ms,
        limits.rate_limit_store_failure,
        limits.rate_limit_store_key_prefix.clone(),
        limits.rate_limit_store_local_cache,
    )
    .map_err(invalid)?;
    let Some(ca) = &limits.rate_limit_store_ca_file else {
        return Ok(Some(store));
    };
    const CA: &str = "limits.rate_limit_store_ca_file";
    let path = resolve(ca, base);
    let pem = std::fs::read(&path).map_err(|e| ConfigError::Invalid {
        what: CA.to_owned(),
        problem: format!("cannot read {}: {e}", path.display()),
    })?;
    store.with_ca_pem(CA, pem).map(Some).map_err(invalid)
}

/// `IP:PORT`, or `HOST:PORT` with a name the system resolves (as
/// `healthcheck --addr` takes it): the first IPv4 address it resolves to,
/// else the first address (`localhost:8080` listens on 127.0.0.1:8080).
fn parse_addr(what: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let invalid = |problem: String| ConfigError::Invalid {
        what: what.to_owned(),
        problem,
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(invalid(format!(
            "{s:?} is not HOST:PORT (e.g. 0.0.0.0:8080, [::]:8080 or localhost:8080)"
        )));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid(format!(
            "{s:?} is not HOST:PORT with a port in 0..=65535 (e.g. 0.0.0.0:8080, [::]:8080 or localhost:8080)"
        )));
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| invalid(format!("cannot resolve {host:?}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| invalid(format!("{host:?} resolves to no address")))
}

/// The `[[apps]]` entries; every certificate path goes into `watch`.
///
/// A `secondary_certificate_file` that does not exist means "no secondary
/// certificate" (it is only there during a rotation, e.g. a Kubernetes
/// Secret key that is added and removed); one that exists but cannot be
/// read or is malformed is an error, like the primary's.
fn file_apps(
    apps: &[FileApp],
    base: &Path,
    watch: &mut Vec<PathBuf>,
) -> Result<Vec<AppCredentials>, ConfigError> {
    let mut out: Vec<AppCredentials> = Vec::with_capacity(apps.len());
    for (i, a) in apps.iter().enumerate() {
        let app_id = AppId::new(a.app_id.trim()).map_err(|e| ConfigError::Invalid {
            what: format!("apps[{i}].app_id"),
            problem: format!("{e}; {WHERE}"),
        })?;
        if out.iter().any(|o| o.app_id.as_str() == app_id.as_str()) {
            return Err(ConfigError::Invalid {
                what: format!("apps[{i}].app_id"),
                problem: format!("{} is configured twice", app_id.as_str()),
            });
        }
        let primary = resolve(&a.certificate_file, base);
        watch.push(primary.clone());
        let certificate = certificate_file(&format!("apps[{i}].certificate_file"), &primary)?;
        let secondary = match &a.secondary_certificate_file {
            Some(p) => {
                let path = resolve(p, base);
                watch.push(path.clone());
                if path.try_exists().unwrap_or(true) {
                    Some(certificate_file(
                        &format!("apps[{i}].secondary_certificate_file"),
                        &path,
                    )?)
                } else {
                    None
                }
            }
            None => None,
        };
        out.push(AppCredentials {
            app_id,
            certificate,
            secondary,
        });
    }
    Ok(out)
}

/// `path`, relative to `base` when it is relative.
fn resolve(path: &Path, base: &Path) -> PathBuf {
    if path.is_relative() {
        base.join(path)
    } else {
        path.to_path_buf()
    }
}

fn certificate_file(what: &str, full: &Path) -> Result<AppCertificate, ConfigError> {
    let shown = full.display().to_string();
    let text = env::read_secret_file(what, &shown).map_err(|e| ConfigError::Invalid {
        what: what.to_owned(),
        problem: match e {
            EnvError::File { path, reason, .. } => format!("cannot read {path}: {reason}"),
            other => other.to_string(),
        },
    })?;
    AppCertificate::new(text.trim()).map_err(|e| ConfigError::Invalid {
        what: format!("{what} ({shown})"),
        problem: format!("{e}; {WHERE}"),
    })
}

#[cfg(test)]
mod tests;
