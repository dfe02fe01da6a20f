//! The Kafka target: typed events as CloudEvents through an idempotent, acks=all
//! producer, keyed by their aggregate id (payment id, `user_id`). An event counts as done only once the broker acknowledged
//! it; records the broker refuses for good go to the dead-letter topic, and if even that
//! fails the stream stops rather than skip the event.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::config::kafka::{ContentMode, KafkaConfig};
use crate::config::routes::KAFKA;
use crate::domain::DomainEvent;
use crate::domain::namespace::NamespaceEvent;
use crate::domain::raw::RawChangeEvent;
use crate::events::cloudevent::{CloudEvent, DATA_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE};
use crate::pipeline::target::{Input, Routed, Target, TargetError};

/// How long start-up waits for the broker to answer an admin request.
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
    /// Topic of each raw collection, in `kafka.raw` order.
    raw_topics: Vec<String>,
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
            raw_topics: config.raw.iter().map(|r| config.topic(&r.topic)).collect(),
            mode: config.content_mode,
        };
        let mut topics = vec![
            sink.topic.as_str(),
            sink.memory_topic.as_str(),
            sink.namespace_topic.as_str(),
            sink.dead_letter_topic.as_str(),
        ];
        topics.extend(sink.raw_topics.iter().map(String::as_str));
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

    /// Publishes a raw change to its collection's topic: the change as relaxed Extended
    /// JSON, keyed by its document key, with the event id in `ce_id`.
    pub async fn publish_raw(&self, event: &RawChangeEvent) -> Result<(), TargetError> {
        let Some(topic) = self.raw_topics.get(event.target) else {
            return Err(TargetError::Fatal {
                handler: KAFKA,
                reason: format!("no topic for raw collection #{}", event.target),
            });
        };
        let id = event.event_id.to_string();
        let headers = headers([("ce_id", id.as_str()), ("content-type", DATA_CONTENT_TYPE)]);
        let record = Outgoing {
            topic,
            key: &event.key,
            event_id: &id,
            value: &event.value,
        };
        self.send(record, headers).await
    }

    async fn publish(&self, event: &DomainEvent) -> Result<(), TargetError> {
        let topic = match event {
            DomainEvent::Payment(_) => &self.topic,
            DomainEvent::Memory(_) => &self.memory_topic,
        };
        self.publish_cloud_event(topic, event.key(), CloudEvent::of(event))
            .await
    }

    /// Publishes a namespace event seen by `stream` to the namespace topic, keyed by the
    /// namespace.
    pub async fn publish_namespace(
        &self,
        stream: &str,
        event: &NamespaceEvent,
    ) -> Result<(), TargetError> {
        let cloud_event = CloudEvent::of_namespace(stream, event);
        let key = cloud_event.subject.clone();
        self.publish_cloud_event(&self.namespace_topic, &key, cloud_event)
            .await
    }

    async fn publish_cloud_event(
        &self,
        topic: &str,
        key: &str,
        mut cloud_event: CloudEvent,
    ) -> Result<(), TargetError> {
        let (value, headers) = match self.mode {
            ContentMode::Binary => {
                let headers = headers(cloud_event.binary_headers());
                (std::mem::take(&mut cloud_event.data), headers)
            }
            ContentMode::Structured => {
                let value = cloud_event
                    .structured()
                    .map_err(|e| TargetError::Permanent {
                        handler: KAFKA,
                        reason: format!("event data is not JSON: {e}"),
                    })?;
                (value, headers([("content-type", STRUCTURED_CONTENT_TYPE)]))
            }
        };
        let record = Outgoing {
            topic,
            key,
            event_id: &cloud_event.id,
            value: &value,
        };
        self.send(record, headers).await
    }

    /// Sends `record` and waits for the broker's acknowledgement; a record refused for good
    /// goes to the dead-letter topic, any other failure is retryable.
    async fn send(&self, record: Outgoing<'_>, headers: OwnedHeaders) -> Result<(), TargetError> {
        let sent = FutureRecord::to(record.topic)
            .key(record.key)
            .payload(record.value)
            .headers(headers);
        match self.producer.send(sent, Timeout::Never).await {
            Ok(_) => Ok(()),
            Err((error, message)) if refused_for_good(&error) => {
                self.dead_letter(record, returned_headers(&message), &error)
                    .await
            }
            Err((error, _)) => Err(TargetError::Delivery {
                handler: KAFKA,
                source: error,
            }),
        }
    }

    /// Sends a refused event to the dead-letter topic; a failure there stops the stream.
    async fn dead_letter(
        &self,
        refused: Outgoing<'_>,
        headers: OwnedHeaders,
        error: &KafkaError,
    ) -> Result<(), TargetError> {
        let Outgoing {
            topic,
            key,
            event_id,
            value,
        } = refused;
        use dead_letter_headers::*;
        let reason = error.to_string();
        let too_large = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge)
        );
        tracing::error!(
            event_id = %event_id,
            topic = %topic,
            reason = %reason,
            "Kafka refused the event for good; sending it to the dead-letter topic"
        );
        let mut headers = headers
            .insert(Header {
                key: REASON,
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: ORIGINAL_TOPIC,
                value: Some(topic),
            })
            .insert(Header {
                key: EVENT_ID,
                value: Some(event_id),
            });
        let mut record = FutureRecord::to(&self.dead_letter_topic).key(key);
        if too_large {
            headers = headers.insert(Header {
                key: VALUE_DROPPED,
                value: Some("too large"),
            });
        } else {
            record = record.payload(value);
        }
        match self
            .producer
            .send(record.headers(headers), Timeout::Never)
            .await
        {
            Ok(_) => Ok(()),
            Err((dlq_error, _)) => Err(TargetError::Fatal {
                handler: KAFKA,
                reason: format!(
                    "event {event_id} was refused by topic `{topic}` ({reason}) and could not \
                     be written to the dead-letter topic `{}` either ({dlq_error}); stopping \
                     instead of skipping it",
                    self.dead_letter_topic
                ),
            }),
        }
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

/// The headers of a record the producer handed back (copying them up front, for the rare
/// refusal, would cost every record).
fn returned_headers(message: &OwnedMessage) -> OwnedHeaders {
    message.headers().cloned().unwrap_or_else(OwnedHeaders::new)
}

/// A record to publish, and what its dead letter names if the broker refuses it.
struct Outgoing<'a> {
    topic: &'a str,
    key: &'a str,
    event_id: &'a str,
    value: &'a [u8],
}

/// Kafka headers from name/value pairs.
fn headers<const N: usize>(pairs: [(&str, &str); N]) -> OwnedHeaders {
    pairs
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(N + 4), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// Errors no retry can fix: the record itself, or the permission to write it.
fn refused_for_good(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | InvalidRecord
                | TopicAuthorizationFailed
                | PolicyViolation
                | UnsupportedForMessageFormat
                | InvalidTopic
        )
    )
}

/// Creates the topics that are missing (or, with `create_topics = false`, checks they
/// exist).
async fn ensure_topics(config: &KafkaConfig, topics: &[&str]) -> Result<(), PublishError> {
    let failed = |topic: &str, reason: String| PublishError::Topic {
        topic: topic.to_owned(),
        brokers: config.brokers.clone(),
        reason,
    };
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (name, value) in &config.properties {
        // Connection settings (security, SASL) apply to the admin client too.
        if name.starts_with("security.") || name.starts_with("sasl.") || name.starts_with("ssl.") {
            client.set(name, value);
        }
    }
    let first = topics.first().copied().unwrap_or_default();
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(|e| failed(first, e.to_string()))?;
    if !config.create_topics {
        // librdkafka's metadata call blocks its thread.
        let metadata =
            tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, ADMIN_TIMEOUT))
                .await
                .map_err(|e| failed(first, e.to_string()))?
                .map_err(|e| failed(first, e.to_string()))?;
        for topic in topics {
            let found = metadata
                .topics()
                .iter()
                .any(|t| t.name() == *topic && t.error().is_none());
            if !found {
                return Err(failed(topic, "it does not exist".into()));
            }
        }
        return Ok(());
    }
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|topic| {
            NewTopic::new(
                topic,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| failed(first, e.to_string()))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic = %topic, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(failed(&topic, code.to_string())),
        }
    }
    Ok(())
}
