//! Namespace events read from the change events that carry no document.

use mongodb::bson::RawDocument;

use super::{Envelope, event_id_of};
use crate::domain::namespace::*;

/// The namespace event of `raw`, if its operation is one (None for document changes).
pub(crate) fn from_envelope(raw: &RawDocument, envelope: &Envelope<'_>) -> Option<NamespaceEvent> {
    let operation = envelope.operation().ok()?;
    let change = match operation {
        "drop" => NamespaceChange::CollectionDropped,
        "rename" => NamespaceChange::CollectionRenamed {
            to: namespace_of(raw, "to").unwrap_or_else(|| "?".to_owned()),
        },
        "dropDatabase" => NamespaceChange::DatabaseDropped,
        "invalidate" => NamespaceChange::StreamInvalidated,
        _ => return None,
    };
    let times = envelope.times();
    Some(NamespaceEvent {
        event_id: event_id_of(raw),
        change,
        namespace: namespace_of(raw, "ns"),
        cluster_time: times.cluster_time,
        wall_time: times.wall_time,
    })
}

/// `db.coll` (or `db`) of the `ns`-shaped field `field`.
fn namespace_of(raw: &RawDocument, field: &str) -> Option<String> {
    let ns = raw.get_document(field).ok()?;
    let db = ns.get_str("db").ok()?;
    Some(match ns.get_str("coll") {
        Ok(coll) => format!("{db}.{coll}"),
        Err(_) => db.to_owned(),
    })
}
