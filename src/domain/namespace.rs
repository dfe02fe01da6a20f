//! Changes to the watched namespaces themselves: a watched collection dropped or renamed,
//! its database dropped, and the `invalidate` that closes a stream after a database drop.
//! They carry no document, so no domain claims them; they are surfaced on their own.

use mongodb::bson::{DateTime, Timestamp};

use super::EventId;

/// What happened to the namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum NamespaceChange {
    /// The collection was dropped (its documents are gone without delete events).
    CollectionDropped,
    /// The collection was renamed to `to` (`database.collection`).
    CollectionRenamed {
        /// The new namespace.
        to: String,
    },
    /// The whole database was dropped.
    DatabaseDropped,
    /// The server closed the stream; changeflow reopens it after this event.
    StreamInvalidated,
}

/// A namespace change as read from a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceEvent {
    /// Stable id from the resume token.
    pub event_id: EventId,
    /// What happened.
    pub change: NamespaceChange,
    /// `database` or `database.collection`, when the event names it.
    pub namespace: Option<String>,
    /// When it happened.
    pub cluster_time: Option<Timestamp>,
    /// The server's wall clock when it happened.
    pub wall_time: Option<DateTime>,
}

impl NamespaceEvent {
    /// What it is about: the namespace, or `stream` for an invalidate (which has none).
    pub fn subject<'a>(&'a self, stream: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(stream)
    }

    /// Metric label and record kind (bounded set).
    pub fn label(&self) -> &'static str {
        match self.change {
            NamespaceChange::CollectionDropped => "collection_dropped",
            NamespaceChange::CollectionRenamed { .. } => "collection_renamed",
            NamespaceChange::DatabaseDropped => "database_dropped",
            NamespaceChange::StreamInvalidated => "stream_invalidated",
        }
    }

    /// One sentence for the log.
    pub fn describe(&self) -> String {
        let ns = self.namespace.as_deref().unwrap_or("?");
        match &self.change {
            NamespaceChange::CollectionDropped => format!(
                "watched collection `{ns}` was dropped; its documents are gone without delete events, \
                 and a recreated collection is watched again"
            ),
            NamespaceChange::CollectionRenamed { to } => {
                format!("watched namespace `{ns}` was renamed to `{to}`")
            }
            NamespaceChange::DatabaseDropped => {
                format!("watched database `{ns}` was dropped")
            }
            NamespaceChange::StreamInvalidated => {
                "the server invalidated the stream; reopening it right after the invalidate".into()
            }
        }
    }
}
