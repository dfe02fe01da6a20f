//! Configuration: built-in defaults, overlaid by a TOML file, overlaid by environment
//! variables, then validated. Every error names the key (or variable) it is about.
//!
//! Environment overrides: the key path joined by `_`, upper-cased, prefixed `CHANGEFLOW_`
//! (`mongodb.uri` → `CHANGEFLOW_MONGODB_URI`). String keys take the value as is; other keys
//! (numbers, booleans, arrays such as `watch`) take it as a TOML value.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod health;
pub mod history;
pub mod kafka;
pub mod lease;
mod load;
pub mod memory;
pub mod provider;
pub mod redact;
pub mod role;
pub mod routes;
pub mod snapshot;
#[cfg(test)]
mod tests;
mod validate;

use crate::config::redact::redact_uri;
pub use health::HealthConfig;
pub use history::{HistoryConfig, HistoryLostPolicy};
pub use kafka::KafkaConfig;
pub use lease::LeaseConfig;
pub use load::ConfigError;
pub use memory::{MemoryConfig, MemoryContentConfig, TextMode};
pub use provider::{OutcomePolicy, ProviderConfig};
pub use routes::RoutesConfig;
pub use snapshot::{SnapshotConfig, SnapshotMode};

/// Prefix of every environment override.
pub(crate) const ENV_PREFIX: &str = "CHANGEFLOW_";

/// The whole configuration. `Debug` shows no secret: the MongoDB and Kafka sections
/// redact themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the change streams are read from.
    pub mongodb: MongoConfig,
    /// Where events are published to.
    pub kafka: KafkaConfig,
    /// Which targets (handlers, Kafka) take each event kind.
    pub routes: RoutesConfig,
    /// One change stream per entry: a database and the collections to watch in it.
    pub watch: Vec<WatchedDatabase>,
    /// The payments domain: which watched collection holds payments.
    pub payments: PaymentsConfig,
    /// The agent-memory domain: where its collections live.
    pub memory: MemoryConfig,
    /// The simulated payment provider.
    pub provider: ProviderConfig,
    /// Where and how often stream positions are stored.
    pub checkpoint: CheckpointConfig,
    /// Lost history (resume points off the oplog) and the headroom warning.
    pub history: HistoryConfig,
    /// Copying the documents that exist before a stream starts.
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// One reader per stream across instances.
    #[serde(default)]
    pub lease: LeaseConfig,
    /// Reading and dispatching.
    pub engine: EngineConfig,
    /// When a stream counts as stuck.
    pub health: HealthConfig,
    /// The HTTP API.
    pub http: HttpConfig,
    /// Log output.
    pub log: LogConfig,
}

/// The payments domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Database of the payments collection; must be a watched database.
    pub database: String,
    /// The payments collection; must be one of that database's watched collections.
    /// `payment_counters` and `changeflow_processed_events` live beside it.
    pub collection: String,
    /// How long the counters remember a processed event id, in hours. A replay reaching
    /// further back than this counts its events again.
    pub processed_ttl_hours: u64,
}

/// Checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Database holding `changeflow_checkpoints` and `changeflow_dead_letters`.
    pub database: String,
    /// Store the position after at most this many events (or half of
    /// `engine.max_in_flight_events`, if less)…
    pub every_events: u64,
    /// …or after this many milliseconds, whichever comes first.
    pub every_ms: u64,
}

/// Reading and dispatching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Operation types the server passes on (the `$match` of every stream).
    pub operation_types: Vec<String>,
    /// Events read past the newest stored checkpoint, per stream; reading pauses at this
    /// bound, so a crash repeats at most this many events of a stream.
    pub max_in_flight_events: usize,
    /// Changes per server batch (getMore) at most; bounds the memory a batch takes. A
    /// stream over large documents asks for fewer (`source::batch`), so a batch stays
    /// about 4 MiB.
    pub batch_size: u32,
    /// On shutdown, how long in-flight handlers may run before they are abandoned (their
    /// events are then handled again after the restart), in milliseconds.
    pub shutdown_timeout_ms: u64,
    /// Split change events over 16 MB into fragments (`$changeStreamSplitLargeEvent`,
    /// MongoDB 6.0.9+, found by asking the server) and reassemble them before decoding.
    #[serde(default = "yes")]
    pub split_large_events: bool,
    /// What happens to a change event over 16 MB the server cannot split.
    #[serde(default)]
    pub oversize: OversizePolicy,
}

fn yes() -> bool {
    true
}

/// What happens to a change event too large to read (over MongoDB's 16 MB limit with its
/// document images) when the server cannot split it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OversizePolicy {
    /// Record what is known (namespace, document key, cluster time, size) in
    /// `changeflow_dead_letters` and go on past it.
    #[default]
    DeadLetter,
    /// Stop, naming the stream, the document key, the size and the ways out.
    Fail,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address, `host:port`.
    pub address: String,
}

/// MongoDB connection.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string of a replica set or mongos (change streams need one of those).
    pub uri: String,
}

/// A database watched by one change stream, filtered server-side to `collections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedDatabase {
    /// Database name.
    pub database: String,
    /// Collections whose changes are read; all others are filtered out by the server.
    pub collections: Vec<String>,
}

/// Log settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `changeflow=debug,info`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mongodb: MongoConfig {
                uri: "mongodb://127.0.0.1:27017/?replicaSet=rs0".to_owned(),
            },
            kafka: KafkaConfig::default(),
            routes: RoutesConfig::default(),
            watch: vec![
                WatchedDatabase {
                    database: "changeflow".to_owned(),
                    collections: vec!["payments".to_owned()],
                },
                WatchedDatabase {
                    database: "agent_memory".to_owned(),
                    collections: vec![
                        "short_term_memory".to_owned(),
                        "episodic_memory".to_owned(),
                        "semantic_memory".to_owned(),
                    ],
                },
            ],
            payments: PaymentsConfig {
                database: "changeflow".to_owned(),
                collection: "payments".to_owned(),
                processed_ttl_hours: 7 * 24,
            },
            memory: MemoryConfig {
                database: "agent_memory".to_owned(),
                short_term: "short_term_memory".to_owned(),
                episodic: "episodic_memory".to_owned(),
                semantic: "semantic_memory".to_owned(),
                processed_ttl_hours: 7 * 24,
                include_embeddings: false,
                content: MemoryContentConfig {
                    short_term: TextMode::Include,
                    episodic: TextMode::Include,
                    semantic: TextMode::Include,
                },
            },
            provider: ProviderConfig {
                latency_ms: 2000,
                policy: OutcomePolicy::Alternate,
                seed: 0,
                max_in_flight: 1024,
            },
            checkpoint: CheckpointConfig {
                database: "changeflow".to_owned(),
                every_events: 10_000,
                every_ms: 1000,
            },
            history: HistoryConfig::default(),
            snapshot: SnapshotConfig::default(),
            lease: LeaseConfig::default(),
            engine: EngineConfig {
                operation_types: ["insert", "update", "replace", "delete"]
                    .map(str::to_owned)
                    .to_vec(),
                max_in_flight_events: 10_000,
                batch_size: 1000,
                shutdown_timeout_ms: 10_000,
                split_large_events: true,
                oversize: OversizePolicy::DeadLetter,
            },
            health: HealthConfig::default(),
            http: HttpConfig {
                address: "127.0.0.1:8080".to_owned(),
            },
            log: LogConfig {
                format: LogFormat::Text,
                level: "info".to_owned(),
            },
        }
    }
}

impl Config {
    /// Every secret value in the configuration (the MongoDB password in both forms, secret
    /// Kafka properties), for scrubbing output that quotes other libraries.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = crate::config::redact::uri_password(&self.mongodb.uri);
        secrets.extend(self.kafka.secret_values());
        secrets
    }
}

// Passwords in the URI never reach logs or error output.
impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &redact_uri(&self.uri))
            .finish()
    }
}
