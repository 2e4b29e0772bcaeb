//! The `token` and `inspect` subcommands. (Being written.)

use std::process::ExitCode;

/// `token <kind>`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// RTC token.
    Rtc,
}

/// `inspect` options.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The token, or `-` to read it from stdin.
    pub token: String,
}

/// Runs `token`.
pub fn token_main(_cmd: TokenCommand) -> ExitCode {
    ExitCode::from(2)
}

/// Runs `inspect`.
pub fn inspect_main(_args: &InspectArgs) -> ExitCode {
    ExitCode::from(2)
}
