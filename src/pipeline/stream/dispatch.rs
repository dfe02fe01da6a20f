//! Handing one change to its targets: typed, raw and namespace events through their
//! route, bad input to the dead-letter collection; and taking completions back.

use std::sync::Arc;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::session::Session;
use crate::config::OversizePolicy;
use crate::decode::{DecodeError, Decoded};
use crate::domain::EventId;
use crate::domain::namespace::{NamespaceChange, NamespaceEvent};
use crate::pipeline::acker::Ticket;
use crate::pipeline::job::{self, Completion, Job, Part, Routable, Work};
use crate::pipeline::oversize;
use crate::source::reader::Position;
use crate::state::dead_letters::DeadLetter;

impl Session<'_> {
    /// Hands one change to its handlers (or the dead-letter collection). False when
    /// shutdown interrupted recording a namespace event: the change stays unacknowledged.
    pub(super) async fn dispatch(
        &mut self,
        position: Position,
        decoded: Decoded,
        shutdown: &CancellationToken,
    ) -> bool {
        let label = decoded.label();
        let (metrics, name) = (&self.shared.metrics, &self.name);
        self.received
            .entry(label)
            .or_insert_with(|| metrics.events_received.with_label_values(&[name, label]))
            .inc();
        self.events_since_save += 1;
        match decoded {
            Decoded::Event(event) => self.route(position, Routable::Typed(Arc::new(event))),
            Decoded::Raw(event) => {
                let lane: Arc<str> = format!("{}:{}", event.namespace, event.key).into();
                let event = Arc::new(event);
                self.route(position, Routable::Raw { event, lane });
            }
            Decoded::Other => {
                self.acker.track(position, 0);
            }
            Decoded::Namespace(event) => {
                return self.dispatch_namespace(position, event, shutdown).await;
            }
            Decoded::Invalid {
                raw,
                event_id,
                error,
            } => {
                if self.shared.dry_run() {
                    tracing::warn!(stream = %self.name, event_id = %event_id, reason = %error, "bad input (dry run: not dead-lettered)");
                    self.acker.track(position, 0);
                    return true;
                }
                if let DecodeError::Oversize { size } = error {
                    let fail = self.shared.config.engine.oversize == OversizePolicy::Fail;
                    self.shared
                        .metrics
                        .oversized_events
                        .with_label_values(&[
                            name.as_ref(),
                            if fail { "fail" } else { "dead_letter" },
                        ])
                        .inc();
                    if fail {
                        // Not tracked: the checkpoint stays before it.
                        self.stop = Some(oversize::stop_error(name, &raw, &position, size));
                        return true;
                    }
                }
                let mut letter = DeadLetter::from_raw(
                    "decode",
                    &self.name,
                    event_id.as_str(),
                    &raw,
                    error.to_string(),
                );
                if let DecodeError::Oversize { size } = error {
                    letter.size = usize::try_from(size).ok();
                }
                tracing::warn!(stream = %self.name, event_id = %event_id, reason = %error, "bad input; dead-lettering it");
                // Stored by a job: a slow or failing store holds back only the checkpoint,
                // never the reading of later changes (up to the read-ahead bound).
                let lane: Arc<str> = format!("dl:{event_id}").into();
                let job = Job {
                    ticket: self.track(position, event_id, "invalid", 1),
                    part: Part::Laned,
                    work: Work::DeadLetter {
                        letter: Arc::new(letter),
                        lane: lane.clone(),
                    },
                };
                self.submit(&lane, job);
            }
        }
        true
    }

    /// A namespace event: logged, recorded (before the checkpoint may pass it) and, with a
    /// Kafka sink, published. False when shutdown came first.
    pub(super) async fn dispatch_namespace(
        &mut self,
        position: Position,
        event: NamespaceEvent,
        shutdown: &CancellationToken,
    ) -> bool {
        let text = event.describe();
        match event.change {
            NamespaceChange::StreamInvalidated => {
                tracing::warn!(stream = %self.name, event_id = %event.event_id, "{text}")
            }
            _ => tracing::error!(stream = %self.name, event_id = %event.event_id, "{text}"),
        }
        if self.shared.dry_run() {
            self.acker.track(position, 0);
            return true;
        }
        let log = &self.shared.namespace_log;
        if !crate::state::retry::until_ok("record a namespace event", shutdown, || {
            log.record(&self.name, &event)
        })
        .await
        {
            return false;
        }
        let lane: Arc<str> = format!("ns:{}", event.subject(&self.name)).into();
        let event = Arc::new(event);
        self.route(position, Routable::Namespace { event, lane });
        true
    }

    /// Hands `item` to the targets of its route: the ordered ones in its lane, those whose
    /// effects commute beside it.
    pub(super) fn route(&mut self, position: Position, item: Routable) {
        let shared = self.shared;
        let (ordered, free) = shared.router.split(item.input());
        let parts = u32::from(!ordered.is_empty()) + u32::from(!free.is_empty());
        if parts == 0 {
            self.acker.track(position, 0);
            return;
        }
        let ticket = self.track(position, item.event_id(), item.label(), parts);
        if !free.is_empty() {
            let part = if ordered.is_empty() {
                Part::Free
            } else {
                Part::Beside
            };
            let work = Work::Event {
                item: item.clone(),
                route: free.clone(),
            };
            self.start(Job { ticket, work, part });
        }
        if !ordered.is_empty() {
            let work = Work::Event {
                item: item.clone(),
                route: ordered.clone(),
            };
            let job = Job {
                ticket,
                work,
                part: Part::Laned,
            };
            self.submit(item.lane(), job);
        }
    }

    /// Tracks a change whose targets run in `parts` jobs, remembering when it was read.
    pub(super) fn track(
        &mut self,
        position: Position,
        event_id: EventId,
        kind: &'static str,
        parts: u32,
    ) -> Ticket {
        let ticket = self.acker.track(position, parts);
        let (tracked, released) = (self.acker.tracked(), self.acker.released());
        self.unfinished.read(tracked, event_id, kind, released);
        ticket
    }

    /// Starts `job` now, or queues it behind the running job of its lane. The caller lends
    /// the lane key from its own handle on the event: no copy of it per event.
    pub(super) fn submit(&mut self, lane: &str, job: Job) {
        if let Some(job) = self.lanes.submit(lane, job) {
            self.start(job);
        }
    }

    pub(super) fn start(&mut self, job: Job) {
        self.running.push(job::run(job, self.ctx.clone()).boxed());
    }

    pub(super) fn complete(&mut self, done: Completion) {
        if let Some(reason) = done.fatal {
            tracing::error!(stream = %self.name, reason = %reason, "stopping the stream");
            self.fatal.get_or_insert(reason);
            return;
        }
        if done.finished {
            if let Err(e) = self.acker.route_done(done.ticket) {
                tracing::error!(error = %e, "acker refused a completion");
            }
            if done.part != Part::Beside {
                let kind = done.work.label();
                let metrics = &self.shared.metrics;
                self.handled
                    .entry(kind)
                    .or_insert_with(|| metrics.events_handled.with_label_values(&[kind]))
                    .inc();
            }
        }
        if done.part == Part::Laned
            && let Some(next) = self.lanes.finish(done.work.lane())
        {
            self.start(next);
        }
    }
}
