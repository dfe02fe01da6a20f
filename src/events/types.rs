//! The published event types: CloudEvent `type`, the `$id` of the JSON Schema of its data
//! (`dataschema`), when it fires. `schemas/events/` holds the generated schemas.

use schemars::Schema;

use crate::config::kafka::{DEFAULT_MEMORY_TOPIC, DEFAULT_NAMESPACE_TOPIC, DEFAULT_PAYMENT_TOPIC};
use crate::domain::EventKind;
use crate::domain::namespace::NamespaceChange;
use crate::events::data::{PaymentData, PaymentDeletedData};
use crate::events::memory_data::*;
use crate::events::namespace_data::NamespaceData;

/// Where the schemas' `$id`s live; `<base><type>.json` is the file in `schemas/events/`.
pub const SCHEMA_BASE: &str = "https://changeflow.dev/schemas/events/";

/// One published event type and version.
#[derive(Debug)]
pub struct EventType {
    /// CloudEvent `type`, versioned: `changeflow.payment.confirmed.v1`.
    pub name: &'static str,
    /// `$id` of its data's schema, the CloudEvent `dataschema`.
    pub schema_id: &'static str,
    /// The event kind it publishes; None for a namespace event.
    pub kind: Option<EventKind>,
    /// When it fires, for the catalog.
    pub fires: &'static str,
    schema: fn() -> Schema,
    /// What its example shows.
    pub(crate) example: Example,
}

/// What the example of an event type is made from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Example {
    /// A domain event of this kind.
    Event(EventKind),
    /// This namespace change.
    Namespace(fn() -> NamespaceChange),
}

macro_rules! event_type {
    ($name:literal, $kind:ident, $data:ty, $fires:literal) => {
        EventType {
            name: $name,
            schema_id: concat!("https://changeflow.dev/schemas/events/", $name, ".json"),
            kind: Some(EventKind::$kind),
            fires: $fires,
            schema: || schemars::schema_for!($data),
            example: Example::Event(EventKind::$kind),
        }
    };
}

macro_rules! namespace_type {
    ($name:literal, $example:expr, $fires:literal) => {
        EventType {
            name: $name,
            schema_id: concat!("https://changeflow.dev/schemas/events/", $name, ".json"),
            kind: None,
            fires: $fires,
            schema: || schemars::schema_for!(NamespaceData),
            example: Example::Namespace(|| $example),
        }
    };
}

/// Every published event type, in [`EventKind::ALL`] order.
pub(crate) static EVENT_TYPES: [EventType; 24] = [
    event_type!(
        "changeflow.payment.requested.v1",
        PaymentRequested,
        PaymentData,
        "A payment was inserted with status PENDING."
    ),
    event_type!(
        "changeflow.payment.confirmed.v1",
        PaymentConfirmed,
        PaymentData,
        "An update set a payment's status to CONFIRMED (or it was inserted CONFIRMED)."
    ),
    event_type!(
        "changeflow.payment.failed.v1",
        PaymentFailed,
        PaymentData,
        "An update set a payment's status to FAILED (or it was inserted FAILED)."
    ),
    event_type!(
        "changeflow.payment.updated.v1",
        PaymentUpdated,
        PaymentData,
        "Any other update of a payment, and every replace."
    ),
    event_type!(
        "changeflow.payment.deleted.v1",
        PaymentDeleted,
        PaymentDeletedData,
        "A payment was deleted."
    ),
    event_type!(
        "changeflow.payment.observed.v1",
        PaymentObserved,
        PaymentData,
        "A payment as a snapshot read it: it existed before the stream started, or changed while the stream's history was lost. Its id is stable per payment and state, and it is never older than a change already published for the payment."
    ),
    event_type!(
        "changeflow.memory.thread_started.v1",
        ThreadStarted,
        ThreadStartedData,
        "A thread was inserted into short-term memory."
    ),
    event_type!(
        "changeflow.memory.messages_appended.v1",
        MessagesAppended,
        MessagesAppendedData,
        "An update appended messages to a thread (`$push`): one event per update, with all its new messages in order."
    ),
    event_type!(
        "changeflow.memory.thread_summarized.v1",
        ThreadSummarized,
        ThreadSummarizedData,
        "An update changed a thread's summary and/or dropped old messages (folded into the summary)."
    ),
    event_type!(
        "changeflow.memory.thread_updated.v1",
        ThreadUpdated,
        ThreadUpdatedData,
        "Any other update of a thread (e.g. its expiry moved), and every replace that neither appends nor folds."
    ),
    event_type!(
        "changeflow.memory.thread_expired.v1",
        ThreadExpired,
        ThreadExpiredData,
        "The TTL monitor deleted a thread: the pre-image's `expires_at` is not after the delete."
    ),
    event_type!(
        "changeflow.memory.thread_deleted.v1",
        ThreadDeleted,
        ThreadDeletedData,
        "A thread was deleted before its expiry (not by the TTL monitor)."
    ),
    event_type!(
        "changeflow.memory.thread_observed.v1",
        ThreadObserved,
        ThreadObservedData,
        "A thread as a snapshot read it (it existed before the stream started, or changed while history was lost). Never older than a change already published for it."
    ),
    event_type!(
        "changeflow.memory.episode_recorded.v1",
        EpisodeRecorded,
        EpisodeRecordedData,
        "An episode was inserted into episodic memory."
    ),
    event_type!(
        "changeflow.memory.episode_amended.v1",
        EpisodeAmended,
        EpisodeAmendedData,
        "An episode was updated or replaced."
    ),
    event_type!(
        "changeflow.memory.episode_purged.v1",
        EpisodePurged,
        EpisodePurgedData,
        "An episode was deleted (e.g. by a retention sweep)."
    ),
    event_type!(
        "changeflow.memory.episode_observed.v1",
        EpisodeObserved,
        EpisodeRecordedData,
        "An episode as a snapshot read it. Never older than a change already published for it."
    ),
    event_type!(
        "changeflow.memory.memory_learned.v1",
        MemoryLearned,
        MemoryLearnedData,
        "A memory was inserted into semantic memory."
    ),
    event_type!(
        "changeflow.memory.memory_recalled.v1",
        MemoryRecalled,
        MemoryRecalledData,
        "An update advanced `last_accessed_at` and raised `strength` (compared with the pre-image)."
    ),
    event_type!(
        "changeflow.memory.memory_decayed.v1",
        MemoryDecayed,
        MemoryDecayedData,
        "An update lowered `strength` (compared with the pre-image)."
    ),
    event_type!(
        "changeflow.memory.memory_revised.v1",
        MemoryRevised,
        MemoryRevisedData,
        "An update or replace changed a memory's `content`, `type` or `embedding`."
    ),
    event_type!(
        "changeflow.memory.memory_updated.v1",
        MemoryUpdated,
        MemoryUpdatedData,
        "Any other update of a memory; `direction` is `unknown` when the pre-image was not available."
    ),
    event_type!(
        "changeflow.memory.memory_forgotten.v1",
        MemoryForgotten,
        MemoryForgottenData,
        "A memory was deleted."
    ),
    event_type!(
        "changeflow.memory.memory_observed.v1",
        MemoryObserved,
        MemoryObservedData,
        "A semantic memory as a snapshot read it. Never older than a change already published for it."
    ),
];

/// The namespace event types, in [`NamespaceChange`] declaration order.
pub(crate) static NAMESPACE_TYPES: [EventType; 4] = [
    namespace_type!(
        "changeflow.namespace.collection_dropped.v1",
        NamespaceChange::CollectionDropped,
        "A watched collection was dropped: its documents are gone without delete events."
    ),
    namespace_type!(
        "changeflow.namespace.collection_renamed.v1",
        NamespaceChange::CollectionRenamed {
            to: "changeflow.payments_2025".into()
        },
        "A watched collection was renamed (away, or into a watched name); `to` is the new name."
    ),
    namespace_type!(
        "changeflow.namespace.database_dropped.v1",
        NamespaceChange::DatabaseDropped,
        "The watched database was dropped (after one `collection_dropped` per collection)."
    ),
    namespace_type!(
        "changeflow.namespace.stream_invalidated.v1",
        NamespaceChange::StreamInvalidated,
        "The server closed the stream (after a database drop); changeflow reopens it right after."
    ),
];

/// The published type of events of `kind`.
pub fn event_type(kind: EventKind) -> &'static EventType {
    &EVENT_TYPES[kind.index()]
}

/// The published type of a namespace change.
pub(crate) fn namespace_type(change: &NamespaceChange) -> &'static EventType {
    &NAMESPACE_TYPES[match change {
        NamespaceChange::CollectionDropped => 0,
        NamespaceChange::CollectionRenamed { .. } => 1,
        NamespaceChange::DatabaseDropped => 2,
        NamespaceChange::StreamInvalidated => 3,
    }]
}

/// Every published type: the domain events, then the namespace events.
pub fn published_types() -> impl Iterator<Item = &'static EventType> {
    EVENT_TYPES.iter().chain(&NAMESPACE_TYPES)
}

/// The published type whose schema has `$id` `id`.
pub fn by_schema_id(id: &str) -> Option<&'static EventType> {
    published_types().find(|t| t.schema_id == id)
}

impl EventType {
    /// File name of its schema in `schemas/events/`.
    pub fn file_name(&self) -> String {
        format!("{}.json", self.name)
    }

    /// The JSON Schema (draft 2020-12) of its data, with `$id` and description set.
    pub fn schema(&self) -> Schema {
        let mut schema = (self.schema)();
        schema.insert("$id".into(), self.schema_id.into());
        schema.insert(
            "description".into(),
            format!("Data of the CloudEvent `{}`: {}", self.name, self.fires).into(),
        );
        schema
    }

    /// The default topic and the key of its records, for the catalog.
    pub(crate) fn topic_and_key(&self) -> (&'static str, &'static str) {
        match self.kind {
            Some(kind) if kind.is_payment() => (DEFAULT_PAYMENT_TOPIC, "payment id"),
            Some(_) => (DEFAULT_MEMORY_TOPIC, "`user_id`"),
            None => (
                DEFAULT_NAMESPACE_TOPIC,
                "the namespace (the stream for an invalidate)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_kind_order_and_ids_follow_the_base() {
        for (kind, published) in EventKind::ALL.iter().zip(&EVENT_TYPES) {
            assert_eq!(Some(*kind), published.kind);
            assert_eq!(event_type(*kind).name, published.name);
            assert_eq!(
                published.schema_id,
                format!("{SCHEMA_BASE}{}", published.file_name())
            );
        }
    }

    #[test]
    fn schemas_are_draft_2020_12_with_their_id() {
        for event_type in published_types() {
            let schema = event_type.schema();
            assert_eq!(
                schema.get("$schema").and_then(|v| v.as_str()),
                Some("https://json-schema.org/draft/2020-12/schema")
            );
            assert_eq!(
                schema.get("$id").and_then(|v| v.as_str()),
                Some(event_type.schema_id)
            );
        }
    }
}
