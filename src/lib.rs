//! # token-authority
//!
//! A service that issues Agora / Shengwang AccessToken2 ("007") tokens. The
//! App Certificate lives only here; everything else asks for tokens over
//! gRPC, JSON/HTTP or the compatible `GET /api/agora/token`.
//!
//! Dependencies point one way, down this list (docs/ARCHITECTURE.md's
//! section draws it):
//!
//! * [`cli`]: the commands; `main` maps their typed errors to exit codes.
//! * [`server`]: bind, accept, middleware, shutdown, reload.
//! * [`transport`]: thin gRPC and HTTP adapters.
//! * [`api`]: the transport-neutral issuance pipeline and its one error type.
//! * [`config`]: flags, file and environment into one validated config.
//! * [`state`]: the reloadable snapshot (issuer + policies) and metrics.
//! * [`telemetry`]: metrics, audit trail, logs.
//! * [`policy`]: callers, compiled policies, rate limits.
//! * [`domain`]: validated requests -> tokens (the issuer, its rules,
//!   inspection), over the `agora-token` library crate.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod domain;
pub mod pb;
pub mod policy;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod transport;
