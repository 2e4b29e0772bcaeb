//! Integration tests of the service: the real server on `127.0.0.1:0`,
//! in-process, with real clients (tonic, reflection, health, an HTTP/1.1
//! client), plus the built binary for start-up failures and signals.
//!
//! Modules:
//! - `common`: spawning the server, clients, token checks.
//! - `grants`: policy checks what each token grants: the former bypasses,
//!   every BuildToken service and field against one restricted caller.
//! - `grants_prop`: random policies and requests in-process; whatever is
//!   issued decodes to grants an independent oracle allows.
//! - `grpc`: every RPC over gRPC, tokens decoded and verified.
//! - `json`: every RPC over JSON (proto3 mapping, both field spellings).
//! - `http_get`: the compatible `GET /api/agora/token`.
//! - `jwt`: JWT callers: keys made in the test, a JWKS on a loopback HTTPS
//!   server, every bad JWT, rotation, outage and readiness, claims to policy
//!   on every transport, and a page on another origin in headless Chromium.
//! - `limits`: connection caps, timeouts of every phase, in-flight per caller.
//! - `openapi`: `docs/openapi.json` generated from the proto and compared
//!   (drift fails), every RPC and field checked, served at `/openapi.json`.
//! - `ops`: reflection v1/v1alpha, health, /healthz, /readyz, /metrics,
//!   the admin port, plain 404s, shutdown.
//! - `redis_limits`: fleet-wide rate limits in a real `redis-server` shared
//!   by several replicas: totals, the throttle, expiry, Redis killed,
//!   `deny`, a silent store.
//! - `redis_fleet`: the same through Redis Sentinel (a failover) and a
//!   3-master Redis Cluster started by the test; watches capped fleet-wide.
//! - `bad_input`: the bad-input matrix over both transports.
//! - `binary`: start-up failures, `serve --help`, healthcheck, SIGTERM.
//! - `messages`: what the binary says: `--listen localhost:PORT`, a taken
//!   port once, TLS in the start-up line, plain log values, `[[apps]]`
//!   leaving out the environment's app.
//! - `security`: callers, policy, rate limits, CORS, mTLS, property tests
//!   of the HTTP query and JSON handling, secrets never in logs.
//! - `lifecycle`: the binary under load: certificate rotation by SIGHUP and
//!   by a changed file, a bad file, graceful shutdown with a delay.
//! - `stalled_stdout`: the binary with stdout on a pipe nobody reads:
//!   requests never wait for the log, drops are counted and marked.
//! - `watch`: `WatchToken` streams on a hand-moved clock: renewals,
//!   jitter, revocation by reload, shutdown, the per-caller cap, retries,
//!   bad input.

// A test crate: a failing unwrap is a failing test (helpers included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit_file;
mod bad_input;
mod binary;
mod common;
mod connect;
mod grants;
mod grants_prop;
mod grpc;
mod http_get;
mod json;
mod jwt;
mod lifecycle;
mod limits;
mod messages;
mod openapi;
mod ops;
mod redis_fleet;
mod redis_limits;
mod security;
mod stalled_stdout;
mod watch;
