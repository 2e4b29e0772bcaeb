//! `token-authority bench`: a load generator for this service.
//!
//! Scenarios: the compatible GET endpoint and `/healthz` over HTTP/1.1
//! (one keep-alive connection per worker), the JSON route of
//! `BuildRtcToken` and the trivial JSON route `grpc.health.v1.Health/Check`
//! (same body reading, decoding and encoding), and gRPC `BuildRtcToken` and
//! `grpc.health.v1.Health/Check` as unary calls multiplexed over HTTP/2.
//! Token requests vary their channel and uid, so nothing is cached.
//!
//! Closed loop (`--connections N` workers, each sending its next request
//! when the previous one answered) or open loop (`--rate R` requests per
//! second in total, spread evenly over the workers). In the open loop each
//! request has a scheduled send time and its latency is measured from that
//! time, not from when it was actually sent: a worker that falls behind
//! (its previous request was slow) keeps its schedule and sends the overdue
//! requests back to back, and the wait shows up in the percentiles instead
//! of being hidden behind fewer requests (no coordinated omission). A
//! worker has one request in flight, so `--connections` bounds the
//! concurrency; requests still unsent when the run's grace period ends are
//! reported as `unsent`.
//!
//! Rounds: each of `--runs` rounds runs every scenario once on every
//! target (interleaved, so drift in the machine's load hits all of them
//! alike); the report gives the median round per scenario and target and
//! the median over rounds of the ratio token / trivial per transport,
//! each ratio taken within one round. `--compare ADDR` adds a second target.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::TcpStream;

use crate::pb;

/// What to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `GET /api/agora/token?channelName=..&uid=..` (HTTP/1.1).
    Get,
    /// `GET /healthz` (HTTP/1.1): the trivial endpoint of the same server.
    Healthz,
    /// `POST /agora.token.v1.TokenService/BuildRtcToken` JSON (HTTP/1.1).
    Json,
    /// `POST /grpc.health.v1.Health/Check` JSON (HTTP/1.1): the trivial JSON route.
    JsonHealth,
    /// gRPC `BuildRtcToken` (HTTP/2, multiplexed).
    Grpc,
    /// gRPC `grpc.health.v1.Health/Check` (HTTP/2, multiplexed).
    GrpcHealth,
}

impl Scenario {
    /// Every scenario, token before trivial per transport.
    pub const ALL: [Self; 6] = [
        Self::Get,
        Self::Healthz,
        Self::Json,
        Self::JsonHealth,
        Self::Grpc,
        Self::GrpcHealth,
    ];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Healthz => "healthz",
            Self::Json => "json",
            Self::JsonHealth => "json-health",
            Self::Grpc => "grpc",
            Self::GrpcHealth => "grpc-health",
        }
    }

    /// The trivial scenario a token scenario is compared with.
    pub fn baseline(self) -> Option<Self> {
        match self {
            Self::Get => Some(Self::Healthz),
            Self::Json => Some(Self::JsonHealth),
            Self::Grpc => Some(Self::GrpcHealth),
            _ => None,
        }
    }

    fn is_grpc(self) -> bool {
        matches!(self, Self::Grpc | Self::GrpcHealth)
    }
}

/// `bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server address (host:port, plaintext). Meant for loopback or a lab
    /// network: this is a load generator.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: String,
    /// A second server to run the same scenarios against, in the same rounds.
    #[arg(long, value_name = "HOST:PORT")]
    pub compare: Option<String>,
    /// Scenarios to run, in order (repeatable or comma-separated)
    /// [default: all six].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Concurrent workers: HTTP/1.1 connections, or concurrent gRPC streams.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub connections: usize,
    /// HTTP/2 connections the gRPC streams are spread over.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub h2_connections: usize,
    /// Open loop: total requests per second (default: closed loop).
    #[arg(long, value_name = "REQ_PER_SEC")]
    pub rate: Option<f64>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Warm-up seconds before each run (sent, not measured).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub warmup: f64,
    /// Rounds; the report gives medians over them.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub runs: usize,
    /// A request that has not answered after this many seconds is an error.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub timeout: f64,
    /// Bearer API key to send (when the server has callers configured).
    #[arg(long, env = "TOKEN_AUTHORITY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the results as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Options for a short closed-loop run of every scenario against `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            compare: None,
            scenario: Vec::new(),
            connections: 32,
            h2_connections: 1,
            rate: None,
            duration: 10.0,
            warmup: 2.0,
            runs: 1,
            timeout: 5.0,
            api_key: None,
            json: false,
        }
    }

    fn scenarios(&self) -> Vec<Scenario> {
        if self.scenario.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenario.clone()
        }
    }

    fn targets(&self) -> Vec<String> {
        let mut t = vec![self.addr.clone()];
        t.extend(self.compare.clone());
        t
    }

    fn open_loop_rate(&self) -> Option<f64> {
        self.rate.filter(|r| r.is_finite() && *r > 0.0)
    }
}

/// One run of one scenario against one target.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Scenario.
    pub scenario: Scenario,
    /// Server address.
    pub addr: String,
    /// Successful responses per second of the measured window.
    pub rps: f64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9.
    pub p: [u64; 4],
    /// Successful requests measured.
    pub ok: u64,
    /// Failed requests measured (non-2xx, non-OK gRPC status, I/O errors,
    /// timeouts).
    pub errors: u64,
    /// Open loop: requests scheduled in the measured window but never sent
    /// because the run's grace period ran out (the server fell behind).
    pub unsent: u64,
}

/// The ratio of a token scenario to its trivial scenario on one target.
#[derive(Debug, Clone)]
pub struct Ratio {
    /// Target.
    pub addr: String,
    /// The token scenario.
    pub scenario: Scenario,
    /// The trivial scenario.
    pub baseline: Scenario,
    /// Median over rounds of (token req/s / trivial req/s) within a round.
    pub median: f64,
    /// Every round's ratio.
    pub rounds: Vec<f64>,
}

/// Everything a bench measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The median run per scenario and target, in target then scenario order.
    pub medians: Vec<RunResult>,
    /// Every run, in the order run.
    pub runs: Vec<RunResult>,
    /// Ratios token / trivial per transport and target.
    pub ratios: Vec<Ratio>,
}

/// Runs `bench` (its own runtime; the command's entry point).
pub fn main(args: &BenchArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("token-authority bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(report) => {
            print!("{}", render(args, &report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("token-authority bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn median_of(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs every round and returns the report (progress lines go to stderr
/// unless `args.json`).
pub async fn run(args: &BenchArgs) -> Result<Report, String> {
    let scenarios = args.scenarios();
    let targets = args.targets();
    let rounds = args.runs.max(1);
    let mut runs = Vec::new();
    for round in 0..rounds {
        for addr in &targets {
            for &scenario in &scenarios {
                let r = run_one(args, addr, scenario).await?;
                if !args.json {
                    eprintln!(
                        "round {}/{rounds} {:<12} {:<21} {:>9.0} req/s  p99 {:>8} ms  errors {}  unsent {}",
                        round + 1,
                        scenario.name(),
                        addr,
                        r.rps,
                        ms(r.p[2]),
                        r.errors,
                        r.unsent
                    );
                }
                runs.push(r);
            }
        }
    }
    let mut medians = Vec::new();
    let mut ratios = Vec::new();
    for addr in &targets {
        for &scenario in &scenarios {
            let mut mine: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.scenario == scenario && &r.addr == addr)
                .collect();
            mine.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            if let Some(m) = mine.get(mine.len() / 2) {
                medians.push((*m).clone());
            }
            let Some(baseline) = scenario.baseline().filter(|b| scenarios.contains(b)) else {
                continue;
            };
            let series = |s: Scenario| -> Vec<f64> {
                runs.iter()
                    .filter(|r| r.scenario == s && &r.addr == addr)
                    .map(|r| r.rps)
                    .collect()
            };
            let per_round: Vec<f64> = series(scenario)
                .into_iter()
                .zip(series(baseline))
                .filter(|(_, b)| *b > 0.0)
                .map(|(t, b)| t / b)
                .collect();
            ratios.push(Ratio {
                addr: addr.clone(),
                scenario,
                baseline,
                median: median_of(per_round.clone()),
                rounds: per_round,
            });
        }
    }
    Ok(Report {
        medians,
        runs,
        ratios,
    })
}

/// A request generator bound to one connection.
enum Conn {
    Http(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Grpc(Box<pb::token_service_client::TokenServiceClient<tonic::transport::Channel>>),
    Health(tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>),
}

async fn http_conn(addr: &str) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(async move {
        // The connection ends when the worker drops its sender or the
        // server closes it; the worker sees the error on its next request.
        let _ = conn.await;
    });
    Ok(Conn::Http(send))
}

async fn channels(addr: &str, n: usize) -> Result<Vec<tonic::transport::Channel>, String> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("{addr}: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

/// Channel name and uid of token request number `i` (varied, never 0).
fn token_input(i: u64) -> (String, u32) {
    let uid = u32::try_from(i % 1_000_000 + 1).unwrap_or(1);
    (format!("bench-{}", i % 1000), uid)
}

impl Conn {
    async fn open(
        scenario: Scenario,
        addr: &str,
        channel: Option<&tonic::transport::Channel>,
    ) -> Result<Self, String> {
        match (scenario, channel) {
            (Scenario::Grpc, Some(ch)) => Ok(Self::Grpc(Box::new(
                pb::token_service_client::TokenServiceClient::new(ch.clone()),
            ))),
            (Scenario::GrpcHealth, Some(ch)) => Ok(Self::Health(
                tonic_health::pb::health_client::HealthClient::new(ch.clone()),
            )),
            (Scenario::Grpc | Scenario::GrpcHealth, None) => {
                Err("a gRPC scenario needs a channel".to_owned())
            }
            _ => http_conn(addr).await,
        }
    }

    /// Sends request number `i`; `Ok(true)` when the answer is a success,
    /// `Ok(false)` for an error answer, `Err` when the connection failed.
    async fn call(
        &mut self,
        scenario: Scenario,
        addr: &str,
        i: u64,
        key: Option<&str>,
    ) -> Result<bool, String> {
        match self {
            Conn::Http(send) => {
                let (method, path, body) = match scenario {
                    Scenario::Get => {
                        let (channel, uid) = token_input(i);
                        (
                            "GET",
                            format!("/api/agora/token?channelName={channel}&uid={uid}"),
                            Bytes::new(),
                        )
                    }
                    Scenario::Healthz => ("GET", "/healthz".to_owned(), Bytes::new()),
                    Scenario::Json => {
                        let (channel, uid) = token_input(i);
                        (
                            "POST",
                            "/agora.token.v1.TokenService/BuildRtcToken".to_owned(),
                            Bytes::from(format!(r#"{{"channelName":"{channel}","uid":{uid}}}"#)),
                        )
                    }
                    Scenario::JsonHealth => (
                        "POST",
                        "/grpc.health.v1.Health/Check".to_owned(),
                        Bytes::from_static(br#"{"service":""}"#),
                    ),
                    Scenario::Grpc | Scenario::GrpcHealth => {
                        return Err("not an HTTP/1.1 scenario".to_owned());
                    }
                };
                let mut req = hyper::Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", addr);
                if method == "POST" {
                    req = req.header("content-type", "application/json");
                }
                if let Some(k) = key {
                    req = req.header("authorization", format!("Bearer {k}"));
                }
                let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
                send.ready().await.map_err(|e| e.to_string())?;
                let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
                let ok = resp.status().is_success();
                // Read the whole body, as a client would.
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(ok)
            }
            Conn::Grpc(client) => {
                let (channel_name, uid) = token_input(i);
                let mut req = tonic::Request::new(pb::BuildRtcTokenRequest {
                    channel_name,
                    user: Some(pb::build_rtc_token_request::User::Uid(uid)),
                    ..Default::default()
                });
                add_key(&mut req, key);
                Ok(client.build_rtc_token(req).await.is_ok())
            }
            Conn::Health(client) => {
                let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                });
                add_key(&mut req, key);
                Ok(client.check(req).await.is_ok())
            }
        }
    }
}

fn add_key<T>(req: &mut tonic::Request<T>, key: Option<&str>) {
    if let Some(k) = key {
        if let Ok(v) = format!("Bearer {k}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
    }
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    // 1 us .. 10 min, 3 significant digits.
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The timing of one run, shared by its workers.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Requests scheduled before this are warm-up.
    measure_from: Instant,
    /// Nothing is scheduled from here on.
    end: Instant,
    /// Open loop: a worker still behind its schedule stops here.
    hard_end: Instant,
    /// Open loop: time between one worker's requests.
    interval: Option<Duration>,
    timeout: Duration,
}

/// What one worker measured.
struct WorkerResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    unsent: u64,
    last_done: Instant,
}

#[allow(clippy::too_many_arguments)] // one worker's whole context; private
async fn worker(
    mut conn: Conn,
    w: usize,
    workers: usize,
    win: Window,
    start: Instant,
    scenario: Scenario,
    addr: String,
    key: Option<String>,
) -> Result<WorkerResult, String> {
    let mut hist = new_histogram()?;
    let (mut ok, mut errors, mut unsent) = (0u64, 0u64, 0u64);
    let mut last_done = win.measure_from;
    let mut i = w as u64;
    let step = workers as u64;
    // Open loop: worker w's k-th request is due at start + (k + w/workers)
    // intervals, so the workers together send at the total rate, evenly.
    let mut next = win
        .interval
        .map(|iv| start + iv.mul_f64(w as f64 / workers as f64));
    loop {
        let scheduled = match (next, win.interval) {
            (Some(t), Some(iv)) => {
                if t >= win.end {
                    break;
                }
                if Instant::now() >= win.hard_end {
                    // Still behind when the grace period is over: count what
                    // was scheduled in the measured window and not sent.
                    let mut t = t.max(win.measure_from);
                    while t < win.end {
                        unsent += 1;
                        t += iv;
                    }
                    break;
                }
                // In the past when behind: returns at once, the schedule is kept.
                tokio::time::sleep_until(t.into()).await;
                next = Some(t + iv);
                t
            }
            _ => {
                let now = Instant::now();
                if now >= win.end {
                    break;
                }
                now
            }
        };
        let res = tokio::time::timeout(win.timeout, conn.call(scenario, &addr, i, key.as_deref()))
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
        i += step;
        let done = Instant::now();
        let measured = scheduled >= win.measure_from;
        match res {
            Ok(true) if measured => {
                ok += 1;
                let _ = hist.record(micros(done - scheduled));
            }
            Ok(true) => {}
            Ok(false) => errors += u64::from(measured),
            Err(_) => {
                errors += u64::from(measured);
                // The connection is unusable after an I/O error or a
                // timeout: open a new one (gRPC channels reconnect by
                // themselves). A server that is down makes every request
                // an error; do not spin.
                if let Conn::Http(_) = conn {
                    match Conn::open(scenario, &addr, None).await {
                        Ok(c) => conn = c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        }
        if measured {
            last_done = done;
        }
    }
    Ok(WorkerResult {
        hist,
        ok,
        errors,
        unsent,
        last_done,
    })
}

async fn run_one(args: &BenchArgs, addr: &str, scenario: Scenario) -> Result<RunResult, String> {
    let workers = args.connections.max(1);
    let chans = if scenario.is_grpc() {
        channels(addr, args.h2_connections).await?
    } else {
        Vec::new()
    };
    let mut conns = Vec::with_capacity(workers);
    for w in 0..workers {
        let channel = (!chans.is_empty()).then(|| &chans[w % chans.len()]);
        conns.push(Conn::open(scenario, addr, channel).await?);
    }
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let duration = Duration::from_secs_f64(args.duration.max(0.05));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let interval = args
        .open_loop_rate()
        .map(|r| Duration::from_secs_f64(workers as f64 / r));
    let win = Window {
        measure_from,
        end,
        // Time for a worker that fell behind to catch up before it gives up.
        hard_end: end + duration.mul_f64(0.5).max(Duration::from_secs(1)),
        interval,
        timeout: Duration::from_secs_f64(args.timeout.max(0.001)),
    };
    let mut tasks = Vec::with_capacity(workers);
    for (w, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(worker(
            conn,
            w,
            workers,
            win,
            start,
            scenario,
            addr.to_owned(),
            args.api_key.clone(),
        )));
    }
    let mut hist = new_histogram()?;
    let (mut ok, mut errors, mut unsent) = (0u64, 0u64, 0u64);
    let mut last_done = end;
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())??;
        hist.add(r.hist).map_err(|e| e.to_string())?;
        ok += r.ok;
        errors += r.errors;
        unsent += r.unsent;
        last_done = last_done.max(r.last_done);
    }
    // Open loop: requests scheduled in the window but answered after it
    // stretch the window (a server that keeps up finishes at `end`).
    let elapsed = if interval.is_some() {
        (last_done - measure_from).as_secs_f64()
    } else {
        duration.as_secs_f64()
    };
    Ok(RunResult {
        scenario,
        addr: addr.to_owned(),
        rps: ok as f64 / elapsed.max(1e-9),
        p: [
            hist.value_at_quantile(0.50),
            hist.value_at_quantile(0.90),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
        ],
        ok,
        errors,
        unsent,
    })
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The report as text (a table and the ratios) or JSON lines.
pub fn render(args: &BenchArgs, report: &Report) -> String {
    let mut s = String::new();
    if args.json {
        for r in &report.medians {
            let line = serde_json::json!({
                "scenario": r.scenario.name(), "addr": r.addr, "rps": r.rps,
                "p50_us": r.p[0], "p90_us": r.p[1], "p99_us": r.p[2], "p999_us": r.p[3],
                "ok": r.ok, "errors": r.errors, "unsent": r.unsent,
            });
            let _ = writeln!(s, "{line}");
        }
        for r in &report.ratios {
            let line = serde_json::json!({
                "ratio": format!("{}/{}", r.scenario.name(), r.baseline.name()),
                "addr": r.addr, "median": r.median, "rounds": r.rounds,
            });
            let _ = writeln!(s, "{line}");
        }
        return s;
    }
    let mode = match args.open_loop_rate() {
        Some(r) => format!("open loop at {r} req/s"),
        None => "closed loop".to_owned(),
    };
    let _ = writeln!(
        s,
        "\n{} workers ({} HTTP/2 connection(s) for gRPC), {mode}, {} s measured after {} s warm-up, median of {} round(s)",
        args.connections,
        args.h2_connections.max(1),
        args.duration,
        args.warmup,
        args.runs.max(1)
    );
    let _ = writeln!(
        s,
        "{:<12} {:<21} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "scenario", "server", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors", "unsent"
    );
    for r in &report.medians {
        let _ = writeln!(
            s,
            "{:<12} {:<21} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
            r.scenario.name(),
            r.addr,
            r.rps,
            ms(r.p[0]),
            ms(r.p[1]),
            ms(r.p[2]),
            ms(r.p[3]),
            r.errors,
            r.unsent
        );
    }
    for r in &report.ratios {
        let rounds: Vec<String> = r.rounds.iter().map(|x| format!("{x:.3}")).collect();
        let _ = writeln!(
            s,
            "ratio {}/{} on {}: {:.3} (rounds: {})",
            r.scenario.name(),
            r.baseline.name(),
            r.addr,
            r.median,
            rounds.join(" ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_pair_token_and_trivial_scenarios() {
        for s in Scenario::ALL {
            if let Some(b) = s.baseline() {
                assert_eq!(b.baseline(), None);
                assert_eq!(s.is_grpc(), b.is_grpc());
            }
        }
        assert_eq!(median_of(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_of(Vec::new()), 0.0);
    }

    #[test]
    fn token_inputs_vary_and_uid_is_never_zero() {
        let (c0, u0) = token_input(0);
        let (c1, u1) = token_input(1);
        assert_ne!((c0, u0), (c1, u1));
        assert!((0..5000).all(|i| token_input(i).1 != 0));
    }
}
