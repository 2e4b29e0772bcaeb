//! # token-authority
//!
//! A service that issues Agora / Shengwang AccessToken2 ("007") tokens. The
//! App Certificate lives only here; everything else asks for tokens over
//! gRPC, JSON/HTTP or the compatible `GET /api/agora/token`.
//!
//! Layers (dependencies point one way): `main` (CLI) -> [`server`] ->
//! transports ([`grpc`], [`http`], [`json`]) -> [`issuer`] -> the
//! `agora-token` library. [`rules`] holds the input rules every transport
//! shares; [`config`] turns flags, file and environment into one validated
//! [`config::Config`].

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod env;
pub mod grpc;
pub mod http;
pub mod issuer;
pub mod json;
pub mod logfmt;
pub mod logwriter;
pub mod metrics;
pub mod pb;
pub mod reload;
pub mod rules;
pub mod server;
pub mod state;
pub mod tls;
