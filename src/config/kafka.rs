//! The `[kafka]` section: brokers, topics, producer tuning, and the librdkafka properties
//! changeflow sets itself (a user property may not override those).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The topic payment events go to unless configured otherwise.
pub(crate) const DEFAULT_PAYMENT_TOPIC: &str = "changeflow.payments";
/// The topic memory events go to unless configured otherwise.
pub(crate) const DEFAULT_MEMORY_TOPIC: &str = "changeflow.memory";
/// The topic namespace events go to unless configured otherwise.
pub(crate) const DEFAULT_NAMESPACE_TOPIC: &str = "changeflow.namespace";

/// Kafka connection, topics and producer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma separated `host:port`.
    pub brokers: String,
    /// Prepended to every topic name below (e.g. `staging.`).
    pub topic_prefix: String,
    /// Topic names, before the prefix.
    pub topics: TopicsConfig,
    /// `binary` (CloudEvent attributes as `ce_` headers, data as the value) or `structured`
    /// (the whole CloudEvent as one JSON value).
    pub content_mode: ContentMode,
    /// Record batch compression: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: Compression,
    /// How long the producer waits to fill a batch, in milliseconds.
    pub linger_ms: u64,
    /// How long the producer keeps trying one record before reporting it undelivered, in
    /// milliseconds; changeflow then sends the event again, with backoff, forever (an event
    /// is never skipped because the broker was away).
    pub delivery_timeout_ms: u64,
    /// Create missing topics at start (else a missing topic stops the start).
    pub create_topics: bool,
    /// Partitions of topics changeflow creates.
    pub partitions: i32,
    /// Replication factor of topics changeflow creates.
    pub replication_factor: i32,
    /// Further librdkafka producer properties, passed as given (e.g. `"security.protocol" =
    /// "SASL_SSL"`). Properties changeflow sets itself are refused.
    pub properties: Properties,
    /// Watched collections published raw: each change event as relaxed Extended JSON (the
    /// MongoDB Kafka source connector's default shape), keyed by its `documentKey`.
    pub raw: Vec<RawCollection>,
}

/// A watched collection whose changes are published as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollection {
    /// Its database (watched).
    pub database: String,
    /// The collection (watched in that database).
    pub collection: String,
    /// Topic (before the prefix).
    pub topic: String,
}

/// Topic names (before [`KafkaConfig::topic_prefix`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Payment events.
    pub payments: String,
    /// Agent-memory events.
    pub memory: String,
    /// Events the broker refused for good (too large, not authorised, invalid).
    pub dead_letters: String,
    /// Namespace events: a watched collection dropped or renamed, its database dropped,
    /// a stream invalidated.
    pub namespace: String,
}

/// How a CloudEvent is laid out in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentMode {
    /// Attributes as `ce_` headers, data as the value.
    Binary,
    /// The whole event as one JSON value.
    Structured,
}

/// Record batch compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_owned(),
            topic_prefix: String::new(),
            topics: TopicsConfig {
                payments: DEFAULT_PAYMENT_TOPIC.to_owned(),
                memory: DEFAULT_MEMORY_TOPIC.to_owned(),
                dead_letters: "changeflow.dlq".to_owned(),
                namespace: DEFAULT_NAMESPACE_TOPIC.to_owned(),
            },
            content_mode: ContentMode::Binary,
            compression: Compression::Lz4,
            linger_ms: 5,
            delivery_timeout_ms: 30_000,
            create_topics: true,
            partitions: 6,
            replication_factor: 1,
            properties: Properties::default(),
            raw: Vec::new(),
        }
    }
}

/// librdkafka's `socket.timeout.ms` unless `kafka.properties` sets it.
const SOCKET_TIMEOUT_MS: &str = "15000";

/// Producer properties changeflow sets, and the key to use instead (`None`: fixed, because
/// the delivery guarantees depend on it).
const OWNED_PROPERTIES: [(&str, Option<&str>); 11] = [
    ("bootstrap.servers", Some("kafka.brokers")),
    ("metadata.broker.list", Some("kafka.brokers")),
    ("enable.idempotence", None),
    ("acks", None),
    ("request.required.acks", None),
    ("max.in.flight.requests.per.connection", None),
    ("max.in.flight", None),
    ("transactional.id", None),
    ("compression.type", Some("kafka.compression")),
    ("linger.ms", Some("kafka.linger_ms")),
    ("message.timeout.ms", Some("kafka.delivery_timeout_ms")),
];

/// Consumer properties the handlers role sets (`kafka.properties` reach its consumer too),
/// and why they are fixed.
const CONSUMER_OWNED_PROPERTIES: [(&str, &str); 4] = [
    (
        "enable.auto.commit",
        "the handlers role commits an offset only past stored effects",
    ),
    (
        "group.id",
        "the handlers' group is `<kafka.topic_prefix>changeflow-handlers`; set the prefix",
    ),
    (
        "partition.assignment.strategy",
        "the handlers role keeps its partitions through a rebalance (cooperative-sticky)",
    ),
    (
        "auto.offset.reset",
        "a new handlers group starts at the earliest record, so nothing published is skipped",
    ),
];

/// librdkafka properties by name. Their `Debug` hides secret values (SASL and SSL
/// passwords), so no configuration printed for debugging shows them, whatever fields the
/// section gains.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

impl std::ops::Deref for Properties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if is_secret(name) {
                    "***"
                } else {
                    value.as_str()
                };
                (name, shown)
            }))
            .finish()
    }
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`…).
fn is_secret(name: &str) -> bool {
    name.contains("password") || name.contains("secret") || name.ends_with("sasl.jaas.config")
}

impl KafkaConfig {
    /// A copy with secret property values replaced by `***`, for display.
    pub fn redacted(&self) -> KafkaConfig {
        let mut shown = self.clone();
        for (name, value) in shown.properties.iter_mut() {
            if is_secret(name) {
                *value = "***".to_owned();
            }
        }
        shown
    }

    /// The values of secret properties (passwords, keys).
    pub fn secret_values(&self) -> Vec<String> {
        self.properties
            .iter()
            .filter(|(name, _)| is_secret(name))
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// A topic's full name: the prefix and `name`.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// Every librdkafka property of the producer: changeflow's, then the user's.
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        let mut properties = vec![
            ("bootstrap.servers".to_owned(), self.brokers.clone()),
            ("enable.idempotence".to_owned(), "true".to_owned()),
            ("acks".to_owned(), "all".to_owned()),
            (
                "compression.type".to_owned(),
                self.compression.as_str().to_owned(),
            ),
            ("linger.ms".to_owned(), self.linger_ms.to_string()),
            (
                "message.timeout.ms".to_owned(),
                self.delivery_timeout_ms.to_string(),
            ),
            // A request lost in a stalled connection (no answer, no close) is given up
            // and sent again after this; librdkafka's 60 s default held a stalled
            // broker's records a minute after traffic flowed again.
            ("socket.timeout.ms".to_owned(), SOCKET_TIMEOUT_MS.to_owned()),
        ];
        properties.extend(self.properties.0.clone());
        properties
    }

    /// Checks values the types cannot express; returns the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.brokers.split(',').all(|b| b.trim().is_empty()) {
            return Err(("kafka.brokers".into(), "no broker given".into()));
        }
        let topics = [
            ("kafka.topics.payments", &self.topics.payments),
            ("kafka.topics.memory", &self.topics.memory),
            ("kafka.topics.dead_letters", &self.topics.dead_letters),
            ("kafka.topics.namespace", &self.topics.namespace),
        ];
        for (key, name) in topics {
            check_topic_name(&self.topic(name)).map_err(|m| (key.to_owned(), m))?;
        }
        for (i, raw) in self.raw.iter().enumerate() {
            check_topic_name(&self.topic(&raw.topic))
                .map_err(|m| (format!("kafka.raw[{i}].topic"), m))?;
            let earlier = &self.raw[..i];
            if earlier
                .iter()
                .any(|r| r.database == raw.database && r.collection == raw.collection)
            {
                return Err((
                    format!("kafka.raw[{i}]"),
                    format!("{}.{} is listed twice", raw.database, raw.collection),
                ));
            }
        }
        if !(1..=10_000).contains(&self.partitions) {
            return Err(("kafka.partitions".into(), "must be from 1 to 10000".into()));
        }
        if !(1..=32).contains(&self.replication_factor) {
            return Err((
                "kafka.replication_factor".into(),
                "must be from 1 to 32".into(),
            ));
        }
        if self.linger_ms > 900_000 {
            return Err((
                "kafka.linger_ms".into(),
                "must be at most 900000 (librdkafka's limit)".into(),
            ));
        }
        if self.delivery_timeout_ms == 0 {
            return Err((
                "kafka.delivery_timeout_ms".into(),
                "must be at least 1; changeflow retries undelivered events itself".into(),
            ));
        }
        for name in self.properties.keys() {
            if let Some((_, instead)) = OWNED_PROPERTIES.iter().find(|(owned, _)| owned == name) {
                let message = match instead {
                    Some(key) => format!("changeflow sets `{name}` itself; use `{key}`"),
                    None => format!(
                        "changeflow sets `{name}` itself: the idempotent, acks=all producer \
                         is what makes delivery safe"
                    ),
                };
                return Err((format!("kafka.properties.{name}"), message));
            }
            if let Some((_, why)) = CONSUMER_OWNED_PROPERTIES.iter().find(|(o, _)| o == name) {
                return Err((
                    format!("kafka.properties.{name}"),
                    format!("changeflow sets `{name}` itself: {why}"),
                ));
            }
        }
        Ok(())
    }
}

/// Kafka's rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("topic name `{name}` must be 1 to 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid topic name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name `{name}` contains `{bad}`; Kafka allows letters, digits, `.`, `_`, `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_make_an_idempotent_acks_all_producer() {
        let config = KafkaConfig::default();
        assert_eq!(config.validate(), Ok(()));
        let properties = config.producer_properties();
        let get = |name: &str| {
            properties
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("enable.idempotence"), Some("true"));
        assert_eq!(get("acks"), Some("all"));
        assert_eq!(get("compression.type"), Some("lz4"));
    }

    #[test]
    fn a_property_changeflow_sets_is_refused_with_its_key() {
        let mut config = KafkaConfig::default();
        config.properties.insert("acks".into(), "1".into());
        let (key, message) = config.validate().expect_err("acks is changeflow's");
        assert_eq!(key, "kafka.properties.acks");
        assert!(message.contains("acks=all"), "{message}");
        let mut config = KafkaConfig::default();
        config.properties.insert("linger.ms".into(), "50".into());
        let (_, message) = config.validate().expect_err("linger.ms has its own key");
        assert!(message.contains("kafka.linger_ms"), "{message}");
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        assert_eq!(config.validate(), Ok(()), "other properties pass through");
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("enable.auto.commit".into(), "true".into());
        let (key, message) = config.validate().expect_err("the consumer's");
        assert_eq!(key, "kafka.properties.enable.auto.commit");
        assert!(message.contains("past stored effects"), "{message}");
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("session.timeout.ms".into(), "6000".into());
        assert_eq!(
            config.validate(),
            Ok(()),
            "the session timeout may be tuned"
        );
    }

    #[test]
    fn secret_properties_are_never_shown() {
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        config
            .properties
            .insert("sasl.username".into(), "app".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app"), "{shown}");
        assert_eq!(config.redacted().properties["sasl.password"], "***");
        assert_eq!(
            config.properties["sasl.password"], "hunter2",
            "only the copy"
        );
    }

    #[test]
    fn bad_topic_names_are_refused() {
        let config = KafkaConfig {
            topic_prefix: "team a.".into(),
            ..KafkaConfig::default()
        };
        let (key, message) = config.validate().expect_err("a space");
        assert_eq!(key, "kafka.topics.payments");
        assert!(message.contains("` `"), "{message}");
    }
}
