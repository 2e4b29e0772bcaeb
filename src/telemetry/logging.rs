//! Installs the global `tracing` subscriber: the line formatter, the
//! batched stdout writer and the audit file; and [`LineBudget`], the rate
//! limit of log lines that a flood of requests could multiply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::telemetry::audit_file::{AuditFile, AuditLayer};
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
/// batches by a background thread ([`crate::telemetry::logwriter`]): the
/// main log never blocks a request, and drops (and counts) lines when
/// stdout cannot keep up. Audit events (target `audit`) go to the main log
/// and, with `audit_log`, also to that file as JSON lines through the
/// fail-closed device of [`crate::telemetry::audit_file`] (with
/// `audit_fsync`, synced to disk).
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
    let (writer, guard) = BatchedStdout::new(format == LogFormat::Json)
        .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
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
                AuditLayer(device).with_filter(
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

/// At most this many `request refused` lines of unauthenticated requests
/// per second in the main log (see [`UNAUTHENTICATED_REFUSALS`]).
pub const REFUSAL_LINES_PER_SECOND: u32 = 10;

/// The budget of the main log's `request refused` lines for requests
/// refused before authentication succeeded (bad or missing credentials, the
/// failed-authentication throttle): a flood of them cannot fill a disk
/// through the log. Their count is in `/metrics`
/// (`token_authority_log_refusals_suppressed_total`).
pub static UNAUTHENTICATED_REFUSALS: LineBudget = LineBudget::named(
    REFUSAL_LINES_PER_SECOND,
    "request refused (unauthenticated)",
);

/// At most this many `request refused` lines per second of requests that
/// passed authentication (see [`REFUSALS`]).
pub const AUTHENTICATED_REFUSAL_LINES_PER_SECOND: u32 = 100;

/// The budget of the main log's `request refused` lines of authenticated
/// (or open-mode) requests: a caller hammering its own rate limit or
/// concurrency limit cannot flood the log. (The audit log records refusals
/// under its own budget.) Counted with [`UNAUTHENTICATED_REFUSALS`] in
/// `token_authority_log_refusals_suppressed_total`.
pub static REFUSALS: LineBudget =
    LineBudget::named(AUTHENTICATED_REFUSAL_LINES_PER_SECOND, "request refused");

/// Whether a line of `budget`'s kind may be logged now; when it may and
/// lines of its kind were suppressed since the last one, first logs one
/// summary line with their count (`kind`: the budget's name).
pub fn admit_line(budget: &LineBudget) -> bool {
    match budget.admit(Instant::now()) {
        Verdict::Log { suppressed } => {
            if suppressed > 0 {
                let per_second = budget.per_second();
                let kind = budget.kind;
                tracing::warn!(
                    suppressed,
                    per_second,
                    kind,
                    "log lines suppressed (over their rate limit)"
                );
            }
            true
        }
        Verdict::Suppress => false,
    }
}

/// At most this many `request` lines per second in the main log (see
/// [`REQUEST_LINES`]).
pub const REQUEST_LINES_PER_SECOND: u32 = 100;

/// The budget of the main log's info-level `request` lines (the requests
/// that are neither probes, scrapes nor issued tokens: refusals, errors,
/// health checks on the main port): a flood of refused requests (429 from
/// the slot pools, 400s, timeouts) cannot turn into a flood of log lines.
/// Their count is in `/metrics`
/// (`token_authority_log_request_lines_suppressed_total`).
pub static REQUEST_LINES: LineBudget = LineBudget::named(REQUEST_LINES_PER_SECOND, "request");

/// A rate limit for one kind of log line: at most `per_second` lines in
/// each one-second window (a window opens at the first line after the
/// previous one closed); the lines over it are not logged but counted, and
/// the next line logged is preceded by one summary line with their count
/// ([`Verdict::Log`]`{ suppressed }`). A flood of N lines per second thus
/// logs at most `per_second + 1` lines per second; the summary of a flood
/// that has stopped appears with the next line of its kind (the metric has
/// the count at once).
///
/// One budget per kind of line; time is passed in, so tests can inject it.
/// Usage:
///
/// ```
/// # use token_authority::telemetry::logging::{LineBudget, Verdict};
/// static BUDGET: LineBudget = LineBudget::new(10);
/// match BUDGET.admit(std::time::Instant::now()) {
///     Verdict::Log { suppressed } => {
///         if suppressed > 0 {
///             tracing::warn!(suppressed, "lines suppressed");
///         }
///         tracing::info!("the line");
///     }
///     Verdict::Suppress => {}
/// }
/// ```
#[derive(Debug)]
pub struct LineBudget {
    per_second: u32,
    /// What its lines are (named in [`admit_line`]'s summary line).
    kind: &'static str,
    window: Mutex<Window>,
    suppressed_total: AtomicU64,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What to do with one line (see [`LineBudget::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; first, when `suppressed` is not 0, a summary line saying
    /// that many lines of its kind were not logged since the last summary.
    Log {
        /// Lines suppressed since the last summary.
        suppressed: u64,
    },
    /// Do not log it (counted).
    Suppress,
}

impl LineBudget {
    /// A budget of `per_second` lines (at least 1) per second.
    pub const fn new(per_second: u32) -> Self {
        Self::named(per_second, "")
    }

    /// [`Self::new`], for lines of the kind `kind`.
    pub const fn named(per_second: u32, kind: &'static str) -> Self {
        Self {
            per_second: if per_second == 0 { 1 } else { per_second },
            kind,
            window: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
            suppressed_total: AtomicU64::new(0),
        }
    }

    /// The verdict for a line at `now`.
    pub fn admit(&self, now: Instant) -> Verdict {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let open = w
            .start
            .is_some_and(|s| now.saturating_duration_since(s) < Duration::from_secs(1));
        if !open {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < self.per_second {
            w.logged += 1;
            Verdict::Log {
                suppressed: std::mem::take(&mut w.suppressed),
            }
        } else {
            w.suppressed += 1;
            self.suppressed_total.fetch_add(1, Ordering::Relaxed);
            Verdict::Suppress
        }
    }

    /// The lines logged per second at most.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Lines suppressed so far.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_logs_n_per_second_then_one_summary() {
        let budget = LineBudget::new(3);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let log = |suppressed| Verdict::Log { suppressed };
        // A flood: 3 lines, then nothing for the rest of the second.
        let first: Vec<_> = (0..100).map(|i| budget.admit(at(i * 5))).collect();
        assert_eq!(first[..3], [log(0), log(0), log(0)]);
        assert!(first[3..].iter().all(|v| *v == Verdict::Suppress));
        assert_eq!(budget.suppressed_total(), 97);
        // The next window: the first line carries the summary, once.
        assert_eq!(budget.admit(at(1000)), log(97));
        assert_eq!(budget.admit(at(1001)), log(0));
        assert_eq!(budget.admit(at(1002)), log(0));
        assert_eq!(budget.admit(at(1003)), Verdict::Suppress);
        // Much later (the flood stopped): the summary comes with the next line.
        assert_eq!(budget.admit(at(60_000)), log(1));
        assert_eq!(budget.suppressed_total(), 98);
        // A quiet caller is never suppressed.
        let quiet = LineBudget::new(3);
        for i in 0..50 {
            assert_eq!(quiet.admit(at(i * 400)), log(0));
        }
    }

    #[test]
    fn the_budget_is_at_least_one_line() {
        let b = LineBudget::new(0);
        let t = Instant::now();
        assert_eq!(b.admit(t), Verdict::Log { suppressed: 0 });
        assert_eq!(b.admit(t), Verdict::Suppress);
    }
}
