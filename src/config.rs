//! Service configuration: flags, environment, config file -> one validated
//! config. (Being written; see issue 3.)

/// `token-authority serve` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (gRPC and HTTP/1.1).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: String,
}
