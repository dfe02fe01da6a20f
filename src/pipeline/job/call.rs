//! One event for one target: the attempt, retries with backoff while the failure may
//! pass, and a dead letter for the target when it never will (or the target panicked).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use futures::FutureExt;
use mongodb::bson::Bson;

use super::{JobContext, Outcome, Trouble};
use crate::domain::EventId;
use crate::domain::namespace::NamespaceEvent;
use crate::observe::error_text::Tidy;
use crate::pipeline::target::{Routed, Target, TargetError};
use crate::state::dead_letters::DeadLetter;

fn retry_backoff() -> backoff::ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(100))
        .with_max_interval(Duration::from_secs(10))
        .with_max_elapsed_time(None)
        .build()
}

/// The outcome of one call of a target: its result, or the panic it raised.
type Attempt = std::thread::Result<Result<(), TargetError>>;

/// One event for one target.
pub(super) struct Call<'a> {
    target: &'a dyn Target,
    event: Routed<'a>,
}

impl<'a> Call<'a> {
    pub(super) fn new(target: &'a dyn Target, event: Routed<'a>) -> Call<'a> {
        Call { target, event }
    }

    /// The target's name (logs, metrics, dead-letter stage).
    fn target(&self) -> &'static str {
        self.target.name()
    }

    /// The event's id.
    fn event_id(&self) -> EventId {
        self.event.event_id()
    }
}

pub(super) async fn run_call(call: &Call<'_>, ctx: &JobContext) -> Outcome {
    match attempt(call, ctx).await {
        Ok(Ok(())) => Outcome::Done,
        // Retries and dead letters are rare; boxed, their state does not weigh on the
        // future every event allocates.
        failed => {
            let outcome = recover(call, ctx, failed).boxed().await;
            ctx.clear_trouble(call.event_id(), call.target());
            outcome
        }
    }
}

async fn attempt(call: &Call<'_>, ctx: &JobContext) -> Attempt {
    let started = Instant::now();
    let outcome = AssertUnwindSafe(call.target.handle(call.event))
        .catch_unwind()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    match ctx.timers.get(call.target()) {
        Some(timer) => timer.observe(seconds),
        None => ctx
            .metrics
            .handler_seconds
            .with_label_values(&[call.target()])
            .observe(seconds),
    }
    outcome
}

/// After a failed attempt: retries retryable errors with backoff; dead-letters the event
/// on a permanent error or a panic.
async fn recover(call: &Call<'_>, ctx: &JobContext, mut outcome: Attempt) -> Outcome {
    let mut backoff = retry_backoff();
    loop {
        let reason = match outcome {
            Ok(Ok(())) => return Outcome::Done,
            Ok(Err(TargetError::Fatal { reason, .. })) => return Outcome::Fatal(reason),
            Ok(Err(e)) if e.is_retryable() => {
                let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(10));
                let trouble = Trouble {
                    target: call.target(),
                    error: crate::domain::shorten(&Tidy(&e).to_string(), 400).into_owned(),
                };
                ctx.set_trouble(call.event_id(), trouble);
                tracing::warn!(
                    handler = call.target(),
                    event_id = %call.event_id(),
                    error = %Tidy(&e),
                    retry_in_ms = pause.as_millis() as u64,
                    "handler failed; retrying"
                );
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Outcome::Cancelled,
                    _ = tokio::time::sleep(pause) => {}
                }
                outcome = attempt(call, ctx).await;
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("{} panicked: {}", call.target(), panic_message(&*panic)),
        };
        tracing::error!(
            handler = call.target(),
            event_id = %call.event_id(),
            reason = %reason,
            "handler refused the event; dead-lettering it"
        );
        return if dead_letter(call, reason, ctx).await {
            Outcome::Done
        } else {
            Outcome::Cancelled
        };
    }
}

/// Records a namespace event, retrying until stored or cancelled.
pub(super) async fn record_namespace(event: &NamespaceEvent, ctx: &JobContext) -> Outcome {
    let Some(writes) = &ctx.writes else {
        return Outcome::Done;
    };
    let recorded = crate::state::retry::until_ok("record a namespace event", &ctx.cancel, || {
        writes.namespace_log.record(&ctx.stream, event)
    })
    .await;
    if recorded {
        Outcome::Done
    } else {
        Outcome::Cancelled
    }
}

/// Stores a change that could not be decoded, retrying (without end, unless cancelled)
/// while the store fails: the checkpoint passes the change only once it is stored.
/// A dry run only logs it.
pub(super) async fn store_dead_letter(letter: &DeadLetter, ctx: &JobContext) -> Outcome {
    let (id, reason) = (&letter.event_id, &letter.reason);
    let Some(writes) = &ctx.writes else {
        tracing::warn!(stream = %ctx.stream, event_id = %id, reason = %reason, "bad input (dry run: not dead-lettered)");
        return Outcome::Done;
    };
    tracing::warn!(stream = %ctx.stream, event_id = %id, reason = %reason, "bad input; dead-lettering it");
    if !writes
        .dead_letters
        .put_until_stored(letter, &ctx.cancel)
        .await
    {
        return Outcome::Cancelled;
    }
    ctx.metrics
        .events_dead_lettered
        .with_label_values(&["invalid", "decode"])
        .inc();
    Outcome::Done
}

async fn dead_letter(call: &Call<'_>, reason: String, ctx: &JobContext) -> bool {
    let stage = format!("handler:{}", call.target());
    let letter = DeadLetter {
        stage: stage.clone(),
        event_id: call.event_id().to_string(),
        stream: ctx.stream.to_string(),
        reason,
        token: None,
        cluster_time: call.event.cluster_time(),
        event: Bson::Document(call.event.summary()),
        document_key: None,
        size: None,
        truncated: false,
    };
    // A dry run routes to no handler, so it never gets here; were it to, nothing is written.
    let stored = match &ctx.writes {
        Some(writes) => {
            writes
                .dead_letters
                .put_until_stored(&letter, &ctx.cancel)
                .await
        }
        None => true,
    };
    if stored {
        ctx.metrics
            .events_dead_lettered
            .with_label_values(&[call.event.label(), stage.as_str()])
            .inc();
    }
    stored
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
