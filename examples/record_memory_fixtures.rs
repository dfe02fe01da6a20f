//! Records the change events of the agent-memory lifecycle from a real server into
//! `tests/fixtures/memory/` (canonical Extended JSON), so the memory decoders are tested on
//! what MongoDB actually sends: pre-images, `$push` as `messages.N` fields, TTL deletes.
//!
//! Needs the replica set with `ttlMonitorSleepSecs=1` (`cargo xtask up --profile test`):
//!
//!     cargo run --example record_memory_fixtures

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use changeflow::cmd::setup;
use changeflow::config::{Config, WatchedDatabase};
use futures::StreamExt;
use mongodb::Client;
use mongodb::bson::{Bson, DateTime, Document, RawDocumentBuf, doc};
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};

fn message(role: &str, content: &str, tokens: i32) -> Document {
    doc! {"role": role, "content": content, "timestamp": DateTime::now(), "token_count": tokens}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let uri = std::env::var("MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?replicaSet=rs0".to_owned());
    let client = Client::with_uri_str(&uri).await?;
    let db_name = format!("fixtures_memory_{}", std::process::id());
    let mut config = Config::default();
    config.memory.database = db_name.clone();
    config.payments.database = format!("{db_name}_p");
    config.watch = vec![WatchedDatabase {
        database: config.payments.database.clone(),
        collections: vec!["payments".into()],
    }];
    setup::run(&client, &config).await.context("setup")?;
    let db = client.database(&db_name);
    let mut stream = db
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
        .await?
        .with_type::<RawDocumentBuf>();

    let threads = db.collection::<Document>("short_term_memory");
    let episodes = db.collection::<Document>("episodic_memory");
    let memories = db.collection::<Document>("semantic_memory");
    let later = DateTime::from_millis(DateTime::now().timestamp_millis() + 3_600_000);
    let mut names = Vec::new();

    threads
        .insert_one(doc! {
            "thread_id": "t-1", "user_id": "u-1",
            "messages": [message("user", "Plan a trip to Lisbon", 7)],
            "summary": Bson::Null, "summary_updated_at": Bson::Null,
            "created_at": DateTime::now(), "expires_at": later,
        })
        .await?;
    names.push("thread_insert");
    threads
        .update_one(
            doc! {"thread_id": "t-1"},
            doc! {"$push": {"messages": {"$each": [
                message("assistant", "Which dates?", 3),
                message("user", "Early May", 3),
            ]}}},
        )
        .await?;
    names.push("thread_push_two");
    // The budget is hit: the two oldest turns are folded into the summary.
    threads
        .update_one(
            doc! {"thread_id": "t-1"},
            vec![doc! {"$set": {
                "summary": "User plans a trip to Lisbon in early May.",
                "summary_updated_at": "$$NOW",
                "messages": {"$slice": ["$messages", -1]},
            }}],
        )
        .await?;
    names.push("thread_summarize_slice");
    threads
        .update_one(
            doc! {"thread_id": "t-1"},
            doc! {"$set": {"summary": "Trip to Lisbon, early May, 3 nights."}, "$pop": {"messages": -1}},
        )
        .await?;
    names.push("thread_summarize_pop");
    threads.delete_one(doc! {"thread_id": "t-1"}).await?;
    names.push("thread_delete_manual");
    threads
        .insert_one(doc! {
            "thread_id": "t-2", "user_id": "u-1", "messages": [],
            "created_at": DateTime::now(),
            "expires_at": DateTime::from_millis(DateTime::now().timestamp_millis() - 1000),
        })
        .await?;
    names.push("thread_insert_expired");
    // Wait for the TTL monitor (every second under the test profile) before going on, so
    // the stream order is the order of `names`.
    let waited = tokio::time::timeout(Duration::from_secs(90), async {
        while threads.count_documents(doc! {"thread_id": "t-2"}).await? > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok(())
    })
    .await;
    match waited {
        Ok(result) => result?,
        Err(_) => bail!("the TTL monitor did not delete t-2 in 90 s (is ttlMonitorSleepSecs=1?)"),
    }
    names.push("thread_delete_ttl");

    episodes
        .insert_one(doc! {
            "episode_id": "e-1", "thread_id": "t-1", "user_id": "u-1",
            "summary": "Planned a Lisbon trip",
            "tool_calls": [
                {"tool": "search_flights", "inputs": {"to": "LIS"}, "output": "3 offers", "success": true, "called_at": DateTime::now()},
                {"tool": "book_hotel", "inputs": {"city": "Lisbon"}, "output": Bson::Null, "success": false, "called_at": DateTime::now()},
            ],
            "outcome": "succeeded", "tags": ["travel", "lisbon"],
            "started_at": DateTime::from_millis(DateTime::now().timestamp_millis() - 60_000),
            "ended_at": DateTime::now(),
        })
        .await?;
    names.push("episode_insert");
    episodes
        .update_one(
            doc! {"episode_id": "e-1"},
            doc! {"$addToSet": {"tags": "may"}},
        )
        .await?;
    names.push("episode_update");
    episodes.delete_one(doc! {"episode_id": "e-1"}).await?;
    names.push("episode_delete");

    let embedding: Vec<f64> = (0..8).map(|i| f64::from(i) / 8.0).collect();
    memories
        .insert_one(doc! {
            "memory_id": "m-1", "user_id": "u-1", "type": "preference",
            "content": "Prefers window seats", "embedding": embedding,
            "source_episode_id": "e-1", "strength": 0.5,
            "last_accessed_at": Bson::Null, "created_at": DateTime::now(),
        })
        .await?;
    names.push("memory_insert");
    memories
        .update_one(
            doc! {"memory_id": "m-1"},
            doc! {"$set": {"strength": 0.65, "last_accessed_at": DateTime::now()}},
        )
        .await?;
    names.push("memory_recall");
    memories
        .update_one(doc! {"memory_id": "m-1"}, doc! {"$set": {"strength": 0.6}})
        .await?;
    names.push("memory_decay");
    memories
        .update_one(
            doc! {"memory_id": "m-1"},
            doc! {"$set": {"content": "Prefers aisle seats", "type": "preference"}},
        )
        .await?;
    names.push("memory_revise");
    memories.delete_one(doc! {"memory_id": "m-1"}).await?;
    names.push("memory_delete");

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/memory");
    std::fs::create_dir_all(&dir)?;
    for name in &names {
        // The TTL monitor runs every second under the test profile.
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .with_context(|| format!("no change for `{name}` within 30 s"))?;
        let Some(change) = next else {
            bail!("the stream ended before `{name}`")
        };
        let change = Document::try_from(change?.as_ref())?;
        let json = Bson::Document(change).into_canonical_extjson();
        let text = serde_json::to_string_pretty(&json)? + "\n";
        std::fs::write(dir.join(format!("{name}.json")), text)?;
        println!("recorded {name}");
    }
    client.database(&db_name).drop().await?;
    client.database(&config.payments.database).drop().await?;
    Ok(())
}
