//! Which document an update event carries: with post-images on, the state the change left,
//! byte for byte the same on every re-read and replay; without them a lookup, marked.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::app::{Process, config, run_cli};
use crate::common::records::{consume_until, header};
use crate::common::{DEADLINE, kafka_brokers, mongo, unique_name};
use changeflow::config::WatchedDatabase;
use changeflow::config::kafka::RawCollection;
use changeflow::source::position::cluster_time_text;
use mongodb::bson::{Document, Timestamp, doc};
use rdkafka::Message;

/// Walks document 1 of `collection` through counter values `from..=to`, one update each.
async fn walk(collection: &mongodb::Collection<Document>, values: std::ops::RangeInclusive<i64>) {
    for value in values {
        collection
            .update_one(doc! {"_id": 1}, doc! {"$set": {"counter": value}})
            .await
            .expect("update");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn with_post_images_every_copy_of_an_update_is_the_state_it_left_and_lookups_are_marked() {
    let exact = unique_name("images");
    let looked = format!("{exact}_lookup");
    let client = mongo().await;
    let walked = client.database(&exact);
    walked
        .create_collection("walk")
        .change_stream_pre_and_post_images(
            mongodb::options::ChangeStreamPreAndPostImages::builder()
                .enabled(true)
                .build(),
        )
        .await
        .expect("collection with post-images");
    walked
        .create_collection("payments")
        .change_stream_pre_and_post_images(
            mongodb::options::ChangeStreamPreAndPostImages::builder()
                .enabled(true)
                .build(),
        )
        .await
        .expect("payments with post-images");
    let mut config = config(&exact);
    config.watch = vec![
        WatchedDatabase {
            database: exact.clone(),
            // Payments, as the configuration wants them watched, keep post-images too.
            collections: vec!["walk".into(), "payments".into()],
        },
        WatchedDatabase {
            database: looked.clone(),
            collections: vec!["walk".into()],
        },
    ];
    config.kafka.raw = [&exact, &looked]
        .into_iter()
        .map(|db| RawCollection {
            database: db.clone(),
            collection: "walk".into(),
            topic: format!("walk_{}", if *db == exact { "exact" } else { "lookup" }),
        })
        .collect();
    let exact_topic = config.kafka.topic("walk_exact");
    let lookup_topic = config.kafka.topic("walk_lookup");
    let exact_walk = walked.collection::<Document>("walk");
    let lookup_walk = client.database(&looked).collection::<Document>("walk");

    let mut first = Process::spawn(&config);
    first.wait_healthy().await;
    let started: Timestamp = {
        let reply = walked.run_command(doc! {"ping": 1}).await.expect("ping");
        reply
            .get_timestamp("operationTime")
            .or_else(|_| {
                reply
                    .get_document("$clusterTime")
                    .and_then(|c| c.get_timestamp("clusterTime"))
            })
            .expect("cluster time")
    };
    for walk_of in [&exact_walk, &lookup_walk] {
        walk_of
            .insert_one(doc! {"_id": 1, "counter": 0_i64})
            .await
            .expect("insert");
    }
    walk(&exact_walk, 1..=4).await;
    walk(&lookup_walk, 1..=4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.signal(libc::SIGKILL);
    first.wait_exit(DEADLINE).await;
    walk(&exact_walk, 5..=8).await;
    walk(&lookup_walk, 5..=8).await;
    let mut second = Process::spawn(&config);
    second.wait_healthy().await;
    // Both streams caught up: the last update of each is out.
    let last = |topic: String| async move {
        consume_until(
            &kafka_brokers(),
            &topic,
            DEADLINE,
            Duration::from_secs(2),
            |r| {
                let change: serde_json::Value =
                    serde_json::from_slice(r.payload().unwrap_or_default()).unwrap_or_default();
                change["updateDescription"]["updatedFields"]["counter"] == 8
            },
        )
        .await
    };
    last(exact_topic.clone()).await;
    last(lookup_topic.clone()).await;
    second.stop_cleanly().await;

    // A replay re-reads the whole walk: a second copy of every change.
    let out = run_cli(
        &config,
        &[
            "replay",
            "--stream",
            &exact,
            "--from-time",
            &cluster_time_text(started),
            "--to",
            "kafka",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let records = last(exact_topic).await;
    let mut copies: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for record in &records {
        assert_eq!(
            header(record, "ce_fulldocument"),
            None,
            "post-images are not lookups"
        );
        copies
            .entry(header(record, "ce_id").expect("ce_id").to_owned())
            .or_default()
            .push(record.payload().expect("value").to_vec());
    }
    let mut updates = 0;
    for (id, values) in &copies {
        assert!(
            values.windows(2).all(|w| w[0] == w[1]),
            "{id}: copies differ"
        );
        let change: serde_json::Value = serde_json::from_slice(&values[0]).expect("JSON");
        if change["operationType"] == "update" {
            updates += 1;
            assert_eq!(
                change["fullDocument"]["counter"],
                change["updateDescription"]["updatedFields"]["counter"],
                "{id}: the document is the state the change left"
            );
        }
    }
    assert_eq!(updates, 8, "every update published");
    assert!(
        copies.values().all(|v| v.len() >= 2),
        "the replay repeated every change: {:?}",
        copies.values().map(Vec::len).collect::<Vec<_>>()
    );

    let records = last(lookup_topic).await;
    for record in &records {
        let change: serde_json::Value =
            serde_json::from_slice(record.payload().expect("value")).expect("JSON");
        let marked = header(record, "ce_fulldocument");
        match change["operationType"].as_str() {
            Some("update") => assert_eq!(marked, Some("lookup"), "{change}"),
            _ => assert_eq!(marked, None, "{change}"),
        }
    }
}
