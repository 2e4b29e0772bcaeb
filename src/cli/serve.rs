//! `token-authority serve`: validates the configuration, then serves until
//! SIGTERM / Ctrl-C, reloading on SIGHUP and on file changes.

use super::CliError;
use crate::config::{Config, EXIT_CONFIG, ServeArgs};
use crate::server::reload::{self, Reloader, Trigger};
use crate::server::{Server, shutdown_signal};
use crate::telemetry::logging::init_logging;
use std::sync::Arc;

/// `token-authority serve`: validates the configuration before anything
/// else (exit 78 on error), then serves until SIGTERM / Ctrl-C.
pub fn serve_main(args: ServeArgs) -> Result<(), CliError> {
    let config = match Config::load(&args, &crate::config::env::ProcessEnv::load()) {
        Ok(c) => c,
        Err(e) => {
            return Err(CliError::new(
                EXIT_CONFIG,
                format!("token-authority: configuration error: {e}"),
            ));
        }
    };
    let _log_guards = match init_logging(
        config.log_format,
        config.audit_log.as_deref(),
        config.audit_fsync,
    ) {
        Ok(g) => g,
        Err(e) => {
            return Err(CliError::new(
                EXIT_CONFIG,
                format!("token-authority: configuration error: {e}"),
            ));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return Err(CliError::new(
                1,
                format!("token-authority: cannot start the async runtime: {e}"),
            ));
        }
    };
    runtime.block_on(async {
        // Before anything slow: SIGHUP's default action ends the process.
        let hangup = match hangup_signal() {
            Ok(s) => s,
            Err(e) => {
                return Err(CliError::new(1, format!("token-authority: cannot handle SIGHUP: {e}")));
            }
        };
        // A file-size limit (RLIMIT_FSIZE) must fail the audit write with
        // EFBIG, which the audit file handles, instead of SIGXFSZ ending
        // the process: the signal gets a handler (and is then ignored).
        #[cfg(unix)]
        let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25));
        let server = match Server::bind(&config).await {
            Ok(s) => s,
            // Said once, on stderr (the log is on stdout): the exit status
            // and this line are what a supervisor shows.
            Err(e) => return Err(CliError::new(1, format!("token-authority: {e}"))),
        };
        let apps: Vec<String> = server
            .shared()
            .current()
            .app_certificates()
            .into_iter()
            .map(|(id, n)| format!("{id} ({n} certificate{})", if n == 1 { "" } else { "s" }))
            .collect();
        // A list as one plain text value (`a, b`), not a JSON array in a string.
        let apps = apps.join(", ");
        tracing::info!(apps = %apps, source = %config.apps_source, "credentials loaded (certificates not shown)");
        if let Some(id) = &config.replaced_env_app {
            tracing::warn!(
                app_id = %id,
                config = %config.apps_source,
                "[[apps]] in the config file replace the environment's credentials: the app the environment names (SHENGWANG_APP_ID or AGORA_APP_ID) is NOT served; list it under [[apps]] to keep it"
            );
        }
        let reloader = Reloader::new(
            config.clone(),
            Arc::clone(server.shared()),
            crate::config::env::ProcessEnv::load,
        );
        let reloads = tokio::spawn(reload_loop(reloader, hangup));
        let result = server.run(shutdown_signal()).await;
        reloads.abort();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                Err(CliError::silent(1))
            }
        }
    })
}

/// SIGHUP as a stream (a never-ending one where there are no signals).
#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> std::io::Result<Hangup> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

#[cfg(not(unix))]
fn hangup_signal() -> std::io::Result<Hangup> {
    Ok(())
}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangup) {
    if h.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await;
}

/// Reloads on SIGHUP (at once) and when a watched file changed and then
/// stayed the same (checked every [`reload::POLL_INTERVAL`], and again
/// [`reload::STABLE_WINDOW`] after a change was seen; see
/// [`crate::server::reload`]). The file I/O runs on the blocking pool.
async fn reload_loop<F, E>(mut reloader: Reloader<F>, mut hangup: Hangup)
where
    F: Fn() -> E + Send + 'static,
    E: crate::config::env::Env,
{
    let files: Vec<String> = reloader
        .watched_files()
        .map(|p| p.display().to_string())
        .collect();
    let files = files.join(", ");
    tracing::info!(files = %files, "reloading on SIGHUP and on changes of these files");
    let mut next = tokio::time::Instant::now() + reload::POLL_INTERVAL;
    loop {
        let trigger = tokio::select! {
            () = next_hangup(&mut hangup) => Some(Trigger::Signal),
            () = tokio::time::sleep_until(next) => None,
        };
        if trigger.is_some() {
            tracing::info!("SIGHUP received: reloading");
        }
        let step = tokio::task::spawn_blocking(move || {
            // The outcome is logged and counted by the reloader.
            let _ = match trigger {
                Some(t) => Some(reloader.reload(t)),
                None => reloader.poll(),
            };
            reloader
        });
        reloader = match step.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the reloader failed; reloads are disabled until a restart");
                return;
            }
        };
        if trigger.is_none() {
            next = tokio::time::Instant::now()
                + if reloader.settling() {
                    reload::STABLE_WINDOW
                } else {
                    reload::POLL_INTERVAL
                };
        }
    }
}
