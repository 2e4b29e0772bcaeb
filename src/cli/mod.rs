//! The command line: `serve`, `token`, `inspect`, `healthcheck`, `keygen`,
//! `watch`.
//! (The load generator is the `loadgen` binary of `crates/loadgen`.)
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
mod watch;

pub use healthcheck::*;
pub use inspect::*;
pub use keygen::*;
pub use serve::*;
pub use token::*;
pub use watch::*;

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
    /// Keep a token fresh through the server's WatchToken stream: print each
    /// delivery, or rewrite --out FILE atomically (a sidecar for any stack).
    Watch(Box<WatchArgs>),
}

/// Why a command failed: its exit code and the line to print on stderr
/// (none when the command already said everything on stdout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    code: u8,
    message: Option<String>,
}

/// Exit code of a failure: a token rejected or INVALID, missing
/// credentials, an unhealthy server, a start-up failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage error, including input that breaks a rule.
pub const EXIT_USAGE: u8 = 2;
pub use crate::config::EXIT_CONFIG;

impl CliError {
    /// Exit `code` after printing `message` on stderr.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: Some(message.into()),
        }
    }

    /// Exit `code` without a message.
    pub fn silent(code: u8) -> Self {
        Self {
            code,
            message: None,
        }
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m),
            None => write!(f, "exit {}", self.code),
        }
    }
}

impl std::error::Error for CliError {}

/// Runs one parsed command.
fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve_main(*args),
        Command::Token(cmd) => token_main(*cmd),
        Command::Inspect(args) => inspect_main(&args),
        Command::Healthcheck(args) => healthcheck_main(&args),
        Command::Keygen => keygen_main(),
        Command::Watch(args) => watch_main(*args),
    }
}

/// Parses the command line, runs the command, prints its error and returns
/// its exit code: the one place the process's exit status is decided.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(m) = &e.message {
                eprintln!("{m}");
            }
            ExitCode::from(e.code)
        }
    }
}
