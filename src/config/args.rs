//! `serve` flags.

use super::*;
use std::path::PathBuf;

/// `token-authority serve` options.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(after_help = "\
Credentials (when the config file has no [[apps]]):
  SHENGWANG_APP_ID, SHENGWANG_APP_CERTIFICATE     the app id and its certificate (32 hex chars each)
  AGORA_APP_ID, AGORA_APP_CERTIFICATE             fallbacks
  SHENGWANG_APP_CERTIFICATE_FILE (any <NAME>_FILE) read the value from a file (Docker/Kubernetes secrets)
  SHENGWANG_APP_CERTIFICATE_SECONDARY[_FILE]      a second certificate accepted by InspectToken
                                                  (a _FILE that does not exist = no secondary)
  .env in the working directory fills in variables that are not set.
Config file (TOML; flags override it, it overrides the environment):
  listen, admin_listen, log_format, shutdown_delay_seconds, shutdown_grace_seconds,
  max_request_bytes, metrics, audit_log, audit_fsync, [[callers]], [anonymous], [tls], [cors], [limits]
  [[apps]] app_id, certificate_file, secondary_certificate_file (first app = default;
           relative paths are relative to the config file; unknown keys are errors;
           a secondary_certificate_file that does not exist = no secondary)
Reload (no restart): SIGHUP, or a change of the config file or of a certificate file
  (checked every 2 s) re-reads apps, certificates and callers. A failed reload keeps
  the running configuration. Listen addresses, TLS, limits, CORS and logging need a restart.
Shutdown: on SIGTERM / Ctrl-C readiness turns NOT_SERVING; requests are still served for
  --shutdown-delay, then new connections are refused and in-flight requests get
  --shutdown-grace to finish.
Logging: RUST_LOG (default \"info\").
Exit codes: 0 clean shutdown, 78 configuration error, 1 other start-up failure.")]
pub struct ServeArgs {
    /// Address for gRPC (h2c) and HTTP/1.1 [default: 0.0.0.0:8080; file: listen].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also serve /healthz, /readyz and /metrics on this plaintext address
    /// [file: admin_listen].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// TOML config file (apps, listen addresses, limits).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format [default: text; file: log_format].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Seconds to keep serving after SIGTERM / Ctrl-C while reporting
    /// NOT_SERVING, so load balancers stop sending first
    /// [default: 0; file: shutdown_delay_seconds].
    #[arg(long, value_name = "SECS")]
    pub shutdown_delay: Option<u64>,
    /// Seconds in-flight requests get to finish once the listeners stop
    /// accepting (after --shutdown-delay) [default: 10; file: shutdown_grace_seconds].
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace: Option<u64>,
    /// Largest JSON request body and gRPC message, in bytes
    /// [default: 65536; file: max_request_bytes].
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Serve TLS on the main port with this PEM certificate chain [file: tls.cert_file].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert [file: tls.key_file].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also write audit events (one JSON line per issued or refused token) to
    /// this file [file: audit_log].
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// With --audit-log: a token is returned only after its record is on
    /// disk (fdatasync), not only written to the file [file: audit_fsync].
    #[arg(long)]
    pub audit_fsync: bool,
    /// Verify client certificates against this PEM CA (mTLS) [file: tls.client_ca_file].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Record no metrics and answer 404 at /metrics (to measure their cost;
    /// they are on by default) [file: metrics = false].
    #[arg(long)]
    pub no_metrics: bool,
}
