//! One event's trip through its targets: every handler of a typed event's route runs
//! (concurrently), a raw change goes to its Kafka topic; retryable failures are retried with
//! backoff until they succeed or the run is cancelled; permanent failures (and panics)
//! dead-letter the event for that target; fatal ones stop the stream.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use futures::FutureExt;
use futures::future::BoxFuture;
use mongodb::bson::{Bson, Document, Timestamp};
use prometheus::Histogram;
use tokio_util::sync::CancellationToken;

use super::router::Route;
use crate::config::routes::KAFKA;
use crate::domain::namespace::NamespaceEvent;
use crate::domain::raw::RawChangeEvent;
use crate::domain::{DomainEvent, EventId};
use crate::observe::error_text::Tidy;
use crate::observe::metrics::Metrics;
use crate::pipeline::acker::Ticket;
use crate::state::dead_letters::{DeadLetter, DeadLetters};
use crate::targets::kafka::KafkaSink;
use crate::targets::{Handler, HandlerError};

/// An event waiting for (or running through) its targets.
pub struct Job {
    /// The acker's ticket of the event.
    pub ticket: Ticket,
    /// The event and where it goes.
    pub work: Work,
    /// Which of the event's targets this job runs, and so whether it keeps its lane.
    pub part: Part,
}

/// Which of an event's targets a job runs. Targets whose effects commute (exactly-once
/// counters: see [`Handler::ordered`]) need no order among a key's events, so they run
/// outside the lane: a key's events reach them together, and their writer commits them in
/// one batch instead of one commit per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// All targets, or the ordered ones when a [`Part::Beside`] job runs the rest: in the
    /// event's lane; counted as handled when done.
    Laned,
    /// The commuting targets, beside a laned job: outside the lane, not counted.
    Beside,
    /// Only commuting targets: outside the lane; counted as handled when done.
    Free,
}

/// An event and its targets.
pub enum Work {
    /// A typed event to its handlers; its lane is its aggregate id (payment id, user id).
    Event {
        /// The event.
        event: Arc<DomainEvent>,
        /// Its handlers.
        route: Route,
    },
    /// A raw change to its Kafka topic; its lane is its collection and document key.
    Raw {
        /// The change.
        event: Arc<RawChangeEvent>,
        /// The publisher.
        sink: Arc<KafkaSink>,
        /// The raw collection's index and the document key, `<index>:<documentKey>`.
        lane: Arc<str>,
    },
    /// A change that could not be decoded, to the dead-letter collection; its lane is its
    /// own (nothing else waits on it, and it waits on nothing).
    DeadLetter {
        /// The dead letter.
        letter: Arc<DeadLetter>,
        /// `dl:<event id>`.
        lane: Arc<str>,
    },
    /// A namespace event to the namespace topic; its lane is the namespace.
    Namespace {
        /// The event.
        event: Arc<NamespaceEvent>,
        /// The publisher.
        sink: Arc<KafkaSink>,
        /// `ns:<namespace>`.
        lane: Arc<str>,
    },
}

impl Work {
    /// The lane: events of one lane are handled one at a time, in stream order.
    pub fn lane(&self) -> &str {
        match self {
            Work::Event { event, .. } => event.key(),
            Work::Raw { lane, .. }
            | Work::Namespace { lane, .. }
            | Work::DeadLetter { lane, .. } => lane,
        }
    }

    /// Metric label of the event's kind.
    pub fn label(&self) -> &'static str {
        match self {
            Work::Event { event, .. } => event.kind().as_str(),
            Work::Raw { .. } => "raw",
            Work::Namespace { event, .. } => event.label(),
            Work::DeadLetter { .. } => "invalid",
        }
    }
}

/// What running a job came to.
pub struct Completion {
    /// The acker's ticket.
    pub ticket: Ticket,
    /// The work (it names the lane).
    pub work: Work,
    /// The part of the event's targets it ran.
    pub part: Part,
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
    /// Stream name, for dead letters and namespace events.
    pub stream: Arc<str>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where refused events go.
    pub dead_letters: DeadLetters,
    /// Stops retries (shutdown deadline passed).
    pub cancel: CancellationToken,
    /// Duration histogram of each handler, looked up once.
    pub timers: HashMap<&'static str, Histogram>,
    /// Events whose target is failing and being retried: the target and its last error
    /// (what `/healthz` names when the stream is stuck on one). Touched only on failures.
    pub troubles: Mutex<HashMap<EventId, Trouble>>,
}

/// A target failing on an event, and why.
#[derive(Debug, Clone)]
pub struct Trouble {
    /// The target.
    pub target: &'static str,
    /// Its last error.
    pub error: String,
}

impl JobContext {
    /// The trouble of `event`, if one of its targets is failing.
    pub fn trouble(&self, event: &EventId) -> Option<Trouble> {
        self.troubles.lock().ok()?.get(event).cloned()
    }

    fn set_trouble(&self, event: EventId, trouble: Trouble) {
        if let Ok(mut troubles) = self.troubles.lock() {
            troubles.insert(event, trouble);
        }
    }

    /// Forgets `target`'s trouble with `event`; another target's (the event's other job
    /// may still be failing) stays.
    fn clear_trouble(&self, event: EventId, target: &str) {
        if let Ok(mut troubles) = self.troubles.lock()
            && troubles.get(&event).is_some_and(|t| t.target == target)
        {
            troubles.remove(&event);
        }
    }
}

/// Runs `job` to completion.
pub async fn run(job: Job, ctx: Arc<JobContext>) -> Completion {
    let outcomes = match &job.work {
        Work::Event { event, route } => match &route[..] {
            // The common case: one handler, no join machinery.
            [only] => vec![run_call(&HandlerCall(only.as_ref(), event), &ctx).await],
            route => {
                let calls: Vec<HandlerCall<'_>> = route
                    .iter()
                    .map(|handler| HandlerCall(handler.as_ref(), event))
                    .collect();
                futures::future::join_all(calls.iter().map(|call| run_call(call, &ctx))).await
            }
        },
        Work::Raw { event, sink, .. } => vec![run_call(&RawCall(sink, event), &ctx).await],
        Work::Namespace { event, sink, .. } => {
            vec![run_call(&NamespaceCall(sink, &ctx.stream, event), &ctx).await]
        }
        Work::DeadLetter { letter, .. } => vec![store_dead_letter(letter, &ctx).boxed().await],
    };
    let mut completion = Completion {
        ticket: job.ticket,
        work: job.work,
        part: job.part,
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

/// The outcome of one call of a target: its result, or the panic it raised.
type Attempt = std::thread::Result<Result<(), HandlerError>>;

/// One event for one target: what the retry and dead-letter paths need of either kind.
trait Call: Sync {
    /// The target's name (logs, metrics, dead-letter stage).
    fn target(&self) -> &'static str;
    /// Hands the event to the target once.
    fn call(&self) -> BoxFuture<'_, Result<(), HandlerError>>;
    /// The event's id.
    fn event_id(&self) -> EventId;
    /// The event's cluster time, if known.
    fn cluster_time(&self) -> Option<Timestamp>;
    /// Metric label of the event's kind.
    fn label(&self) -> &'static str;
    /// What a dead letter keeps of the event.
    fn summary(&self) -> Document;
}

/// A typed event for one handler.
struct HandlerCall<'a>(&'a dyn Handler, &'a DomainEvent);

impl Call for HandlerCall<'_> {
    fn target(&self) -> &'static str {
        self.0.name()
    }
    fn call(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        self.0.handle(self.1)
    }
    fn event_id(&self) -> EventId {
        self.1.meta().event_id
    }
    fn cluster_time(&self) -> Option<Timestamp> {
        Some(self.1.meta().cluster_time)
    }
    fn label(&self) -> &'static str {
        self.1.kind().as_str()
    }
    fn summary(&self) -> Document {
        summary(self.1)
    }
}

/// A raw change for its Kafka topic.
struct RawCall<'a>(&'a KafkaSink, &'a RawChangeEvent);

impl Call for RawCall<'_> {
    fn target(&self) -> &'static str {
        KAFKA
    }
    fn call(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        self.0.publish_raw(self.1).boxed()
    }
    fn event_id(&self) -> EventId {
        self.1.event_id
    }
    fn cluster_time(&self) -> Option<Timestamp> {
        self.1.cluster_time
    }
    fn label(&self) -> &'static str {
        "raw"
    }
    fn summary(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("kind", "raw");
        doc.insert("key", &self.1.key);
        doc.insert(
            "change",
            String::from_utf8_lossy(&self.1.value).into_owned(),
        );
        doc
    }
}

/// A namespace event for the namespace topic.
struct NamespaceCall<'a>(&'a KafkaSink, &'a str, &'a NamespaceEvent);

impl Call for NamespaceCall<'_> {
    fn target(&self) -> &'static str {
        KAFKA
    }
    fn call(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        self.0.publish_namespace(self.1, self.2).boxed()
    }
    fn event_id(&self) -> EventId {
        self.2.event_id
    }
    fn cluster_time(&self) -> Option<Timestamp> {
        self.2.cluster_time
    }
    fn label(&self) -> &'static str {
        self.2.label()
    }
    fn summary(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("kind", self.2.label());
        if let Some(ns) = &self.2.namespace {
            doc.insert("namespace", ns);
        }
        doc
    }
}

async fn run_call(call: &dyn Call, ctx: &JobContext) -> Outcome {
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

async fn attempt(call: &dyn Call, ctx: &JobContext) -> Attempt {
    let started = Instant::now();
    let outcome = AssertUnwindSafe(call.call()).catch_unwind().await;
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
async fn recover(call: &dyn Call, ctx: &JobContext, mut outcome: Attempt) -> Outcome {
    let mut backoff = retry_backoff();
    loop {
        let reason = match outcome {
            Ok(Ok(())) => return Outcome::Done,
            Ok(Err(HandlerError::Fatal { reason, .. })) => return Outcome::Fatal(reason),
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

/// Stores a change that could not be decoded, retrying (without end, unless cancelled)
/// while the store fails: the checkpoint passes the change only once it is stored.
async fn store_dead_letter(letter: &DeadLetter, ctx: &JobContext) -> Outcome {
    if !ctx.dead_letters.put_until_stored(letter, &ctx.cancel).await {
        return Outcome::Cancelled;
    }
    ctx.metrics
        .events_dead_lettered
        .with_label_values(&["invalid", "decode"])
        .inc();
    Outcome::Done
}

async fn dead_letter(call: &dyn Call, reason: String, ctx: &JobContext) -> bool {
    let stage = format!("handler:{}", call.target());
    let letter = DeadLetter {
        stage: stage.clone(),
        event_id: call.event_id().to_string(),
        stream: ctx.stream.to_string(),
        reason,
        token: None,
        cluster_time: call.cluster_time(),
        event: Bson::Document(call.summary()),
        document_key: None,
        size: None,
        truncated: false,
    };
    let stored = ctx
        .dead_letters
        .put_until_stored(&letter, &ctx.cancel)
        .await;
    if stored {
        ctx.metrics
            .events_dead_lettered
            .with_label_values(&[call.label(), stage.as_str()])
            .inc();
    }
    stored
}

/// What a dead letter keeps of a typed event (its raw form is gone after decoding).
fn summary(event: &DomainEvent) -> Document {
    let meta = event.meta();
    let mut doc = Document::new();
    doc.insert("kind", event.kind().as_str());
    doc.insert("key", event.key());
    doc.insert("subject", event.subject());
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
