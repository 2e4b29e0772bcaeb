//! Installs the global `tracing` subscriber: the line formatter, the
//! batched stdout writer and the audit file.

use crate::telemetry::audit_file::{AuditFile, AuditWriter};
use crate::telemetry::logfmt::LineFormat;
use crate::telemetry::logwriter::{BatchedStdout, FlushGuard};
use serde::Deserialize;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the background log writers running; dropping it flushes them.
#[derive(Debug, Default)]
pub struct LogGuards {
    _stdout: Option<FlushGuard>,
}

/// Installs the global `tracing` subscriber (`RUST_LOG`, default `info`).
///
/// Log lines are formatted on the request path but written to stdout in
/// batches by a background thread ([`crate::telemetry::logwriter`]). Audit
/// events (target `audit`) go to the main log and, with `audit_log`, also
/// to that file as JSON lines through the fail-closed device of
/// [`crate::telemetry::audit_file`] (with `audit_fsync`, synced to disk).
pub fn init_logging(
    format: LogFormat,
    audit_log: Option<&std::path::Path>,
    audit_fsync: bool,
) -> Result<LogGuards, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let mut guards = LogGuards::default();
    let (writer, guard) = BatchedStdout::new();
    guards._stdout = Some(guard);
    let main = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(LineFormat::text())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(LineFormat::json())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let audit = match audit_log {
        None => None,
        Some(path) => {
            let device = AuditFile::open(path, audit_fsync)
                .map_err(|e| format!("--audit-log {}: {e}", path.display()))?
                .install();
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .event_format(LineFormat::json())
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .with_writer(AuditWriter(device))
                    .with_filter(
                        tracing_subscriber::filter::Targets::new()
                            .with_target(crate::telemetry::audit::TARGET, tracing::Level::INFO),
                    ),
            )
        }
    };
    // Already installed (e.g. by a test): keep the existing one.
    let _ = tracing_subscriber::registry()
        .with(main)
        .with(audit)
        .try_init();
    Ok(guards)
}
