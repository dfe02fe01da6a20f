//! How far a replay has come: a bar on a terminal, a log line every ten seconds elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::Timestamp;

use crate::observe::metrics::Metrics;
use crate::pipeline::until::Bounds;

/// A bar on a terminal (events, events/s, how far between start and end), a log line every
/// ten seconds elsewhere.
pub(super) async fn report_progress(
    bounds: Arc<Bounds>,
    metrics: Arc<Metrics>,
    from: Option<Timestamp>,
    until: Option<Timestamp>,
) {
    use std::io::IsTerminal;
    let span = match (from, until) {
        (Some(f), Some(u)) => u64::from(u.time.saturating_sub(f.time)).max(1),
        _ => 1,
    };
    let bar = indicatif::ProgressBar::new(span);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "replay [{bar:30}] {percent:>3}%  {msg}  elapsed {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let events: u64 = metrics.received_by_kind().values().sum();
        let rate = events as f64 / started.elapsed().as_secs_f64().max(0.001);
        let at = bounds.progress.slowest();
        let done = match (at, from) {
            (Some(at), Some(f)) => u64::from(at.saturating_sub(f.time)).min(span),
            _ => 0,
        };
        let message = format!(
            "{events} events, {rate:.0}/s, at {}",
            at.map_or_else(
                || "start".to_owned(),
                |t| crate::source::position::rfc3339(Timestamp {
                    time: t,
                    increment: 0
                })
            )
        );
        if terminal {
            bar.set_position(done);
            bar.set_message(message);
        } else if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(progress = %format!("{}%", done * 100 / span), "{message}");
        }
    }
}
