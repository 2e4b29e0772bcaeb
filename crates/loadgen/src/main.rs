//! The `loadgen` binary: the load generator's command line (the options of
//! [`token_authority_loadgen::BenchArgs`], no subcommand).

use std::process::ExitCode;

use clap::Parser;

use token_authority_loadgen::BenchArgs;

/// Load generator for token-authority: HTTP/1.1, JSON and gRPC scenarios
/// with latency percentiles, closed or open loop.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    token_authority_loadgen::main(&Cli::parse().args)
}
