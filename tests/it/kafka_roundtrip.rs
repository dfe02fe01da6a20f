//! A record produced by an idempotent, acks=all producer comes back from the broker with
//! its key, payload, headers, partition and offset intact, in order.

use std::time::Duration;

use crate::common::{DEADLINE, within};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn idempotent_producer_record_is_consumed_back_intact() {
    let brokers = crate::common::kafka_brokers();
    let topic = crate::common::unique_name("roundtrip");
    crate::common::create_topic(&topic, 3).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("creating the producer");

    let key = "payment-7f3e";
    let binary_header: &[u8] = &[0x00, 0xff, 0x10, 0x80];
    let mut sent = Vec::new();
    for seq in 0..3 {
        let payload = format!(r#"{{"id":"7f3e","seq":{seq},"amount":"49.80"}}"#);
        let ce_id = format!("ce-{seq}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some(ce_id.as_str()),
            })
            .insert(Header {
                key: "ce_type",
                value: Some("changeflow.payment.requested.v1"),
            })
            .insert(Header {
                key: "raw",
                value: Some(binary_header),
            });
        let record = FutureRecord::to(&topic)
            .key(key)
            .payload(&payload)
            .headers(headers);
        let delivered = producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("broker at {brokers} refused the record: {e}"));
        sent.push((payload, ce_id, delivered.partition, delivered.offset));
    }
    let partition = sent[0].2;
    assert!(
        sent.iter().all(|s| s.2 == partition),
        "one key, one partition: {sent:?}"
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", crate::common::unique_name("group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the consumer");
    consumer.subscribe(&[&topic]).expect("subscribing");

    for (payload, ce_id, partition, offset) in &sent {
        let message = within(DEADLINE, "the produced record", consumer.recv())
            .await
            .expect("consuming");
        assert_eq!(message.key(), Some(key.as_bytes()));
        assert_eq!(
            message.payload(),
            Some(payload.as_bytes()),
            "records in order"
        );
        assert_eq!(message.partition(), *partition);
        assert_eq!(message.offset(), *offset);
        let headers = message.headers().expect("headers survive");
        let got: Vec<(String, Option<Vec<u8>>)> = headers
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ce_id".to_owned(), Some(ce_id.as_bytes().to_vec())),
                (
                    "ce_type".to_owned(),
                    Some(b"changeflow.payment.requested.v1".to_vec())
                ),
                ("raw".to_owned(), Some(binary_header.to_vec())),
            ]
        );
    }
}
