//! `token-authority healthcheck`: a std-only HTTP probe for Docker.

use super::CliError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `token-authority healthcheck` options.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Server address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: String,
    /// Check readiness (/readyz: credentials loaded and not shutting down)
    /// instead of liveness (/healthz).
    #[arg(long)]
    pub ready: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    pub timeout: u64,
}

/// `token-authority healthcheck`: exit 0 when `GET /healthz` (or `/readyz`
/// with `--ready`) answers 200. Blocking std I/O, no runtime: it is run by
/// Docker every few seconds.
pub fn healthcheck_main(args: &HealthcheckArgs) -> Result<(), CliError> {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    match healthcheck(&args.addr, path, Duration::from_secs(args.timeout.max(1))) {
        Ok(()) => Ok(()),
        Err(e) => Err(CliError::new(1, format!("unhealthy: {e}"))),
    }
}

fn healthcheck(addr: &str, path: &str, timeout: Duration) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .collect();
    let mut last = format!("{addr}: no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(mut s) => {
                let io = |e: std::io::Error| format!("{a}: {e}");
                s.set_read_timeout(Some(timeout)).map_err(io)?;
                s.set_write_timeout(Some(timeout)).map_err(io)?;
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )
                .map_err(io)?;
                let mut buf = [0u8; 64];
                let mut n = 0;
                while n < 12 {
                    match s.read(&mut buf[n..]).map_err(io)? {
                        0 => break,
                        k => n += k,
                    }
                }
                let line = String::from_utf8_lossy(&buf[..n]);
                let status = line.split_whitespace().nth(1).unwrap_or("");
                return if status == "200" {
                    Ok(())
                } else {
                    Err(format!(
                        "{a}{path} answered {:?}",
                        line.lines().next().unwrap_or("")
                    ))
                };
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}
