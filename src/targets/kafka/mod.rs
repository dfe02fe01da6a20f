//! The Kafka target: typed events as CloudEvents through an idempotent, acks=all
//! producer, keyed by their aggregate id (payment id, `user_id`). An event counts as done only once the broker acknowledged
//! it; records the broker refuses for good go to the dead-letter topic, and if even that
//! fails the stream stops rather than skip the event.

use std::collections::HashMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use crate::config::kafka::{ContentMode, KafkaConfig};
use crate::config::routes::KAFKA;
use crate::pipeline::target::{Input, Routed, Target, TargetError};

/// How long start-up waits for the broker to answer an admin request.
mod delivery;
mod topics;
pub(crate) use topics::ensure_topics;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Headers of a dead-letter record, beside the event's own `ce_` headers.
pub mod dead_letter_headers {
    /// Why the broker refused the record.
    pub const REASON: &str = "changeflow_dlq_reason";
    /// The topic the record was meant for.
    pub const ORIGINAL_TOPIC: &str = "changeflow_dlq_original_topic";
    /// The event id (also in `ce_id` in binary mode).
    pub const EVENT_ID: &str = "changeflow_dlq_event_id";
    /// Present when the value was left out (it was the cause: too large).
    pub const VALUE_DROPPED: &str = "changeflow_dlq_value_dropped";
}

/// Why the Kafka target could not start.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// librdkafka refused the producer configuration.
    #[error("creating the Kafka producer: {0} (check [kafka] and kafka.properties)")]
    Producer(KafkaError),
    /// The broker could not be asked or refused to create a topic.
    #[error(
        "creating Kafka topic `{topic}` on {brokers}: {reason}; start the broker, create the \
         topic yourself and set kafka.create_topics = false, or take `kafka` out of [routes]"
    )]
    Topic {
        /// The topic.
        topic: String,
        /// The bootstrap brokers.
        brokers: String,
        /// What went wrong.
        reason: String,
    },
}

/// Publishes typed events and raw changes to Kafka.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    memory_topic: String,
    namespace_topic: String,
    dead_letter_topic: String,
    /// Topic of each raw collection (`kafka.raw`), by `<database>.<collection>`.
    raw_topics: HashMap<String, String>,
    mode: ContentMode,
}

impl KafkaSink {
    /// Creates the producer and makes sure its topics (payments, memory, raw, dead letters)
    /// exist.
    pub async fn start(config: &KafkaConfig) -> Result<KafkaSink, PublishError> {
        let mut client = ClientConfig::new();
        for (name, value) in config.producer_properties() {
            client.set(name, value);
        }
        let producer: FutureProducer = client.create().map_err(PublishError::Producer)?;
        let sink = KafkaSink {
            producer,
            topic: config.topic(&config.topics.payments),
            memory_topic: config.topic(&config.topics.memory),
            namespace_topic: config.topic(&config.topics.namespace),
            dead_letter_topic: config.topic(&config.topics.dead_letters),
            raw_topics: config
                .raw
                .iter()
                .map(|r| {
                    (
                        format!("{}.{}", r.database, r.collection),
                        config.topic(&r.topic),
                    )
                })
                .collect(),
            mode: config.content_mode,
        };
        let mut topics = vec![
            sink.topic.as_str(),
            sink.memory_topic.as_str(),
            sink.namespace_topic.as_str(),
            sink.dead_letter_topic.as_str(),
        ];
        topics.extend(sink.raw_topics.values().map(String::as_str));
        // One request may not name a topic twice (a replay sends everything to one topic).
        let mut seen = std::collections::HashSet::new();
        topics.retain(|t| seen.insert(*t));
        ensure_topics(config, &topics).await?;
        Ok(sink)
    }

    /// The topic payment events go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic memory events go to.
    pub fn memory_topic(&self) -> &str {
        &self.memory_topic
    }
}

/// Typed events go to their topic as `[routes]` says; the raw collections' changes
/// (`kafka.raw`) and namespace events always, once the sink exists.
impl Target for KafkaSink {
    fn name(&self) -> &'static str {
        KAFKA
    }

    fn wants(&self, input: Input) -> bool {
        match input {
            Input::Typed(_) | Input::Namespace => true,
            Input::Raw => !self.raw_topics.is_empty(),
        }
    }

    fn raw_collections(&self) -> Vec<(String, String)> {
        // A database name never holds a `.` (configuration refuses one), so the first
        // splits the namespace.
        self.raw_topics
            .keys()
            .filter_map(|ns| ns.split_once('.'))
            .map(|(db, coll)| (db.to_owned(), coll.to_owned()))
            .collect()
    }

    fn routed_by_config(&self) -> bool {
        true
    }

    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>> {
        match event {
            Routed::Typed(event) => self.publish(event).boxed(),
            Routed::Raw(event) => self.publish_raw(event).boxed(),
            Routed::Namespace { stream, event } => self.publish_namespace(stream, event).boxed(),
        }
    }
}
