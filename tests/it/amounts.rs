//! Amounts through the real binary to Kafka, digit for digit: Decimal128 amounts of 28, 29
//! and 34 significant digits, and with exponents at both ends of the range, reach the
//! payment events on Kafka as the Decimal128's canonical string (a decimal of 28 digits
//! once rounded them), and a 34-digit price posted to the HTTP API is stored and answered
//! exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{Bson, Decimal128, Document, doc};
use rdkafka::message::Message;
use serde_json::Value;

use crate::common::app::{Process, kafka_only_config, payment};
use crate::common::records::{consume_until, required};
use crate::common::{DEADLINE, kafka_brokers, mongo, unique_name};

/// Amounts as they would be stored, by payment id.
const AMOUNTS: [(&str, &str); 10] = [
    ("digits-28", "1234567890123456789012345.678"),
    ("digits-29", "12345678901234567890123456.789"),
    ("digits-34", "1.000000000000000000000000000000001"),
    ("nines-34", "9999999999999999999999999999999999"),
    (
        "large-exponent",
        "1.000000000000000000000000000000000E+6144",
    ),
    ("small-exponent", "1E-6176"),
    ("scientific", "1.2E+5"),
    ("tiny-plain", "0.0000001"),
    ("one-place", "1.0"),
    ("two-places", "1.00"),
];

#[tokio::test]
async fn amounts_reach_kafka_as_the_decimal128_canonical_string() {
    let db_name = unique_name("amounts");
    let db = mongo().await.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let config = kafka_only_config(&db_name);
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;

    let mut expected = BTreeMap::new();
    for (id, text) in AMOUNTS {
        let amount: Decimal128 = text.parse().expect("a Decimal128");
        let mut doc = payment(id, 0, "PENDING");
        doc.insert("amount", Bson::Decimal128(amount));
        payments.insert_one(doc).await.expect("insert");
        expected.insert(id.to_owned(), amount.to_string());
    }
    // A confirmation carries the amount too.
    payments
        .update_one(
            doc! {"_id": "digits-34"},
            doc! {"$set": {"status": "CONFIRMED"}},
        )
        .await
        .expect("update");

    // A 34-digit price through the HTTP API: stored, answered and published exactly.
    let price = "1234567890123456789012345678.901234";
    let response = reqwest::Client::new()
        .post(format!("{}/payments", process.base_url))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"productCode": "p", "productName": "Pen", "unitPrice": {price}, "quantity": 1}}"#
        ))
        .send()
        .await
        .expect("POST /payments");
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.expect("JSON");
    assert_eq!(created["amount"], price, "{created}");
    let posted_id = created["id"].as_str().expect("id").to_owned();
    let stored = payments
        .find_one(doc! {"_id": &posted_id})
        .await
        .expect("find")
        .expect("the posted payment");
    match stored.get("amount") {
        Some(Bson::Decimal128(d)) => assert_eq!(d.to_string(), price),
        other => panic!("stored amount {other:?}"),
    }
    expected.insert(posted_id, price.to_owned());

    // One payment_requested per payment, and the confirmation.
    let wanted = expected.len() + 1;
    let mut events = std::collections::BTreeSet::new();
    let records = consume_until(
        &kafka_brokers(),
        &topic,
        DEADLINE,
        Duration::from_secs(1),
        |r| {
            events.insert((
                required(r, "ce_subject").to_owned(),
                required(r, "ce_type").to_owned(),
            ));
            events.len() >= wanted
        },
    )
    .await;
    let mut seen = 0;
    for record in &records {
        let subject = required(record, "ce_subject");
        let data: Value =
            serde_json::from_slice(record.payload().unwrap_or_default()).expect("event JSON");
        let want = expected
            .get(subject)
            .unwrap_or_else(|| panic!("unknown subject {subject}"));
        assert_eq!(
            data["amount"].as_str(),
            Some(want.as_str()),
            "{} of {subject}",
            required(record, "ce_type")
        );
        seen += 1;
    }
    assert!(seen >= wanted, "{seen} of {wanted} events");
    eprintln!("{seen} payment events on Kafka, every amount the Decimal128's canonical string");
}
