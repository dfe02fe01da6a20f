//! The handlers role: the in-process handlers fed from the payments topic instead of the
//! change stream, in a Kafka consumer group, so handler work spreads over machines on
//! Kafka's own engine. Each record becomes the typed event it was published from
//! ([`crate::events::parse`]) and runs through the same jobs, lanes and exactly-once
//! records as in a single process: one key's events (one payment: one partition) one at a
//! time in offset order, different keys at once. A partition's offset is committed only
//! past records whose effects are stored (the ticketed acker, one per partition), so a
//! killed instance's partitions are taken up by the others from there: some effects are
//! asked for again, and the processed-event records make them no-ops.

mod group;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::Client;
use rdkafka::Message;
use rdkafka::consumer::CommitMode;
use rdkafka::message::{BorrowedMessage, Headers};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::role::Role;
use crate::events::parse::payment_event;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::pipeline::acker::{Acker, Ticket};
use crate::pipeline::job::{self, Completion, Job, JobContext, Part, Routable, Work, Writes};
use crate::pipeline::lanes::Lanes;
use crate::pipeline::router::Router;
use crate::pipeline::target::{Input, Target};
use crate::state::dead_letters::{DeadLetter, DeadLetters};
use crate::state::leases::Owner;
use crate::state::namespace_log::NamespaceLog;
use crate::state::presence::Presence;
use group::Done;

/// How often the stored offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Why the handlers stopped before they were asked to.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The consumer could not be created or subscribed.
    #[error("joining the handlers' consumer group on `{topic}`: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// A handler could neither apply nor set aside an event.
    #[error("handlers stopped: {0}")]
    Handler(String),
}

/// One assigned partition: its acker, and the assignment it belongs to (completions of
/// an earlier one are ignored once the partition was taken away).
struct Partition {
    acker: Acker<i64>,
    assignment: u64,
}

/// A job of one partition's assignment.
struct Queued {
    partition: i32,
    assignment: u64,
    job: Job,
}

/// The handlers, fed from Kafka.
pub struct Handlers {
    config: Arc<Config>,
    router: Router,
    ctx: Arc<JobContext>,
    topic: String,
    health: Arc<Health>,
    /// Its entry in `changeflow_runs`.
    presence: Presence,
}

/// The name `/healthz` shows the handlers' consumer under.
pub fn health_name(config: &Config) -> String {
    format!(
        "kafka:{}",
        config.kafka.topic(&config.kafka.topics.payments)
    )
}

impl Handlers {
    /// Handlers of the payments topic of `config`, running `targets` by `[routes]`.
    pub fn new(
        client: &Client,
        config: Arc<Config>,
        targets: &[Arc<dyn Target>],
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Handlers {
        let state = client.database(&config.checkpoint.database);
        let router = Router::new(targets, &config.routes);
        let topic = config.kafka.topic(&config.kafka.topics.payments);
        let ctx = Arc::new(JobContext {
            stream: health_name(&config).into(),
            timers: router
                .target_names()
                .into_iter()
                .map(|n| (n, metrics.handler_seconds.with_label_values(&[n])))
                .collect(),
            metrics,
            writes: Some(Writes {
                dead_letters: DeadLetters::new(&state),
                namespace_log: NamespaceLog::new(&state),
            }),
            cancel: CancellationToken::new(),
            troubles: Mutex::default(),
        });
        Handlers {
            presence: Presence::new(&state, Owner::this_process(), Role::Handlers),
            config,
            router,
            ctx,
            topic,
            health,
        }
    }

    /// Consumes until `shutdown` completes (then finishes the running jobs within
    /// `engine.shutdown_timeout_ms` and commits), or a handler fails for good.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumeError> {
        let done: Done = Arc::default();
        let (consumer, mut revoked) =
            group::subscribe(&self.config.kafka, &self.topic, done.clone()).map_err(|source| {
                ConsumeError::Subscribe {
                    topic: self.topic.clone(),
                    source,
                }
            })?;
        tracing::info!(topic = %self.topic, group = %group::group_id(&self.config.kafka), "handlers consuming");
        let name = health_name(&self.config);
        self.health.set_open(&name, true);
        // Listed by `status` beside the instances that read the streams.
        let present = CancellationToken::new();
        let ttl = Duration::from_millis(self.config.lease.ttl_ms);
        self.presence.register_index().await;
        self.presence.beat_or_warn(ttl, &BTreeMap::new()).await;
        let presence = tokio::spawn(self.presence.clone().keep(
            ttl,
            Duration::from_millis(self.config.lease.renew_ms),
            present.clone(),
        ));
        let max_in_flight = self.config.engine.max_in_flight_events.max(1);
        let mut state = Loop {
            handlers: &self,
            partitions: HashMap::new(),
            lanes: Lanes::new(),
            running: JoinSet::new(),
            in_flight: 0,
            assignments: 0,
            done: done.clone(),
        };
        let mut commit = tokio::time::interval(COMMIT_EVERY);
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                Some(partitions) = revoked.recv() => state.revoke(&partitions),
                received = consumer.recv(), if state.in_flight < max_in_flight => match received {
                    Ok(message) => state.receive(&message),
                    Err(e) => tracing::warn!(error = %e, "reading from Kafka failed; retrying"),
                },
                Some(joined) = state.running.join_next() => {
                    if let Err(fatal) = state.complete(joined) {
                        break Err(fatal);
                    }
                }
                _ = commit.tick() => group::commit(&consumer, &self.topic, &done, CommitMode::Async),
            }
        };
        state
            .drain(Duration::from_millis(
                self.config.engine.shutdown_timeout_ms,
            ))
            .await;
        group::commit(&consumer, &self.topic, &done, CommitMode::Sync);
        self.health.set_open(&name, false);
        present.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), presence).await;
        result
    }
}

/// The loop's state.
struct Loop<'a> {
    handlers: &'a Handlers,
    partitions: HashMap<i32, Partition>,
    lanes: Lanes<Queued>,
    running: JoinSet<(i32, u64, Completion)>,
    in_flight: usize,
    assignments: u64,
    done: Done,
}

impl Loop<'_> {
    /// Tracks `message` in its partition and starts (or queues) its job.
    fn receive(&mut self, message: &BorrowedMessage<'_>) {
        let (p, offset) = (message.partition(), message.offset());
        let assignments = &mut self.assignments;
        let partition = self.partitions.entry(p).or_insert_with(|| {
            *assignments += 1;
            Partition {
                acker: Acker::new(),
                assignment: *assignments,
            }
        });
        let headers = message.headers();
        let header = |name: &str| {
            headers.and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
            })
        };
        let value = message.payload().unwrap_or_default();
        let handlers = self.handlers;
        let (work, routes) = match payment_event(header, value) {
            Ok(event) => {
                let route = handlers.router.route(Input::Typed(event.kind())).clone();
                let routes = u32::from(!route.is_empty());
                let item = Routable::Typed(Arc::new(event));
                (Work::Event { item, route }, routes)
            }
            Err(e) => {
                let id = format!("kafka:{}:{p}:{offset}", handlers.topic);
                tracing::warn!(record = %id, error = %e, "a record of the payments topic is not a changeflow payment event; dead-lettered");
                let letter = DeadLetter::from_record(
                    "decode",
                    &handlers.ctx.stream,
                    &id,
                    value,
                    e.to_string(),
                );
                let lane = format!("dl:{id}").into();
                (
                    Work::DeadLetter {
                        letter: Arc::new(letter),
                        lane,
                    },
                    1,
                )
            }
        };
        let mut tickets = partition.acker.track(offset, routes);
        let assignment = partition.assignment;
        match tickets.next() {
            Some(ticket) => {
                let lane = work.lane().to_owned();
                let queued = Queued {
                    partition: p,
                    assignment,
                    job: Job {
                        ticket,
                        work,
                        part: Part::Laned,
                    },
                };
                self.in_flight += 1;
                if let Some(start) = self.lanes.submit(&lane, queued) {
                    self.start(start);
                }
            }
            // Nothing runs it (no handler takes its kind): done once those before are.
            None => self.advance(p),
        }
    }

    fn start(&mut self, queued: Queued) {
        let ctx = self.handlers.ctx.clone();
        let Queued {
            partition,
            assignment,
            job,
        } = queued;
        self.running
            .spawn(async move { (partition, assignment, job::run(job, ctx).await) });
    }

    /// A job ended: its lane's next job starts, and its partition's offset may move.
    fn complete(
        &mut self,
        joined: Result<(i32, u64, Completion), tokio::task::JoinError>,
    ) -> Result<(), ConsumeError> {
        let (p, assignment, completion) =
            joined.map_err(|e| ConsumeError::Handler(format!("a job task failed: {e}")))?;
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(next) = self.lanes.finish(completion.work.lane()) {
            self.start(next);
        }
        if let Some(reason) = completion.fatal {
            return Err(ConsumeError::Handler(reason));
        }
        if completion.finished {
            self.handled(&completion.work);
            self.ack(p, assignment, completion.ticket);
        }
        Ok(())
    }

    fn handled(&self, work: &Work) {
        self.handlers
            .ctx
            .metrics
            .events_handled
            .with_label_values(&[work.label()])
            .inc();
    }

    fn ack(&mut self, p: i32, assignment: u64, ticket: Ticket) {
        let Some(partition) = self.partitions.get_mut(&p) else {
            return;
        };
        if partition.assignment != assignment {
            return;
        }
        if let Err(e) = partition.acker.route_done(ticket) {
            tracing::error!(partition = p, error = %e, "a completion the acker cannot place (a bug); the offset stays");
            return;
        }
        self.advance(p);
    }

    fn advance(&mut self, p: i32) {
        let Some(partition) = self.partitions.get_mut(&p) else {
            return;
        };
        if let Some(offset) = partition.acker.take_advanced() {
            crate::observe::locks::lock(&self.done).insert(p, offset + 1);
        }
    }

    /// Partitions taken away: their ackers go (a later assignment starts afresh from the
    /// committed offset); their running jobs finish, and their completions are ignored.
    fn revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    /// Lets the running jobs finish within `timeout`, then cancels their retries.
    async fn drain(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.running.is_empty() {
            tokio::select! {
                joined = self.running.join_next() => {
                    let Some(joined) = joined else { break };
                    if let Err(e) = self.complete(joined) {
                        tracing::warn!(error = %e, "while stopping");
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.handlers.ctx.cancel.cancel();
                    deadline_passed(&mut self.running).await;
                    return;
                }
            }
        }
    }
}

/// Waits for the cancelled jobs to return (their retries stop at once).
async fn deadline_passed(running: &mut JoinSet<(i32, u64, Completion)>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while running.join_next().await.is_some() {}
    })
    .await;
}
