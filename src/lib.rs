//! # token-authority
//!
//! A service that issues Agora / Shengwang AccessToken2 ("007") tokens. The
//! App Certificate lives only here; everything else asks for tokens over
//! gRPC, JSON/HTTP or the compatible `GET /api/agora/token`.
//!
//! Layers (dependencies point one way): `main` (CLI) -> transports ->
//! [`issuer`] -> the `agora-token` library. [`rules`] holds the input rules
//! every transport shares.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod env;
pub mod inspect_json;
pub mod issuer;
pub mod rules;
pub mod server;
pub mod tls;
