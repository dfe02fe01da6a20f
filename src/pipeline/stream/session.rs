//! One session of a stream: the async shell around the stream's [`Core`]. It feeds the
//! core what happens (changes read, jobs completed, checkpoints stored or failed, the
//! clock, a stop) and does what the core asks (start a job, store a checkpoint, abandon
//! what runs, finish). Every decision about *when* is the core's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use prometheus::IntCounter;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::snapshot::Snapshots;
use super::*;
use crate::decode::Decoded;
use crate::observe::health::StuckCause;
use crate::pipeline::checkpoint_writer::CheckpointWriter;
use crate::pipeline::core::{Action, Core, Limits};
use crate::pipeline::job::{self, Completion, Job, JobContext, Part, Writes};
use crate::pipeline::pause::PauseClock;
use crate::pipeline::stuck;
use crate::pipeline::until::StreamReach;
use crate::pipeline::{EngineError, Shared};
use crate::source;
use crate::source::position::{data_time, raw_token_data};
use crate::source::reader::{self, Item, Position, Reach};
use crate::source::snapshot::change_key;
use crate::state::checkpoints::Checkpoint;
use mongodb::bson::Timestamp;

/// Changes larger than this are decoded on the blocking pool, not on the stream's task.
const DECODE_ASIDE_BYTES: usize = 1 << 20;

/// Where the core's checkpoints go.
enum Store {
    /// The checkpoint writer task, and what it reports.
    Writer {
        writer: CheckpointWriter,
        stored: watch::Receiver<u64>,
        failed: watch::Receiver<Option<String>>,
        fenced: watch::Receiver<bool>,
    },
    /// A dry run stores nothing: every checkpoint counts as stored at once.
    Nothing,
}

/// Everything one open stream needs; rebuilt on every reopen (the previous one drained).
pub(super) struct Session<'a> {
    pub(super) shared: &'a Shared,
    pub(super) name: Arc<str>,
    pub(super) core: Core<Position, Job>,
    /// Jobs in progress, polled by this task: no spawn or cross-thread wake-up per event.
    running: FuturesUnordered<BoxFuture<'static, Completion>>,
    pub(super) ctx: Arc<JobContext>,
    /// Metric handles by label, looked up once per session instead of once per event.
    pub(super) received: HashMap<&'static str, IntCounter>,
    handled: HashMap<&'static str, IntCounter>,
    store: Store,
    /// Set when a job ended fatally: the session stops.
    fatal: Option<String>,
    /// Set by dispatch when the stream must stop at the change it was given.
    pub(super) stop: Option<EngineError>,
    /// The collections being snapshotted, and their reads and writes.
    pub(super) snapshots: Snapshots,
    /// Cluster time of the newest position read: where a snapshot chunk is read.
    pub(super) last_time: Option<Timestamp>,
    /// Cancelled when the stream's lease is lost (never for a replay).
    lease_lost: CancellationToken,
}

impl<'a> Session<'a> {
    /// A session of `name`; `lease` is its lease's term and the token cancelled when the
    /// lease is lost (None for a replay, which keeps checkpoints of its own).
    pub(super) fn new(
        shared: &'a Shared,
        name: Arc<str>,
        events_since_start: u64,
        lease: Option<(i64, CancellationToken)>,
    ) -> Session<'a> {
        let config = &shared.config;
        // At least every half bound: one checkpoint is stored while the other half is read,
        // so reading does not stall on the store.
        let half_window = config.engine.max_in_flight_events as u64 / 2;
        let limits = Limits {
            max_in_flight: config.engine.max_in_flight_events as u64,
            save_every: config.checkpoint.every_events.min(half_window).max(1),
            stuck_after: Duration::from_millis(config.health.stuck_after_ms),
            drain_timeout: Duration::from_millis(config.engine.shutdown_timeout_ms),
        };
        let store = if shared.dry_run() {
            Store::Nothing
        } else {
            let term = lease.as_ref().map(|(term, _)| *term);
            let writer =
                CheckpointWriter::start(shared.checkpoints.clone(), shared.metrics.clone(), term);
            Store::Writer {
                stored: writer.stored(),
                failed: writer.failed(),
                fenced: writer.fenced(),
                writer,
            }
        };
        Session {
            shared,
            ctx: Arc::new(JobContext {
                stream: name.clone(),
                metrics: shared.metrics.clone(),
                writes: (!shared.dry_run()).then(|| Writes {
                    dead_letters: shared.dead_letters.clone(),
                    namespace_log: shared.namespace_log.clone(),
                }),
                cancel: CancellationToken::new(),
                timers: shared
                    .router
                    .target_names()
                    .into_iter()
                    .map(|n| (n, shared.metrics.handler_seconds.with_label_values(&[n])))
                    .collect(),
                troubles: Mutex::default(),
            }),
            received: HashMap::new(),
            handled: HashMap::new(),
            name,
            core: Core::new(limits, events_since_start),
            running: FuturesUnordered::new(),
            store,
            fatal: None,
            stop: None,
            snapshots: Snapshots::default(),
            last_time: None,
            lease_lost: lease.map_or_else(CancellationToken::new, |(_, lost)| lost),
        }
    }

    /// Changes read since the stream started, across sessions.
    pub(super) fn events_since_start(&self) -> u64 {
        self.core.events()
    }

    pub(super) async fn run(
        &mut self,
        opened: source::Opened,
        shutdown: &CancellationToken,
    ) -> End {
        let source::Opened { stream, images } = opened;
        // Updates read with a lookup carry a document that may be newer than the change.
        let looked_up = images.is_lookup();
        let shared: &'a Shared = self.shared;
        let config = &shared.config;
        if shared.replay.is_some() {
            self.snapshots = Snapshots::none();
        }
        // A replay's stream ends at its bound: the reader says so with `Item::End`.
        let reach = shared.replay.clone().map(|bounds| {
            Arc::new(StreamReach {
                bounds,
                stream: self.name.to_string(),
            }) as Arc<dyn Reach>
        });
        let batch = config.engine.batch_size as usize;
        let (tx, mut rx) = mpsc::channel(CHUNKS_AHEAD);
        let waits = self.shared.metrics.reader_metrics(&self.name);
        let reader = tokio::spawn(reader::read(
            stream,
            self.name.to_string(),
            batch,
            tx,
            waits,
            shared.health.source(&self.name),
            reach,
        ));
        let mut pauses = PauseClock::new(shared.metrics.dispatch_pauses(&self.name));
        let mut tick = tokio::time::interval(Duration::from_millis(config.checkpoint.every_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let (mut stored, mut failed, mut fenced) = match &self.store {
            Store::Writer {
                stored,
                failed,
                fenced,
                ..
            } => (stored.clone(), failed.clone(), fenced.clone()),
            // Never change: a dry run's checkpoints count as stored when handed on.
            Store::Nothing => (
                watch::channel(0).1,
                watch::channel(None).1,
                watch::channel(false).1,
            ),
        };
        let lease_lost = self.lease_lost.clone();
        let lost = lease_lost.cancelled();
        tokio::pin!(lost);
        // The chunk being worked through; taken up again whenever in-flight work allows.
        let mut pending = Vec::new().into_iter();
        let mut end = None;
        loop {
            let stopping = end.is_some();
            tokio::select! {
                biased;
                _ = &mut cancelled, if !stopping => end = Some(End::Shutdown),
                // Another instance reads the stream now: stop at once, write nothing more.
                _ = &mut lost, if !stopping => {
                    self.core.lease_lost(Instant::now());
                    end = Some(End::LeaseLost);
                }
                Ok(()) = fenced.changed(), if !stopping => {
                    if *fenced.borrow_and_update() {
                        self.core.lease_lost(Instant::now());
                        end = Some(End::LeaseLost);
                    }
                }
                Some(done) = self.running.next() => self.complete(done),
                Some(step) = self.snapshots.next(), if self.snapshots.busy() && !stopping => {
                    self.snapshot_step(step);
                }
                _ = tick.tick() => {
                    let report = self.core.tick(Instant::now());
                    self.check(&report);
                }
                Ok(()) = stored.changed() => {
                    let sequence = *stored.borrow_and_update();
                    self.core.stored(sequence, Instant::now());
                }
                Ok(()) = failed.changed() => {
                    if let Some(error) = failed.borrow_and_update().clone() {
                        self.core.store_failed(error);
                    }
                }
                chunk = rx.recv(), if pending.len() == 0 && !stopping => match chunk {
                    Some(chunk) => pending = chunk.into_iter(),
                    None => end = Some(End::Closed),
                },
            }
            let mut burst = 0;
            while end.is_none() && self.core.may_read() {
                let Some(item) = pending.next() else { break };
                burst += 1;
                if burst % YIELD_EVERY == 0 {
                    tokio::task::yield_now().await;
                }
                match item {
                    Item::Change { token, raw } => {
                        if self.core.watching()
                            && let Some(key) = change_key(&raw)
                        {
                            self.core.touched(key);
                        }
                        let (decoded, times) = if raw.as_bytes().len() > DECODE_ASIDE_BYTES {
                            // Tens of milliseconds for a 16 MB change: off the runtime's
                            // workers, which the writer, the reader and HTTP share.
                            let domains = shared.domains.clone();
                            match tokio::task::spawn_blocking(move || domains.decode(raw)).await {
                                Ok(decoded) => decoded,
                                Err(e) => {
                                    end =
                                        Some(End::Fatal(format!("decoding a change failed: {e}")));
                                    break;
                                }
                            }
                        } else {
                            shared.domains.decode(raw)
                        };
                        self.last_time = times.cluster_time.or(self.last_time);
                        let decoded = match decoded {
                            Decoded::Event(mut event) if looked_up && times.update => {
                                event.meta_mut().looked_up = true;
                                Decoded::Event(event)
                            }
                            Decoded::Raw(mut event) if looked_up && times.update => {
                                event.looked_up = true;
                                Decoded::Raw(event)
                            }
                            other => other,
                        };
                        let position = Position {
                            token,
                            cluster_time: times.cluster_time,
                            wall_time: times.wall_time,
                        };
                        self.dispatch(position, decoded);
                        if let Some(stop) = self.stop.take() {
                            end = Some(End::Stop(stop));
                        }
                    }
                    Item::Idle(position) => {
                        if let Some(time) = raw_token_data(&position.token).and_then(data_time) {
                            self.last_time = Some(time);
                        }
                        self.core.mark(position, Instant::now());
                    }
                    Item::End => end = Some(End::Complete),
                    Item::Failed(e) => end = Some(End::Failed(e)),
                    Item::Closed => end = Some(End::Closed),
                }
            }
            if let Some(reason) = self.fatal.take() {
                end.get_or_insert(End::Fatal(reason));
            }
            if end.is_none() {
                self.read_chunks(self.last_time);
            }
            if !stopping && end.is_some() {
                self.begin_stop(&reader);
                // While draining, the clock ticks once: at the core's deadline.
                if let Some(deadline) = self.core.deadline() {
                    tick.reset_at(tokio::time::Instant::from_std(deadline));
                }
            }
            if self.act() {
                break;
            }
            pauses.observe(self.core.held_back());
        }
        pauses.observe(None);
        self.clear_stuck();
        if let Store::Writer { writer, .. } = std::mem::replace(&mut self.store, Store::Nothing) {
            if matches!(end, Some(End::LeaseLost)) {
                // The successor's checkpoint is the one that counts now.
                writer.abandon();
            } else {
                writer.finish(tokio::time::sleep(FINAL_CHECKPOINT)).await;
            }
        }
        end.unwrap_or(End::Shutdown)
    }

    /// Stops reading and starts the drain.
    fn begin_stop(&mut self, reader: &tokio::task::JoinHandle<()>) {
        reader.abort();
        // An aborted read is not a server that stopped answering.
        self.shared.health.source(&self.name).answered();
        let waiting = self.core.in_flight();
        if waiting > 0 {
            tracing::info!(stream = %self.name, in_flight = waiting, "waiting for in-flight events");
        }
        self.core.stop(Instant::now());
    }

    /// Does what the core asks; true once it finished.
    fn act(&mut self) -> bool {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Start(job) => self.running.push(Box::pin(job::run(job, self.ctx.clone()))),
                Action::Store {
                    position,
                    sequence,
                    events,
                } => self.store(position, sequence, events),
                Action::Abandon { unfinished } => {
                    tracing::warn!(
                        stream = %self.name,
                        abandoned = unfinished,
                        "shutdown timeout: abandoning unfinished events (they run again after restart)"
                    );
                    self.ctx.cancel.cancel();
                    self.running = FuturesUnordered::new();
                }
                Action::Delivered { chunk } => self.chunk_delivered(chunk),
                Action::Finished => return true,
            }
        }
        false
    }

    /// Hands a checkpoint to the store.
    fn store(&mut self, position: Position, sequence: u64, events: u64) {
        let writer = match &self.store {
            Store::Writer { writer, .. } => writer,
            Store::Nothing => {
                self.core.stored(sequence, Instant::now());
                return;
            }
        };
        let token = match reader::resume_token(&position.token) {
            Ok(token) => token,
            Err(e) => {
                // Not expected from a server token; the checkpoint stays where it was.
                tracing::error!(stream = %self.name, error = %e, "unreadable resume token; checkpoint not moved");
                return;
            }
        };
        writer.submit(
            Checkpoint {
                stream: self.name.to_string(),
                token,
                cluster_time: position.cluster_time,
                wall_time: position.wall_time,
                events_since_start: events,
            },
            sequence,
        );
    }

    /// A job ended.
    pub(super) fn complete(&mut self, done: Completion) {
        if let Some(reason) = &done.fatal {
            tracing::error!(stream = %self.name, reason = %reason, "stopping the stream");
            self.fatal.get_or_insert(reason.clone());
        }
        if done.finished && done.part != Part::Beside && done.work.counts_as_handled() {
            let kind = done.work.label();
            let metrics = &self.shared.metrics;
            self.handled
                .entry(kind)
                .or_insert_with(|| metrics.events_handled.with_label_values(&[kind]))
                .inc();
        }
        let lane = (done.part == Part::Laned).then(|| done.work.lane());
        let ticket = done.finished.then_some(done.ticket);
        if let Err(e) = self.core.complete(ticket, lane, Instant::now()) {
            tracing::error!(stream = %self.name, error = %e, "a completion the core refused");
        }
    }

    /// Publishes the core's report: stuck or not, and why.
    fn check(&self, report: &crate::pipeline::core::Report) {
        let shared = self.shared;
        stuck::Check {
            health: &shared.health,
            metrics: &shared.metrics,
            router: &shared.router,
            ctx: &self.ctx,
            stream: &self.name,
        }
        .run(report);
    }

    fn clear_stuck(&mut self) {
        let shared = self.shared;
        for cause in [StuckCause::Handlers, StuckCause::Checkpoint] {
            stuck::report_stuck(&shared.health, &shared.metrics, &self.name, cause, None);
        }
    }
}
