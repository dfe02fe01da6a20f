//! Sending: typed, raw and namespace events as records, acknowledged by the broker, and
//! the records it refuses for good set aside.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;

use super::*;
use crate::config::kafka::ContentMode;
use crate::config::routes::KAFKA;
use crate::domain::DomainEvent;
use crate::domain::namespace::NamespaceEvent;
use crate::domain::raw::RawChangeEvent;
use crate::events::cloudevent::{
    CloudEvent, DATA_CONTENT_TYPE, FULLDOCUMENT_HEADER, LOOKUP, STRUCTURED_CONTENT_TYPE,
};
use crate::pipeline::target::TargetError;

impl KafkaSink {
    /// Publishes a raw change to its collection's topic: the change as relaxed Extended
    /// JSON, keyed by its document key, with the event id in `ce_id`.
    pub async fn publish_raw(&self, event: &RawChangeEvent) -> Result<(), TargetError> {
        let Some(topic) = self.raw_topics.get(&*event.namespace) else {
            return Err(TargetError::Fatal {
                handler: KAFKA,
                reason: format!("no topic for raw collection {}", event.namespace),
            });
        };
        let id = event.event_id.to_string();
        let mut headers = headers([("ce_id", id.as_str()), ("content-type", DATA_CONTENT_TYPE)]);
        if event.looked_up {
            headers = headers.insert(Header {
                key: FULLDOCUMENT_HEADER,
                value: Some(LOOKUP),
            });
        }
        let record = Outgoing {
            topic,
            key: &event.key,
            event_id: &id,
            value: &event.value,
        };
        self.send(record, headers).await
    }

    pub(super) async fn publish(&self, event: &DomainEvent) -> Result<(), TargetError> {
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

    pub(super) async fn publish_cloud_event(
        &self,
        topic: &str,
        key: &str,
        mut cloud_event: CloudEvent,
    ) -> Result<(), TargetError> {
        let (value, headers) = match self.mode {
            ContentMode::Binary => {
                let mut headers = headers(cloud_event.binary_headers());
                for (key, value) in cloud_event.extension_headers() {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value),
                    });
                }
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
    pub(super) async fn send(
        &self,
        record: Outgoing<'_>,
        headers: OwnedHeaders,
    ) -> Result<(), TargetError> {
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
                source: Box::new(error),
            }),
        }
    }

    /// Sends a refused event to the dead-letter topic; a failure there stops the stream.
    pub(super) async fn dead_letter(
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

/// The headers of a record the producer handed back (copying them up front, for the rare
/// refusal, would cost every record).
pub(super) fn returned_headers(message: &OwnedMessage) -> OwnedHeaders {
    message.headers().cloned().unwrap_or_else(OwnedHeaders::new)
}

/// A record to publish, and what its dead letter names if the broker refuses it.
pub(super) struct Outgoing<'a> {
    topic: &'a str,
    key: &'a str,
    event_id: &'a str,
    value: &'a [u8],
}

/// Kafka headers from name/value pairs.
pub(super) fn headers<const N: usize>(pairs: [(&str, &str); N]) -> OwnedHeaders {
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
pub(super) fn refused_for_good(error: &KafkaError) -> bool {
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
