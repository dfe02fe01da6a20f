//! Namespace events (a watched collection dropped or renamed, its database dropped, a
//! stream invalidated) kept in `changeflow_namespace_events`, one document per event,
//! keyed by event id so a replay does not add a second copy.

use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

use crate::domain::namespace::{NamespaceChange, NamespaceEvent};

/// The collection (in the checkpoint database).
pub const COLLECTION: &str = "changeflow_namespace_events";

/// Writes namespace events.
#[derive(Debug, Clone)]
pub(crate) struct NamespaceLog {
    collection: Collection<Document>,
}

impl NamespaceLog {
    /// The log in `database`.
    pub fn new(database: &Database) -> NamespaceLog {
        NamespaceLog {
            collection: database.collection(COLLECTION),
        }
    }

    /// Records `event` of `stream` (once, however often it is read).
    pub async fn record(
        &self,
        stream: &str,
        event: &NamespaceEvent,
    ) -> Result<(), mongodb::error::Error> {
        let mut fields = doc! {
            "stream": stream,
            "kind": event.label(),
            "recorded_at": DateTime::now(),
        };
        if let Some(ns) = &event.namespace {
            fields.insert("namespace", ns);
        }
        if let NamespaceChange::CollectionRenamed { to } = &event.change {
            fields.insert("to", to);
        }
        if let Some(t) = event.cluster_time {
            fields.insert("cluster_time", t);
        }
        self.collection
            .update_one(
                doc! {"_id": event.event_id.as_str()},
                doc! {"$setOnInsert": fields},
            )
            .upsert(true)
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }
}
