//! The shutdown signal: Ctrl-C or SIGTERM, whichever comes first.

/// Completes when the process is asked to stop. If a signal handler cannot be installed
/// the error is logged and only the other signal is awaited.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, stopping"),
        _ = term => tracing::info!("SIGTERM received, stopping"),
    }
}
