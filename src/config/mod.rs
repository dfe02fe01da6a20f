//! Configuration: built-in defaults, overlaid by a TOML file, overlaid by environment
//! variables, then validated. Every error names the key (or variable) it is about.
//!
//! Environment overrides: the key path joined by `_`, upper-cased, prefixed `CHANGEFLOW_`
//! (`mongodb.uri` → `CHANGEFLOW_MONGODB_URI`). String keys take the value as is; other keys
//! (numbers, booleans, arrays such as `watch`) take it as a TOML value.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::MemoryDomain;
use crate::domain::memory::{ContentMode, Privacy};
use crate::targets::provider_simulator::OutcomePolicy;

pub mod health;
pub mod history;
pub mod kafka;
pub mod redact;
pub mod routes;

use crate::config::redact::redact_uri;
pub use health::HealthConfig;
pub use history::{HistoryConfig, HistoryLostPolicy};
pub use kafka::KafkaConfig;
pub use routes::RoutesConfig;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "CHANGEFLOW_";

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

/// The agent-memory domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Database of the three memory collections.
    pub database: String,
    /// Conversation threads (TTL on `expires_at`).
    pub short_term: String,
    /// Finished threads: what happened.
    pub episodic: String,
    /// Facts, preferences and instructions learned about a user.
    pub semantic: String,
    /// How long `memory_stats` remembers a processed event id, in hours.
    pub processed_ttl_hours: u64,
    /// Copy embedding values into events; otherwise only their dimension count.
    pub include_embeddings: bool,
    /// What events carry of each collection's text.
    pub content: MemoryContentConfig,
}

/// Per memory collection: `include` the text, `hash` it (SHA-256) or `drop` it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryContentConfig {
    /// Message content and thread summaries.
    pub short_term: ContentMode,
    /// Episode summaries.
    pub episodic: ContentMode,
    /// Memory content.
    pub semantic: ContentMode,
}

impl MemoryConfig {
    /// Where the memory collections live and what their events carry, for the decoder.
    pub fn domain(&self) -> MemoryDomain {
        MemoryDomain {
            database: self.database.clone(),
            short_term: self.short_term.clone(),
            episodic: self.episodic.clone(),
            semantic: self.semantic.clone(),
            privacy: Privacy {
                include_embeddings: self.include_embeddings,
                short_term: self.content.short_term,
                episodic: self.content.episodic,
                semantic: self.content.semantic,
            },
        }
    }
}

/// The simulated payment provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// How long the provider takes to answer, in milliseconds (0 allowed).
    pub latency_ms: u64,
    /// `alternate`, `ratio:P`, `always-confirm` or `always-fail`.
    pub policy: OutcomePolicy,
    /// Seed of `ratio:P` (the same seed decides a replay the same way).
    pub seed: u64,
    /// Payments waiting on the provider at once.
    pub max_in_flight: usize,
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
    /// Changes per server batch (getMore); bounds the memory a batch takes.
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
                    short_term: ContentMode::Include,
                    episodic: ContentMode::Include,
                    semantic: ContentMode::Include,
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

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// An environment override could not be parsed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A key has a value of the wrong type, or is unknown.
    #[error("{origin}: key `{key}`: {message}")]
    Shape {
        /// Where the configuration came from.
        origin: String,
        /// The key path, e.g. `watch[0].collections`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        /// Where the configuration came from.
        origin: String,
        /// The key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads defaults ⊕ `file` (when given) ⊕ `CHANGEFLOW_*` variables from the process
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(file, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], then `sets` (`key.path=value`, as from `--set`) on top.
    pub fn load_with_sets(file: Option<&Path>, sets: &[String]) -> Result<Config, ConfigError> {
        Config::load_layers(file, |name| std::env::var(name).ok(), sets)
    }

    /// As [`Config::load`], reading variables through `env` (tests pass their own).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::load_layers(file, env, &[])
    }

    fn load_layers(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        sets: &[String],
    ) -> Result<Config, ConfigError> {
        let mut tree =
            toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
                origin: "built-in defaults".into(),
                key: String::new(),
                message: e.to_string(),
            })?;
        let origin = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
                merge(&mut tree, toml::Value::Table(table));
                path.display().to_string()
            }
            None => "configuration".to_owned(),
        };
        apply_env(&mut tree, &mut Vec::new(), &env)?;
        for set in sets {
            apply_set(&mut tree, set)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(tree).map_err(|e| ConfigError::Shape {
                origin: origin.clone(),
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin,
                key,
                message,
            })?;
        Ok(config)
    }

    /// Checks values the types cannot express; returns the offending key and why.
    fn validate(&self) -> Result<(), (String, String)> {
        let uri = &self.mongodb.uri;
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err((
                "mongodb.uri".into(),
                format!(
                    "`{}` is not a MongoDB connection string (mongodb:// or mongodb+srv://)",
                    redact_uri(uri)
                ),
            ));
        }
        self.kafka.validate()?;
        self.routes.validate()?;
        if self.watch.is_empty() {
            return Err(("watch".into(), "watch at least one database".into()));
        }
        let mut databases = HashSet::new();
        for (i, w) in self.watch.iter().enumerate() {
            let key = format!("watch[{i}]");
            check_database_name(&w.database).map_err(|m| (format!("{key}.database"), m))?;
            if !databases.insert(w.database.as_str()) {
                return Err((
                    format!("{key}.database"),
                    format!(
                        "`{}` is listed twice; one change stream per database: merge the \
                         collections into one entry",
                        w.database
                    ),
                ));
            }
            if w.collections.is_empty() {
                return Err((
                    format!("{key}.collections"),
                    "list at least one collection".into(),
                ));
            }
            let mut seen = HashSet::new();
            for (j, c) in w.collections.iter().enumerate() {
                let ckey = format!("{key}.collections[{j}]");
                check_collection_name(c).map_err(|m| (ckey.clone(), m))?;
                if !seen.insert(c.as_str()) {
                    return Err((ckey, format!("`{c}` is listed twice")));
                }
            }
        }
        self.history
            .validate(self.watch.iter().map(|w| w.database.as_str()))?;
        self.validate_payments()?;
        self.validate_memory()?;
        self.validate_raw()?;
        self.validate_engine()?;
        self.health.validate()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(("log.level".into(), format!("not a valid filter: {e}")));
        }
        Ok(())
    }
}

impl Config {
    fn validate_payments(&self) -> Result<(), (String, String)> {
        let p = &self.payments;
        let watched = self
            .watch
            .iter()
            .find(|w| w.database == p.database)
            .ok_or_else(|| {
                (
                    "payments.database".to_owned(),
                    format!("`{}` is not a watched database (see [[watch]])", p.database),
                )
            })?;
        if !watched.collections.contains(&p.collection) {
            return Err((
                "payments.collection".into(),
                format!(
                    "`{}` is not watched in database `{}`",
                    p.collection, p.database
                ),
            ));
        }
        if p.processed_ttl_hours == 0 {
            return Err((
                "payments.processed_ttl_hours".into(),
                "must be at least 1: processed ids are what makes counting exactly-once".into(),
            ));
        }
        if self.provider.max_in_flight == 0 {
            return Err(("provider.max_in_flight".into(), "must be at least 1".into()));
        }
        if self.provider.latency_ms > 3_600_000 {
            return Err((
                "provider.latency_ms".into(),
                "more than an hour; did you mean seconds?".into(),
            ));
        }
        check_database_name(&self.checkpoint.database)
            .map_err(|m| ("checkpoint.database".to_owned(), m))?;
        if self.checkpoint.every_events == 0 {
            return Err((
                "checkpoint.every_events".into(),
                "must be at least 1".into(),
            ));
        }
        if self.checkpoint.every_ms == 0 {
            return Err(("checkpoint.every_ms".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    fn validate_memory(&self) -> Result<(), (String, String)> {
        let m = &self.memory;
        check_database_name(&m.database).map_err(|e| ("memory.database".to_owned(), e))?;
        for (key, name) in [
            ("memory.short_term", &m.short_term),
            ("memory.episodic", &m.episodic),
            ("memory.semantic", &m.semantic),
        ] {
            check_collection_name(name).map_err(|e| (key.to_owned(), e))?;
        }
        Ok(())
    }

    /// Raw collections must be watched, and cannot be the payments collection (whose changes
    /// are typed events).
    fn validate_raw(&self) -> Result<(), (String, String)> {
        for (i, raw) in self.kafka.raw.iter().enumerate() {
            let watched = self
                .watch
                .iter()
                .any(|w| w.database == raw.database && w.collections.contains(&raw.collection));
            if !watched {
                return Err((
                    format!("kafka.raw[{i}]"),
                    format!(
                        "{}.{} is not watched (see [[watch]])",
                        raw.database, raw.collection
                    ),
                ));
            }
            let memory = &self.memory;
            let typed = (raw.database == self.payments.database
                && raw.collection == self.payments.collection)
                || (raw.database == memory.database
                    && [&memory.short_term, &memory.episodic, &memory.semantic]
                        .contains(&&raw.collection));
            if typed {
                return Err((
                    format!("kafka.raw[{i}]"),
                    format!(
                        "{}.{} is published as typed events (payments or memory); raw \
                         passthrough is for other collections",
                        raw.database, raw.collection
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_engine(&self) -> Result<(), (String, String)> {
        const KNOWN: [&str; 8] = [
            "insert",
            "update",
            "replace",
            "delete",
            "drop",
            "rename",
            "dropDatabase",
            "invalidate",
        ];
        let types = &self.engine.operation_types;
        if types.is_empty() {
            return Err((
                "engine.operation_types".into(),
                "list at least one operation type".into(),
            ));
        }
        for (i, t) in types.iter().enumerate() {
            if !KNOWN.contains(&t.as_str()) {
                return Err((
                    format!("engine.operation_types[{i}]"),
                    format!("unknown operation type `{t}` (known: {})", KNOWN.join(", ")),
                ));
            }
        }
        if self.engine.max_in_flight_events == 0 {
            return Err((
                "engine.max_in_flight_events".into(),
                "must be at least 1".into(),
            ));
        }
        if !(1..=100_000).contains(&self.engine.batch_size) {
            return Err((
                "engine.batch_size".into(),
                "must be from 1 to 100000".into(),
            ));
        }
        if self.http.address.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "http.address".into(),
                format!(
                    "`{}` is not a socket address like 127.0.0.1:8080",
                    self.http.address
                ),
            ));
        }
        Ok(())
    }
}

fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("database name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!("database name `{name}` is longer than 63 bytes"));
    }
    if let Some(bad) = name.chars().find(|c| "/\\. \"$\0".contains(*c)) {
        return Err(format!(
            "database name `{name}` contains `{bad}`, which MongoDB does not allow"
        ));
    }
    Ok(())
}

fn check_collection_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("collection name is empty".into());
    }
    if name.contains('$') || name.contains('\0') {
        return Err(format!("collection name `{name}` contains `$` or NUL"));
    }
    if name.starts_with("system.") {
        return Err(format!(
            "`{name}` is a system collection; change streams do not report them"
        ));
    }
    Ok(())
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Replaces every leaf (and every array) whose variable is set.
fn apply_env(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let toml::Value::Table(table) = value {
        for (key, child) in table.iter_mut() {
            path.push(key.clone());
            apply_env(child, path, env)?;
            path.pop();
        }
        return Ok(());
    }
    let var = format!("{ENV_PREFIX}{}", path.join("_").to_uppercase());
    let Some(raw) = env(&var) else {
        return Ok(());
    };
    *value = match value {
        toml::Value::String(_) => toml::Value::String(raw),
        _ => parse_toml_value(&raw).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?,
    };
    Ok(())
}

/// Applies one `key.path=value` override; the key must exist.
fn apply_set(tree: &mut toml::Value, set: &str) -> Result<(), ConfigError> {
    let error = |message: String| ConfigError::Invalid {
        origin: "--set".into(),
        key: set.split('=').next().unwrap_or_default().to_owned(),
        message,
    };
    let Some((key, raw)) = set.split_once('=') else {
        return Err(error(
            "expected KEY=VALUE, e.g. provider.latency_ms=0".into(),
        ));
    };
    let mut node = tree;
    for part in key.trim().split('.') {
        node = match node {
            toml::Value::Table(table) => table
                .get_mut(part)
                .ok_or_else(|| error(format!("unknown key `{}`", key.trim())))?,
            _ => return Err(error(format!("unknown key `{}`", key.trim()))),
        };
    }
    *node = match node {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Table(_) => return Err(error("is a section; set one of its keys".into())),
        _ => parse_toml_value(raw).map_err(error)?,
    };
    Ok(())
}

fn parse_toml_value(raw: &str) -> Result<toml::Value, String> {
    let table: toml::Table = toml::from_str(&format!("v = {raw}"))
        .map_err(|e| format!("`{raw}` is not a TOML value: {e}"))?;
    table
        .get("v")
        .cloned()
        .ok_or_else(|| "empty value".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(Some(&path), |name| vars.get(name).cloned())
    }

    #[test]
    fn committed_config_file_equals_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/changeflow.toml");
        let loaded = Config::load_with_env(Some(&path), |_| None).unwrap();
        assert_eq!(loaded, Config::default());
    }

    #[test]
    fn a_stuck_bound_under_a_second_is_refused() {
        let err = load_str("[health]\nstuck_after_ms = 10\n", &[]).unwrap_err();
        assert!(err.to_string().contains("health.stuck_after_ms"), "{err}");
        let ok = load_str("[health]\nstuck_after_ms = 5000\n", &[]).unwrap();
        assert_eq!(ok.health.stuck_after_ms, 5000);
    }

    #[test]
    fn unknown_key_is_reported_with_its_path() {
        let err = load_str("[mongodb]\nurl = \"mongodb://x\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Shape { .. }), "{text}");
        assert!(text.contains("mongodb.url"), "{text}");
        assert!(text.contains("unknown field"), "{text}");
    }

    #[test]
    fn wrong_type_is_reported_with_its_path() {
        let err = load_str(
            "[[watch]]\ndatabase = \"d\"\ncollections = \"payments\"\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("watch[0].collections"), "{err}");
    }

    #[test]
    fn bad_policy_is_reported_with_its_path() {
        let err = load_str("[provider]\npolicy = \"ratio:2\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("provider.policy"), "{err}");
        assert!(err.to_string().contains("from 0 to 1"), "{err}");
        let ok = load_str("", &[("CHANGEFLOW_PROVIDER_POLICY", "ratio:0.25")]).unwrap();
        assert_eq!(
            ok.provider.policy,
            OutcomePolicy::Ratio {
                confirm: 0.25,
                seed: 0
            }
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = load_str("[mongodb\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn environment_overrides_strings_and_arrays() {
        let config = load_str(
            "",
            &[
                (
                    "CHANGEFLOW_MONGODB_URI",
                    "mongodb://db.example:27017/?replicaSet=x",
                ),
                (
                    "CHANGEFLOW_WATCH",
                    r#"[{database = "shop", collections = ["orders", "payments"]}]"#,
                ),
                ("CHANGEFLOW_PAYMENTS_DATABASE", "shop"),
                ("CHANGEFLOW_PROVIDER_LATENCY_MS", "0"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.mongodb.uri,
            "mongodb://db.example:27017/?replicaSet=x"
        );
        assert_eq!(config.watch.len(), 1);
        assert_eq!(config.watch[0].database, "shop");
        assert_eq!(config.payments.database, "shop");
        assert_eq!(config.provider.latency_ms, 0);
    }

    #[test]
    fn set_overrides_known_keys_and_refuses_unknown_ones() {
        let sets = |s: &[&str]| {
            let sets: Vec<String> = s.iter().map(|s| s.to_string()).collect();
            Config::load_layers(None, |_| None, &sets)
        };
        let c = sets(&["provider.latency_ms=0", "http.address=127.0.0.1:0"]).unwrap();
        assert_eq!(c.provider.latency_ms, 0);
        assert_eq!(c.http.address, "127.0.0.1:0");
        for (bad, needle) in [
            (&["provider.latncy_ms=0"][..], "unknown key"),
            (&["provider=1"][..], "section"),
            (&["provider.latency_ms"][..], "KEY=VALUE"),
            (&["provider.latency_ms=soon"][..], "not a TOML value"),
        ] {
            let err = sets(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let err = load_str("", &[("CHANGEFLOW_WATCH", "[not toml")]).unwrap_err();
        assert!(err.to_string().contains("CHANGEFLOW_WATCH"), "{err}");
    }

    #[test]
    fn invalid_values_are_rejected_with_their_key() {
        let cases = [
            ("[mongodb]\nuri = \"postgres://x\"\n", "mongodb.uri"),
            ("watch = []\n", "watch"),
            (
                "[[watch]]\ndatabase = \"a.b\"\ncollections = [\"c\"]\n",
                "watch[0].database",
            ),
            (
                "[[watch]]\ndatabase = \"a\"\ncollections = [\"c\"]\n[[watch]]\ndatabase = \"a\"\ncollections = [\"d\"]\n",
                "watch[1].database",
            ),
            (
                "[[watch]]\ndatabase = \"a\"\ncollections = [\"system.views\"]\n",
                "watch[0].collections[0]",
            ),
            ("[log]\nlevel = \"info,,=[\"\n", "log.level"),
            ("[payments]\ndatabase = \"other\"\n", "payments.database"),
            (
                "[payments]\ncollection = \"orders\"\n",
                "payments.collection",
            ),
            ("[provider]\nmax_in_flight = 0\n", "provider.max_in_flight"),
            ("[checkpoint]\nevery_ms = 0\n", "checkpoint.every_ms"),
            (
                "[engine]\noperation_types = [\"insert\", \"upsert\"]\n",
                "engine.operation_types[1]",
            ),
            ("[http]\naddress = \"localhost\"\n", "http.address"),
            (
                "[kafka]\nraw = [{database = \"changeflow\", collection = \"orders\", topic = \"o\"}]\n",
                "kafka.raw[0]",
            ),
            (
                "[kafka]\nraw = [{database = \"changeflow\", collection = \"payments\", topic = \"p\"}]\n",
                "kafka.raw[0]",
            ),
            (
                "[routes]\npayment_failed = [\"provider_simulator\"]\n",
                "routes.payment_failed[0]",
            ),
            (
                "[kafka.properties]\n\"enable.idempotence\" = \"false\"\n",
                "kafka.properties.enable.idempotence",
            ),
        ];
        for (text, key) in cases {
            let err = load_str(text, &[]).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { .. }) && err.to_string().contains(key),
                "input {text:?}: expected an invalid-value error on `{key}`, got: {err}"
            );
        }
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let mut config = Config::default();
        config.mongodb.uri = "mongodb://app:s3cret@db:27017/?replicaSet=rs0".into();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@db"), "{shown}");
    }
}
