//! `changeflow setup` against the replica set: creates the validated payments and memory
//! collections with their indexes and pre-/post-images, is idempotent, and the validators
//! refuse what the decoders would dead-letter.

use std::process::Command;

use crate::common::app::{config, payment};
use crate::common::{mongo, unique_name};
use changeflow::cmd::setup::{self, Report, Step};
use changeflow::config::Config;
use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{DateTime, Document, doc};

/// `config` for a test: payments and memory in databases of their own.
fn setup_config(name: &str) -> Config {
    let mut config = config(name);
    config.memory.database = format!("{name}_m");
    config
}

fn steps(reports: &[Report]) -> Vec<Step> {
    reports.iter().map(|r| r.step).collect()
}

/// The options `listCollections` reports for `collection`.
async fn options(client: &Client, db: &str, collection: &str) -> Document {
    let listed = client
        .database(db)
        .run_command(doc! {"listCollections": 1, "filter": {"name": collection}})
        .await
        .unwrap();
    listed
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.first())
        .and_then(|i| i.as_document())
        .and_then(|i| i.get_document("options").ok())
        .cloned()
        .unwrap_or_else(|| panic!("{db}.{collection} does not exist"))
}

/// Key patterns of `collection`'s indexes, with their unique / TTL options.
async fn indexes(client: &Client, db: &str, collection: &str) -> Vec<Document> {
    client
        .database(db)
        .collection::<Document>(collection)
        .list_indexes()
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|i| {
            let mut d = doc! {"key": mongodb::bson::to_document(&i.keys).unwrap()};
            if let Some(o) = i.options {
                if o.unique == Some(true) {
                    d.insert("unique", true);
                }
                if let Some(ttl) = o.expire_after {
                    d.insert("ttl", ttl.as_secs() as i64);
                }
            }
            d
        })
        .collect()
}

#[tokio::test]
async fn setup_creates_then_changes_nothing_and_the_validators_guard_the_collections() {
    let name = unique_name("setup");
    let client = mongo().await;
    let config = setup_config(&name);
    let memory = config.memory.database.clone();

    let first = setup::run(&client, &config).await.unwrap();
    assert_eq!(steps(&first), [Step::Created; 4], "{first:?}");
    let second = setup::run(&client, &config).await.unwrap();
    assert_eq!(
        steps(&second),
        [Step::Unchanged; 4],
        "a second run changes nothing"
    );

    // Pre- and post-images: the memory decoders need the previous state, and every
    // update event carries the state its change left.
    for (db, collection, wanted) in [
        (&config.payments.database, "payments", true),
        (&memory, "short_term_memory", true),
        (&memory, "episodic_memory", true),
        (&memory, "semantic_memory", true),
    ] {
        let enabled = options(&client, db, collection)
            .await
            .get_document("changeStreamPreAndPostImages")
            .and_then(|i| i.get_bool("enabled"))
            .unwrap_or(false);
        assert_eq!(enabled, wanted, "{collection} pre- and post-images");
    }
    // The design's indexes.
    let expected = [
        (
            "short_term_memory",
            doc! {"key": {"thread_id": 1}, "unique": true},
        ),
        (
            "short_term_memory",
            doc! {"key": {"expires_at": 1}, "ttl": 0_i64},
        ),
        (
            "episodic_memory",
            doc! {"key": {"episode_id": 1}, "unique": true},
        ),
        (
            "episodic_memory",
            doc! {"key": {"user_id": 1, "started_at": -1}},
        ),
        (
            "episodic_memory",
            doc! {"key": {"user_id": 1, "tags": 1, "started_at": -1}},
        ),
        (
            "semantic_memory",
            doc! {"key": {"memory_id": 1}, "unique": true},
        ),
        (
            "semantic_memory",
            doc! {"key": {"user_id": 1, "type": 1, "strength": -1}},
        ),
        ("semantic_memory", doc! {"key": {"source_episode_id": 1}}),
        (
            "semantic_memory",
            doc! {"key": {"user_id": 1, "last_accessed_at": 1}},
        ),
    ];
    for (collection, index) in expected {
        let found = indexes(&client, &memory, collection).await;
        assert!(
            found.contains(&index),
            "{collection}: {index} not in {found:?}"
        );
    }
    let episodic = indexes(&client, &memory, "episodic_memory").await;
    assert!(
        episodic.iter().any(|i| i
            .get_document("key")
            .is_ok_and(|k| k.get_str("_fts") == Ok("text"))),
        "a text index on the episode summary: {episodic:?}"
    );

    // The validators refuse what does not fit.
    let payments = client.database(&name).collection::<Document>("payments");
    payments
        .insert_one(payment("good", 0, "PENDING"))
        .await
        .expect("a valid payment is accepted");
    let mut odd_status = payment("odd-status", 0, "PENDING");
    odd_status.insert("status", "MAYBE");
    let semantic = client
        .database(&memory)
        .collection::<Document>("semantic_memory");
    let fact = |user: Option<&str>| {
        let mut d = doc! {
            "memory_id": "m-1", "type": "fact", "content": "likes tea", "strength": 0.5,
            "created_at": DateTime::now(),
        };
        if let Some(user) = user {
            d.insert("user_id", user);
        }
        d
    };
    semantic
        .insert_one(fact(Some("u-1")))
        .await
        .expect("a valid memory is accepted");
    let refused = [
        payments.insert_one(odd_status).await.err(),
        semantic.insert_one(fact(None)).await.err(),
    ];
    for (what, error) in ["payment with an unknown status", "memory without user_id"]
        .iter()
        .zip(refused)
    {
        let error = error.unwrap_or_else(|| panic!("{what} must be refused"));
        assert!(
            error.to_string().contains("Document failed validation"),
            "{what}: {error}"
        );
    }
}

#[tokio::test]
async fn setup_brings_a_collection_created_without_it_up_to_date() {
    let name = unique_name("setupold");
    let client = mongo().await;
    let config = setup_config(&name);
    client
        .database(&name)
        .create_collection("payments")
        .await
        .unwrap();
    let reports = setup::run(&client, &config).await.unwrap();
    assert_eq!(reports[0].namespace, format!("{name}.payments"));
    assert_eq!(reports[0].step, Step::Updated);
    assert!(
        options(&client, &name, "payments")
            .await
            .get_document("validator")
            .is_ok(),
        "the validator was added"
    );
}

#[tokio::test]
async fn the_setup_command_says_what_it_did() {
    let name = unique_name("setupcli");
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_changeflow"))
            .arg("setup")
            .env("CHANGEFLOW_MONGODB_URI", crate::common::mongodb_uri())
            .env(
                "CHANGEFLOW_WATCH",
                format!("[{{database = \"{name}\", collections = [\"payments\"]}}]"),
            )
            .env("CHANGEFLOW_PAYMENTS_DATABASE", &name)
            .env("CHANGEFLOW_MEMORY_DATABASE", format!("{name}_m"))
            .env_remove("CHANGEFLOW_CONFIG")
            .output()
            .expect("running changeflow setup");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = run();
    assert!(
        first.contains(&format!("created {name}.payments"))
            && first.contains(&format!("created {name}_m.semantic_memory")),
        "{first}"
    );
    let second = run();
    assert!(
        second.contains(&format!("{name}_m.short_term_memory is already set up")),
        "{second}"
    );
}
