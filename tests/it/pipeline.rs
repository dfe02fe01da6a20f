//! The engine in-process against the replica set: ordering per document, restart from
//! the checkpoint, bad input to the dead-letter collection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::app::{config, insert_pending, payment};
use crate::common::{DEADLINE, mongo, unique_name, wait_until};
use changeflow::cmd::run;
use changeflow::domain::EventKind;
use changeflow::observe::health::Health;
use changeflow::observe::metrics::Metrics;
use changeflow::pipeline::Engine;
use changeflow::pipeline::target::{Input, Routed, Target, TargetError};
use changeflow::source::StartAt;
use futures::FutureExt;
use futures::future::BoxFuture;
use mongodb::bson::{Document, doc};
use tokio_util::sync::CancellationToken;

/// Records every event it is given: (payment id, cluster time, kind), in handling order;
/// events of `slow_id` take 20 ms each.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, mongodb::bson::Timestamp, EventKind)>>,
    slow_id: Option<String>,
}

impl Recorder {
    fn seen(&self) -> Vec<(String, mongodb::bson::Timestamp, EventKind)> {
        self.seen.lock().unwrap().clone()
    }
    fn ids(&self) -> Vec<String> {
        self.seen().into_iter().map(|(id, _, _)| id).collect()
    }
}

impl Target for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn wants(&self, input: Input) -> bool {
        matches!(input, Input::Typed(_))
    }
    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            let Routed::Typed(event) = event else {
                return Ok(());
            };
            if self.slow_id.as_deref() == Some(event.key()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.seen.lock().unwrap().push((
                event.key().to_owned(),
                event.meta().cluster_time,
                event.kind(),
            ));
            Ok(())
        }
        .boxed()
    }
}

/// An engine started by [`start_engine`].
struct Started {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), changeflow::pipeline::EngineError>>,
    metrics: Arc<Metrics>,
}

impl Started {
    async fn stop(self) -> Arc<Metrics> {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        self.metrics
    }
}

/// Runs an engine over `db` with `recorder` until stopped.
async fn start_engine(db: &str, recorder: Arc<Recorder>) -> Started {
    let config = Arc::new(config(db));
    let health = Arc::new(Health::new([db]));
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::new(
        mongo().await,
        config,
        &[recorder as Arc<dyn Target>],
        metrics.clone(),
        health.clone(),
        StartAt::Now,
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(engine.run(stop.clone().cancelled_owned()));
    wait_until(DEADLINE, "the stream to open", || async {
        health.all_open().then_some(())
    })
    .await;
    Started {
        stop,
        task,
        metrics,
    }
}

#[tokio::test]
async fn updates_of_one_payment_arrive_in_order_while_others_proceed() {
    let db_name = unique_name("order");
    let client = mongo().await;
    let payments = client.database(&db_name).collection::<Document>("payments");
    let recorder = Arc::new(Recorder {
        slow_id: Some("slow".into()),
        ..Default::default()
    });
    let engine = start_engine(&db_name, recorder.clone()).await;

    payments
        .insert_one(payment("slow", 0, "PENDING"))
        .await
        .unwrap();
    for i in 0..40 {
        payments
            .update_one(doc! {"_id": "slow"}, doc! {"$set": {"step": i}})
            .await
            .unwrap();
    }
    insert_pending(&payments, "fast", 10, 1).await;
    wait_until(DEADLINE, "all 51 events", || async {
        (recorder.seen().len() == 51).then_some(())
    })
    .await;
    let metrics = engine.stop().await;
    let waited = metrics.reader_metrics(&db_name).server.get();
    assert!(
        waited > 0.0,
        "the reader counts its waits for the server's batches: {}",
        metrics.render()
    );

    let seen = recorder.seen();
    let slow: Vec<_> = seen.iter().filter(|(id, _, _)| id == "slow").collect();
    assert_eq!(slow.len(), 41);
    assert_eq!(slow[0].2, EventKind::PaymentRequested);
    assert!(
        slow.windows(2).all(|w| w[0].1 < w[1].1),
        "events of one payment must be handled in stream order: {slow:?}"
    );
    let last_slow = seen.iter().rposition(|(id, _, _)| id == "slow").unwrap();
    let last_fast = seen.iter().rposition(|(id, _, _)| id != "slow").unwrap();
    assert!(
        last_fast < last_slow,
        "the fast payments (written after the slow one's updates) must not wait for it"
    );
}

#[tokio::test]
async fn restart_resumes_after_the_checkpoint_without_repeating_events() {
    let db_name = unique_name("restart");
    let client = mongo().await;
    let payments = client.database(&db_name).collection::<Document>("payments");

    let first = Arc::new(Recorder::default());
    let engine = start_engine(&db_name, first.clone()).await;
    insert_pending(&payments, "before", 5, 0).await;
    wait_until(DEADLINE, "the first 5 events", || async {
        (first.seen().len() == 5).then_some(())
    })
    .await;
    engine.stop().await;

    insert_pending(&payments, "while-stopped", 5, 0).await;
    let second = Arc::new(Recorder::default());
    let engine = start_engine(&db_name, second.clone()).await;
    payments
        .insert_one(payment("after-restart", 0, "PENDING"))
        .await
        .unwrap();
    wait_until(DEADLINE, "the marker written after the restart", || async {
        second
            .ids()
            .contains(&"after-restart".to_owned())
            .then_some(())
    })
    .await;
    engine.stop().await;

    let mut ids = second.ids();
    ids.sort();
    let mut expected: Vec<String> = (0..5).map(|i| format!("while-stopped-{i}")).collect();
    expected.push("after-restart".into());
    expected.sort();
    assert_eq!(
        ids, expected,
        "after a restart: every change made while stopped, none from before the checkpoint"
    );
}

#[tokio::test]
async fn bad_payments_are_dead_lettered_and_the_stream_goes_on() {
    let db_name = unique_name("badinput");
    let client = mongo().await;
    let db = client.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let running = run::start(Arc::new(config(&db_name)), StartAt::Now)
        .await
        .unwrap();
    running.ready(DEADLINE).await.unwrap();

    let mut no_code = payment("no-code", 0, "PENDING");
    no_code.insert("product", doc! {"name": "Nameless"});
    let mut text_amount = payment("text-amount", 0, "PENDING");
    text_amount.insert("amount", "twelve");
    let mut odd_status = payment("odd-status", 0, "PENDING");
    odd_status.insert("status", "MAYBE");
    let mut flat_product = payment("flat-product", 0, "PENDING");
    flat_product.insert("product", "pen");
    let bad = [
        (no_code, "fullDocument.product.code"),
        (text_amount, "fullDocument.amount"),
        (odd_status, "fullDocument.status"),
        (flat_product, "fullDocument.product"),
    ];
    for (doc, _) in &bad {
        payments.insert_one(doc.clone()).await.unwrap();
    }
    payments
        .insert_one(payment("valid", 1, "PENDING"))
        .await
        .unwrap();

    // The valid payment written after the bad ones is still settled by the provider.
    let valid = wait_until(DEADLINE, "the valid payment to be settled", || async {
        let p = payments
            .find_one(doc! {"_id": "valid", "status": {"$ne": "PENDING"}})
            .await
            .ok()??;
        Some(p)
    })
    .await;
    assert_eq!(
        valid.get_str("status"),
        Ok("FAILED"),
        "alternate: first call fails"
    );

    let letters = db.collection::<Document>("changeflow_dead_letters");
    let stored = wait_until(DEADLINE, "4 dead letters", || async {
        use futures::TryStreamExt;
        let docs: Vec<Document> = letters.find(doc! {}).await.ok()?.try_collect().await.ok()?;
        (docs.len() == 4).then_some(docs)
    })
    .await;
    for (doc, field) in &bad {
        let id = doc.get_str("_id").unwrap();
        let letter = stored
            .iter()
            .find(|l| {
                l.get_document("event")
                    .and_then(|e| e.get_document("documentKey"))
                    .and_then(|k| k.get_str("_id"))
                    == Ok(id)
            })
            .unwrap_or_else(|| panic!("no dead letter for {id}: {stored:?}"));
        let reason = letter.get_str("reason").unwrap();
        assert!(
            reason.contains(field),
            "{id}: reason `{reason}` should name {field}"
        );
        assert_eq!(letter.get_str("stage"), Ok("decode"));
        assert!(letter.get_document("token").is_ok(), "{id}: token kept");
        assert!(
            letter.get_timestamp("cluster_time").is_ok(),
            "{id}: time kept"
        );
    }
    let metrics = running.api.metrics.render();
    assert!(
        metrics
            .contains("changeflow_events_dead_lettered_total{kind=\"invalid\",stage=\"decode\"} 4"),
        "{metrics}"
    );
    running.until(async {}).await.unwrap();
}
