//! The `token-authority` binary: `serve`, `token`, `inspect`, `healthcheck`,
//! `keygen`. (The load generator is a separate dev tool: `crates/loadgen`.)
//! Thin: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use token_authority::cli;

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
    Serve(Box<token_authority::config::ServeArgs>),
    /// Build a token locally from the credentials in the environment and print it.
    #[command(subcommand)]
    Token(Box<cli::TokenCommand>),
    /// Decode a token (007 or legacy 006) and, with credentials in the environment, verify it.
    Inspect(cli::InspectArgs),
    /// Exit 0 when the server at --addr answers its health check.
    Healthcheck(token_authority::server::HealthcheckArgs),
    /// Print a new random caller API key and the SHA-256 to put in the config.
    Keygen,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => token_authority::server::main(*args),
        Command::Token(cmd) => cli::token_main(*cmd),
        Command::Inspect(args) => cli::inspect_main(&args),
        Command::Healthcheck(args) => token_authority::server::healthcheck_main(&args),
        Command::Keygen => cli::keygen_main(),
    }
}
