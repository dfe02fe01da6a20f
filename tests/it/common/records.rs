//! Reading back what changeflow published: records of a topic, and their headers.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{DEADLINE, unique_name, within};

/// A consumer of every partition of `topic` on `brokers`, from its first record. It is
/// assigned the partitions, not subscribed: no group to join (the prebuilt broker takes
/// about 20 s over a group's first join), and nothing committed. Waits until the topic
/// exists (changeflow may create it later).
pub async fn reader(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("creating a consumer for {brokers}: {e}"));
    let until = std::time::Instant::now() + DEADLINE;
    let partitions = loop {
        // The metadata call blocks: off the runtime, which may run the test's proxy.
        let (brokers_owned, topic_owned) = (brokers.to_owned(), topic.to_owned());
        let found =
            tokio::task::spawn_blocking(move || partitions_of(&brokers_owned, &topic_owned))
                .await
                .ok()
                .flatten();
        if let Some(partitions) = found {
            break partitions;
        }
        assert!(
            std::time::Instant::now() < until,
            "topic {topic} does not exist on {brokers} after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap_or_else(|e| panic!("assigning {topic}/{partition}: {e}"));
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|e| panic!("assigning {topic}: {e}"));
    consumer
}

/// The partitions of `topic`, once it exists.
fn partitions_of(brokers: &str, topic: &str) -> Option<Vec<i32>> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .ok()?;
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    (t.error().is_none() && !t.partitions().is_empty())
        .then(|| t.partitions().iter().map(|p| p.id()).collect())
}

/// Reads `count` records of `topic` from the start.
pub async fn consume(brokers: &str, topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer = reader(brokers, topic).await;
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
    let consumer = reader(brokers, topic).await;
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
