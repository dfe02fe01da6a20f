//! Snapshots against the replica set and the broker: documents that exist before the
//! first start reach Kafka and the handlers, in the same ordered flow as the changes a
//! writer makes meanwhile, so folding each key's records gives the collection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::common::app::{config, payment, wait_settled_and_counted};
use crate::common::records::{consume_until, header};
use crate::common::{DEADLINE, kafka_brokers, mongo, unique_name, wait_until};
use changeflow::cmd::run;
use changeflow::config::SnapshotMode;
use changeflow::config::kafka::RawCollection;
use changeflow::source::StartAt;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

const ITEMS: i64 = 20_000;
const PAYMENTS: usize = 3_000;

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

    let mut config = config(&db_name);
    config.snapshot.mode = SnapshotMode::Initial;
    config.snapshot.chunk_size = 500;
    config.watch[0].collections.push("items".into());
    config.kafka.raw = vec![RawCollection {
        database: db_name.clone(),
        collection: "items".into(),
        topic: "items".into(),
    }];
    let topic = config.kafka.topic("items");
    let running = run::start(Arc::new(config), StartAt::Now)
        .await
        .expect("start");
    running.ready(DEADLINE).await.expect("streams open");

    // A writer bumps, inserts and deletes items while the snapshot runs.
    let writer = {
        let items = items.clone();
        let payments = payments.clone();
        tokio::spawn(async move {
            // A fixed sequence (an LCG) scattered over the keys.
            let mut seed: u64 = 7;
            let mut next = ITEMS;
            for round in 0..1_500 {
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
        })
    };
    writer.await.expect("writer");
    let progress = db.collection::<Document>("changeflow_snapshots");
    wait_until(Duration::from_secs(120), "both snapshots done", || async {
        let done = progress.count_documents(doc! {"done": true}).await.ok()?;
        (done == 2).then_some(())
    })
    .await;
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
    let mut count = 0usize;
    let records = consume_until(
        &kafka_brokers(),
        &topic,
        Duration::from_secs(120),
        Duration::from_secs(3),
        |_| {
            count += 1;
            count >= present
        },
    )
    .await;
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
