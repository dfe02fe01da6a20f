//! Sample events of every published type, for the catalog and tests.

use mongodb::bson::{DateTime, Timestamp};

use crate::domain::memory::{
    Content, Direction, Embedding, Episode, MemoryChange, MemoryEvent, MemoryType, Message, Outcome,
};
use crate::domain::namespace::{NamespaceChange, NamespaceEvent};
use crate::domain::payments::{
    Payment, PaymentDeleted, PaymentEvent, PaymentSnapshot, PaymentStatus, Product,
};
use crate::domain::{ChangeMeta, DomainEvent, EventId, EventKind};
use crate::events::cloudevent::CloudEvent;
use crate::events::types::{EventType, Example};

impl EventType {
    /// A sample event of this type, for the catalog and tests.
    pub fn example(&self) -> CloudEvent {
        match self.example {
            Example::Event(kind) => CloudEvent::of(&example_event(kind)),
            Example::Namespace(change) => {
                CloudEvent::of_namespace("changeflow", &example_namespace_event(change()))
            }
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
        looked_up: false,
    }
}

/// A sample event of `kind`, for the catalog's examples and tests.
pub(crate) fn example_event(kind: EventKind) -> DomainEvent {
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
            // A literal that always parses; the schema test checks the example.
            amount: "25.50"
                .parse()
                .unwrap_or(crate::domain::money::Amount::ZERO),
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
        EventKind::PaymentObserved => PaymentEvent::Observed(snapshot(PaymentStatus::Confirmed)),
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
        EventKind::ThreadObserved => (
            "short_term_memory",
            "t-42",
            MemoryChange::ThreadObserved {
                messages: vec![message("user", "Book me a flight to Lisbon", 7)],
                summary: Some(Content::Text("Planning a Lisbon trip.".into())),
                created_at: Some(at(0)),
                expires_at: Some(at(3600)),
            },
        ),
        EventKind::MemoryObserved => (
            "semantic_memory",
            "m-3",
            MemoryChange::MemoryObserved {
                memory_type: MemoryType::Preference,
                content: Content::Text("Prefers window seats".into()),
                embedding: Some(Embedding {
                    dimensions: 1024,
                    values: None,
                }),
                source_episode_id: Some("e-7".into()),
                strength: 0.8,
                last_accessed_at: Some(at(120)),
            },
        ),
        EventKind::EpisodeRecorded | EventKind::EpisodeObserved => (
            "episodic_memory",
            "e-7",
            (if kind == EventKind::EpisodeRecorded {
                MemoryChange::EpisodeRecorded
            } else {
                MemoryChange::EpisodeObserved
            })(Box::new(Episode {
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

#[cfg(test)]
mod tests {
    use crate::events::types::{NAMESPACE_TYPES, by_schema_id};

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
}
