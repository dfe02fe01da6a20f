//! Snapshots against the replica set and the broker: documents that exist before the
//! first start reach Kafka and the handlers, in the same ordered flow as the changes a
//! writer makes meanwhile, so folding each key's records gives the collection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::common::app::{
    Process, config, outcomes_and_counters, payment, run_cli, wait_settled_and_counted,
};
use crate::common::records::{consume_until, header};
use crate::common::{DEADLINE, kafka_brokers, mongo, unique_name, wait_until};
use changeflow::cmd::run;
use changeflow::config::SnapshotMode;
use changeflow::config::kafka::RawCollection;
use changeflow::source::StartAt;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

const ITEMS: i64 = 100_000;
const PAYMENTS: usize = 100_000;

/// The test configuration with an initial snapshot in chunks of `chunk`, and `items`
/// watched and published raw; the items topic.
fn items_config(db_name: &str, chunk: u32) -> (changeflow::config::Config, String) {
    let mut config = config(db_name);
    config.snapshot.mode = SnapshotMode::Initial;
    config.snapshot.chunk_size = chunk;
    config.watch[0].collections.push("items".into());
    config.kafka.raw = vec![RawCollection {
        database: db_name.to_owned(),
        collection: "items".into(),
        topic: "items".into(),
    }];
    let topic = config.kafka.topic("items");
    (config, topic)
}

/// Every record of `topic`, once at least `count` came and then 3 s passed without one.
async fn consume_at_least(topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let mut seen = 0usize;
    consume_until(
        &kafka_brokers(),
        topic,
        Duration::from_secs(120),
        Duration::from_secs(3),
        |_| {
            seen += 1;
            seen >= count
        },
    )
    .await
}

/// Folds `records` (relaxed Extended JSON change events, in offset order) per key, first
/// copy of each `ce_id` only; checks that no key's `v` ever goes back.
fn fold(records: &[rdkafka::message::OwnedMessage]) -> BTreeMap<i64, Option<i64>> {
    use rdkafka::Message;
    let mut seen = HashSet::new();
    let mut state: BTreeMap<i64, Option<i64>> = BTreeMap::new();
    let mut newest: HashMap<i64, i64> = HashMap::new();
    for record in records {
        let id = header(record, "ce_id").expect("ce_id").to_owned();
        if !seen.insert(id) {
            continue;
        }
        let change: serde_json::Value =
            serde_json::from_slice(record.payload().expect("value")).expect("JSON");
        let key = change["documentKey"]["_id"].as_i64().expect("integer _id");
        match change["operationType"].as_str() {
            Some("delete") => {
                state.insert(key, None);
            }
            _ => {
                let v = change["fullDocument"]["v"].as_i64().expect("v");
                let before = newest.insert(key, v).unwrap_or(i64::MIN);
                assert!(v >= before, "key {key}: v went back from {before} to {v}");
                state.insert(key, Some(v));
            }
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_snapshot_under_writes_hands_over_without_gap_or_going_back() {
    let db_name = unique_name("snap");
    let db = mongo().await.database(&db_name);
    let items = db.collection::<Document>("items");
    let payments = db.collection::<Document>("payments");
    let docs: Vec<Document> = (0..ITEMS).map(|i| doc! {"_id": i, "v": 0_i64}).collect();
    items.insert_many(docs).await.expect("items");
    let statuses = ["PENDING", "CONFIRMED", "FAILED"];
    let docs: Vec<Document> = (0..PAYMENTS)
        .map(|i| payment(&format!("p-{i}"), i % 7, statuses[i % 3]))
        .collect();
    payments.insert_many(docs).await.expect("payments");

    let (config, topic) = items_config(&db_name, 500);
    let running = run::start(Arc::new(config), StartAt::Now)
        .await
        .expect("start");
    running.ready(DEADLINE).await.expect("streams open");

    // A writer bumps, inserts and deletes items while the snapshot runs, until it is done.
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let items = items.clone();
        let payments = payments.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            // A fixed sequence (an LCG) scattered over the keys.
            let mut seed: u64 = 7;
            let mut next = ITEMS;
            let mut round = 0u64;
            while round < 1_500 || !finished.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let key = ((seed >> 33) % ITEMS as u64) as i64;
                match round % 10 {
                    0 => {
                        items
                            .insert_one(doc! {"_id": next, "v": 0_i64})
                            .await
                            .expect("insert");
                        next += 1;
                    }
                    1 => {
                        items.delete_one(doc! {"_id": key}).await.expect("delete");
                    }
                    2 => {
                        let p = payment(&format!("late-{round}"), 3, "PENDING");
                        payments.insert_one(p).await.expect("payment");
                    }
                    _ => {
                        items
                            .update_one(doc! {"_id": key}, doc! {"$inc": {"v": 1_i64}})
                            .await
                            .expect("update");
                    }
                }
            }
            round
        })
    };
    let progress = db.collection::<Document>("changeflow_snapshots");
    wait_until(Duration::from_secs(180), "both snapshots done", || async {
        let done = progress.count_documents(doc! {"done": true}).await.ok()?;
        (done == 2).then_some(())
    })
    .await;
    finished.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.await.expect("writer");
    eprintln!("the writer made {rounds} changes while the snapshots ran");
    wait_settled_and_counted(&db, Duration::from_secs(120), "after the snapshot").await;

    let expected: BTreeMap<i64, Option<i64>> = items
        .find(doc! {})
        .await
        .expect("find")
        .try_collect::<Vec<Document>>()
        .await
        .expect("items")
        .into_iter()
        .map(|d| {
            (
                d.get_i64("_id").expect("_id"),
                Some(d.get_i64("v").expect("v")),
            )
        })
        .collect();
    let present = expected.len();
    let records = consume_at_least(&topic, present).await;
    let folded = fold(&records);
    let live: BTreeMap<i64, Option<i64>> =
        folded.into_iter().filter(|(_, v)| v.is_some()).collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !live.contains_key(k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "keys never published: {missing:?}…");
    assert_eq!(live.len(), present, "deleted keys end with their delete");
    assert_eq!(live, expected, "the fold equals the collection");
    running.until(async {}).await.expect("stop");
}

/// How far the snapshot of `collection` got: (documents, done).
async fn progress(db: &mongodb::Database, collection: &str) -> Option<(i64, bool)> {
    let doc = db
        .collection::<Document>("changeflow_snapshots")
        .find_one(doc! {"collection": collection})
        .await
        .ok()??;
    Some((doc.get_i64("documents").ok()?, doc.get_bool("done").ok()?))
}

#[tokio::test]
async fn a_snapshot_killed_midway_continues_from_its_stored_position_repeating_at_most_one_chunk() {
    const DOCS: i64 = 60_000;
    const CHUNK: u32 = 1_000;
    let db_name = unique_name("snapkill");
    let db = mongo().await.database(&db_name);
    let items = db.collection::<Document>("items");
    let docs: Vec<Document> = (0..DOCS)
        .map(|i| doc! {"_id": i, "v": 0_i64, "pad": "x".repeat(200)})
        .collect();
    items.insert_many(docs).await.expect("items");
    let (config, topic) = items_config(&db_name, CHUNK);

    let mut first = Process::spawn(&config);
    let at_kill = wait_until(DEADLINE, "the snapshot to be under way", || async {
        progress(&db, "items").await.filter(|(n, _)| *n >= 10_000)
    })
    .await;
    // Into the next chunk: some of its records are out, its progress is not stored.
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.signal(libc::SIGKILL);
    first.wait_exit(DEADLINE).await;
    let stored = progress(&db, "items").await.expect("progress");
    assert!(!stored.1, "killed before the end: {stored:?}");

    let mut second = Process::spawn(&config);
    second.wait_healthy().await;
    wait_until(
        Duration::from_secs(120),
        "the snapshot to finish",
        || async { progress(&db, "items").await.filter(|(_, done)| *done) },
    )
    .await;
    second.stop_cleanly().await;

    let records = consume_at_least(&topic, DOCS as usize).await;
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut keys = HashSet::new();
    for record in &records {
        *ids.entry(header(record, "ce_id").expect("ce_id").to_owned())
            .or_default() += 1;
        keys.insert(rdkafka::Message::key(record).map(<[u8]>::to_vec));
    }
    let repeats = records.len() - ids.len();
    eprintln!(
        "killed at {} documents stored ({} seen), {} records for {DOCS} documents: {repeats} repeated",
        stored.0,
        at_kill.0,
        records.len()
    );
    assert_eq!(
        ids.len() as i64,
        DOCS,
        "one id per document: ids repeat exactly"
    );
    assert_eq!(keys.len() as i64, DOCS, "every document published");
    assert!(
        repeats <= CHUNK as usize,
        "{repeats} repeats: more than one chunk ({CHUNK}) read again"
    );
}

#[tokio::test]
async fn a_snapshot_after_a_live_run_leaves_the_counters_as_they_are() {
    let db_name = unique_name("snapcount");
    let db = mongo().await.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let config = config(&db_name);
    let running = run::start(Arc::new(config.clone()), StartAt::Now)
        .await
        .expect("start");
    running.ready(DEADLINE).await.expect("streams open");
    let docs: Vec<Document> = (0..300)
        .map(|i| payment(&format!("p-{i}"), i % 3, "PENDING"))
        .collect();
    payments.insert_many(docs).await.expect("payments");
    wait_settled_and_counted(&db, Duration::from_secs(60), "live").await;
    let (_, before) = outcomes_and_counters(&db).await;

    let out = run_cli(&config, &["snapshot", "--collections", "payments"]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("snapshot requested: {db_name}.payments")),
        "{}",
        out.stdout
    );
    wait_until(
        Duration::from_secs(60),
        "the snapshot to finish",
        || async { progress(&db, "payments").await.filter(|(_, done)| *done) },
    )
    .await;
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let mut observed = 0;
    consume_until(
        &kafka_brokers(),
        &topic,
        Duration::from_secs(60),
        Duration::from_secs(2),
        |r| {
            if header(r, "ce_type") == Some("changeflow.payment.observed.v1") {
                observed += 1;
            }
            observed >= 300
        },
    )
    .await;
    running.until(async {}).await.expect("stop");
    let (outcomes, after) = outcomes_and_counters(&db).await;
    assert_eq!(after, before, "a snapshot counts no payment again");
    assert_eq!(after, outcomes);
}

#[tokio::test]
async fn ids_of_mixed_types_are_all_copied_in_the_connectors_copy_existing_shape() {
    let db_name = unique_name("snapmixed");
    let db = mongo().await.database(&db_name);
    let items = db.collection::<Document>("items");
    // Numbers, strings, object ids, documents, booleans and dates: MongoDB orders them by
    // type first, and a `$gt` filter would stay within the first type.
    let ids: Vec<mongodb::bson::Bson> = vec![
        3_i64.into(),
        1.5_f64.into(),
        7_i32.into(),
        "b".into(),
        "a".into(),
        mongodb::bson::oid::ObjectId::new().into(),
        mongodb::bson::oid::ObjectId::new().into(),
        doc! {"x": 1}.into(),
        true.into(),
        false.into(),
        mongodb::bson::DateTime::from_millis(0).into(),
    ];
    let docs: Vec<Document> = ids
        .iter()
        .map(|id| doc! {"_id": id.clone(), "v": 0_i64})
        .collect();
    items.insert_many(docs).await.expect("items");
    let (config, topic) = items_config(&db_name, 2);
    let running = run::start(Arc::new(config), StartAt::Now)
        .await
        .expect("start");
    running.ready(DEADLINE).await.expect("streams open");
    wait_until(DEADLINE, "the snapshot to finish", || async {
        progress(&db, "items").await.filter(|(_, done)| *done)
    })
    .await;
    let records = consume_at_least(&topic, ids.len()).await;
    running.until(async {}).await.expect("stop");
    let mut keys = HashSet::new();
    for record in &records {
        let change: serde_json::Value =
            serde_json::from_slice(rdkafka::Message::payload(record).expect("value"))
                .expect("JSON");
        let mut fields: Vec<&str> = change
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["_id", "documentKey", "fullDocument", "ns", "operationType"],
            "{change}"
        );
        assert_eq!(change["_id"]["copyingData"], true, "{change}");
        assert_eq!(
            change["_id"]["_id"], change["documentKey"]["_id"],
            "{change}"
        );
        assert_eq!(change["operationType"], "insert");
        assert_eq!(
            change["ns"],
            serde_json::json!({"db": db_name, "coll": "items"})
        );
        assert_eq!(change["fullDocument"]["_id"], change["documentKey"]["_id"]);
        keys.insert(change["documentKey"].to_string());
    }
    assert_eq!(keys.len(), ids.len(), "every _id type copied: {keys:?}");
}

#[tokio::test]
async fn memories_that_exist_before_the_start_arrive_as_their_observed_kinds() {
    let db_name = unique_name("snapmemory");
    let db = mongo().await.database(&db_name);
    let now = mongodb::bson::DateTime::now();
    db.collection::<Document>("short_term_memory")
        .insert_one(doc! {"thread_id": "t-1", "user_id": "u-1", "messages": [],
        "summary": "so far", "created_at": now, "expires_at": now})
        .await
        .expect("thread");
    db.collection::<Document>("episodic_memory")
        .insert_one(
            doc! {"episode_id": "e-1", "thread_id": "t-1", "user_id": "u-1",
            "summary": "Planned a trip", "tool_calls": [], "outcome": "succeeded",
            "tags": ["travel"], "started_at": now, "ended_at": now},
        )
        .await
        .expect("episode");
    db.collection::<Document>("semantic_memory")
        .insert_one(doc! {"memory_id": "m-1", "user_id": "u-1", "type": "fact",
        "content": "Lives in Lisbon", "source_episode_id": "e-1", "strength": 0.5,
        "last_accessed_at": now, "created_at": now})
        .await
        .expect("memory");
    let mut config = crate::common::app::memory_config(&db_name);
    config.snapshot.mode = SnapshotMode::Initial;
    let topic = config.kafka.topic(&config.kafka.topics.memory);
    let running = run::start(Arc::new(config), StartAt::Now)
        .await
        .expect("start");
    running.ready(DEADLINE).await.expect("streams open");
    let records = consume_at_least(&topic, 3).await;
    running.until(async {}).await.expect("stop");
    let mut seen: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                header(r, "ce_type").unwrap_or("?").to_owned(),
                header(r, "ce_subject").unwrap_or("?").to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "changeflow.memory.episode_observed.v1".to_owned(),
                "e-1".to_owned()
            ),
            (
                "changeflow.memory.memory_observed.v1".to_owned(),
                "m-1".to_owned()
            ),
            (
                "changeflow.memory.thread_observed.v1".to_owned(),
                "t-1".to_owned()
            ),
        ]
    );
}
