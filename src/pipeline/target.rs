//! Where events go, as the pipeline sees it: one trait for the in-process handlers, Kafka
//! and stdout alike. The pipeline routes every event (typed, raw, namespace) the same way
//! and knows targets only through this trait; they are built in `crate::targets`.

use futures::future::BoxFuture;
use mongodb::bson::{Document, Timestamp};

use crate::domain::namespace::NamespaceEvent;
use crate::domain::raw::RawChangeEvent;
use crate::domain::{DomainEvent, EventId, EventKind};

/// Something events are routed to.
pub trait Target: Send + Sync {
    /// Name for `[routes]`, logs, metrics and dead letters.
    fn name(&self) -> &'static str;
    /// Whether this target takes events of `input`.
    fn wants(&self, input: Input) -> bool;
    /// Applies `event`. Must be idempotent: the same event may arrive again after a crash.
    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>>;
    /// Whether this target must see the events of one key (one payment, one user, one
    /// document) one at a time, in stream order. Targets whose effects commute
    /// (exactly-once counters) say false: they get a key's events together, outside its
    /// lane.
    fn ordered(&self) -> bool {
        true
    }
    /// The collections (database, collection) whose changes it takes raw, as the server
    /// sent them ([`Input::Raw`]); none by default.
    fn raw_collections(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Whether the `[routes]` section decides which typed kinds reach it (the built-in
    /// targets do). A target added through the library API routes by [`Target::wants`]
    /// alone.
    fn routed_by_config(&self) -> bool {
        false
    }
}

/// What a route is chosen by: a typed event's kind, or the kind of change that has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A typed event of this kind.
    Typed(EventKind),
    /// A change of a raw collection (`kafka.raw`), passed on as the server sent it.
    Raw,
    /// A collection or database dropped or renamed.
    Namespace,
}

impl Input {
    /// Every input, typed kinds first, in [`Input::index`] order.
    pub const COUNT: usize = EventKind::ALL.len() + 2;

    /// Position in a table of [`Input::COUNT`] entries.
    pub fn index(self) -> usize {
        match self {
            Input::Typed(kind) => kind.index(),
            Input::Raw => EventKind::ALL.len(),
            Input::Namespace => EventKind::ALL.len() + 1,
        }
    }

    /// The input at `index`.
    pub fn at(index: usize) -> Input {
        match index.checked_sub(EventKind::ALL.len()) {
            None => Input::Typed(EventKind::ALL[index]),
            Some(0) => Input::Raw,
            Some(_) => Input::Namespace,
        }
    }
}

/// An event handed to a target.
#[derive(Debug, Clone, Copy)]
pub enum Routed<'a> {
    /// A typed event.
    Typed(&'a DomainEvent),
    /// A change of a raw collection.
    Raw(&'a RawChangeEvent),
    /// A namespace event of `stream`.
    Namespace {
        /// The stream (watched database) it was read from.
        stream: &'a str,
        /// The event.
        event: &'a NamespaceEvent,
    },
}

impl Routed<'_> {
    /// What routed it.
    pub fn input(&self) -> Input {
        match self {
            Routed::Typed(event) => Input::Typed(event.kind()),
            Routed::Raw(_) => Input::Raw,
            Routed::Namespace { .. } => Input::Namespace,
        }
    }

    /// The event's id.
    pub fn event_id(&self) -> EventId {
        match self {
            Routed::Typed(event) => event.meta().event_id,
            Routed::Raw(event) => event.event_id,
            Routed::Namespace { event, .. } => event.event_id,
        }
    }

    /// The event's cluster time, if known.
    pub fn cluster_time(&self) -> Option<Timestamp> {
        match self {
            Routed::Typed(event) => Some(event.meta().cluster_time),
            Routed::Raw(event) => event.cluster_time,
            Routed::Namespace { event, .. } => event.cluster_time,
        }
    }

    /// Metric label of the event's kind.
    pub fn label(&self) -> &'static str {
        match self {
            Routed::Typed(event) => event.kind().as_str(),
            Routed::Raw(_) => "raw",
            Routed::Namespace { event, .. } => event.label(),
        }
    }

    /// What a dead letter keeps of the event (a typed event's raw form is gone after
    /// decoding).
    pub fn summary(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("kind", self.label());
        match self {
            Routed::Typed(event) => {
                let meta = event.meta();
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
            }
            Routed::Raw(event) => {
                doc.insert("key", &event.key);
                doc.insert("change", String::from_utf8_lossy(&event.value).into_owned());
            }
            Routed::Namespace { event, .. } => {
                if let Some(ns) = &event.namespace {
                    doc.insert("namespace", ns);
                }
            }
        }
        doc
    }
}

/// Why a target could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The database failed; trying again may succeed.
    #[error("{handler}: {source}")]
    Database {
        /// The target's name.
        handler: &'static str,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// The receiving end (a broker) did not acknowledge the event (in time); sending
    /// again may succeed.
    #[error("{handler}: {source}")]
    Delivery {
        /// The target's name.
        handler: &'static str,
        /// The client's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The event can neither be applied nor set aside: the stream must stop rather than
    /// skip it.
    #[error("{handler}: {reason}")]
    Fatal {
        /// The target's name.
        handler: &'static str,
        /// Why.
        reason: String,
    },
    /// The event cannot be applied however often it is tried.
    #[error("{handler}: {reason}")]
    Permanent {
        /// The target's name.
        handler: &'static str,
        /// Why.
        reason: String,
    },
}

impl TargetError {
    /// Whether retrying the same event may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TargetError::Database { .. } | TargetError::Delivery { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_their_indexes_map_one_to_one() {
        for index in 0..Input::COUNT {
            assert_eq!(Input::at(index).index(), index);
        }
        assert_eq!(Input::at(Input::COUNT - 1), Input::Namespace);
    }
}
