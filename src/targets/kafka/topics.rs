//! Topics: created when missing (the broker may not create them itself), checked when
//! they exist.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::*;
use crate::config::kafka::KafkaConfig;

/// Creates the topics that are missing (or, with `create_topics = false`, checks they
/// exist).
pub(crate) async fn ensure_topics(
    config: &KafkaConfig,
    topics: &[&str],
) -> Result<(), PublishError> {
    let failed = |topic: &str, reason: String| PublishError::Topic {
        topic: topic.to_owned(),
        brokers: config.brokers.clone(),
        reason,
    };
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (name, value) in config.properties.iter() {
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
