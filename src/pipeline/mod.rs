//! The engine: one stream worker per watched database, sharing the handlers, the
//! checkpoint store, the dead-letter collection, metrics and health.

pub mod acker;
pub mod checkpoint_writer;
mod job;
pub mod lanes;
mod oversize;
mod pause;
pub mod router;
mod stream;
pub mod stuck;
pub mod until;

use std::sync::Arc;
use std::time::Duration;

use mongodb::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::routes::KAFKA;
use crate::domain::Domains;
use crate::observe::error_text::Tidy;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::source::{SourceError, StartAt};
use crate::state::checkpoints::CheckpointStore;
use crate::state::dead_letters::DeadLetters;
use crate::state::gaps::Gaps;
use crate::state::namespace_log::NamespaceLog;
use crate::targets::counters::{self, Counters};
use crate::targets::kafka::{KafkaSink, PublishError};
use crate::targets::memory_stats::{self, MemoryStats};
use crate::targets::provider_simulator::{self, ProviderSimulator};
use crate::targets::status_updater::StatusUpdater;
use crate::targets::{Handler, HandlerError};
use router::Router;

/// Why the engine stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A stream failed in a way reopening cannot fix.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A handler could neither apply nor set aside an event; the checkpoint stays before it.
    #[error("stream `{stream}` stopped: {reason}")]
    Handler {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// A change over 16 MB the server could not split, with `engine.oversize = "fail"`; the
    /// checkpoint stays before it.
    #[error(
        "stream `{stream}` stopped at a change to {namespace} {document_key} of {size} bytes, \
         over MongoDB's 16 MB limit, which the stream cannot split"
    )]
    Oversize {
        /// The stream.
        stream: String,
        /// `db.collection` of the change.
        namespace: String,
        /// The changed document's key, as relaxed Extended JSON.
        document_key: String,
        /// Bytes of the images and document key.
        size: i64,
        /// The change's resume token (`_data`), to move the checkpoint past it.
        token: String,
    },
    /// The stream's resume point is no longer in the oplog (policy `fail`, or a replay).
    #[error(transparent)]
    HistoryLost(Box<crate::source::history::HistoryLost>),
    /// A stream task ended abnormally (a bug).
    #[error("stream task failed: {0}")]
    Task(String),
}

/// What the stream workers share.
pub(crate) struct Shared {
    client: Client,
    config: Arc<Config>,
    router: Router,
    domains: Domains,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    checkpoints: CheckpointStore,
    dead_letters: DeadLetters,
    gaps: Gaps,
    namespace_log: NamespaceLog,
    start: StartAt,
    /// Set for a replay: its bounds and progress.
    replay: Option<Arc<until::Bounds>>,
    /// Publishes changes of the raw collections (`kafka.raw`) and namespace events.
    kafka_sink: Option<Arc<KafkaSink>>,
}

impl Shared {
    /// A dry-run replay: decode and count only (no dead letter, namespace record or
    /// checkpoint is written).
    fn dry_run(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| r.dry_run)
    }
}

/// The pipeline: streams → decode → handlers → acker → checkpoints.
pub struct Engine {
    shared: Shared,
}

impl Engine {
    /// An engine reading the streams of `config` with `handlers`; `start` applies to
    /// streams without a checkpoint.
    pub fn new(
        client: Client,
        config: Arc<Config>,
        handlers: &[Arc<dyn Handler>],
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        start: StartAt,
    ) -> Engine {
        let state_db = client.database(&config.checkpoint.database);
        Engine {
            shared: Shared {
                router: Router::new(handlers, &config.routes),
                domains: Domains::new(&config.payments.database, &config.payments.collection)
                    .with_memory(crate::domain::MemoryDomain::from_config(&config.memory)),
                checkpoints: CheckpointStore::new(&state_db),
                dead_letters: DeadLetters::new(&state_db),
                gaps: Gaps::new(&state_db),
                namespace_log: NamespaceLog::new(&state_db),
                replay: None,
                client,
                config,
                metrics,
                health,
                start,
                kafka_sink: None,
            },
        }
    }

    /// Publishes the changes of the raw collections (`kafka.raw`) and the namespace events
    /// through `sink`. Without one, the engine does not tell raw collections apart from
    /// other watched ones, and namespace events are only logged and recorded.
    pub fn with_kafka_sink(mut self, sink: Arc<KafkaSink>) -> Engine {
        let shared = &mut self.shared;
        let raw = shared
            .config
            .kafka
            .raw
            .iter()
            .map(|r| (r.database.clone(), r.collection.clone()))
            .collect();
        shared.domains = shared.domains.clone().with_raw(raw);
        shared.kafka_sink = Some(sink);
        self
    }

    /// Keeps positions in `store` instead of the live checkpoints (a replay's own).
    pub fn with_checkpoints(mut self, store: CheckpointStore) -> Engine {
        self.shared.checkpoints = store;
        self
    }

    /// Runs as a replay within `bounds`: each stream stops at the end, and the history-lost
    /// policy is always `fail` (a replay's start point is the operator's choice).
    pub fn with_replay(mut self, bounds: Arc<until::Bounds>) -> Engine {
        self.shared.replay = Some(bounds);
        self
    }

    /// Runs every stream until `shutdown` completes (then drains, stores the final
    /// checkpoints and returns `Ok`) or a stream fails for good.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        let stop = CancellationToken::new();
        let mut workers = JoinSet::new();
        let shared = Arc::new(self.shared);
        for target in &shared.config.watch {
            workers.spawn(stream::run(
                shared.clone(),
                target.clone(),
                stop.child_token(),
            ));
        }
        tokio::pin!(shutdown);
        let mut first_error = None;
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    stop.cancel();
                }
                joined = workers.join_next() => {
                    let Some(joined) = joined else { break };
                    let result = joined.map_err(|e| EngineError::Task(e.to_string())).and_then(|r| r);
                    if let Err(e) = result {
                        tracing::error!(error = %Tidy(&e), "stream stopped; stopping the others");
                        first_error.get_or_insert(e);
                        stopping = true;
                        stop.cancel();
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Why the handlers of `config` could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum HandlersError {
    /// The counters' indexes could not be created.
    #[error(transparent)]
    Indexes(#[from] HandlerError),
    /// The Kafka target could not start.
    #[error(transparent)]
    Kafka(#[from] PublishError),
}

/// Everything events go to.
pub struct Targets {
    /// The in-process handlers and the Kafka sink, for typed events.
    pub handlers: Vec<Arc<dyn Handler>>,
    /// The Kafka sink, when a route or a raw collection uses it.
    pub kafka: Option<Arc<KafkaSink>>,
}

/// The targets `config` uses: provider simulator (which settles through the status
/// updater), counters and memory stats (creating their indexes) and the Kafka sink
/// (creating its topics).
pub async fn targets(client: &Client, config: &Config) -> Result<Targets, HandlersError> {
    let routes = &config.routes;
    let mut handlers: Vec<Arc<dyn Handler>> = Vec::new();
    if routes.uses(provider_simulator::NAME) {
        let db = client.database(&config.payments.database);
        let updater = StatusUpdater::new(&db, &config.payments.collection);
        handlers.push(Arc::new(ProviderSimulator::new(
            Duration::from_millis(config.provider.latency_ms),
            config.provider.policy.with_seed(config.provider.seed),
            config.provider.max_in_flight,
            updater,
        )));
    }
    if routes.uses(counters::NAME) {
        let counters = Counters::from_config(client, config);
        counters.ensure_indexes().await?;
        handlers.push(Arc::new(counters));
    }
    if routes.uses(memory_stats::NAME) {
        let stats = MemoryStats::from_config(client, config);
        stats.ensure_indexes().await?;
        handlers.push(Arc::new(stats));
    }
    let mut kafka = None;
    if routes.uses(KAFKA) || !config.kafka.raw.is_empty() {
        let sink = Arc::new(KafkaSink::start(&config.kafka).await?);
        if routes.uses(KAFKA) {
            handlers.push(sink.clone());
        }
        kafka = Some(sink);
    }
    Ok(Targets { handlers, kafka })
}
