//! Reading back what changeflow published: records of a topic, and their headers.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};

use super::{DEADLINE, unique_name, within};

/// A consumer of `topic` on `brokers` from its first record, in a group of its own.
pub fn reader(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("creating a consumer for {brokers}: {e}"));
    consumer
        .subscribe(&[topic])
        .unwrap_or_else(|e| panic!("subscribing to {topic}: {e}"));
    consumer
}

/// Reads `count` records of `topic` from the start.
pub async fn consume(brokers: &str, topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer = reader(brokers, topic);
    let mut records = Vec::new();
    while records.len() < count {
        let what = format!("record {} of {count} on {topic}", records.len() + 1);
        let message = within(DEADLINE, &what, consumer.recv())
            .await
            .unwrap_or_else(|e| panic!("consuming {topic}: {e}"));
        records.push(message.detach());
    }
    records
}

/// Reads records of `topic`, showing each new one to `complete`, until it says the set is
/// complete and then nothing more arrives for `quiet`; fails after `deadline`.
pub async fn consume_until(
    brokers: &str,
    topic: &str,
    deadline: Duration,
    quiet: Duration,
    mut complete: impl FnMut(&OwnedMessage) -> bool,
) -> Vec<OwnedMessage> {
    let consumer = reader(brokers, topic);
    let until = tokio::time::Instant::now() + deadline;
    let mut records = Vec::new();
    let mut done = false;
    loop {
        let wait = if done { quiet } else { DEADLINE };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => {
                let message = message.detach();
                done |= complete(&message);
                records.push(message);
            }
            // librdkafka reports connection trouble (a broker still starting) and goes on.
            Ok(Err(e)) => eprintln!("consuming {topic}: {e}; retrying"),
            Err(_) if done => return records,
            Err(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{topic}: condition not met within {deadline:?} ({} records)",
            records.len()
        );
    }
}

/// A header's text, if present.
pub fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// A header's text; fails the test when absent.
pub fn required<'a>(message: &'a OwnedMessage, name: &str) -> &'a str {
    header(message, name)
        .unwrap_or_else(|| panic!("header {name} missing at offset {}", message.offset()))
}
