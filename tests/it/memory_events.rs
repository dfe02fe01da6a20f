//! Agent-memory events from real writes: every event type is produced by the write that
//! causes it, lands on the memory topic keyed by `user_id` in write order, validates against
//! its committed schema, carries no embedding by default, and moves `memory_stats`; a
//! memory without a user is dead-lettered instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::app::{Process, memory_config, memory_stats_by_user};
use crate::common::records::{self, required};
use crate::common::schemas::{self, committed_event_schema};
use crate::common::{DEADLINE, kafka_brokers, mongo, unique_name, wait_until};
use changeflow::cmd::demo::memory;
use changeflow::cmd::run;
use changeflow::cmd::setup;
use changeflow::events::catalog::by_schema_id;
use changeflow::source::StartAt;
use changeflow::state::dead_letters;
use changeflow::targets::memory_stats::MEMORY_STATS;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Collection, Database};
use rdkafka::message::{Message, OwnedMessage};

fn message(role: &str, content: &str, tokens: i32) -> Document {
    doc! {"role": role, "content": content, "timestamp": DateTime::now(), "token_count": tokens}
}

fn in_seconds(seconds: i64) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + seconds * 1000)
}

/// The writes of the design's lifecycle for user `u-1`, in order, each followed by the
/// event type it must cause.
async fn lifecycle(db: &Database) -> Vec<&'static str> {
    let threads: Collection<Document> = db.collection("short_term_memory");
    let episodes: Collection<Document> = db.collection("episodic_memory");
    let memories: Collection<Document> = db.collection("semantic_memory");
    let thread = doc! {"thread_id": "t-1"};
    threads
        .insert_one(doc! {
            "thread_id": "t-1", "user_id": "u-1",
            "messages": [message("user", "Plan a trip to Lisbon", 7)],
            "summary": null, "summary_updated_at": null,
            "created_at": DateTime::now(), "expires_at": in_seconds(3600),
        })
        .await
        .unwrap();
    threads
        .update_one(
            thread.clone(),
            doc! {"$push": {"messages": {"$each": [
                message("assistant", "Which dates?", 3),
                message("user", "Early May", 3),
            ]}}},
        )
        .await
        .unwrap();
    // The token budget is hit: the two oldest turns are folded into the summary.
    threads
        .update_one(
            thread.clone(),
            vec![doc! {"$set": {
                "messages": {"$slice": ["$messages", -1]},
                "summary": "User plans a trip to Lisbon in early May.",
                "summary_updated_at": "$$NOW",
            }}],
        )
        .await
        .unwrap();
    threads
        .update_one(
            thread.clone(),
            doc! {"$set": {"expires_at": in_seconds(7200)}},
        )
        .await
        .unwrap();
    threads.delete_one(thread).await.unwrap();

    let episode = doc! {"episode_id": "e-1"};
    episodes
        .insert_one(doc! {
            "episode_id": "e-1", "thread_id": "t-1", "user_id": "u-1",
            "summary": "Planned a Lisbon trip",
            "tool_calls": [
                {"tool": "search_flights", "inputs": {"to": "LIS"}, "output": "3 offers", "success": true, "called_at": DateTime::now()},
                {"tool": "book_hotel", "inputs": {"city": "Lisbon"}, "output": null, "success": false, "called_at": DateTime::now()},
            ],
            "outcome": "succeeded", "tags": ["travel"],
            "started_at": in_seconds(-60), "ended_at": DateTime::now(),
        })
        .await
        .unwrap();
    episodes
        .update_one(episode.clone(), doc! {"$addToSet": {"tags": "lisbon"}})
        .await
        .unwrap();
    episodes.delete_one(episode).await.unwrap();

    let memory = doc! {"memory_id": "m-1"};
    let embedding: Vec<f64> = (0..1024).map(|i| f64::from(i) / 1024.0).collect();
    memories
        .insert_one(doc! {
            "memory_id": "m-1", "user_id": "u-1", "type": "preference",
            "content": "Prefers window seats", "embedding": embedding,
            "source_episode_id": "e-1", "strength": 0.5,
            "last_accessed_at": null, "created_at": DateTime::now(),
        })
        .await
        .unwrap();
    // Recall: strength closes 30 % of its gap to 1.0.
    memories
        .update_one(
            memory.clone(),
            doc! {"$set": {"strength": 0.65, "last_accessed_at": DateTime::now()}},
        )
        .await
        .unwrap();
    memories
        .update_one(memory.clone(), doc! {"$set": {"strength": 0.6}})
        .await
        .unwrap();
    memories
        .update_one(
            memory.clone(),
            doc! {"$set": {"content": "Prefers aisle seats"}},
        )
        .await
        .unwrap();
    memories
        .update_one(memory.clone(), doc! {"$set": {"source_episode_id": "e-2"}})
        .await
        .unwrap();
    memories.delete_one(memory).await.unwrap();
    vec![
        "thread_started",
        "messages_appended",
        "thread_summarized",
        "thread_updated",
        "thread_deleted",
        "episode_recorded",
        "episode_amended",
        "episode_purged",
        "memory_learned",
        "memory_recalled",
        "memory_decayed",
        "memory_revised",
        "memory_updated",
        "memory_forgotten",
    ]
}

fn validator(id: &str) -> jsonschema::Validator {
    let event_type = by_schema_id(id)
        .unwrap_or_else(|| panic!("ce_dataschema `{id}` names no committed schema"));
    schemas::validator(&committed_event_schema(&event_type.file_name()))
}

fn data(record: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(record.payload().expect("a value")).expect("JSON value")
}

#[tokio::test]
async fn every_memory_event_type_comes_from_its_write_and_lands_on_kafka() {
    let db_name = unique_name("mem");
    let client = mongo().await;
    let db = client.database(&db_name);
    let config = memory_config(&db_name);
    setup::run(&client, &config).await.unwrap();
    let topic = config.kafka.topic(&config.kafka.topics.memory);
    let running = run::start(Arc::new(config), StartAt::Now).await.unwrap();
    running.ready(DEADLINE).await.unwrap();

    let expected = lifecycle(&db).await;
    // A second user's thread that is already expired: the TTL monitor removes it.
    db.collection::<Document>("short_term_memory")
        .insert_one(doc! {
            "thread_id": "t-2", "user_id": "u-2", "messages": [],
            "created_at": DateTime::now(), "expires_at": in_seconds(-1),
        })
        .await
        .unwrap();
    // A memory without a user, past the validator: bad input, never an event.
    db.run_command(doc! {
        "insert": "semantic_memory",
        "documents": [{"memory_id": "m-orphan", "type": "fact", "content": "x",
                       "strength": 0.5, "created_at": DateTime::now()}],
        "bypassDocumentValidation": true,
    })
    .await
    .unwrap();

    // 14 events of u-1 and 2 of u-2; then 2 s of quiet, so an extra event would show.
    let total = expected.len() + 2;
    let mut seen = 0;
    let records = records::consume_until(
        &kafka_brokers(),
        &topic,
        DEADLINE,
        Duration::from_secs(2),
        |_| {
            seen += 1;
            seen >= total
        },
    )
    .await;
    assert_eq!(records.len(), total);

    let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
    for record in &records {
        let user = std::str::from_utf8(record.key().expect("a key")).expect("UTF-8 key");
        let data = data(record);
        assert_eq!(data["userId"], user, "key = userId");
        assert_eq!(data["eventId"], required(record, "ce_id"));
        let source = required(record, "ce_source");
        assert!(
            source.starts_with(&format!("/mongodb/{db_name}/")),
            "{source}"
        );
        let errors: Vec<String> = validator(required(record, "ce_dataschema"))
            .iter_errors(&data)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{data}: {errors:?}");
        let text = data.to_string();
        assert!(
            !text.contains("\"embedding\":"),
            "no embedding by default: {text}"
        );
        let kind = required(record, "ce_type")
            .strip_prefix("changeflow.memory.")
            .and_then(|t| t.strip_suffix(".v1"))
            .expect("a memory type")
            .to_owned();
        by_user.entry(user.to_owned()).or_default().push(kind);
    }
    // One user's events arrive in write order (one key, one partition).
    assert_eq!(by_user.get("u-1").cloned().unwrap_or_default(), expected);
    assert_eq!(
        by_user.get("u-2").cloned().unwrap_or_default(),
        ["thread_started", "thread_expired"]
    );
    assert_eq!(by_user.len(), 2, "no event without a user: {by_user:?}");

    let fields = |kind: &str| {
        let wanted = format!("changeflow.memory.{kind}.v1");
        records
            .iter()
            .find(|r| required(r, "ce_type") == wanted)
            .map(data)
            .unwrap_or_else(|| panic!("no {kind} event"))
    };
    let appended = fields("messages_appended");
    let contents: Vec<&str> = appended["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(contents, ["Which dates?", "Early May"]);
    let summarized = fields("thread_summarized");
    assert_eq!(summarized["messagesDropped"], 2);
    assert_eq!(summarized["messagesRemaining"], 1);
    let learned = fields("memory_learned");
    assert_eq!(learned["embeddingDimensions"], 1024);
    let recalled = fields("memory_recalled");
    assert_eq!(
        (&recalled["previousStrength"], &recalled["strength"]),
        (&serde_json::json!(0.5), &serde_json::json!(0.65))
    );
    let episode = fields("episode_recorded");
    assert_eq!(
        (&episode["toolCalls"], &episode["failedToolCalls"]),
        (&serde_json::json!(2), &serde_json::json!(1))
    );

    // The orphan went to the dead-letter store with the reason.
    let letters: Collection<Document> = db.collection(dead_letters::COLLECTION);
    let letter = wait_until(DEADLINE, "the orphan memory's dead letter", || async {
        letters
            .find_one(doc! {"reason": {"$regex": "user_id"}})
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(
        letter.get_str("reason").unwrap(),
        "missing field `fullDocument.user_id`"
    );

    // memory_stats counted the lifecycle once.
    let stats: Collection<Document> = db.collection(MEMORY_STATS);
    let u1 = wait_until(DEADLINE, "u-1's stats", || async {
        stats
            .find_one(doc! {"_id": "u-1", "decays": 1_i64})
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(u1.get_i64("threads_started").unwrap(), 1, "{u1}");
    assert_eq!(u1.get_i64("messages_appended").unwrap(), 2, "{u1}");
    assert_eq!(u1.get_i64("threads_summarized").unwrap(), 1, "{u1}");
    assert_eq!(u1.get_i64("recalls").unwrap(), 1, "{u1}");
    assert_eq!(
        u1.get_document("episodes")
            .and_then(|e| e.get_i64("succeeded"))
            .unwrap(),
        1,
        "{u1}"
    );
    assert_eq!(
        u1.get_document("memories")
            .and_then(|m| m.get_i64("preference"))
            .unwrap(),
        1,
        "{u1}"
    );
    let u2 = wait_until(DEADLINE, "u-2's stats", || async {
        stats
            .find_one(doc! {"_id": "u-2", "threads_expired": 1_i64})
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(u2.get_i64("threads_started").unwrap(), 1, "{u2}");
    running.until(async {}).await.unwrap();
}

#[tokio::test]
async fn memory_stats_equal_the_workload_after_a_sigkill_mid_workload() {
    let db_name = unique_name("memkill");
    let client = mongo().await;
    let db = client.database(&db_name);
    let config = memory_config(&db_name);
    setup::run(&client, &config).await.unwrap();
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;

    let workload = memory::Workload {
        users: 8,
        ..memory::Workload::default()
    };
    let writer = {
        let (db, memory) = (db.clone(), config.memory.clone());
        tokio::spawn(async move { memory::run(&db, &memory, workload, "w", |_| {}).await })
    };
    // Kill once the stats of the first users are in, with the workload still writing.
    wait_until(DEADLINE, "the first users counted", || async {
        let counted = db
            .collection::<Document>(MEMORY_STATS)
            .count_documents(doc! {})
            .await
            .ok()?;
        (counted >= 2).then_some(())
    })
    .await;
    process.signal(libc::SIGKILL);
    process.wait_exit(DEADLINE).await;
    assert!(
        !writer.is_finished(),
        "the kill must land in the middle of the workload"
    );
    let at_kill = memory_stats_by_user(&db).await;
    let mut restarted = Process::spawn(&config);
    restarted.wait_healthy().await;
    let expected = writer.await.unwrap().unwrap();
    assert_eq!(expected.len(), 8);

    // A transaction the killed process left open holds its processed-event id until the
    // server aborts it (transactionLifetimeLimitSeconds: 10 s under the test profile).
    let matched = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if memory_stats_by_user(&db).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let now = memory_stats_by_user(&db).await;
    assert!(
        matched.is_ok(),
        "memory_stats differ from the workload\nexpected {expected:#?}\ngot {now:#?}\n\
         at the kill {at_kill:#?}\n--- first run ---\n{}\n--- restarted ---\n{}",
        process.log(),
        restarted.log()
    );
    assert_ne!(
        at_kill, expected,
        "the kill landed before the workload was counted"
    );
    // A graceful stop finishes every event read: nothing may move afterwards.
    restarted.signal(libc::SIGTERM);
    let status = restarted.wait_exit(DEADLINE).await;
    assert!(status.success(), "{}", restarted.log());
    assert_eq!(memory_stats_by_user(&db).await, expected);
}

#[tokio::test]
async fn non_finite_embedding_values_are_published_as_schema_valid_strings() {
    let db_name = unique_name("nanemb");
    let client = mongo().await;
    let db = client.database(&db_name);
    let mut config = memory_config(&db_name);
    config.memory.include_embeddings = true;
    setup::run(&client, &config).await.unwrap();
    let topic = config.kafka.topic(&config.kafka.topics.memory);
    let running = run::start(Arc::new(config), StartAt::Now).await.unwrap();
    running.ready(DEADLINE).await.unwrap();
    db.collection::<Document>("semantic_memory")
        .insert_one(doc! {
            "memory_id": "m-nan", "user_id": "u-1", "type": "fact", "content": "x",
            "embedding": [0.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0],
            "source_episode_id": null, "strength": 0.5,
            "last_accessed_at": DateTime::now(), "created_at": DateTime::now(),
        })
        .await
        .unwrap();
    let records = records::consume(&kafka_brokers(), &topic, 1).await;
    let data = data(&records[0]);
    assert_eq!(
        data["embedding"],
        serde_json::json!([0.25, "NaN", "Infinity", "-Infinity", -0.0]),
        "{data}"
    );
    let errors: Vec<String> = validator(required(&records[0], "ce_dataschema"))
        .iter_errors(&data)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{data}: {errors:?}");
    running.until(async {}).await.unwrap();
    db.drop().await.unwrap();
}
