//! The three handlers against the real replica set: conditional outcome, exactly-once
//! counters under duplicate and concurrent delivery, and the provider settling payments.

use std::str::FromStr;
use std::time::Duration;

use crate::common::{DEADLINE, within};
use changeflow::config::OutcomePolicy;
use changeflow::config::WatchedDatabase;
use changeflow::decode::payments;
use changeflow::domain::payments::{PaymentEvent, PaymentStatus};
use changeflow::domain::{DomainEvent, EventKind};
use changeflow::pipeline::target::{Input, Routed, Target};
use changeflow::source::{RawChange, StartAt};
use changeflow::targets::counters::{Applied, COUNTERS, Counters, PROCESSED_EVENTS};
use changeflow::targets::provider_simulator::ProviderSimulator;
use changeflow::targets::status_updater::StatusUpdater;
use futures::StreamExt;
use mongodb::bson::{Decimal128, Document, Uuid, doc};
use mongodb::change_stream::ChangeStream;

const KETTLE: &str = "d3b07384-d9a0-4c3b-8f1e-1b2c3d4e5f60";

fn payment(id: impl Into<mongodb::bson::Bson>) -> Document {
    doc! {
        "_id": id.into(),
        "amount": Decimal128::from_str("59.00").unwrap(),
        "status": "PENDING",
        "product": {"code": KETTLE, "name": "Pour-over kettle"},
    }
}

async fn next_event(stream: &mut ChangeStream<RawChange>) -> PaymentEvent {
    let raw = within(DEADLINE, "a payment change", stream.next())
        .await
        .expect("stream ended")
        .expect("reading the stream");
    payments::decode(&raw)
        .expect("decodes")
        .expect("a payment event")
}

/// A fresh database with a change stream on its `payments` collection, opened now.
async fn watched_payments(
    prefix: &str,
) -> (mongodb::Client, mongodb::Database, ChangeStream<RawChange>) {
    let client = crate::common::mongo().await;
    let db = client.database(&crate::common::unique_name(prefix));
    let target = WatchedDatabase {
        database: db.name().to_owned(),
        collections: vec!["payments".into()],
    };
    let stream = crate::common::open_stream(&client, &target, &StartAt::Now).await;
    (client, db, stream)
}

async fn status_of(db: &mongodb::Database, key: &Document) -> String {
    let doc = db
        .collection::<Document>("payments")
        .find_one(key.clone())
        .await
        .unwrap()
        .expect("payment exists");
    doc.get_str("status").unwrap().to_owned()
}

#[tokio::test]
async fn status_updater_only_moves_pending_payments() {
    let client = crate::common::mongo().await;
    let db = client.database(&crate::common::unique_name("settle"));
    let id = Uuid::new();
    db.collection::<Document>("payments")
        .insert_one(payment(id))
        .await
        .unwrap();
    let key = doc! {"_id": id};
    let updater = StatusUpdater::new(&db, "payments");
    updater
        .settle(&key, PaymentStatus::Confirmed)
        .await
        .unwrap();
    assert_eq!(status_of(&db, &key).await, "CONFIRMED");
    updater.settle(&key, PaymentStatus::Failed).await.unwrap();
    assert_eq!(
        status_of(&db, &key).await,
        "CONFIRMED",
        "a late or replayed outcome changes nothing"
    );
    assert!(updater.settle(&key, PaymentStatus::Pending).await.is_err());
    db.drop().await.unwrap();
}

#[tokio::test]
async fn provider_settles_requested_payments_and_counters_count_each_outcome_once() {
    let (client, db, mut stream) = watched_payments("flow").await;
    let db_name = db.name().to_owned();
    let coll = db.collection::<Document>("payments");
    coll.insert_one(payment("p-1")).await.unwrap();
    coll.insert_one(payment("p-2")).await.unwrap();

    let provider = ProviderSimulator::new(
        Duration::ZERO,
        OutcomePolicy::Alternate,
        16,
        StatusUpdater::new(&db, "payments"),
    );
    let counters = Counters::new(&client, &db_name, Duration::from_secs(3600));
    counters.ensure_indexes().await.unwrap();

    for _ in 0..2 {
        let requested = next_event(&mut stream).await;
        assert_eq!(requested.kind(), EventKind::PaymentRequested);
        assert!(
            provider.wants(Input::Typed(requested.kind()))
                && !counters.wants(Input::Typed(requested.kind()))
        );
        provider
            .handle(Routed::Typed(&DomainEvent::Payment(requested.clone())))
            .await
            .unwrap();
    }
    // Alternate: the first call fails, the second confirms.
    assert_eq!(status_of(&db, &doc! {"_id": "p-1"}).await, "FAILED");
    assert_eq!(status_of(&db, &doc! {"_id": "p-2"}).await, "CONFIRMED");

    let failed = next_event(&mut stream).await;
    let confirmed = next_event(&mut stream).await;
    assert_eq!(failed.kind(), EventKind::PaymentFailed);
    assert_eq!(confirmed.kind(), EventKind::PaymentConfirmed);

    let PaymentEvent::Confirmed(snapshot) = &confirmed else {
        unreachable!()
    };
    // Delivered three times, twice at once: counted once.
    assert_eq!(
        counters
            .apply(snapshot, "successfulPayments")
            .await
            .unwrap(),
        Applied::Counted
    );
    let (a, b) = tokio::join!(
        counters.apply(snapshot, "successfulPayments"),
        counters.apply(snapshot, "successfulPayments")
    );
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (Applied::Duplicate, Applied::Duplicate)
    );
    counters
        .handle(Routed::Typed(&DomainEvent::Payment(failed.clone())))
        .await
        .unwrap();
    counters
        .handle(Routed::Typed(&DomainEvent::Payment(failed.clone())))
        .await
        .unwrap();

    let counter = db
        .collection::<Document>(COUNTERS)
        .find_one(doc! {"_id": KETTLE})
        .await
        .unwrap()
        .expect("counter document");
    assert_eq!(counter.get_i64("successfulPayments"), Ok(1));
    assert_eq!(counter.get_i64("failedPayments"), Ok(1));
    assert_eq!(counter.get_str("productName"), Ok("Pour-over kettle"));
    let processed = db
        .collection::<Document>(PROCESSED_EVENTS)
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(processed, 2);
    db.drop().await.unwrap();
}

#[tokio::test]
async fn concurrent_distinct_events_are_all_counted() {
    let (client, db, mut stream) = watched_payments("many").await;
    let db_name = db.name().to_owned();
    let coll = db.collection::<Document>("payments");
    let n = 20;
    for i in 0..n {
        coll.insert_one(payment(format!("p-{i}"))).await.unwrap();
        coll.update_one(
            doc! {"_id": format!("p-{i}")},
            doc! {"$set": {"status": "CONFIRMED"}},
        )
        .await
        .unwrap();
    }
    let mut confirmed = Vec::new();
    while confirmed.len() < n {
        let event = next_event(&mut stream).await;
        if event.kind() == EventKind::PaymentConfirmed {
            confirmed.push(DomainEvent::Payment(event));
        }
    }
    let counters = Counters::new(&client, &db_name, Duration::from_secs(3600));
    // All on one product document at once: write conflicts must be retried, not lost.
    let results =
        futures::future::join_all(confirmed.iter().map(|e| counters.handle(Routed::Typed(e))))
            .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let counter = db
        .collection::<Document>(COUNTERS)
        .find_one(doc! {"_id": KETTLE})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counter.get_i64("successfulPayments"), Ok(n as i64));
    db.drop().await.unwrap();
}
