//! Checkpoints survive in MongoDB and a stream resumed from one continues exactly after it.

use crate::common::{DEADLINE, within};
use changeflow::config::WatchedDatabase;
use changeflow::source::StartAt;
use changeflow::state::checkpoints::{Checkpoint, CheckpointStore};
use futures::StreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::change_stream::event::ResumeToken;

#[tokio::test]
async fn a_stored_checkpoint_resumes_right_after_its_event() {
    let client = crate::common::mongo().await;
    let db_name = crate::common::unique_name("ckpt");
    let db = client.database(&db_name);
    let store = CheckpointStore::new(&db);
    assert_eq!(store.load("payments-stream").await.unwrap(), None);

    let target = WatchedDatabase {
        database: db_name.clone(),
        collections: vec!["payments".into()],
    };
    let payments = db.collection::<Document>("payments");
    let mut stream = crate::common::open_stream(&client, &target, &StartAt::Now).await;
    for seq in 0..3 {
        payments.insert_one(doc! {"seq": seq}).await.unwrap();
    }
    let mut events = Vec::new();
    for _ in 0..3 {
        let raw = within(DEADLINE, "a change", stream.next())
            .await
            .unwrap()
            .unwrap();
        events.push(raw.to_document().unwrap());
    }
    let handled = &events[1];
    let token: ResumeToken = bson::from_bson(handled.get("_id").unwrap().clone()).unwrap();
    let checkpoint = Checkpoint {
        stream: "payments-stream".into(),
        token,
        cluster_time: handled.get_timestamp("clusterTime").ok(),
        wall_time: handled.get_datetime("wallTime").ok().copied(),
        events_since_start: 2,
    };
    store.save(&checkpoint).await.unwrap();
    drop(stream);
    payments.insert_one(doc! {"seq": 3}).await.unwrap();

    // A new store instance (a restarted process) reads it back unchanged.
    let loaded = CheckpointStore::new(&client.database(&db_name))
        .load("payments-stream")
        .await
        .unwrap()
        .expect("checkpoint stored");
    assert_eq!(loaded, checkpoint);

    let mut resumed =
        crate::common::open_stream(&client, &target, &StartAt::After(loaded.token)).await;
    let mut seen = Vec::new();
    while seen.last() != Some(&3) {
        let raw = within(DEADLINE, "a resumed change", resumed.next())
            .await
            .unwrap()
            .unwrap();
        let doc = raw.to_document().unwrap();
        seen.push(
            doc.get_document("fullDocument")
                .unwrap()
                .get_i32("seq")
                .unwrap(),
        );
    }
    assert_eq!(
        seen,
        vec![2, 3],
        "resumes after the checkpoint, nothing repeated"
    );

    // A later position without times (a post-batch token) clears the old times.
    let quiet = Checkpoint {
        cluster_time: None,
        wall_time: None,
        events_since_start: 3,
        ..checkpoint.clone()
    };
    store.save(&quiet).await.unwrap();
    assert_eq!(store.load("payments-stream").await.unwrap(), Some(quiet));

    db.drop().await.unwrap();
}
