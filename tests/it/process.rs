//! The `changeflow run` binary against the replica set: the HTTP seed flow, a SIGKILL in
//! the middle of work, and a graceful SIGTERM.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::common::app::{Process, config, outcomes_and_counters, payment, wait_all_settled};
use crate::common::{DEADLINE, mongo, unique_name, wait_until};
use changeflow::decode::event_id_of;
use changeflow::source::StartAt;
use changeflow::state::checkpoints::CheckpointStore;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

async fn post_payment(base: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/payments"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /payments: {e}"))
}

/// `POST /payments` with `body` as sent, JSON or not (a number's digits kept as written).
async fn post_text(base: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/payments"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /payments: {e}"))
}

#[tokio::test]
async fn seed_flow_through_the_http_api_follows_the_alternate_policy() {
    let db_name = unique_name("seed");
    let client = mongo().await;
    let db = client.database(&db_name);
    let mut process = Process::spawn(&config(&db_name));
    process.wait_healthy().await;
    let base = process.base_url.clone();

    // One at a time, so the provider's call order is the creation order.
    let mut created = Vec::new();
    for k in 0..20usize {
        let body = json!({
            "productCode": format!("code-{}", k % 3),
            "productName": format!("Product {}", k % 3),
            "unitPrice": "2.50",
            "quantity": k + 1,
        });
        let response = post_payment(&base, &body).await;
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let payment: Value = response.json().await.unwrap();
        assert_eq!(payment["status"], "PENDING");
        // 2.50 × quantity keeps the price's two places: "2.50", "5.00", …
        let cents = 250 * (k + 1);
        let expected_amount = format!("{}.{:02}", cents / 100, cents % 100);
        assert_eq!(payment["amount"], json!(expected_amount));
        let id = payment["id"].as_str().unwrap().to_owned();
        let settled = wait_until(DEADLINE, "the payment to be settled", || async {
            let p = db
                .collection::<Document>("payments")
                .find_one(doc! {"_id": &id, "status": {"$ne": "PENDING"}})
                .await
                .ok()??;
            Some(p.get_str("status").unwrap().to_owned())
        })
        .await;
        let expected = if k % 2 == 0 { "FAILED" } else { "CONFIRMED" };
        assert_eq!(
            settled, expected,
            "payment #{k}: alternate starts with a failure"
        );
        created.push(id);
    }

    // Counters per product equal the outcomes.
    let (outcomes, counters) = wait_until(DEADLINE, "counters to match", || async {
        let (o, c) = outcomes_and_counters(&db).await;
        (o == c).then_some((o, c))
    })
    .await;
    assert_eq!(outcomes.values().map(|(s, f)| s + f).sum::<i64>(), 20);
    assert_eq!(counters.len(), 3);

    // Listing: pages, the sample's counter path, and refusals.
    let list: Value = reqwest::get(format!("{base}/payments?page=0&size=20"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 20);
    let listed: HashSet<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, created.iter().map(String::as_str).collect());
    let counters_page: Value = reqwest::get(format!("{base}/payment-counter?page=0"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_code: BTreeMap<String, (i64, i64)> = counters_page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["productCode"].as_str().unwrap().to_owned(),
                (
                    c["successfulPayments"].as_i64().unwrap(),
                    c["failedPayments"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(by_code, outcomes);
    for bad in [
        "/payments?size=0",
        "/payments?page=x",
        "/payment-counters?size=1000",
    ] {
        let r = reqwest::get(format!("{base}{bad}")).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let r = post_payment(
        &base,
        &json!({"productCode": "c", "productName": "n", "unitPrice": "x", "quantity": 1}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "unitPrice", "{body}");
    let r = post_text(&base, "{not json".into()).await;
    assert_eq!(r.status(), 400);
    // A price of 40 decimals as a JSON number: refused, not rounded to 28, nothing written.
    let forty = "0.1234567890123456789012345678901234567890";
    let r = post_text(
        &base,
        format!(
            r#"{{"productCode": "c40", "productName": "n", "unitPrice": {forty}, "quantity": 1}}"#
        ),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "unitPrice", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("rounded")),
        "{body}"
    );
    assert_eq!(
        db.collection::<Document>("payments")
            .count_documents(doc! {"product.code": "c40"})
            .await
            .unwrap(),
        0
    );

    process.signal(libc::SIGTERM);
    let status = process.wait_exit(DEADLINE).await;
    assert!(status.success(), "exit status {status}:\n{}", process.log());
}

#[tokio::test]
async fn sigkill_with_payments_in_flight_loses_and_doubles_nothing() {
    let db_name = unique_name("crash");
    let client = mongo().await;
    let db = client.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let mut config = config(&db_name);
    config.provider.latency_ms = 200;
    config.provider.policy = "ratio:0.5".parse().unwrap();
    // 20 at a time: 200 payments take about 2 s, so the kill lands mid-way.
    config.provider.max_in_flight = 20;
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;

    let docs: Vec<Document> = (0..200)
        .map(|i| payment(&format!("p-{i:03}"), i % 4, "PENDING"))
        .collect();
    payments.insert_many(docs).await.unwrap();
    wait_until(DEADLINE, "some payments settled and counted", || async {
        let settled = payments
            .count_documents(doc! {"status": {"$ne": "PENDING"}})
            .await
            .ok()?;
        let counted = db
            .collection::<Document>("changeflow_processed_events")
            .count_documents(doc! {})
            .await
            .ok()?;
        (settled >= 40 && counted >= 10).then_some(())
    })
    .await;
    process.signal(libc::SIGKILL);
    process.wait_exit(DEADLINE).await;
    let pending_at_kill = payments
        .count_documents(doc! {"status": "PENDING"})
        .await
        .unwrap();
    let (outcomes, counters) = outcomes_and_counters(&db).await;
    eprintln!(
        "at SIGKILL: {pending_at_kill} PENDING; outcomes {outcomes:?}; counters {counters:?}"
    );
    assert!(
        pending_at_kill > 0,
        "the kill must land while payments are in flight"
    );

    let mut restarted = Process::spawn(&config);
    restarted.wait_healthy().await;
    wait_all_settled(&db, Duration::from_secs(60)).await;
    // A transaction the killed process left open holds its processed-event id until the
    // server aborts it (transactionLifetimeLimitSeconds: 10 s under `cargo xtask up
    // --profile test`, 60 s by default), so allow for the default.
    let counted = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let (o, c) = outcomes_and_counters(&db).await;
            if o.values().map(|(s, f)| s + f).sum::<i64>() == 200
                && c.values().map(|(s, f)| s + f).sum::<i64>() >= 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "not every outcome counted after the restart: {:?}\n--- first run ---\n{}\n--- restarted ---\n{}",
        outcomes_and_counters(&db).await,
        process.log(),
        restarted.log()
    );
    // A graceful stop lets every event read so far finish: nothing can change afterwards.
    restarted.signal(libc::SIGTERM);
    let status = restarted.wait_exit(DEADLINE).await;
    assert!(status.success(), "{}", restarted.log());
    let (outcomes, counters) = outcomes_and_counters(&db).await;
    assert_eq!(
        counters, outcomes,
        "counters must equal the outcomes exactly"
    );
    assert_eq!(outcomes.values().map(|(s, f)| s + f).sum::<i64>(), 200);
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_and_checkpoints_the_last_handled_event() {
    let db_name = unique_name("sigterm");
    let client = mongo().await;
    let db = client.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let mut config = config(&db_name);
    config.provider.latency_ms = 1000;
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let store = CheckpointStore::new(&db);
    let opening = store
        .load(&db_name)
        .await
        .unwrap()
        .expect("a stream stores its opening position at once");

    let docs: Vec<Document> = (0..30)
        .map(|i| payment(&format!("p-{i:02}"), i % 2, "PENDING"))
        .collect();
    payments.insert_many(docs).await.unwrap();
    // Every insert read and waiting on the provider (1 s), none settled yet.
    let metrics_url = format!("{}/metrics", process.base_url);
    wait_until(DEADLINE, "30 requested events read", || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        text.contains("changeflow_events_received_total{kind=\"payment_requested\",stream=")
            .then_some(())
            .filter(|_| text.contains("\"} 30"))
    })
    .await;
    let settled_before = payments
        .count_documents(doc! {"status": {"$ne": "PENDING"}})
        .await
        .unwrap();
    assert_eq!(
        settled_before, 0,
        "the signal must land with work in flight"
    );
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(DEADLINE).await;
    assert!(status.success(), "exit status {status}:\n{}", process.log());

    // In-flight work finished before the exit.
    wait_all_settled(&db, Duration::from_secs(1)).await;
    let checkpoint = store
        .load(&db_name)
        .await
        .unwrap()
        .expect("final checkpoint");
    let processed = db.collection::<Document>("changeflow_processed_events");

    // Everything up to the checkpoint was handled; nothing after it was.
    let mut handled_region = read_all(&client, &db_name, StartAt::After(opening.token)).await;
    let after = read_all(&client, &db_name, StartAt::After(checkpoint.token)).await;
    let after_ids: HashSet<String> = after.iter().map(|(id, _, _)| id.clone()).collect();
    handled_region.retain(|(id, _, _)| !after_ids.contains(id));
    assert_eq!(
        handled_region.len() + after.len(),
        60,
        "30 inserts + 30 settles"
    );
    for (event_id, op, key) in &handled_region {
        match op.as_str() {
            "insert" => {
                let p = payments.find_one(doc! {"_id": key}).await.unwrap().unwrap();
                assert_ne!(p.get_str("status"), Ok("PENDING"), "{key} was handled");
            }
            _ => assert!(
                processed
                    .find_one(doc! {"_id": format!("counters:{event_id}")})
                    .await
                    .unwrap()
                    .is_some(),
                "{key}: its settle event lies before the checkpoint, so it was counted"
            ),
        }
    }
    for (event_id, op, key) in &after {
        assert_eq!(op, "update", "{key}: inserts were all handled");
        assert!(
            processed
                .find_one(doc! {"_id": format!("counters:{event_id}")})
                .await
                .unwrap()
                .is_none(),
            "{key}: an event after the checkpoint must not have been handled"
        );
    }
}

/// Every change of `database`.payments from `start` up to now: (event id, op, payment id).
async fn read_all(
    client: &mongodb::Client,
    database: &str,
    start: StartAt,
) -> Vec<(String, String, String)> {
    let target = changeflow::config::WatchedDatabase {
        database: database.to_owned(),
        collections: vec!["payments".to_owned()],
    };
    let mut stream = crate::common::open_stream(client, &target, &start).await;
    let mut events = Vec::new();
    while let Some(raw) =
        crate::common::within(DEADLINE, "reading the stream", stream.next_if_any())
            .await
            .unwrap()
    {
        let key = raw
            .get_document("documentKey")
            .and_then(|k| k.get_str("_id"))
            .unwrap_or("?")
            .to_owned();
        let op = raw.get_str("operationType").unwrap().to_owned();
        events.push((event_id_of(&raw).to_string(), op, key));
    }
    events
}
