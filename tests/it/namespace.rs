//! A watched collection renamed or dropped and its database dropped: each is surfaced as
//! an event of its own (logged, recorded in changeflow_namespace_events), the stream goes
//! on, and documents written into the recreated collection are still processed. Each is
//! published to the namespace topic too.

use crate::common::app::{insert_pending, kafka_only_config, start_ready};
use crate::common::records::{consume, required};
use crate::common::schemas::committed_event_schema;
use crate::common::{DEADLINE, unique_name, wait_until};
use changeflow::events::catalog::by_schema_id;
use changeflow::source::position::{Bound, parse_time};
use changeflow::state::namespace_log::COLLECTION;
use futures::TryStreamExt;
use mongodb::bson::{Document, Timestamp, doc};
use rdkafka::Message;

#[tokio::test]
async fn drops_and_renames_are_surfaced_and_the_stream_goes_on() {
    let client = crate::common::mongo().await;
    let db_name = unique_name("ns_events");
    let mut config = kafka_only_config(&db_name);
    // State lives apart: this test drops the watched database.
    config.checkpoint.database = format!("{db_name}_state");
    let state = client.database(&config.checkpoint.database);
    let running = start_ready(&config).await;
    let db = client.database(&db_name);
    let payments = db.collection::<Document>("payments");

    let recorded = |n: usize| {
        let log = state.collection::<Document>(COLLECTION);
        async move {
            wait_until(DEADLINE, &format!("{n} namespace events"), || {
                let log = log.clone();
                async move {
                    let events: Vec<Document> = log
                        .find(doc! {})
                        .sort(doc! {"cluster_time": 1})
                        .await
                        .ok()?
                        .try_collect()
                        .await
                        .ok()?;
                    (events.len() >= n).then_some(events)
                }
            })
            .await
        }
    };

    insert_pending(&payments, "p1", 1, 1).await;
    client
        .database("admin")
        .run_command(doc! {
            "renameCollection": format!("{db_name}.payments"),
            "to": format!("{db_name}.payments_old"),
        })
        .await
        .expect("renaming the watched collection");
    insert_pending(&payments, "p2", 1, 1).await;
    payments
        .drop()
        .await
        .expect("dropping the watched collection");
    insert_pending(&payments, "p3", 1, 1).await;
    let events = recorded(2).await;
    assert_eq!(
        events[0].get_str("kind"),
        Ok("collection_renamed"),
        "{events:?}"
    );
    assert_eq!(
        events[0].get_str("to"),
        Ok(format!("{db_name}.payments_old").as_str())
    );
    assert_eq!(
        events[1].get_str("kind"),
        Ok("collection_dropped"),
        "{events:?}"
    );
    running
        .ready(DEADLINE)
        .await
        .expect("still running after drop and rename");

    db.drop().await.expect("dropping the watched database");
    let events = recorded(5).await;
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e.get_str("kind").ok())
        .collect();
    assert_eq!(
        kinds[2..],
        [
            "collection_dropped",
            "database_dropped",
            "stream_invalidated"
        ],
        "{events:?}"
    );
    insert_pending(&payments, "p4", 1, 1).await;
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let records = consume(&crate::common::kafka_brokers(), &topic, 4).await;
    let mut subjects: Vec<&str> = records.iter().map(|m| required(m, "ce_subject")).collect();
    subjects.sort_unstable();
    assert_eq!(subjects, ["p1-0", "p2-0", "p3-0", "p4-0"]);
    running
        .ready(DEADLINE)
        .await
        .expect("still running after the database drop");

    // Each is also published, as a CloudEvent of its own type, with the recorded id.
    let topic = config.kafka.topic(&config.kafka.topics.namespace);
    let mut published = consume(&crate::common::kafka_brokers(), &topic, 5).await;
    let time = |m: &rdkafka::message::OwnedMessage| -> Timestamp {
        let data: serde_json::Value =
            serde_json::from_slice(m.payload().expect("a value")).expect("JSON data");
        let schema = by_schema_id(required(m, "ce_dataschema")).expect("a published type");
        let validator =
            crate::common::schemas::validator(&committed_event_schema(&schema.file_name()));
        assert!(validator.is_valid(&data), "{data}");
        assert_eq!(data["stream"], db_name.as_str(), "{data}");
        let at = data["clusterTime"].as_str().expect("clusterTime");
        parse_time(at, Bound::Start).expect("<seconds>.<increment>")
    };
    published.sort_by_key(|m| time(m));
    let types: Vec<&str> = published.iter().map(|m| required(m, "ce_type")).collect();
    assert_eq!(
        types,
        [
            "changeflow.namespace.collection_renamed.v1",
            "changeflow.namespace.collection_dropped.v1",
            "changeflow.namespace.collection_dropped.v1",
            "changeflow.namespace.database_dropped.v1",
            "changeflow.namespace.stream_invalidated.v1",
        ]
    );
    let ids: Vec<&str> = published.iter().map(|m| required(m, "ce_id")).collect();
    let recorded_ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.get_str("_id").ok())
        .collect();
    assert_eq!(ids, recorded_ids, "the same events, the same ids");
    assert_eq!(
        std::str::from_utf8(published[0].key().expect("a key")).ok(),
        Some(format!("{db_name}.payments").as_str())
    );
    running.until(async {}).await.expect("graceful stop");
    let _ = state.drop().await;
}
