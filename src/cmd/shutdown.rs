//! The shutdown signal: Ctrl-C or SIGTERM, whichever comes first; and the bound on how long
//! a stop may take once asked for.
//!
//! After the first signal the process stops gracefully: it drains in-flight events for up
//! to `engine.shutdown_timeout_ms` and stores the final checkpoints. Whatever handlers, the
//! broker or the server are doing, it is gone [`MARGIN`] after that: a watchdog thread
//! (outside the async runtime, so nothing running there can hold it up) ends it. A second
//! signal ends it at once. Either way what was not finished stays behind the checkpoint and
//! runs again after the restart.

use std::time::Duration;

/// Time a stop may take beyond `engine.shutdown_timeout_ms`: the final checkpoint write,
/// the HTTP server and the broker client closing.
pub const MARGIN: Duration = Duration::from_secs(5);

/// Exit code when the watchdog ended a stop that overran its time.
pub(crate) const EXIT_OVERRAN: i32 = 3;

/// Completes when the process is asked to stop. If a signal handler cannot be installed
/// the error is logged and only the other signal is awaited.
pub async fn signal() {
    tokio::select! {
        _ = ctrl_c() => tracing::info!("Ctrl-C received, stopping"),
        _ = term() => tracing::info!("SIGTERM received, stopping"),
    }
}

/// [`signal`], after which the stop is bounded: the process exits at the latest
/// `drain_timeout` + [`MARGIN`] later, and at once on a second signal.
pub(crate) async fn signal_bounded(drain_timeout: Duration) {
    signal().await;
    let limit = drain_timeout + MARGIN;
    let watchdog = std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(
                limit_ms = limit.as_millis() as u64,
                "the stop overran engine.shutdown_timeout_ms plus its margin; exiting now \
                 (unfinished events run again after the restart)"
            );
            std::process::exit(EXIT_OVERRAN);
        });
    if let Err(e) = watchdog {
        tracing::error!(error = %e, "cannot start the shutdown watchdog; the stop is unbounded");
    }
    tokio::spawn(async {
        let code = tokio::select! {
            _ = ctrl_c() => 130,
            _ = term() => 143,
        };
        tracing::warn!(
            "second signal: exiting now (unfinished events run again after the restart)"
        );
        std::process::exit(code);
    });
}

async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

async fn term() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}
