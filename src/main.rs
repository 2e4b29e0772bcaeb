//! The `token-authority` binary: everything is in the library; [`cli::main`]
//! parses the command line, runs the command and maps its typed error to
//! the documented exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    token_authority::cli::main()
}
