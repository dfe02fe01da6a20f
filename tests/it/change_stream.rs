//! The replica set delivers changes to a stream opened before them, with full documents and
//! resume tokens, and a stream resumed with `startAfter` yields exactly what followed.

use std::str::FromStr;

use crate::common::{DEADLINE, within};
use changeflow::config::WatchedDatabase;
use changeflow::source::{self, RawChange, StartAt};
use futures::StreamExt;
use mongodb::bson::{self, Bson, Decimal128, Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ResumeToken;
use mongodb::options::WriteConcern;

fn watched(database: &str, collections: &[&str]) -> WatchedDatabase {
    WatchedDatabase {
        database: database.to_owned(),
        collections: collections.iter().map(|c| c.to_string()).collect(),
    }
}

async fn next_change(stream: &mut ChangeStream<RawChange>) -> Document {
    let item = within(DEADLINE, "the next change event", stream.next())
        .await
        .expect("change stream ended");
    let raw = item.expect("reading the change stream");
    Document::try_from(raw.as_ref()).expect("change event is valid BSON")
}

fn token_of(event: &Document) -> ResumeToken {
    let id = event.get("_id").expect("change event has an _id").clone();
    bson::from_bson(id).expect("_id is a resume token")
}

#[tokio::test]
async fn insert_reaches_a_stream_opened_before_it_with_full_document_and_token() {
    let client = crate::common::mongo().await;
    let db_name = crate::common::unique_name("insert");
    let db = client.database(&db_name);
    let mut stream =
        crate::common::open_stream(&client, &watched(&db_name, &["payments"]), &StartAt::Now).await;

    // Written first, but to an unwatched collection: the server-side filter must drop it.
    db.collection::<Document>("audit")
        .insert_one(doc! {"note": "not watched"})
        .await
        .unwrap();
    let payment = doc! {
        "_id": "a1b2c3",
        "amount": Decimal128::from_str("49.80").unwrap(),
        "status": "PENDING",
        "product": {"code": "p-1", "name": "Pour-over kettle"},
    };
    db.collection::<Document>("payments")
        .insert_one(payment.clone())
        .write_concern(WriteConcern::majority())
        .await
        .unwrap();

    let event = next_change(&mut stream).await;
    assert_eq!(event.get_str("operationType"), Ok("insert"), "{event}");
    let ns = event.get_document("ns").unwrap();
    assert_eq!(ns.get_str("db"), Ok(db_name.as_str()));
    assert_eq!(
        ns.get_str("coll"),
        Ok("payments"),
        "the audit insert leaked through"
    );
    assert_eq!(event.get_document("fullDocument"), Ok(&payment));
    let token_data = event
        .get_document("_id")
        .and_then(|id| id.get_str("_data"))
        .expect("resume token carries _data");
    assert!(!token_data.is_empty());
    let stream_token = stream
        .resume_token()
        .expect("stream reports a resume token");
    assert_eq!(stream_token, token_of(&event));

    db.drop().await.unwrap();
}

#[tokio::test]
async fn start_after_a_token_yields_exactly_the_events_after_it() {
    let client = crate::common::mongo().await;
    let db_name = crate::common::unique_name("resume");
    let payments = client.database(&db_name).collection::<Document>("payments");
    let target = watched(&db_name, &["payments"]);
    let mut first = crate::common::open_stream(&client, &target, &StartAt::Now).await;
    for seq in 0..5 {
        payments.insert_one(doc! {"seq": seq}).await.unwrap();
    }
    let mut tokens = Vec::new();
    for expected in 0..5 {
        let event = next_change(&mut first).await;
        let seq = event.get_document("fullDocument").unwrap().get_i32("seq");
        assert_eq!(seq, Ok(expected), "events arrive in write order");
        tokens.push(token_of(&event));
    }
    drop(first);
    payments.insert_one(doc! {"seq": 5}).await.unwrap();

    let mut resumed =
        crate::common::open_stream(&client, &target, &StartAt::After(tokens[1].clone())).await;
    let mut seen = Vec::new();
    while seen.last() != Some(&5) {
        let event = next_change(&mut resumed).await;
        let doc = event.get_document("fullDocument").unwrap();
        seen.push(doc.get_i32("seq").unwrap());
    }
    assert_eq!(
        seen,
        vec![2, 3, 4, 5],
        "resume must neither repeat nor skip"
    );
    let resumed_token = resumed.resume_token().unwrap();
    assert_ne!(
        bson::to_bson(&resumed_token).unwrap(),
        Bson::Null,
        "resumed stream tracks its position"
    );

    client.database(&db_name).drop().await.unwrap();
}

#[tokio::test]
async fn the_same_change_read_twice_gets_the_same_event_id() {
    use changeflow::decode::payments;
    use changeflow::domain::EventKind;

    let client = crate::common::mongo().await;
    let db_name = crate::common::unique_name("eventid");
    let target = watched(&db_name, &["payments"]);
    let mut live = crate::common::open_stream(&client, &target, &StartAt::Now).await;
    client
        .database(&db_name)
        .collection::<Document>("payments")
        .insert_one(doc! {
            "_id": "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d",
            "amount": Decimal128::from_str("6.50").unwrap(),
            "status": "PENDING",
            "product": {"code": "c-1", "name": "Paper filters"},
        })
        .await
        .unwrap();
    let first = within(DEADLINE, "the live change", live.next())
        .await
        .unwrap()
        .unwrap();
    let first = payments::decode(&first).unwrap().unwrap();
    assert_eq!(first.kind(), EventKind::PaymentRequested);

    // Read the same change again, this time replaying from its cluster time.
    let replay_from = StartAt::OperationTime(first.meta().cluster_time);
    let mut replay = crate::common::open_stream(&client, &target, &replay_from).await;
    let again = within(DEADLINE, "the replayed change", replay.next())
        .await
        .unwrap()
        .unwrap();
    let again = payments::decode(&again).unwrap().unwrap();
    assert_eq!(again.meta().event_id, first.meta().event_id);
    assert_eq!(again, first);

    client.database(&db_name).drop().await.unwrap();
}

#[tokio::test]
async fn a_stream_over_large_documents_asks_for_fewer_changes_per_batch() {
    let client = crate::common::mongo().await;
    let db = client.database(&crate::common::unique_name("batches"));
    db.create_collection("large")
        .change_stream_pre_and_post_images(
            mongodb::options::ChangeStreamPreAndPostImages::builder()
                .enabled(true)
                .build(),
        )
        .await
        .unwrap();
    // Memories with a 1 024-number embedding: about 14 KB each, kept with pre-images.
    let embedding: Vec<f64> = (0..1024).map(|i| f64::from(i) / 7.0).collect();
    let large: Vec<Document> = (0..20)
        .map(|i| doc! {"_id": i, "embedding": embedding.clone()})
        .collect();
    db.collection::<Document>("large")
        .insert_many(large)
        .await
        .unwrap();
    let small: Vec<Document> = (0..20)
        .map(|i| doc! {"_id": i, "status": "PENDING"})
        .collect();
    db.collection::<Document>("small")
        .insert_many(small)
        .await
        .unwrap();
    let names = |c: &[&str]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();

    let for_large = source::batch::size(&db, &names(&["small", "large"]), 1000).await;
    let for_small = source::batch::size(&db, &names(&["small"]), 1000).await;
    let for_missing = source::batch::size(&db, &names(&["not_yet"]), 1000).await;
    eprintln!("batch sizes: large {for_large}, small {for_small}, missing {for_missing}");
    assert!(
        (100..200).contains(&for_large),
        "~30 KB changes fit 4 MiB about 140 times: {for_large}"
    );
    assert_eq!(for_small, 1000);
    assert_eq!(for_missing, 1000);
}
