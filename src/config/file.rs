//! The TOML file as written (before validation).

use super::*;
use crate::config::tls::TlsConfig;
use crate::policy::{AnonymousConfig, CallerConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// `mode = "open"`: run without `[[callers]]` on purpose.
    pub(crate) mode: Option<Mode>,
    pub(crate) listen: Option<String>,
    pub(crate) admin_listen: Option<String>,
    pub(crate) log_format: Option<LogFormat>,
    pub(crate) shutdown_delay_seconds: Option<u64>,
    pub(crate) shutdown_grace_seconds: Option<u64>,
    pub(crate) max_request_bytes: Option<usize>,
    pub(crate) metrics: Option<bool>,
    #[serde(default)]
    pub(crate) apps: Vec<FileApp>,
    #[serde(default)]
    pub(crate) callers: Vec<CallerConfig>,
    pub(crate) anonymous: Option<AnonymousConfig>,
    #[serde(default)]
    pub(crate) jwt_issuers: Vec<crate::policy::jwt::JwtIssuerConfig>,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) cors: Option<CorsConfig>,
    pub(crate) limits: Option<FileLimits>,
    pub(crate) audit_log: Option<PathBuf>,
    pub(crate) audit_fsync: Option<bool>,
}

/// The top-level `mode` key. Its only value is `"open"`: a config file
/// without `[[callers]]` must say so, or it is refused (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// No callers: anyone who can reach the service gets tokens.
    Open,
}

/// `[cors]`: browser origins allowed to call the GET endpoint.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`); no wildcard by default.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimits {
    pub(crate) max_concurrent_requests: Option<usize>,
    pub(crate) request_timeout_seconds: Option<u64>,
    pub(crate) header_read_timeout_seconds: Option<u64>,
    pub(crate) max_header_bytes: Option<usize>,
    pub(crate) max_concurrent_streams: Option<u32>,
    pub(crate) keep_alive_interval_seconds: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_client: Option<usize>,
    pub(crate) admin_max_connections: Option<usize>,
    pub(crate) client_ipv6_prefix: Option<u8>,
    pub(crate) tls_handshake_timeout_seconds: Option<u64>,
    pub(crate) first_request_timeout_seconds: Option<u64>,
    pub(crate) idle_timeout_seconds: Option<u64>,
    pub(crate) http2_stream_window_bytes: Option<u32>,
    pub(crate) http2_connection_window_bytes: Option<u32>,
    pub(crate) http2_max_send_buf_bytes: Option<usize>,
    pub(crate) max_in_flight_per_caller: Option<usize>,
    pub(crate) max_in_flight_anonymous: Option<usize>,
    pub(crate) max_watches_per_caller: Option<usize>,
    pub(crate) max_watch_seconds: Option<u64>,
    /// `redis://` / `rediss://` URL of the shared rate-limit store (a
    /// secret: it may hold a password; `Debug` of the validated
    /// [`crate::policy::store::StoreConfig`] hides it).
    pub(crate) rate_limit_store: Option<Secret>,
    pub(crate) rate_limit_store_timeout_ms: Option<u64>,
    pub(crate) rate_limit_store_failure: Option<crate::policy::store::StoreFailure>,
    pub(crate) rate_limit_store_key_prefix: Option<String>,
    pub(crate) rate_limit_store_local_cache: Option<bool>,
    pub(crate) rate_limit_store_ca_file: Option<PathBuf>,
}

/// A string from the file that may hold a secret: `Debug` hides it.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One `[[apps]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileApp {
    pub(crate) app_id: String,
    pub(crate) certificate_file: PathBuf,
    pub(crate) secondary_certificate_file: Option<PathBuf>,
}

pub(crate) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| {
        // The message only: toml's Display quotes the offending source line,
        // which could hold a secret pasted into the wrong place.
        let line = e
            .span()
            .and_then(|s| text.get(..s.start))
            .map(|before| before.matches('\n').count() + 1);
        let problem = match line {
            Some(l) => format!("line {l}: {}", e.message().trim()),
            None => e.message().trim().to_owned(),
        };
        ConfigError::ParseFile {
            path: path.display().to_string(),
            problem,
        }
    })
}
