//! Handing one change to its targets: typed, raw and namespace events through their
//! route, bad input to the dead-letter collection; the core says when each job starts.

use std::sync::Arc;
use std::time::Instant;

use super::session::Session;
use crate::config::OversizePolicy;
use crate::decode::{DecodeError, Decoded};
use crate::domain::EventId;
use crate::domain::namespace::{NamespaceChange, NamespaceEvent};
use crate::pipeline::acker::Ticket;
use crate::pipeline::core::Routes;
use crate::pipeline::job::{Job, Part, Routable, Work};
use crate::pipeline::oversize;
use crate::pipeline::router::Route;
use crate::source::reader::Position;
use crate::state::dead_letters::DeadLetter;

impl Session<'_> {
    /// Hands one change to its handlers (or the dead-letter collection). Never waits:
    /// every write, a namespace record or a dead letter too, is a job.
    pub(super) fn dispatch(&mut self, position: Position, decoded: Decoded) {
        let label = decoded.label();
        let (metrics, name) = (&self.shared.metrics, &self.name);
        self.received
            .entry(label)
            .or_insert_with(|| metrics.events_received.with_label_values(&[name, label]))
            .inc();
        let now = Instant::now();
        match decoded {
            Decoded::Event(event) => self.route(position, Routable::Typed(Arc::new(event)), now),
            Decoded::Raw(event) => {
                let lane: Arc<str> = format!("{}:{}", event.namespace, event.key).into();
                let event = Arc::new(event);
                self.route(position, Routable::Raw { event, lane }, now);
            }
            Decoded::Other => {
                let _none = self.core.change(position, None, now);
            }
            Decoded::Namespace(event) => self.dispatch_namespace(position, event, now),
            Decoded::Invalid {
                raw,
                event_id,
                error,
            } => {
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
                        return;
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
                // Stored by a job: a slow or failing store holds back only the checkpoint,
                // never the reading of later changes (up to the read-ahead bound).
                let lane: Arc<str> = format!("dl:{event_id}").into();
                let mut tickets =
                    self.core
                        .change(position, Some(routes(1, event_id, "invalid")), now);
                if let Some(ticket) = tickets.next() {
                    let work = Work::DeadLetter {
                        letter: Arc::new(letter),
                        lane: lane.clone(),
                    };
                    self.laned(&lane, ticket, work);
                }
            }
        }
    }

    /// A namespace event: logged, then recorded by a job in its lane, before the jobs of
    /// its route (which wait behind the record, and the checkpoint behind all of them).
    fn dispatch_namespace(&mut self, position: Position, event: NamespaceEvent, now: Instant) {
        let text = event.describe();
        match event.change {
            NamespaceChange::StreamInvalidated => {
                tracing::warn!(stream = %self.name, event_id = %event.event_id, "{text}")
            }
            _ => tracing::error!(stream = %self.name, event_id = %event.event_id, "{text}"),
        }
        let lane: Arc<str> = format!("ns:{}", event.subject(&self.name)).into();
        let event = Arc::new(event);
        let item = Routable::Namespace {
            event: event.clone(),
            lane: lane.clone(),
        };
        let (ordered, free) = self.shared.router.split(item.input());
        // Everything in the lane, behind the record.
        let route: Route = ordered.iter().chain(free.iter()).cloned().collect();
        let parts = 1 + u32::from(!route.is_empty());
        let mut tickets = self.core.change(
            position,
            Some(routes(parts, item.event_id(), item.label())),
            now,
        );
        if let Some(ticket) = tickets.next() {
            let record = Work::Record {
                event,
                lane: lane.clone(),
            };
            self.laned(&lane, ticket, record);
        }
        if let Some(ticket) = tickets.next() {
            self.laned(&lane, ticket, Work::Event { item, route });
        }
    }

    /// Queues `work` in `lane`, behind the lane's running job.
    pub(super) fn laned(&mut self, lane: &str, ticket: Ticket, work: Work) {
        let job = Job {
            ticket,
            work,
            part: Part::Laned,
        };
        self.core.enqueue(Some(lane), job);
    }

    /// Hands `item` to the targets of its route: the ordered ones in its lane, those whose
    /// effects commute beside it.
    pub(super) fn route(&mut self, position: Position, item: Routable, now: Instant) {
        let parts = self.parts(&item);
        if parts == 0 {
            let _none = self.core.change(position, None, now);
            return;
        }
        let tickets = self.core.change(
            position,
            Some(routes(parts, item.event_id(), item.label())),
            now,
        );
        self.start_route(item, tickets);
    }

    /// How many jobs `item`'s route takes: one for its ordered targets, one for the others.
    pub(super) fn parts(&self, item: &Routable) -> u32 {
        let (ordered, free) = self.shared.router.split(item.input());
        u32::from(!ordered.is_empty()) + u32::from(!free.is_empty())
    }

    /// Queues `item`'s jobs, one ticket each (as many as [`Session::parts`] said).
    pub(super) fn start_route(
        &mut self,
        item: Routable,
        mut tickets: impl Iterator<Item = Ticket>,
    ) {
        let (ordered, free) = self.shared.router.split(item.input());
        if !free.is_empty()
            && let Some(ticket) = tickets.next()
        {
            let part = if ordered.is_empty() {
                Part::Free
            } else {
                Part::Beside
            };
            let work = Work::Event {
                item: item.clone(),
                route: free.clone(),
            };
            self.core.enqueue(None, Job { ticket, work, part });
        }
        if !ordered.is_empty()
            && let Some(ticket) = tickets.next()
        {
            let work = Work::Event {
                item: item.clone(),
                route: ordered.clone(),
            };
            self.laned(item.lane(), ticket, work);
        }
    }
}

fn routes(count: u32, event_id: EventId, kind: &'static str) -> Routes {
    Routes {
        count,
        event_id,
        kind,
    }
}
