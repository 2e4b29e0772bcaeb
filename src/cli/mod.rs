//! The command line: `serve`, `token`, `inspect`, `healthcheck`, `keygen`,
//! `bench`.
//!
//! [`main`] parses the arguments and runs one command; every command
//! returns `Result<(), CliError>`, and the error's kind is the exit code:
//! 0 success, 1 failure (a rejected or INVALID token, missing credentials,
//! an unhealthy server), 2 usage (including input that breaks a rule), 78
//! configuration (`EX_CONFIG`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod healthcheck;
mod inspect;
mod keygen;
mod serve;
mod token;

pub use healthcheck::*;
pub use inspect::*;
pub use keygen::*;
pub use serve::*;
pub use token::*;

/// Issues Agora / Shengwang AccessToken2 tokens: a gRPC + HTTP service and a CLI.
#[derive(Debug, Parser)]
#[command(name = "token-authority", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (gRPC, JSON and GET /api/agora/token on one port).
    Serve(Box<crate::config::ServeArgs>),
    /// Build a token locally from the credentials in the environment and print it.
    #[command(subcommand)]
    Token(Box<TokenCommand>),
    /// Decode a token (007 or legacy 006) and, with credentials in the environment, verify it.
    Inspect(InspectArgs),
    /// Exit 0 when the server at --addr answers its health check.
    Healthcheck(HealthcheckArgs),
    /// Print a new random caller API key and the SHA-256 to put in the config.
    Keygen,
    /// Load generator: HTTP/1.1, JSON and gRPC scenarios with latency percentiles.
    Bench(Box<crate::bench::BenchArgs>),
}

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve_main(*args),
        Command::Token(cmd) => token_main(*cmd),
        Command::Inspect(args) => inspect_main(&args),
        Command::Healthcheck(args) => healthcheck_main(&args),
        Command::Keygen => keygen_main(),
        Command::Bench(args) => crate::bench::main(&args),
    }
}
