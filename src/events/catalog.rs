//! The published event types: CloudEvent `type`, the `$id` of the JSON Schema of its data
//! (`dataschema`), when it fires. `schemas/events/` holds the generated schemas and
//! `schemas/README.md` the catalog a consumer reads.

use std::fmt::Write;

use mongodb::bson::{DateTime, Timestamp};
use schemars::Schema;

use crate::config::kafka::{DEFAULT_MEMORY_TOPIC, DEFAULT_NAMESPACE_TOPIC, DEFAULT_PAYMENT_TOPIC};
use crate::domain::memory::{
    Content, Direction, Embedding, Episode, MemoryChange, MemoryEvent, MemoryType, Message, Outcome,
};
use crate::domain::namespace::{NamespaceChange, NamespaceEvent};
use crate::domain::payments::{
    Payment, PaymentDeleted, PaymentEvent, PaymentSnapshot, PaymentStatus, Product,
};
use crate::domain::{ChangeMeta, DomainEvent, EventId, EventKind};
use crate::events::cloudevent::CloudEvent;
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
    example: fn() -> CloudEvent,
}

macro_rules! event_type {
    ($name:literal, $kind:ident, $data:ty, $fires:literal) => {
        EventType {
            name: $name,
            schema_id: concat!("https://changeflow.dev/schemas/events/", $name, ".json"),
            kind: Some(EventKind::$kind),
            fires: $fires,
            schema: || schemars::schema_for!($data),
            example: || CloudEvent::of(&example_event(EventKind::$kind)),
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
            example: || CloudEvent::of_namespace("changeflow", &example_namespace_event($example)),
        }
    };
}

/// Every published event type, in [`EventKind::ALL`] order.
pub static EVENT_TYPES: [EventType; 20] = [
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
];

/// The namespace event types, in [`NamespaceChange`] declaration order.
pub static NAMESPACE_TYPES: [EventType; 4] = [
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
pub fn namespace_type(change: &NamespaceChange) -> &'static EventType {
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

    /// A sample event of this type, for the catalog and tests.
    pub fn example(&self) -> CloudEvent {
        (self.example)()
    }

    /// The default topic and the key of its records, for the catalog.
    fn topic_and_key(&self) -> (&'static str, &'static str) {
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

fn example_namespace_event(change: NamespaceChange) -> NamespaceEvent {
    let meta = example_meta("changeflow", "payments");
    let namespace = match change {
        NamespaceChange::StreamInvalidated => None,
        NamespaceChange::DatabaseDropped => Some("changeflow".to_owned()),
        _ => Some("changeflow.payments".to_owned()),
    };
    NamespaceEvent {
        event_id: meta.event_id,
        change,
        namespace,
        cluster_time: Some(meta.cluster_time),
        wall_time: meta.wall_time,
    }
}

fn example_meta(database: &str, collection: &str) -> ChangeMeta {
    ChangeMeta {
        event_id: EventId::from_token_data("8265A1B2C3000000012B022C0100296E5A1004"),
        database: database.into(),
        collection: collection.into(),
        cluster_time: Timestamp {
            time: 1_700_000_000,
            increment: 1,
        },
        wall_time: Some(DateTime::from_millis(1_700_000_000_250)),
        document_key: None,
    }
}

/// A sample event of `kind`, for the catalog's examples and tests.
pub fn example_event(kind: EventKind) -> DomainEvent {
    if kind.is_payment() {
        DomainEvent::Payment(example_payment_event(kind))
    } else {
        DomainEvent::Memory(example_memory_event(kind))
    }
}

fn example_payment_event(kind: EventKind) -> PaymentEvent {
    let meta = example_meta("changeflow", "payments");
    let id = "0b6f1c9e-2d7a-4c3e-9f10-5a8e4d2c7b61";
    let snapshot = |status| PaymentSnapshot {
        meta: meta.clone(),
        payment: Payment {
            id: id.into(),
            amount: rust_decimal::Decimal::new(2550, 2),
            status,
            product: Product {
                code: "5f2e8a4c-1b3d-4e6f-8a9b-0c1d2e3f4a5b".into(),
                name: "Green tea".into(),
            },
        },
    };
    match kind {
        EventKind::PaymentConfirmed => PaymentEvent::Confirmed(snapshot(PaymentStatus::Confirmed)),
        EventKind::PaymentFailed => PaymentEvent::Failed(snapshot(PaymentStatus::Failed)),
        EventKind::PaymentUpdated => PaymentEvent::Updated(snapshot(PaymentStatus::Pending)),
        EventKind::PaymentDeleted => PaymentEvent::Deleted(PaymentDeleted {
            meta,
            payment_id: id.into(),
        }),
        _ => PaymentEvent::Requested(snapshot(PaymentStatus::Pending)),
    }
}

fn example_memory_event(kind: EventKind) -> MemoryEvent {
    let at = |seconds: i64| DateTime::from_millis(1_700_000_000_000 + seconds * 1000);
    let message = |role: &str, text: &str, tokens| Message {
        role: role.into(),
        content: Content::Text(text.into()),
        timestamp: at(0),
        token_count: tokens,
    };
    let fields = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
    let (collection, document_id, change) = match kind {
        EventKind::ThreadStarted => (
            "short_term_memory",
            "t-42",
            MemoryChange::ThreadStarted {
                messages: vec![message("user", "Plan a trip to Lisbon", 7)],
                created_at: Some(at(0)),
                expires_at: Some(at(3600)),
            },
        ),
        EventKind::MessagesAppended => (
            "short_term_memory",
            "t-42",
            MemoryChange::MessagesAppended {
                messages: vec![
                    message("assistant", "Which dates?", 3),
                    message("user", "Early May", 3),
                ],
            },
        ),
        EventKind::ThreadSummarized => (
            "short_term_memory",
            "t-42",
            MemoryChange::ThreadSummarized {
                summary: Some(Content::Text("Trip to Lisbon in early May.".into())),
                messages_dropped: Some(2),
                messages_appended: Vec::new(),
                messages_remaining: Some(1),
            },
        ),
        EventKind::ThreadUpdated => (
            "short_term_memory",
            "t-42",
            MemoryChange::ThreadUpdated {
                changed_fields: fields(&["expires_at"]),
            },
        ),
        EventKind::ThreadExpired => (
            "short_term_memory",
            "t-42",
            MemoryChange::ThreadExpired {
                expires_at: at(3600),
                message_count: 3,
            },
        ),
        EventKind::ThreadDeleted => (
            "short_term_memory",
            "t-42",
            MemoryChange::ThreadDeleted {
                expires_at: Some(at(3600)),
                message_count: 3,
            },
        ),
        EventKind::EpisodeRecorded => (
            "episodic_memory",
            "e-7",
            MemoryChange::EpisodeRecorded(Box::new(Episode {
                thread_id: Some("t-42".into()),
                outcome: Outcome::Succeeded,
                tags: vec!["travel".into(), "lisbon".into()],
                tool_calls: 2,
                failed_tool_calls: 1,
                started_at: at(0),
                ended_at: at(60),
                summary: Content::Text("Planned a Lisbon trip.".into()),
            })),
        ),
        EventKind::EpisodeAmended => (
            "episodic_memory",
            "e-7",
            MemoryChange::EpisodeAmended {
                changed_fields: fields(&["tags"]),
                outcome: Some(Outcome::Succeeded),
            },
        ),
        EventKind::EpisodePurged => (
            "episodic_memory",
            "e-7",
            MemoryChange::EpisodePurged {
                outcome: Some(Outcome::Succeeded),
            },
        ),
        EventKind::MemoryLearned => (
            "semantic_memory",
            "m-3",
            MemoryChange::MemoryLearned {
                memory_type: MemoryType::Preference,
                content: Content::Text("Prefers window seats".into()),
                embedding: Some(Embedding {
                    dimensions: 1024,
                    values: None,
                }),
                source_episode_id: Some("e-7".into()),
                strength: 0.5,
            },
        ),
        EventKind::MemoryRecalled => (
            "semantic_memory",
            "m-3",
            MemoryChange::MemoryRecalled {
                strength: 0.65,
                previous_strength: 0.5,
                last_accessed_at: Some(at(120)),
            },
        ),
        EventKind::MemoryDecayed => (
            "semantic_memory",
            "m-3",
            MemoryChange::MemoryDecayed {
                strength: 0.45,
                previous_strength: 0.5,
            },
        ),
        EventKind::MemoryRevised => (
            "semantic_memory",
            "m-3",
            MemoryChange::MemoryRevised {
                changed_fields: fields(&["content"]),
                memory_type: Some(MemoryType::Preference),
                content: Some(Content::Text("Prefers aisle seats".into())),
                embedding: Some(Embedding {
                    dimensions: 1024,
                    values: None,
                }),
            },
        ),
        EventKind::MemoryUpdated => (
            "semantic_memory",
            "m-3",
            MemoryChange::MemoryUpdated {
                changed_fields: fields(&["strength"]),
                strength: Some(0.7),
                previous_strength: None,
                direction: Direction::Unknown,
            },
        ),
        _ => (
            "semantic_memory",
            "m-3",
            MemoryChange::MemoryForgotten {
                memory_type: Some(MemoryType::Preference),
            },
        ),
    };
    MemoryEvent {
        meta: example_meta("agent_memory", collection),
        user_id: "u-1".into(),
        document_id: document_id.into(),
        change,
    }
}

/// `schemas/README.md`: the catalog of published events, generated so it cannot drift.
pub fn readme() -> String {
    let mut out = String::from(
        "# Schemas\n\n\
         Generated by `CHANGEFLOW_UPDATE_SCHEMAS=1 cargo test --test schemas`; \
         the same test fails when these files differ from what the code generates.\n\n\
         Every event is a [CloudEvent 1.0](https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md) \
         in the Kafka protocol binding, binary content mode by default: the attributes are \
         `ce_*` headers and the record value is the event's JSON data, which validates \
         against the JSON Schema (draft 2020-12) in `events/` whose `$id` is the \
         `ce_dataschema` header.\n\n\
         | header | value |\n|---|---|\n\
         | `ce_specversion` | `1.0` |\n\
         | `ce_id` | stable id of the change: the first 128 bits of BLAKE3 over the resume \
         token's `_data` string, as 32 lowercase hex digits. The same change always gets the \
         same id (after a restart or a replay too), so consumers drop duplicates by it. |\n\
         | `ce_source` | `/mongodb/<database>/<collection>` (`/mongodb/<database>` for the \
         database-wide namespace events) |\n\
         | `ce_type` | the event type below |\n\
         | `ce_time` | the change's wall time (its cluster time when the server gave none), RFC 3339, UTC |\n\
         | `ce_subject` | the document's id (namespace events: the namespace, or the stream \
         for an invalidate) |\n\
         | `ce_dataschema` | `$id` of the data's schema |\n\
         | `content-type` | `application/json` |\n\n\
         In structured mode the record value is the whole CloudEvent as one JSON object \
         (`content-type: application/cloudevents+json`), with the data under `data`.\n\n\
         ## Event types\n\n\
         | type | topic (default) | key | fires when | schema |\n|---|---|---|---|---|\n",
    );
    for event_type in published_types() {
        let (topic, key) = event_type.topic_and_key();
        let _ = writeln!(
            out,
            "| `{}` | `{topic}` | {key} | {} | [`events/{}`](events/{}) |",
            event_type.name,
            event_type.fires,
            event_type.file_name(),
            event_type.file_name()
        );
    }
    out.push_str("\n## Examples\n");
    for event_type in published_types() {
        let event = event_type.example();
        let data: serde_json::Value = serde_json::from_slice(&event.data).unwrap_or_default();
        let _ = write!(out, "\n### `{}`\n\nHeaders:\n\n```\n", event_type.name);
        for (name, value) in event.binary_headers() {
            let _ = writeln!(out, "{name}: {value}");
        }
        let _ = write!(
            out,
            "```\n\nValue:\n\n```json\n{}\n```\n",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
    }
    out
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
    fn namespace_types_match_their_changes() {
        for published in &NAMESPACE_TYPES {
            let event = published.example();
            assert_eq!(event.event_type, published.name);
            assert_eq!(
                by_schema_id(published.schema_id).map(|t| t.name),
                Some(published.name)
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
