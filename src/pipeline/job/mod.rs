//! One event's trip through its targets: every target of its route runs (concurrently);
//! retryable failures are retried with backoff until they succeed or the run is
//! cancelled; permanent failures (and panics) dead-letter the event for that target; fatal
//! ones stop the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use prometheus::Histogram;
use tokio_util::sync::CancellationToken;

mod call;

use super::router::Route;
use crate::domain::namespace::NamespaceEvent;
use crate::domain::raw::RawChangeEvent;
use crate::domain::{DomainEvent, EventId};
use crate::observe::metrics::Metrics;
use crate::pipeline::acker::Ticket;
use crate::pipeline::target::{Input, Routed};
use crate::state::dead_letters::{DeadLetter, DeadLetters};
use crate::state::namespace_log::NamespaceLog;
use call::{Call, record_namespace, run_call, store_dead_letter};

/// An event waiting for (or running through) its targets.
pub struct Job {
    /// The acker's ticket of this job's route of the event.
    pub ticket: Ticket,
    /// The event and where it goes.
    pub work: Work,
    /// Which of the event's targets this job runs, and so whether it keeps its lane.
    pub part: Part,
}

/// Which of an event's targets a job runs. Targets whose effects commute (exactly-once
/// counters: see [`Target::ordered`]) need no order among a key's events, so they run
/// outside the lane: a key's events reach them together, and their writer commits them in
/// one batch instead of one commit per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// All targets, or the ordered ones when a [`Part::Beside`] job runs the rest: in the
    /// event's lane; counted as handled when done.
    Laned,
    /// The commuting targets, beside a laned job: outside the lane, not counted.
    Beside,
    /// Only commuting targets: outside the lane; counted as handled when done.
    Free,
}

/// An event the pipeline routes, shared by the jobs of its targets.
#[derive(Debug, Clone)]
pub(crate) enum Routable {
    /// A typed event; its lane is its aggregate id (payment id, user id).
    Typed(Arc<DomainEvent>),
    /// A change of a raw collection; its lane is its collection and document key.
    Raw {
        /// The change.
        event: Arc<RawChangeEvent>,
        /// The raw collection's index and the document key, `<index>:<documentKey>`.
        lane: Arc<str>,
    },
    /// A namespace event; its lane is the namespace.
    Namespace {
        /// The event.
        event: Arc<NamespaceEvent>,
        /// `ns:<namespace>`.
        lane: Arc<str>,
    },
}

impl Routable {
    /// The lane: events of one lane are handled one at a time, in stream order.
    pub fn lane(&self) -> &str {
        match self {
            Routable::Typed(event) => event.key(),
            Routable::Raw { lane, .. } | Routable::Namespace { lane, .. } => lane,
        }
    }

    /// The event as a target sees it.
    pub fn routed<'a>(&'a self, stream: &'a str) -> Routed<'a> {
        match self {
            Routable::Typed(event) => Routed::Typed(event),
            Routable::Raw { event, .. } => Routed::Raw(event),
            Routable::Namespace { event, .. } => Routed::Namespace { stream, event },
        }
    }

    /// What its route is chosen by.
    pub fn input(&self) -> Input {
        self.routed("").input()
    }

    /// The event's id.
    pub fn event_id(&self) -> EventId {
        self.routed("").event_id()
    }

    /// Metric label of the event's kind.
    pub fn label(&self) -> &'static str {
        self.routed("").label()
    }
}

/// An event and its targets.
pub(crate) enum Work {
    /// An event to the targets of its route.
    Event {
        /// The event.
        item: Routable,
        /// Its targets.
        route: Route,
    },
    /// A namespace event recorded in the namespace log, before the jobs of its route
    /// (which wait behind it in its lane): retried until stored or cancelled, beside the
    /// stream's other work instead of holding up the stream.
    Record {
        /// The event.
        event: Arc<NamespaceEvent>,
        /// `ns:<namespace>`, the lane of its route's jobs.
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
}

impl Work {
    /// The lane: events of one lane are handled one at a time, in stream order.
    pub fn lane(&self) -> &str {
        match self {
            Work::Event { item, .. } => item.lane(),
            Work::Record { lane, .. } | Work::DeadLetter { lane, .. } => lane,
        }
    }

    /// Metric label of the event's kind.
    pub fn label(&self) -> &'static str {
        match self {
            Work::Event { item, .. } => item.label(),
            Work::Record { .. } => "namespace",
            Work::DeadLetter { .. } => "invalid",
        }
    }

    /// Whether finishing it finishes the event for the handled count (a record comes
    /// before its event's route, which counts it).
    pub fn counts_as_handled(&self) -> bool {
        !matches!(self, Work::Record { .. })
    }
}

/// What running a job came to.
pub(crate) struct Completion {
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
pub(crate) struct JobContext {
    /// Stream name, for dead letters and namespace events.
    pub stream: Arc<str>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where the stream's own records go; None in a dry run, which writes nothing.
    pub writes: Option<Writes>,
    /// Stops retries (shutdown deadline passed).
    pub cancel: CancellationToken,
    /// Duration histogram of each handler, looked up once.
    pub timers: HashMap<&'static str, Histogram>,
    /// Events whose target is failing and being retried: the target and its last error
    /// (what `/healthz` names when the stream is stuck on one). Touched only on failures.
    pub troubles: Mutex<HashMap<EventId, Trouble>>,
}

/// The collections a stream writes besides its targets' own.
pub(crate) struct Writes {
    /// Where refused events go.
    pub dead_letters: DeadLetters,
    /// Where namespace events are recorded.
    pub namespace_log: NamespaceLog,
}

/// A target failing on an event, and why.
#[derive(Debug, Clone)]
pub(crate) struct Trouble {
    /// The target.
    pub target: &'static str,
    /// Its last error.
    pub error: String,
}

impl JobContext {
    /// The map of troubles (taken over if a panic poisoned it: the stuck alarm keeps
    /// naming failing targets).
    fn troubles(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, Trouble>> {
        crate::observe::locks::lock(&self.troubles)
    }

    /// The trouble of `event`, if one of its targets is failing.
    pub fn trouble(&self, event: &EventId) -> Option<Trouble> {
        self.troubles().get(event).cloned()
    }

    fn set_trouble(&self, event: EventId, trouble: Trouble) {
        self.troubles().insert(event, trouble);
    }

    /// Forgets `target`'s trouble with `event`; another target's (the event's other job
    /// may still be failing) stays.
    fn clear_trouble(&self, event: EventId, target: &str) {
        let mut troubles = self.troubles();
        if troubles.get(&event).is_some_and(|t| t.target == target) {
            troubles.remove(&event);
        }
    }
}

/// Runs `job` to completion.
pub async fn run(job: Job, ctx: Arc<JobContext>) -> Completion {
    let outcomes = match &job.work {
        Work::Event { item, route } => {
            let event = item.routed(&ctx.stream);
            match &route[..] {
                // The common case: one target, no join machinery.
                [only] => vec![run_call(&Call::new(only.as_ref(), event), &ctx).await],
                route => {
                    let calls: Vec<Call<'_>> = route
                        .iter()
                        .map(|target| Call::new(target.as_ref(), event))
                        .collect();
                    futures::future::join_all(calls.iter().map(|call| run_call(call, &ctx))).await
                }
            }
        }
        Work::Record { event, .. } => vec![record_namespace(event, &ctx).boxed().await],
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
