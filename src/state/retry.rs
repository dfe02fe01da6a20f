//! Retrying a write that must happen before the stream moves on.

use std::time::Duration;

use crate::observe::error_text::Tidy;
use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// Runs `attempt` until it succeeds (true) or `cancel` fires first, even mid-attempt
/// (false), with exponential backoff up to 10 s between tries; each failure is logged
/// with `what`.
pub(crate) async fn until_ok<F, Fut, E>(
    what: &str,
    cancel: &CancellationToken,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = ExponentialBackoffBuilder::new()
        .with_max_interval(Duration::from_secs(10))
        .with_max_elapsed_time(None)
        .build();
    loop {
        // A write that hangs (a server that takes the command and never answers) must not
        // hold up a stop either.
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return false,
            outcome = attempt() => outcome,
        };
        let Err(e) = outcome else {
            return true;
        };
        let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(10));
        tracing::warn!(error = %Tidy(&e), "cannot {what}; retrying");
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
