//! Wiring: one listener serving gRPC and HTTP/1.1. (Being written; see issue 3.)

use std::process::ExitCode;

use crate::config::ServeArgs;

/// `token-authority healthcheck` options.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
}

/// Runs the service until shutdown.
pub fn main(_args: ServeArgs) -> ExitCode {
    eprintln!("error: the service is not built yet");
    ExitCode::from(2)
}

/// Checks a running server's health.
pub fn healthcheck_main(_args: &HealthcheckArgs) -> ExitCode {
    ExitCode::from(1)
}
