//! Agent-memory decode rules against change events recorded from the real server
//! (`tests/fixtures/memory`, see its README), plus the privacy modes and bad input.

use std::path::Path;

use changeflow::config::TextMode;
use changeflow::decode::{DecodeError, Decoded, Domains, MemoryDomain};
use changeflow::domain::memory::{
    Content, Direction, MemoryChange, MemoryEvent, MemoryType, Outcome, Privacy,
};
use changeflow::domain::{DomainEvent, EventKind};
use changeflow::events::cloudevent::CloudEvent;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};

/// The database the fixtures were recorded in.
const DATABASE: &str = "fixtures_memory_27675";

fn domains(privacy: Privacy) -> Domains {
    Domains::new("shop", "payments").with_memory(MemoryDomain {
        database: DATABASE.into(),
        short_term: "short_term_memory".into(),
        episodic: "episodic_memory".into(),
        semantic: "semantic_memory".into(),
        privacy,
    })
}

fn fixture(name: &str) -> Document {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/memory")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    match Bson::try_from(json).expect("canonical extended JSON") {
        Bson::Document(d) => d,
        other => panic!("{name}: not a document: {other}"),
    }
}

fn decode_doc(change: &Document, privacy: Privacy) -> Decoded {
    let raw = RawDocumentBuf::from_document(change).expect("to raw BSON");
    domains(privacy).decode(raw).0
}

fn decode_with(name: &str, privacy: Privacy) -> MemoryEvent {
    match decode_doc(&fixture(name), privacy) {
        Decoded::Event(DomainEvent::Memory(event)) => event,
        other => panic!("{name}: expected a memory event, got {other:?}"),
    }
}

fn decode(name: &str) -> MemoryEvent {
    decode_with(name, Privacy::default())
}

fn invalid(change: &Document) -> DecodeError {
    match decode_doc(change, Privacy::default()) {
        Decoded::Invalid { error, .. } => error,
        other => panic!("expected bad input, got {other:?}"),
    }
}

fn text(content: &Content) -> &str {
    match content {
        Content::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn thread_insert_starts_a_thread_with_its_user_and_messages() {
    let event = decode("thread_insert");
    assert_eq!(event.kind(), EventKind::ThreadStarted);
    assert_eq!(
        (event.user_id.as_str(), event.document_id.as_str()),
        ("u-1", "t-1")
    );
    let MemoryChange::ThreadStarted {
        messages,
        expires_at,
        ..
    } = &event.change
    else {
        panic!("{event:?}");
    };
    assert_eq!(messages.len(), 1);
    assert_eq!(text(&messages[0].content), "Plan a trip to Lisbon");
    assert_eq!(messages[0].token_count, 7);
    assert!(expires_at.is_some());
}

#[test]
fn push_of_two_messages_is_one_event_with_both_in_order() {
    let event = decode("thread_push_two");
    let MemoryChange::MessagesAppended { messages } = &event.change else {
        panic!("{event:?}");
    };
    let got: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.role.as_str(), text(&m.content)))
        .collect();
    assert_eq!(got, [("assistant", "Which dates?"), ("user", "Early May")]);
    assert_eq!(event.user_id, "u-1", "user from the pre-image");
}

#[test]
fn folding_old_turns_is_a_summary_with_the_dropped_count() {
    for (name, dropped, remaining) in [
        ("thread_summarize_slice", 2, 1),
        ("thread_summarize_pop", 1, 0),
    ] {
        let event = decode(name);
        let MemoryChange::ThreadSummarized {
            summary,
            messages_dropped,
            messages_appended,
            messages_remaining,
        } = &event.change
        else {
            panic!("{name}: {event:?}");
        };
        assert_eq!(*messages_dropped, Some(dropped), "{name}");
        assert_eq!(*messages_remaining, Some(remaining), "{name}");
        assert!(messages_appended.is_empty(), "{name}");
        assert!(text(summary.as_ref().expect("summary")).contains("Lisbon"));
    }
}

#[test]
fn ttl_delete_expires_and_manual_delete_deletes() {
    let expired = decode("thread_delete_ttl");
    assert_eq!(expired.kind(), EventKind::ThreadExpired);
    assert_eq!(expired.document_id, "t-2");
    let deleted = decode("thread_delete_manual");
    assert_eq!(deleted.kind(), EventKind::ThreadDeleted);
    assert_eq!(deleted.document_id, "t-1");
}

#[test]
fn episode_insert_counts_tool_calls_and_duration() {
    let event = decode("episode_insert");
    let MemoryChange::EpisodeRecorded(episode) = &event.change else {
        panic!("{event:?}");
    };
    assert_eq!(episode.outcome, Outcome::Succeeded);
    assert_eq!((episode.tool_calls, episode.failed_tool_calls), (2, 1));
    assert_eq!(episode.tags, ["travel", "lisbon"]);
    assert_eq!(
        episode.ended_at.timestamp_millis() - episode.started_at.timestamp_millis(),
        60_000
    );
    let data: serde_json::Value =
        serde_json::from_slice(&CloudEvent::of(&DomainEvent::Memory(event.clone())).data)
            .expect("JSON");
    assert_eq!(data["durationMs"], 60_000);
    assert_eq!(data["episodeId"], "e-1");
    assert_eq!(data["userId"], "u-1");
}

#[test]
fn semantic_changes_follow_the_strength_against_the_pre_image() {
    let learned = decode("memory_insert");
    let MemoryChange::MemoryLearned {
        memory_type,
        embedding,
        strength,
        ..
    } = &learned.change
    else {
        panic!("{learned:?}");
    };
    assert_eq!(*memory_type, MemoryType::Preference);
    assert_eq!(*strength, 0.5);
    let embedding = embedding.as_ref().expect("embedding");
    assert_eq!((embedding.dimensions, &embedding.values), (8, &None));

    let recalled = decode("memory_recall");
    assert_eq!(
        recalled.change,
        MemoryChange::MemoryRecalled {
            strength: 0.65,
            previous_strength: 0.5,
            last_accessed_at: match &recalled.change {
                MemoryChange::MemoryRecalled {
                    last_accessed_at, ..
                } => *last_accessed_at,
                _ => None,
            },
        }
    );
    assert_eq!(
        decode("memory_decay").change,
        MemoryChange::MemoryDecayed {
            strength: 0.6,
            previous_strength: 0.65
        }
    );
    let revised = decode("memory_revise");
    let MemoryChange::MemoryRevised {
        changed_fields,
        content,
        memory_type,
        ..
    } = &revised.change
    else {
        panic!("{revised:?}");
    };
    assert_eq!(changed_fields, &["content"]);
    assert_eq!(
        text(content.as_ref().expect("content")),
        "Prefers aisle seats"
    );
    assert_eq!(
        *memory_type,
        Some(MemoryType::Preference),
        "type from the pre-image"
    );
    let forgotten = decode("memory_delete");
    assert_eq!(
        forgotten.change,
        MemoryChange::MemoryForgotten {
            memory_type: Some(MemoryType::Preference)
        }
    );
}

#[test]
fn a_strength_change_without_pre_image_says_unknown() {
    let mut change = fixture("memory_recall");
    change.insert("fullDocumentBeforeChange", Bson::Null);
    change.insert(
        "fullDocument",
        doc! {"memory_id": "m-1", "user_id": "u-1", "type": "fact", "content": "x", "strength": 0.65},
    );
    let Decoded::Event(DomainEvent::Memory(event)) = decode_doc(&change, Privacy::default()) else {
        panic!("expected an event");
    };
    let MemoryChange::MemoryUpdated {
        direction,
        strength,
        previous_strength,
        ..
    } = event.change
    else {
        panic!("{event:?}");
    };
    assert_eq!(direction, Direction::Unknown);
    assert_eq!((strength, previous_strength), (Some(0.65), None));
}

#[test]
fn content_modes_and_embeddings_follow_the_privacy_settings() {
    let default = CloudEvent::of(&DomainEvent::Memory(decode("memory_insert")));
    let text = String::from_utf8(default.data.clone()).expect("UTF-8");
    assert!(!text.contains("\"embedding\""), "{text}");
    assert!(text.contains("\"embeddingDimensions\":8"), "{text}");
    assert!(text.contains("Prefers window seats"), "{text}");

    let hashed = decode_with(
        "memory_insert",
        Privacy {
            semantic: TextMode::Hash,
            include_embeddings: true,
            ..Privacy::default()
        },
    );
    let data: serde_json::Value =
        serde_json::from_slice(&CloudEvent::of(&DomainEvent::Memory(hashed)).data).expect("JSON");
    // sha256("Prefers window seats"), computed independently (Python's hashlib).
    assert_eq!(
        data["contentSha256"],
        "0da5694dfd475adbd30cd048534e01f2fe8fbfbc1be8692c63bf0c0d8e611106"
    );
    assert!(data.get("content").is_none(), "{data}");
    assert_eq!(data["embedding"].as_array().map(Vec::len), Some(8));

    let dropped = decode_with(
        "thread_push_two",
        Privacy {
            short_term: TextMode::Drop,
            ..Privacy::default()
        },
    );
    let data =
        String::from_utf8(CloudEvent::of(&DomainEvent::Memory(dropped)).data).expect("UTF-8");
    assert!(
        !data.contains("Which dates?") && !data.contains("content"),
        "{data}"
    );
    assert!(data.contains("\"tokenCount\":3"), "{data}");
}

#[test]
fn a_memory_without_user_is_bad_input_never_an_event() {
    let mut change = fixture("memory_insert");
    let mut full = change.get_document("fullDocument").expect("full").clone();
    full.remove("user_id");
    change.insert("fullDocument", full);
    let error = invalid(&change);
    assert_eq!(
        error.to_string(),
        "missing field `fullDocument.user_id`",
        "{error:?}"
    );
}

#[test]
fn a_delete_or_update_whose_user_cannot_be_known_is_bad_input() {
    // Recorded before episodic pre-images were enabled: neither change names its user.
    assert_eq!(invalid(&fixture("episode_delete")), DecodeError::NoPreImage);
    assert_eq!(
        invalid(&fixture("episode_update")),
        DecodeError::NoFullDocument
    );
}

#[test]
fn fields_that_do_not_fit_the_type_are_bad_input_with_their_path() {
    let mut change = fixture("memory_insert");
    let mut full = change.get_document("fullDocument").expect("full").clone();
    full.insert("strength", 1.5);
    change.insert("fullDocument", full);
    assert_eq!(
        invalid(&change).to_string(),
        "field `fullDocument.strength`: 1.5 is outside 0..=1"
    );
    let mut change = fixture("thread_push_two");
    let mut updated = change
        .get_document("updateDescription")
        .expect("description")
        .clone();
    updated.insert(
        "updatedFields",
        doc! {"messages.1": {"role": "user", "content": 3, "timestamp": mongodb::bson::DateTime::now(), "token_count": 1}},
    );
    change.insert("updateDescription", updated);
    assert_eq!(
        invalid(&change).to_string(),
        "field `updateDescription.updatedFields.messages.1.content` is an int32, expected a string"
    );
}
