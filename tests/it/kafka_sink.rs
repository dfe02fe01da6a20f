//! Payment events published to a real broker: valid CloudEvents whose data validates against
//! the schema `ce_dataschema` names, one partition and stream order per payment, and records
//! the broker refuses for good in the dead-letter topic while the next event still goes out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::common::app::{config, insert_pending, kafka_only_config, payment, wait_all_settled};
use crate::common::records::{self, header, required};
use crate::common::schemas::{self, committed_event_schema};
use crate::common::{DEADLINE, kafka_brokers, mongo, unique_name, within};
use changeflow::cmd::run;
use changeflow::domain::EventId;
use changeflow::events::catalog::by_schema_id;
use changeflow::source::{self, RawChange, StartAt};
use changeflow::targets::kafka::dead_letter_headers;
use futures::StreamExt;
use mongodb::bson::{Document, doc};
use mongodb::change_stream::ChangeStream;
use rdkafka::message::{Message, OwnedMessage};

/// Reads `count` records of `topic` on the suite's broker.
async fn consume(topic: &str, count: usize) -> Vec<OwnedMessage> {
    records::consume(&kafka_brokers(), topic, count).await
}

/// The committed schema whose `$id` is `id`, as a validator.
fn schema_validator(id: &str) -> jsonschema::Validator {
    let event_type = by_schema_id(id)
        .unwrap_or_else(|| panic!("ce_dataschema `{id}` names no committed schema"));
    let schema = committed_event_schema(&event_type.file_name());
    assert_eq!(schema["$id"], id, "the file's $id is the header's");
    schemas::validator(&schema)
}

/// The next change `stream` reads, within the deadline.
async fn next_change(stream: &mut ChangeStream<RawChange>, what: &str) -> RawChange {
    within(DEADLINE, what, stream.next())
        .await
        .expect("stream open")
        .expect("a change")
}

/// The changed document's string `_id`.
fn document_id(change: &RawChange) -> &str {
    change
        .get_document("documentKey")
        .and_then(|k| k.get_str("_id"))
        .expect("document key")
}

#[tokio::test]
async fn every_event_of_the_payment_flow_is_a_valid_cloudevent_on_its_topic() {
    let db_name = unique_name("ce");
    let db = mongo().await.database(&db_name);
    let config = config(&db_name);
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let running = run::start(Arc::new(config), StartAt::Now).await.unwrap();
    running.ready(DEADLINE).await.unwrap();

    // Alternate policy: 3 confirmed, 3 failed; 6 requested + 6 settled events.
    insert_pending(&db.collection("payments"), "pay", 6, 0).await;
    wait_all_settled(&db, DEADLINE).await;
    let records = consume(&topic, 12).await;
    running.until(async {}).await.unwrap();

    let mut ids = HashSet::new();
    let mut types: HashMap<String, usize> = HashMap::new();
    for record in &records {
        assert_eq!(required(record, "ce_specversion"), "1.0");
        let id = required(record, "ce_id");
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "ce_id `{id}`"
        );
        assert!(ids.insert(id.to_owned()), "ce_id {id} seen twice");
        assert_eq!(
            required(record, "ce_source"),
            format!("/mongodb/{db_name}/payments")
        );
        let time = required(record, "ce_time");
        assert!(
            mongodb::bson::DateTime::parse_rfc3339_str(time).is_ok(),
            "ce_time `{time}` is RFC 3339"
        );
        assert_eq!(required(record, "content-type"), "application/json");
        let subject = required(record, "ce_subject");
        assert_eq!(record.key(), Some(subject.as_bytes()), "key = subject");
        let data: serde_json::Value =
            serde_json::from_slice(record.payload().expect("a value")).expect("JSON value");
        assert_eq!(data["paymentId"], subject);
        let errors: Vec<String> = schema_validator(required(record, "ce_dataschema"))
            .iter_errors(&data)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{data}: {errors:?}");
        *types
            .entry(required(record, "ce_type").to_owned())
            .or_default() += 1;
    }
    let count = |t: &str| types.get(t).copied().unwrap_or(0);
    assert_eq!(count("changeflow.payment.requested.v1"), 6, "{types:?}");
    assert_eq!(count("changeflow.payment.confirmed.v1"), 3, "{types:?}");
    assert_eq!(count("changeflow.payment.failed.v1"), 3, "{types:?}");
}

#[tokio::test]
async fn updates_of_one_payment_arrive_on_one_partition_in_stream_order() {
    let db_name = unique_name("order");
    let client = mongo().await;
    let payments = client.database(&db_name).collection::<Document>("payments");
    let config = kafka_only_config(&db_name);
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    // The stream order, read independently: the ids the events must carry, in order.
    let mut watch = source::open(&client, &config.watch[0], &config.engine, &StartAt::Now)
        .await
        .unwrap();
    let running = run::start(Arc::new(config.clone()), StartAt::Now)
        .await
        .unwrap();
    running.ready(DEADLINE).await.unwrap();

    payments
        .insert_one(payment("hot", 0, "PENDING"))
        .await
        .unwrap();
    for step in 0..50 {
        payments
            .update_one(doc! {"_id": "hot"}, doc! {"$set": {"step": step}})
            .await
            .unwrap();
        // Another payment's events interleave with the hot one's.
        payments
            .insert_one(payment(&format!("cold-{step}"), 1, "PENDING"))
            .await
            .unwrap();
    }
    let mut expected = Vec::new();
    while expected.len() < 51 {
        let change = next_change(&mut watch, "the test's own change stream").await;
        if document_id(&change) == "hot" {
            let data = change
                .get_document("_id")
                .and_then(|t| t.get_str("_data"))
                .expect("resume token");
            expected.push(EventId::from_token_data(data).to_string());
        }
    }
    let records = consume(&topic, 101).await;
    running.until(async {}).await.unwrap();

    let hot: Vec<&OwnedMessage> = records
        .iter()
        .filter(|r| r.key() == Some(b"hot".as_slice()))
        .collect();
    assert_eq!(hot.len(), 51, "1 insert + 50 updates");
    let partitions: HashSet<i32> = hot.iter().map(|r| r.partition()).collect();
    assert_eq!(
        partitions.len(),
        1,
        "one key, one partition: {partitions:?}"
    );
    let got: Vec<String> = hot
        .iter()
        .map(|r| required(r, "ce_id").to_owned())
        .collect();
    assert_eq!(got, expected, "the payment's events in stream order");
    assert_eq!(
        required(hot[0], "ce_type"),
        "changeflow.payment.requested.v1"
    );
    assert!(
        hot[1..]
            .iter()
            .all(|r| required(r, "ce_type") == "changeflow.payment.updated.v1")
    );
}

#[tokio::test]
async fn a_record_too_large_goes_to_the_dead_letter_topic_and_the_next_is_delivered() {
    let db_name = unique_name("dlq");
    let db = mongo().await.database(&db_name);
    let mut config = kafka_only_config(&db_name);
    // librdkafka refuses records above this size before they reach the broker.
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "2000".into());
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let dlq = config.kafka.topic(&config.kafka.topics.dead_letters);
    let running = run::start(Arc::new(config), StartAt::Now).await.unwrap();
    running.ready(DEADLINE).await.unwrap();

    let payments = db.collection::<Document>("payments");
    let mut huge = payment("huge", 0, "PENDING");
    huge.insert(
        "product",
        doc! {"code": "product-0", "name": "x".repeat(5000)},
    );
    payments.insert_one(huge).await.unwrap();
    payments
        .insert_one(payment("after-huge", 0, "PENDING"))
        .await
        .unwrap();

    let delivered = consume(&topic, 1).await;
    let dead = consume(&dlq, 1).await;
    running.until(async {}).await.unwrap();

    assert_eq!(delivered[0].key(), Some(b"after-huge".as_slice()));
    let letter = &dead[0];
    assert_eq!(letter.key(), Some(b"huge".as_slice()));
    let reason = required(letter, dead_letter_headers::REASON);
    assert!(
        reason.to_lowercase().contains("too large"),
        "reason `{reason}`"
    );
    assert_eq!(required(letter, dead_letter_headers::ORIGINAL_TOPIC), topic);
    assert_eq!(
        required(letter, dead_letter_headers::EVENT_ID),
        required(letter, "ce_id")
    );
    assert_eq!(
        required(letter, dead_letter_headers::VALUE_DROPPED),
        "too large"
    );
    assert_eq!(required(letter, "ce_subject"), "huge");
}

#[tokio::test]
async fn when_even_the_dead_letter_topic_refuses_the_stream_stops_before_the_event() {
    let db_name = unique_name("dlqfail");
    let client = mongo().await;
    let db = client.database(&db_name);
    let mut config = kafka_only_config(&db_name);
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "2000".into());
    let running = run::start(Arc::new(config.clone()), StartAt::Now)
        .await
        .unwrap();
    running.ready(DEADLINE).await.unwrap();

    // The key (the payment id) alone is over the limit: the dead letter cannot be written.
    let long_id = "k".repeat(3000);
    db.collection::<Document>("payments")
        .insert_one(payment(&long_id, 0, "PENDING"))
        .await
        .unwrap();
    let error = within(
        DEADLINE,
        "the engine to stop",
        running.until(std::future::pending()),
    )
    .await
    .expect_err("the stream must stop rather than skip the event");
    let message = format!("{error:#}");
    assert!(
        message.contains("stopping instead of skipping"),
        "a clear error: {message}"
    );

    // The checkpoint did not pass the event: reading after it starts with that insert.
    let checkpoint = changeflow::state::checkpoints::CheckpointStore::new(&db)
        .load(&db_name)
        .await
        .unwrap()
        .expect("a checkpoint");
    let mut after = source::open(
        &client,
        &config.watch[0],
        &config.engine,
        &StartAt::After(checkpoint.token),
    )
    .await
    .unwrap();
    let first = next_change(&mut after, "the change after the checkpoint").await;
    assert_eq!(
        document_id(&first),
        long_id,
        "the refused event comes again after a restart"
    );
}

#[tokio::test]
async fn structured_mode_sends_the_whole_cloudevent_as_the_value() {
    let db_name = unique_name("structured");
    let db = mongo().await.database(&db_name);
    let mut config = kafka_only_config(&db_name);
    config.kafka.content_mode = changeflow::config::kafka::ContentMode::Structured;
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let running = run::start(Arc::new(config), StartAt::Now).await.unwrap();
    running.ready(DEADLINE).await.unwrap();
    db.collection::<Document>("payments")
        .insert_one(payment("s-1", 0, "PENDING"))
        .await
        .unwrap();
    let records = consume(&topic, 1).await;
    running.until(async {}).await.unwrap();

    let record = &records[0];
    assert_eq!(
        required(record, "content-type"),
        "application/cloudevents+json"
    );
    assert_eq!(
        header(record, "ce_id"),
        None,
        "attributes live in the value"
    );
    let event: serde_json::Value =
        serde_json::from_slice(record.payload().expect("a value")).expect("JSON value");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "changeflow.payment.requested.v1");
    assert_eq!(event["subject"], "s-1");
    assert_eq!(event["datacontenttype"], "application/json");
    let id = event["dataschema"].as_str().expect("dataschema");
    assert!(schema_validator(id).is_valid(&event["data"]), "{event}");
}

#[tokio::test]
async fn raw_collections_publish_the_change_itself_keyed_by_document_key() {
    let db_name = unique_name("raw");
    let db = mongo().await.database(&db_name);
    let mut config = kafka_only_config(&db_name);
    config.watch[0].collections.push("orders".into());
    config.kafka.raw = vec![changeflow::config::kafka::RawCollection {
        database: db_name.clone(),
        collection: "orders".into(),
        topic: "orders".into(),
    }];
    let topic = config.kafka.topic("orders");
    let running = run::start(Arc::new(config), StartAt::Now).await.unwrap();
    running.ready(DEADLINE).await.unwrap();

    let orders = db.collection::<Document>("orders");
    orders
        .insert_one(doc! {"_id": 7_i64, "total": 9.5, "at": mongodb::bson::DateTime::from_millis(1_700_000_000_000)})
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": 7_i64}, doc! {"$set": {"total": 12.0}})
        .await
        .unwrap();
    orders.delete_one(doc! {"_id": 7_i64}).await.unwrap();
    let records = consume(&topic, 3).await;
    running.until(async {}).await.unwrap();

    let mut ids = HashSet::new();
    let mut operations = Vec::new();
    for record in &records {
        assert_eq!(
            record.key(),
            Some(br#"{"_id":7}"#.as_slice()),
            "key = documentKey"
        );
        assert!(
            ids.insert(required(record, "ce_id").to_owned()),
            "ids are unique"
        );
        let change: serde_json::Value =
            serde_json::from_slice(record.payload().expect("a value")).expect("JSON");
        assert_eq!(
            change["ns"],
            serde_json::json!({"db": db_name, "coll": "orders"})
        );
        assert!(
            change["_id"]["_data"].is_string(),
            "the resume token is kept"
        );
        operations.push(change["operationType"].as_str().unwrap_or("?").to_owned());
        if change["operationType"] == "insert" {
            assert_eq!(
                change["fullDocument"],
                serde_json::json!({"_id": 7, "total": 9.5, "at": {"$date": "2023-11-14T22:13:20Z"}}),
                "relaxed Extended JSON"
            );
        }
    }
    assert_eq!(
        operations,
        ["insert", "update", "delete"],
        "one key, stream order"
    );
}

#[tokio::test]
async fn a_missing_topic_stops_the_start_with_a_clear_error_when_creation_is_off() {
    let db_name = unique_name("notopic");
    let mut config = kafka_only_config(&db_name);
    config.kafka.create_topics = false;
    let error = match run::start(Arc::new(config), StartAt::Now).await {
        Ok(_) => panic!("the start must fail: the topics do not exist"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains(&format!("{db_name}.changeflow.payments"))
            && error.contains("does not exist")
            && error.contains("create_topics"),
        "{error}"
    );
}
