//! One event's trip through its handlers: every handler of the route runs (concurrently);
//! retryable failures are retried with backoff until they succeed or the run is cancelled;
//! permanent failures (and panics) dead-letter the event for that handler.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use futures::FutureExt;
use mongodb::bson::{Bson, Document};
use prometheus::Histogram;
use tokio_util::sync::CancellationToken;

use super::router::Route;
use crate::checkpoint::acker::Ticket;
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::domain::payments::PaymentEvent;
use crate::handlers::{Handler, HandlerError};
use crate::metrics::Metrics;

/// An event waiting for (or running through) its handlers; its lane is its payment id.
pub struct Job {
    /// The acker's ticket of the event.
    pub ticket: Ticket,
    /// The event.
    pub event: Arc<PaymentEvent>,
    /// Its handlers.
    pub route: Route,
}

/// What running a job came to.
pub struct Completion {
    /// The acker's ticket.
    pub ticket: Ticket,
    /// The event (its payment id names the lane).
    pub event: Arc<PaymentEvent>,
    /// Every handler finished (applied, or dead-lettered); false when cancelled or fatal.
    pub finished: bool,
    /// A handler could neither apply nor set aside the event: the stream must stop.
    pub fatal: Option<String>,
}

/// How one handler's part of a job ended.
enum Outcome {
    /// Applied, or dead-lettered.
    Done,
    /// Stopped by the shutdown deadline.
    Cancelled,
    /// Neither applied nor set aside; the reason.
    Fatal(String),
}

/// What a job needs besides its event; shared by every job of a session.
pub struct JobContext {
    /// Stream name, for dead letters.
    pub stream: Arc<str>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where refused events go.
    pub dead_letters: DeadLetters,
    /// Stops retries (shutdown deadline passed).
    pub cancel: CancellationToken,
    /// Duration histogram of each handler, looked up once.
    pub timers: HashMap<&'static str, Histogram>,
}

/// Runs `job` to completion.
pub async fn run(job: Job, ctx: Arc<JobContext>) -> Completion {
    let outcomes = match &job.route[..] {
        // The common case: one handler, no join machinery.
        [only] => vec![run_handler(only.as_ref(), &job.event, &ctx).await],
        route => {
            futures::future::join_all(
                route
                    .iter()
                    .map(|handler| run_handler(handler.as_ref(), &job.event, &ctx)),
            )
            .await
        }
    };
    let mut completion = Completion {
        ticket: job.ticket,
        event: job.event,
        finished: true,
        fatal: None,
    };
    for outcome in outcomes {
        match outcome {
            Outcome::Done => {}
            Outcome::Cancelled => completion.finished = false,
            Outcome::Fatal(reason) => {
                completion.finished = false;
                completion.fatal.get_or_insert(reason);
            }
        }
    }
    completion
}

fn retry_backoff() -> backoff::ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(100))
        .with_max_interval(Duration::from_secs(10))
        .with_max_elapsed_time(None)
        .build()
}

/// The outcome of one call of a handler: its result, or the panic it raised.
type Attempt = std::thread::Result<Result<(), crate::handlers::HandlerError>>;

async fn run_handler(handler: &dyn Handler, event: &PaymentEvent, ctx: &JobContext) -> Outcome {
    match attempt(handler, event, ctx).await {
        Ok(Ok(())) => Outcome::Done,
        // Retries and dead letters are rare; boxed, their state does not weigh on the
        // future every event allocates.
        failed => recover(handler, event, ctx, failed).boxed().await,
    }
}

async fn attempt(handler: &dyn Handler, event: &PaymentEvent, ctx: &JobContext) -> Attempt {
    let started = Instant::now();
    let outcome = AssertUnwindSafe(handler.handle(event)).catch_unwind().await;
    let seconds = started.elapsed().as_secs_f64();
    match ctx.timers.get(handler.name()) {
        Some(timer) => timer.observe(seconds),
        None => ctx
            .metrics
            .handler_seconds
            .with_label_values(&[handler.name()])
            .observe(seconds),
    }
    outcome
}

/// After a failed attempt: retries retryable errors with backoff; dead-letters the event
/// on a permanent error or a panic.
async fn recover(
    handler: &dyn Handler,
    event: &PaymentEvent,
    ctx: &JobContext,
    mut outcome: Attempt,
) -> Outcome {
    let mut backoff = retry_backoff();
    loop {
        let reason = match outcome {
            Ok(Ok(())) => return Outcome::Done,
            Ok(Err(HandlerError::Fatal { reason, .. })) => return Outcome::Fatal(reason),
            Ok(Err(e)) if e.is_retryable() => {
                let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(10));
                tracing::warn!(
                    handler = handler.name(),
                    event_id = %event.meta().event_id,
                    error = %e,
                    retry_in_ms = pause.as_millis() as u64,
                    "handler failed; retrying"
                );
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Outcome::Cancelled,
                    _ = tokio::time::sleep(pause) => {}
                }
                outcome = attempt(handler, event, ctx).await;
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("{} panicked: {}", handler.name(), panic_message(&*panic)),
        };
        tracing::error!(
            handler = handler.name(),
            event_id = %event.meta().event_id,
            reason = %reason,
            "handler refused the event; dead-lettering it"
        );
        return if dead_letter(handler.name(), event, reason, ctx).await {
            Outcome::Done
        } else {
            Outcome::Cancelled
        };
    }
}

async fn dead_letter(
    handler: &str,
    event: &PaymentEvent,
    reason: String,
    ctx: &JobContext,
) -> bool {
    let meta = event.meta();
    let stage = format!("handler:{handler}");
    let letter = DeadLetter {
        stage: stage.clone(),
        event_id: meta.event_id.to_string(),
        stream: ctx.stream.to_string(),
        reason,
        token: None,
        cluster_time: Some(meta.cluster_time),
        event: Bson::Document(summary(event)),
    };
    let stored = ctx
        .dead_letters
        .put_until_stored(&letter, &ctx.cancel)
        .await;
    if stored {
        ctx.metrics
            .events_dead_lettered
            .with_label_values(&[event.kind().as_str(), stage.as_str()])
            .inc();
    }
    stored
}

/// What a dead letter keeps of a typed event (its raw form is gone after decoding).
fn summary(event: &PaymentEvent) -> Document {
    let meta = event.meta();
    let mut doc = Document::new();
    doc.insert("kind", event.kind().as_str());
    doc.insert("payment_id", event.payment_id());
    doc.insert("database", &meta.database);
    doc.insert("collection", &meta.collection);
    if let Some(key) = meta
        .document_key
        .as_ref()
        .and_then(|k| Document::try_from(k.as_ref()).ok())
    {
        doc.insert("document_key", key);
    }
    doc.insert("debug", format!("{event:?}"));
    doc
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, Fut, F: FnOnce(A, B) -> Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_per_event_future_stays_small() {
        // Every event allocates one; the rare retry and dead-letter paths are boxed so their
        // state (driver futures, over a kilobyte) is not copied for every event.
        let size = future_size(run);
        assert!(size <= 512, "job future is {size} bytes");
    }
}
