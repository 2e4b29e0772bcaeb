//! Prometheus metrics, kept cheap: fixed label sets are arrays of atomics
//! indexed by enums, so recording a request allocates nothing and takes no
//! lock. Tokens issued are labelled by kind, app and caller; apps and
//! callers are few and configured, so that map takes an uncontended read
//! lock per token and a write lock only the first time an (app, caller)
//! pair issues a token.
//!
//! The caller label: whoever authenticates a request runs the rest of it
//! inside [`with_caller`] (a task-local, so no transport or API signature
//! changes); tokens issued outside any caller scope count as
//! [`OPEN_CALLER`] (`"open"`, the service without configured callers).
//! Label values must come from configuration (caller names), never from
//! request input, to keep the series bounded.
//!
//! `serve --no-metrics` turns recording off ([`Metrics::disabled`]) and
//! `/metrics` answers 404; BENCHMARKS.md measures the difference.
//!
//! Series (all prefixed `token_authority_`):
//! - `requests_total{transport,method,code}`: every RPC call (gRPC and
//!   JSON) and every `GET /api/agora/token`, by result code (gRPC code name).
//! - `request_duration_seconds{transport,method}`: latency histogram of the
//!   same (buckets from 50 us to 2.5 s; only pairs that have served appear).
//! - `tokens_issued_total{kind,app_id,caller}`: tokens issued.
//! - `build_info{version}`: always 1.
//! - `ready`: 1 while the service accepts work.
//! - `app_certificates{app_id}`: the certificates loaded for each configured
//!   app (1, or 2 with a secondary during a rotation).
//! - `config_reloads_total{result="ok|error"}`: reloads (SIGHUP or a changed
//!   file); `config_last_reload_successful` (1/0) and
//!   `config_last_reload_success_timestamp_seconds` (start-up counts as a
//!   successful load), as Prometheus names its own.
//! - `log_lines_dropped_total`: main-log lines dropped because stdout could
//!   not keep up (or failed), see [`crate::telemetry::logwriter`].
//! - `log_request_lines_suppressed_total`: `request` lines over their
//!   rate limit ([`crate::telemetry::logging::REQUEST_LINES`]).
//! - `log_refusals_suppressed_total`: `request refused` lines of
//!   unauthenticated requests not logged (over their rate limit, see
//!   [`crate::telemetry::logging::UNAUTHENTICATED_REFUSALS`]).
//! - `connections_open{listener="main|admin"}`: open connections (gauge);
//!   `connections_rejected_total{listener,reason}`: connections closed at
//!   accept by a cap (`max_connections`, `max_connections_per_client`);
//!   `connections_timed_out_total{listener,phase}`: connections closed by
//!   a timeout (`tls_handshake`, `first_request`, `idle`, `stalled`: a
//!   response not sent within the request timeout); `accept_errors_total`
//!   (e.g. EMFILE).
//! - `watches_open`: open `WatchToken` streams (gauge);
//!   `watch_deliveries_total`, `watch_retries_total`,
//!   `watches_refused_total` (the per-caller cap),
//!   `watches_ended_total{reason}` (`client_gone`, `max_watch_seconds`,
//!   `shutdown`, `error`, `send_timeout`). Each delivery is also counted as
//!   its unary method in `requests_total` and `tokens_issued_total`.
//!
//! And the standard unprefixed `process_*` series (CPU, memory, file
//! descriptors, start time), read from `/proc` at scrape time: see
//! `metrics/process.rs`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::domain::TokenKind;

/// The caller label of tokens issued outside any [`with_caller`] scope.
pub const OPEN_CALLER: &str = "open";

tokio::task_local! {
    static CALLER: Arc<str>;
}

/// Runs `f` (the rest of a request) with `caller` as the `caller` label of
/// the tokens it issues. For the authentication layer: call it with the
/// configured caller's name once the request is authenticated.
pub async fn with_caller<F: Future>(caller: Arc<str>, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// How a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// gRPC (HTTP/2).
    Grpc,
    /// JSON at `POST /agora.token.v1.TokenService/<Method>`.
    Json,
    /// The compatible `GET /api/agora/token`.
    Http,
}

impl Transport {
    const ALL: [Self; 3] = [Self::Grpc, Self::Json, Self::Http];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Json => "json",
            Self::Http => "http",
        }
    }
}

/// The API operations (the RPCs, and the compatible GET endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `BuildRtcToken`.
    BuildRtcToken,
    /// `BuildRtcTokenWithPrivileges`.
    BuildRtcTokenWithPrivileges,
    /// `BuildRtcRtmToken`.
    BuildRtcRtmToken,
    /// `BuildRtmToken`.
    BuildRtmToken,
    /// `BuildChatUserToken`.
    BuildChatUserToken,
    /// `BuildChatAppToken`.
    BuildChatAppToken,
    /// `BuildFpaToken`.
    BuildFpaToken,
    /// `BuildApaasToken`.
    BuildApaasToken,
    /// `BuildToken`.
    BuildToken,
    /// `InspectToken`.
    InspectToken,
    /// `BuildAgentSession`.
    BuildAgentSession,
    /// `GET /api/agora/token`.
    GetToken,
}

impl Method {
    /// Every method, in label order.
    pub const ALL: [Self; 12] = [
        Self::BuildRtcToken,
        Self::BuildRtcTokenWithPrivileges,
        Self::BuildRtcRtmToken,
        Self::BuildRtmToken,
        Self::BuildChatUserToken,
        Self::BuildChatAppToken,
        Self::BuildFpaToken,
        Self::BuildApaasToken,
        Self::BuildToken,
        Self::InspectToken,
        Self::BuildAgentSession,
        Self::GetToken,
    ];

    /// The RPC name (the label value).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BuildRtcToken => "BuildRtcToken",
            Self::BuildRtcTokenWithPrivileges => "BuildRtcTokenWithPrivileges",
            Self::BuildRtcRtmToken => "BuildRtcRtmToken",
            Self::BuildRtmToken => "BuildRtmToken",
            Self::BuildChatUserToken => "BuildChatUserToken",
            Self::BuildChatAppToken => "BuildChatAppToken",
            Self::BuildFpaToken => "BuildFpaToken",
            Self::BuildApaasToken => "BuildApaasToken",
            Self::BuildToken => "BuildToken",
            Self::InspectToken => "InspectToken",
            Self::BuildAgentSession => "BuildAgentSession",
            Self::GetToken => "GetToken",
        }
    }

    /// The method with this RPC name.
    pub fn from_rpc_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| *m != Self::GetToken && m.as_str() == name)
    }
}

/// gRPC status codes 0..=16.
const CODES: usize = 17;

/// Label of a gRPC code (the Connect / lower snake case names).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "ok",
        C::Cancelled => "canceled",
        C::Unknown => "unknown",
        C::InvalidArgument => "invalid_argument",
        C::DeadlineExceeded => "deadline_exceeded",
        C::NotFound => "not_found",
        C::AlreadyExists => "already_exists",
        C::PermissionDenied => "permission_denied",
        C::ResourceExhausted => "resource_exhausted",
        C::FailedPrecondition => "failed_precondition",
        C::Aborted => "aborted",
        C::OutOfRange => "out_of_range",
        C::Unimplemented => "unimplemented",
        C::Internal => "internal",
        C::Unavailable => "unavailable",
        C::DataLoss => "data_loss",
        C::Unauthenticated => "unauthenticated",
    }
}

const KINDS: [TokenKind; 13] = [
    TokenKind::Rtc,
    TokenKind::RtcPrivileges,
    TokenKind::RtcRtm,
    TokenKind::Rtm,
    TokenKind::Rtm2,
    TokenKind::ChatUser,
    TokenKind::ChatApp,
    TokenKind::Fpa,
    TokenKind::ApaasRoomUser,
    TokenKind::ApaasUser,
    TokenKind::ApaasApp,
    TokenKind::Generic,
    TokenKind::AgentSession,
];

fn kind_index(kind: TokenKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Histogram bucket upper bounds, in microseconds: from 50 us (an issued
/// token takes tens of microseconds in the service) to 2.5 s.
const BUCKET_MICROS: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// The same bounds as Prometheus `le` label values, in seconds.
const BUCKET_LE: [&str; 15] = [
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5",
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKET_MICROS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // The first bound >= micros (integer compares; the bounds are sorted).
        let i = BUCKET_MICROS.partition_point(|b| *b < micros);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Token counters of one app, by caller, by kind.
type CallerCounters = HashMap<String, [AtomicU64; KINDS.len()]>;

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    requests: Vec<AtomicU64>,
    /// Latency by transport and method ([`Metrics::latency_slot`]).
    latency: Vec<Histogram>,
    tokens: RwLock<HashMap<String, CallerCounters>>,
    /// Configured apps and their number of certificates, default first.
    apps: RwLock<Vec<(String, u8)>>,
    /// Reloads: ok, error.
    reloads: [AtomicU64; 2],
    last_reload_ok: AtomicBool,
    last_success_unix: AtomicU64,
    /// Connection counters (recorded even with metrics disabled: cheap).
    pub connections: ConnectionMetrics,
    /// `WatchToken` stream counters (recorded even with metrics disabled).
    pub watches: WatchMetrics,
}

/// Why a `WatchToken` stream ended (the `reason` label).
pub const WATCH_END_REASONS: [&str; 6] = [
    "client_gone",
    "max_watch_seconds",
    "shutdown",
    "error",
    "send_timeout",
    "other",
];

/// `WatchToken` counters.
#[derive(Debug, Default)]
pub struct WatchMetrics {
    open: AtomicU64,
    deliveries: AtomicU64,
    retries: AtomicU64,
    refused_cap: AtomicU64,
    ended: [AtomicU64; 6],
}

impl WatchMetrics {
    /// A watch started its renewals.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A watch ended, for `reason` (one of [`WATCH_END_REASONS`]).
    pub fn closed(&self, reason: &str) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let i = WATCH_END_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(WATCH_END_REASONS.len() - 1);
        self.ended[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A token was handed to a watch's client.
    pub fn delivered(&self) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    /// A renewal failed transiently and will be retried.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A watch was refused by `max_watches_per_caller`.
    pub fn refused_cap(&self) {
        self.refused_cap.fetch_add(1, Ordering::Relaxed);
    }

    /// Watches open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Tokens delivered on watches so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP token_authority_watches_open Open WatchToken streams.\n\
             # TYPE token_authority_watches_open gauge\n\
             token_authority_watches_open {}\n\
             # HELP token_authority_watch_deliveries_total Tokens delivered on WatchToken streams (the first included).\n\
             # TYPE token_authority_watch_deliveries_total counter\n\
             token_authority_watch_deliveries_total {}\n\
             # HELP token_authority_watch_retries_total Renewals that failed transiently and were retried.\n\
             # TYPE token_authority_watch_retries_total counter\n\
             token_authority_watch_retries_total {}\n\
             # HELP token_authority_watches_refused_total Watches refused by max_watches_per_caller.\n\
             # TYPE token_authority_watches_refused_total counter\n\
             token_authority_watches_refused_total {}\n\
             # HELP token_authority_watches_ended_total WatchToken streams ended, by reason.\n\
             # TYPE token_authority_watches_ended_total counter",
            self.open.load(Ordering::Relaxed),
            self.deliveries.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.refused_cap.load(Ordering::Relaxed),
        );
        for (i, r) in WATCH_END_REASONS.iter().enumerate() {
            let v = self.ended[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "token_authority_watches_ended_total{{reason=\"{r}\"}} {v}"
            );
        }
    }
}

/// A listener, for the connection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The main listener (gRPC and HTTP).
    Main = 0,
    /// The admin listener (health, readiness, metrics).
    Admin = 1,
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The listener's `max_connections` (or `admin_max_connections`).
    MaxConnections = 0,
    /// `max_connections_per_client`.
    MaxConnectionsPerClient = 1,
}

/// Which timeout closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnTimeout {
    /// The TLS handshake.
    TlsHandshake = 0,
    /// The first request's headers (or HTTP/2 preface and first HEADERS).
    FirstRequest = 1,
    /// No request in progress for the idle timeout.
    Idle = 2,
    /// A request (or its response) still in progress well after the
    /// request timeout.
    Stalled = 3,
}

/// Connection counters.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    open: [AtomicU64; 2],
    rejected: [[AtomicU64; 2]; 2],
    timed_out: [[AtomicU64; 4]; 2],
    accept_errors: AtomicU64,
}

impl ConnectionMetrics {
    /// A connection was accepted and admitted.
    pub fn opened(&self, l: Listener) {
        self.open[l as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted connection ended.
    pub fn closed(&self, l: Listener) {
        self.open[l as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections now.
    pub fn open(&self, l: Listener) -> u64 {
        self.open[l as usize].load(Ordering::Relaxed)
    }

    /// A connection was closed at accept.
    pub fn rejected(&self, l: Listener, r: Rejected) {
        self.rejected[l as usize][r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed at accept so far.
    pub fn rejected_total(&self, l: Listener, r: Rejected) -> u64 {
        self.rejected[l as usize][r as usize].load(Ordering::Relaxed)
    }

    /// A connection was closed by a timeout.
    pub fn timed_out(&self, l: Listener, t: ConnTimeout) {
        self.timed_out[l as usize][t as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed by a timeout so far.
    pub fn timed_out_total(&self, l: Listener, t: ConnTimeout) -> u64 {
        self.timed_out[l as usize][t as usize].load(Ordering::Relaxed)
    }

    /// `accept` failed (e.g. EMFILE).
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        const LISTENERS: [&str; 2] = ["main", "admin"];
        const REASONS: [&str; 2] = ["max_connections", "max_connections_per_client"];
        const PHASES: [&str; 4] = ["tls_handshake", "first_request", "idle", "stalled"];
        let _ = writeln!(
            out,
            "# HELP token_authority_connections_open Open connections per listener.\n\
             # TYPE token_authority_connections_open gauge"
        );
        for (i, l) in LISTENERS.iter().enumerate() {
            let v = self.open[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "token_authority_connections_open{{listener=\"{l}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP token_authority_connections_rejected_total Connections closed at accept by a connection cap.\n\
             # TYPE token_authority_connections_rejected_total counter"
        );
        for (i, l) in LISTENERS.iter().enumerate() {
            for (j, r) in REASONS.iter().enumerate() {
                let v = self.rejected[i][j].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "token_authority_connections_rejected_total{{listener=\"{l}\",reason=\"{r}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP token_authority_connections_timed_out_total Connections closed by a timeout, by phase.\n\
             # TYPE token_authority_connections_timed_out_total counter"
        );
        for (i, l) in LISTENERS.iter().enumerate() {
            for (j, p) in PHASES.iter().enumerate() {
                let v = self.timed_out[i][j].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "token_authority_connections_timed_out_total{{listener=\"{l}\",phase=\"{p}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP token_authority_accept_errors_total Failed accepts (e.g. out of file descriptors).\n\
             # TYPE token_authority_accept_errors_total counter\n\
             token_authority_accept_errors_total {}",
            self.accept_errors.load(Ordering::Relaxed)
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Grpc => 0,
        Transport::Json => 1,
        Transport::Http => 2,
    }
}

fn method_index(m: Method) -> usize {
    Method::ALL.iter().position(|x| *x == m).unwrap_or(0)
}

fn code_index(c: tonic::Code) -> usize {
    usize::try_from(c as i32).map_or(2, |i| i.min(CODES - 1))
}

impl Metrics {
    /// Zeroed metrics.
    pub fn new() -> Self {
        let n = Transport::ALL.len() * Method::ALL.len() * CODES;
        Self {
            enabled: true,
            requests: (0..n).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..Transport::ALL.len() * Method::ALL.len())
                .map(|_| Histogram::default())
                .collect(),
            tokens: RwLock::new(HashMap::new()),
            apps: RwLock::new(Vec::new()),
            reloads: Default::default(),
            last_reload_ok: AtomicBool::new(true),
            last_success_unix: AtomicU64::new(unix_now()),
            connections: ConnectionMetrics::default(),
            watches: WatchMetrics::default(),
        }
    }

    /// Records the configured apps: `(app id, number of certificates)`.
    pub fn set_apps(&self, apps: Vec<(String, u8)>) {
        if let Ok(mut a) = self.apps.write() {
            *a = apps;
        }
    }

    /// Records a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        self.last_reload_ok.store(ok, Ordering::Relaxed);
        if ok {
            self.last_success_unix.store(unix_now(), Ordering::Relaxed);
        }
    }

    /// Reloads so far: (succeeded, failed).
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads[0].load(Ordering::Relaxed),
            self.reloads[1].load(Ordering::Relaxed),
        )
    }

    /// Metrics that record nothing (`serve --no-metrics`).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            requests: Vec::new(),
            latency: Vec::new(),
            tokens: RwLock::new(HashMap::new()),
            apps: RwLock::new(Vec::new()),
            reloads: Default::default(),
            last_reload_ok: AtomicBool::new(true),
            last_success_unix: AtomicU64::new(unix_now()),
            connections: ConnectionMetrics::default(),
            watches: WatchMetrics::default(),
        }
    }

    /// Whether anything is recorded.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn slot(t: Transport, m: Method, c: tonic::Code) -> usize {
        (transport_index(t) * Method::ALL.len() + method_index(m)) * CODES + code_index(c)
    }

    fn latency_slot(t: Transport, m: Method) -> usize {
        transport_index(t) * Method::ALL.len() + method_index(m)
    }

    /// Records one finished request.
    pub fn request(&self, t: Transport, m: Method, code: tonic::Code, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        if let Some(c) = self.requests.get(Self::slot(t, m, code)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(h) = self.latency.get(Self::latency_slot(t, m)) {
            h.observe(elapsed);
        }
    }

    /// Counts one issued token, for the current caller (see [`with_caller`]).
    pub fn token_issued(&self, kind: TokenKind, app_id: &str) {
        if !self.enabled {
            return;
        }
        let count = |caller: &str| self.token_issued_by(kind, app_id, caller);
        if CALLER.try_with(|c| count(c)).is_err() {
            count(OPEN_CALLER);
        }
    }

    /// Counts one issued token for `caller`.
    pub fn token_issued_by(&self, kind: TokenKind, app_id: &str, caller: &str) {
        if !self.enabled {
            return;
        }
        let i = kind_index(kind);
        if let Ok(map) = self.tokens.read() {
            if let Some(counters) = map.get(app_id).and_then(|by| by.get(caller)) {
                counters[i].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if let Ok(mut map) = self.tokens.write() {
            map.entry(app_id.to_owned())
                .or_default()
                .entry(caller.to_owned())
                .or_default()[i]
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The value of `requests_total` for one label set (for tests and the CLI).
    pub fn requests_total(&self, t: Transport, m: Method, code: tonic::Code) -> u64 {
        self.requests
            .get(Self::slot(t, m, code))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, ready: bool) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; the results are ignored.
        let _ = writeln!(out, "# HELP token_authority_build_info Build information.");
        let _ = writeln!(out, "# TYPE token_authority_build_info gauge");
        let _ = writeln!(
            out,
            "token_authority_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP token_authority_ready Whether the service accepts work."
        );
        let _ = writeln!(out, "# TYPE token_authority_ready gauge");
        let _ = writeln!(out, "token_authority_ready {}", u8::from(ready));

        let _ = writeln!(
            out,
            "# HELP token_authority_app_certificates Certificates loaded per configured app (2 during a rotation)."
        );
        let _ = writeln!(out, "# TYPE token_authority_app_certificates gauge");
        if let Ok(apps) = self.apps.read() {
            for (app, n) in apps.iter() {
                let _ = writeln!(
                    out,
                    "token_authority_app_certificates{{app_id=\"{}\"}} {n}",
                    escape_label(app)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP token_authority_config_reloads_total Configuration reloads (SIGHUP or a changed file) by result."
        );
        let _ = writeln!(out, "# TYPE token_authority_config_reloads_total counter");
        let (ok, failed) = self.reloads();
        let _ = writeln!(
            out,
            "token_authority_config_reloads_total{{result=\"ok\"}} {ok}"
        );
        let _ = writeln!(
            out,
            "token_authority_config_reloads_total{{result=\"error\"}} {failed}"
        );
        let _ = writeln!(
            out,
            "# HELP token_authority_config_last_reload_successful Whether the last reload succeeded (1 until one fails)."
        );
        let _ = writeln!(
            out,
            "# TYPE token_authority_config_last_reload_successful gauge"
        );
        let _ = writeln!(
            out,
            "token_authority_config_last_reload_successful {}",
            u8::from(self.last_reload_ok.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "# HELP token_authority_config_last_reload_success_timestamp_seconds When the configuration in use was loaded (start-up or reload)."
        );
        let _ = writeln!(
            out,
            "# TYPE token_authority_config_last_reload_success_timestamp_seconds gauge"
        );
        let _ = writeln!(
            out,
            "token_authority_config_last_reload_success_timestamp_seconds {}",
            self.last_success_unix.load(Ordering::Relaxed)
        );
        self.connections.render(&mut out);
        self.watches.render(&mut out);

        let _ = writeln!(
            out,
            "# HELP token_authority_log_lines_dropped_total Main-log lines dropped because stdout could not keep up (or failed)."
        );
        let _ = writeln!(
            out,
            "# TYPE token_authority_log_lines_dropped_total counter"
        );
        let _ = writeln!(
            out,
            "token_authority_log_lines_dropped_total {}",
            crate::telemetry::logwriter::lines_dropped()
        );
        let _ = writeln!(
            out,
            "# HELP token_authority_log_refusals_suppressed_total Request-refused log lines not logged (over their rate limits: unauthenticated requests, and the others)."
        );
        let _ = writeln!(
            out,
            "# TYPE token_authority_log_refusals_suppressed_total counter"
        );
        let _ = writeln!(
            out,
            "token_authority_log_refusals_suppressed_total {}",
            crate::telemetry::logging::UNAUTHENTICATED_REFUSALS.suppressed_total()
                + crate::telemetry::logging::REFUSALS.suppressed_total()
        );
        let _ = writeln!(
            out,
            "# HELP token_authority_log_request_lines_suppressed_total Request log lines (refusals, errors, main-port health checks) not logged (over their rate limit)."
        );
        let _ = writeln!(
            out,
            "# TYPE token_authority_log_request_lines_suppressed_total counter"
        );
        let _ = writeln!(
            out,
            "token_authority_log_request_lines_suppressed_total {}",
            crate::telemetry::logging::REQUEST_LINES.suppressed_total()
        );

        let _ = writeln!(
            out,
            "# HELP token_authority_requests_total API requests by transport, method and result code."
        );
        let _ = writeln!(out, "# TYPE token_authority_requests_total counter");
        for t in Transport::ALL {
            for m in Method::ALL {
                for ci in 0..CODES {
                    let code = tonic::Code::from_i32(i32::try_from(ci).unwrap_or(2));
                    let v = self.requests_total(t, m, code);
                    if v > 0 {
                        let _ = writeln!(
                            out,
                            "token_authority_requests_total{{transport=\"{}\",method=\"{}\",code=\"{}\"}} {v}",
                            t.as_str(),
                            m.as_str(),
                            code_name(code)
                        );
                    }
                }
            }
        }

        let _ = writeln!(
            out,
            "# HELP token_authority_request_duration_seconds API request latency."
        );
        let _ = writeln!(
            out,
            "# TYPE token_authority_request_duration_seconds histogram"
        );
        for t in Transport::ALL {
            for m in Method::ALL {
                let Some(h) = self.latency.get(Self::latency_slot(t, m)) else {
                    continue;
                };
                let count = h.count.load(Ordering::Relaxed);
                if count == 0 {
                    // Only the (transport, method) pairs that have served.
                    continue;
                }
                let labels = format!("transport=\"{}\",method=\"{}\"", t.as_str(), m.as_str());
                let mut cumulative = 0;
                for (b, le) in h.buckets.iter().zip(BUCKET_LE) {
                    cumulative += b.load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "token_authority_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "token_authority_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
                );
                #[allow(clippy::cast_precision_loss)]
                // a sum of microseconds; f64 is what Prometheus takes
                let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "token_authority_request_duration_seconds_sum{{{labels}}} {sum}"
                );
                let _ = writeln!(
                    out,
                    "token_authority_request_duration_seconds_count{{{labels}}} {count}"
                );
            }
        }

        let _ = writeln!(
            out,
            "# HELP token_authority_tokens_issued_total Tokens issued by kind, app and caller."
        );
        let _ = writeln!(out, "# TYPE token_authority_tokens_issued_total counter");
        if let Ok(map) = self.tokens.read() {
            let mut apps: Vec<_> = map.iter().collect();
            apps.sort_by(|a, b| a.0.cmp(b.0));
            for (app, by_caller) in apps {
                let mut callers: Vec<_> = by_caller.iter().collect();
                callers.sort_by(|a, b| a.0.cmp(b.0));
                for (caller, counters) in callers {
                    for (k, c) in KINDS.iter().zip(counters) {
                        let v = c.load(Ordering::Relaxed);
                        if v > 0 {
                            let _ = writeln!(
                                out,
                                "token_authority_tokens_issued_total{{kind=\"{}\",app_id=\"{}\",caller=\"{}\"}} {v}",
                                k.as_str(),
                                escape_label(app),
                                escape_label(caller)
                            );
                        }
                    }
                }
            }
        }
        process::render(&mut out);
        out
    }
}

/// Now, in unix seconds (0 if the clock is before 1970).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Escapes a label value (app ids are hex, but be safe).
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

mod process;

#[cfg(test)]
mod tests;
