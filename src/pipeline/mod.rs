//! The engine: one stream worker per watched database, sharing the targets, the
//! checkpoint store, the dead-letter collection, metrics and health.

pub mod acker;
mod census;
pub mod checkpoint_writer;
pub mod consume;
pub(crate) mod core;
mod job;
pub mod lanes;
mod oversize;
mod pause;
pub mod router;
pub(crate) mod spread;
mod stream;
pub mod stuck;
pub mod target;
pub mod until;

use std::sync::Arc;

use mongodb::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::role::Role;
use crate::decode::Domains;
use crate::observe::error_text::Tidy;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::source::{SourceError, StartAt};
use crate::state::checkpoints::CheckpointStore;
use crate::state::dead_letters::DeadLetters;
use crate::state::gaps::Gaps;
use crate::state::leases::{Leases, Owner};
use crate::state::namespace_log::NamespaceLog;
use crate::state::presence::Presence;
use crate::state::snapshots::Snapshots;
use router::Router;
use target::{Input, Target};

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
    /// Shared with the blocking pool, which decodes the largest changes.
    domains: Arc<Domains>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    checkpoints: CheckpointStore,
    dead_letters: DeadLetters,
    gaps: Gaps,
    namespace_log: NamespaceLog,
    snapshots: Snapshots,
    /// Who reads which stream: one instance per stream.
    leases: Leases,
    /// This process, as a lease owner.
    owner: Owner,
    /// What this instance runs, as its entry in `changeflow_runs` says.
    role: Role,
    /// Which streams this instance holds, within its share.
    spread: spread::Spread,
    start: StartAt,
    /// Set for a replay: its bounds and progress.
    replay: Option<Arc<until::Bounds>>,
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
    /// An engine reading the streams of `config` into `targets`; `start` applies to
    /// streams without a checkpoint. Changes of the collections a target takes raw
    /// ([`Target::raw_collections`]) are passed on as the server sent them.
    pub fn new(
        client: Client,
        config: Arc<Config>,
        targets: &[Arc<dyn Target>],
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        start: StartAt,
    ) -> Engine {
        let state_db = client.database(&config.checkpoint.database);
        let router = Router::new(targets, &config.routes);
        let mut domains = Domains::new(&config.payments.database, &config.payments.collection)
            .with_memory(crate::decode::MemoryDomain::from_config(&config.memory));
        let mut raw: Vec<(String, String)> = router
            .route(Input::Raw)
            .iter()
            .flat_map(|t| t.raw_collections())
            .collect();
        raw.sort();
        raw.dedup();
        if !raw.is_empty() {
            domains = domains.with_raw(raw);
        }
        Engine {
            shared: Shared {
                router,
                domains: Arc::new(domains),
                checkpoints: CheckpointStore::new(&state_db),
                dead_letters: DeadLetters::new(&state_db),
                gaps: Gaps::new(&state_db),
                namespace_log: NamespaceLog::new(&state_db),
                snapshots: Snapshots::new(&state_db),
                leases: Leases::new(&state_db),
                owner: Owner::this_process(),
                role: Role::All,
                spread: spread::Spread::default(),
                replay: None,
                client,
                config,
                metrics,
                health,
                start,
            },
        }
    }

    /// Runs as `role` (capture: its targets are Kafka only), as its instance entry says.
    pub fn with_role(mut self, role: Role) -> Engine {
        self.shared.role = role;
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
        let census = match shared.replay {
            Some(_) => None,
            None => Some(start_census(&shared).await),
        };
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
        // After the final checkpoints: the instance's entry goes last.
        if let Some((stop, task)) = census {
            stop.cancel();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Registers this instance and counts the others before any stream is taken (so a
/// start beside running instances takes its share only), then keeps counting.
async fn start_census(shared: &Arc<Shared>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let state = shared.client.database(&shared.config.checkpoint.database);
    let presence = Presence::new(&state, shared.owner.clone(), shared.role);
    presence.register_index().await;
    census::take(shared, &presence).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(census::keep(shared.clone(), presence, stop.clone()));
    (stop, task)
}
