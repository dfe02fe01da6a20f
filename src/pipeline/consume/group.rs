//! The consumer group of the handlers role: rdkafka's consumer with cooperative-sticky
//! assignment and no automatic commit. Offsets are committed from [`Done`], which the
//! loop moves only past records whose effects are stored; a partition being taken away
//! commits its own offset first, so the next owner starts right after it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::kafka::KafkaConfig;
use crate::observe::locks::lock;

/// Per partition, the offset to commit: one past the newest record whose effects, and
/// every earlier record's, are stored.
pub(super) type Done = Arc<Mutex<BTreeMap<i32, i64>>>;

/// Commits a partition's offset before it is taken away, and tells the loop.
pub(super) struct GroupContext {
    topic: String,
    done: Done,
    revoked: mpsc::UnboundedSender<Vec<i32>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = list
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let offsets = {
            let mut done = lock(&self.done);
            let mut offsets = TopicPartitionList::new();
            for p in &partitions {
                if let Some(next) = done.remove(p) {
                    // Only a topic/partition pair built here: adding cannot fail.
                    let _ = offsets.add_partition_offset(&self.topic, *p, Offset::Offset(next));
                }
            }
            offsets
        };
        if offsets.count() > 0
            && let Err(e) = consumer.commit(&offsets, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "committing the offsets of partitions taken away failed; their next owner repeats those records (effects stay exactly-once)");
        }
        tracing::info!(partitions = ?partitions, "partitions taken away by a rebalance");
        let _ = self.revoked.send(partitions);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(partitions = ?partitions, "partitions assigned");
        }
    }
}

/// The group's name: one per topic prefix, so deployments sharing a broker stay apart.
pub(super) fn group_id(config: &KafkaConfig) -> String {
    format!("{}changeflow-handlers", config.topic_prefix)
}

/// A consumer of `topic` in the handlers group; revoked partitions arrive on the
/// returned receiver.
pub(super) fn subscribe(
    config: &KafkaConfig,
    topic: &str,
    done: Done,
) -> KafkaResult<(
    StreamConsumer<GroupContext>,
    mpsc::UnboundedReceiver<Vec<i32>>,
)> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", group_id(config))
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    // The user's connection properties (security, timeouts) apply to the consumer too.
    for (name, value) in &config.properties.0 {
        client.set(name, value);
    }
    let (revoked, receiver) = mpsc::unbounded_channel();
    let context = GroupContext {
        topic: topic.to_owned(),
        done,
        revoked,
    };
    let consumer: StreamConsumer<GroupContext> = client.create_with_context(context)?;
    consumer.subscribe(&[topic])?;
    Ok((consumer, receiver))
}

/// Commits what `done` holds for the partitions still assigned.
pub(super) fn commit(
    consumer: &StreamConsumer<GroupContext>,
    topic: &str,
    done: &Done,
    mode: CommitMode,
) {
    let assigned: Vec<i32> = match consumer.assignment() {
        Ok(list) => list
            .elements_for_topic(topic)
            .iter()
            .map(|e| e.partition())
            .collect(),
        Err(_) => return,
    };
    let mut offsets = TopicPartitionList::new();
    for (p, next) in lock(done).iter() {
        if assigned.contains(p) {
            let _ = offsets.add_partition_offset(topic, *p, Offset::Offset(*next));
        }
    }
    if offsets.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&offsets, mode) {
        tracing::debug!(error = %e, "committing offsets failed; the next commit carries them");
    }
}
