//! One watched database: open its stream from the checkpoint, read, dispatch to ordered
//! lanes, ack, store the checkpoint; on errors drain, store, and reopen with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use prometheus::IntCounter;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::job::{self, Completion, Job, JobContext, Part, Routable, Work};
use super::lanes::Lanes;
use super::pause::{Cause, PauseClock};
use super::stuck::{self, Unfinished};
use super::until::{ReplayStep, StreamProgress};
use super::{EngineError, Shared, oversize};
use crate::config::{HistoryLostPolicy, OversizePolicy, WatchedDatabase};
use crate::decode::{DecodeError, Decoded};
use crate::domain::EventId;
use crate::domain::namespace::{NamespaceChange, NamespaceEvent};
use crate::observe::error_text::Tidy;
use crate::observe::health::StuckCause;
use crate::pipeline::acker::{Acker, Ticket};
use crate::pipeline::checkpoint_writer::CheckpointWriter;
use crate::source::history::{self, HistoryLost};
use crate::source::position::{describe, token_time};
use crate::source::reader::{self, Item, Position};
use crate::source::{self, SourceError, StartAt};
use crate::state::checkpoints::{Checkpoint, Resume, Stored};
use crate::state::dead_letters::DeadLetter;

/// Chunks (about a server batch each) the reader may hold ahead of the dispatcher: one
/// waiting while the driver fetches the next, so the server's work on a batch overlaps with
/// ours on the previous one instead of adding to it.
const CHUNKS_AHEAD: usize = 2;

/// Events dispatched between yields to the scheduler. A whole chunk takes milliseconds;
/// in between, the tasks that share this worker (the driver's connection pool handing the
/// reader its connection for the next batch, the checkpoint writer, HTTP) get their turn.
const YIELD_EVERY: usize = 64;

/// How long the final checkpoint write may take when a session ends (after the drain,
/// within the stop's margin, [`crate::cmd::shutdown::MARGIN`]); past it the restart repeats the
/// events since the last stored one.
const FINAL_CHECKPOINT: Duration = Duration::from_secs(2);

/// How a session with an open stream ended.
enum End {
    Shutdown,
    /// A replay reached its end.
    Complete,
    Failed(SourceError),
    Closed,
    /// A handler could neither apply nor set aside an event.
    Fatal(String),
    /// The stream met what its policy says to stop at.
    Stop(EngineError),
}

/// Runs the stream of `target` until `shutdown`, reopening after retryable errors.
pub async fn run(
    shared: Arc<Shared>,
    target: WatchedDatabase,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let name: Arc<str> = target.database.as_str().into();
    let mut reconnect = ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(200))
        .with_max_interval(Duration::from_secs(30))
        .with_max_elapsed_time(None)
        .build();
    let mut events_since_start = 0u64;
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            opened = open(&shared, &name, &target) => opened,
        };
        let error = match opened {
            Ok(stream) => {
                record_open(&shared, &name, true);
                tracing::info!(stream = %name, collections = ?target.collections, "stream open");
                let mut session = Session::new(&shared, name.clone(), events_since_start);
                let end = session.run(stream, &shutdown).await;
                events_since_start = session.events_since_start;
                record_open(&shared, &name, false);
                match end {
                    End::Shutdown => return Ok(()),
                    End::Complete => {
                        tracing::info!(stream = %name, "replay reached its end");
                        if let Some(p) = replay_progress(&shared, &name) {
                            p.finish();
                        }
                        return Ok(());
                    }
                    // An invalidate (database dropped): its event moved the checkpoint,
                    // and the stream reopens right after it.
                    End::Closed => {
                        reconnect.reset();
                        tracing::warn!(stream = %name, "stream closed by the server; reopening after the checkpoint");
                        continue;
                    }
                    End::Fatal(reason) => {
                        return Err(EngineError::Handler {
                            stream: name.to_string(),
                            reason,
                        });
                    }
                    End::Stop(e) => return Err(e),
                    End::Failed(e) => {
                        reconnect.reset();
                        OpenError::Source(e)
                    }
                }
            }
            Err(e) => e,
        };
        match error {
            OpenError::HistoryLost(lost) => return Err(EngineError::HistoryLost(lost)),
            // Reopening from the checkpoint applies the history-lost policy.
            OpenError::Source(e) if !e.is_retryable() && !e.is_history_lost() => {
                return Err(EngineError::Source(e));
            }
            e => {
                let pause = reconnect.next_backoff().unwrap_or(Duration::from_secs(30));
                tracing::warn!(
                    stream = %name,
                    error = %Tidy(&e),
                    retry_in_ms = pause.as_millis() as u64,
                    "stream failed; reopening from the checkpoint"
                );
                shared
                    .metrics
                    .stream_reconnects
                    .with_label_values(&[&name])
                    .inc();
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                    _ = shared.health.primary_back() => reconnect.reset(),
                }
            }
        }
    }
}

fn replay_progress<'a>(shared: &'a Shared, name: &str) -> Option<&'a StreamProgress> {
    shared.replay.as_deref()?.progress.stream(name)
}

/// Health (for `/healthz`) and the `changeflow_stream_open` gauge, kept in step.
fn record_open(shared: &Shared, name: &str, open: bool) {
    shared.health.set_open(name, open);
    shared
        .metrics
        .stream_open
        .with_label_values(&[name])
        .set(i64::from(open));
}

/// Why a stream could not be (re)opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Source(SourceError),
    #[error(transparent)]
    Checkpoint(#[from] crate::state::checkpoints::StoreError),
    #[error(transparent)]
    HistoryLost(Box<HistoryLost>),
    #[error("recording the gap in changeflow_gaps: {0}")]
    Gap(mongodb::error::Error),
}

impl From<SourceError> for OpenError {
    fn from(e: SourceError) -> Self {
        OpenError::Source(e)
    }
}

/// Opens the stream after its checkpoint, or at the configured start. A stream without a
/// token checkpoint stores its opening position at once, so a crash before the first
/// periodic checkpoint does not lose the changes made since. History lost since the
/// checkpoint goes by the stream's policy.
async fn open(
    shared: &Shared,
    name: &str,
    target: &WatchedDatabase,
) -> Result<mongodb::change_stream::ChangeStream<source::RawChange>, OpenError> {
    let stored = shared.checkpoints.load_stored(name).await?;
    let start = stored
        .as_ref()
        .map_or_else(|| shared.start.clone(), Stored::start_at);
    let has_token = matches!(&stored, Some(s) if matches!(s.resume, Resume::After(_)));
    let (stream, fresh) = match open_at(shared, name, target, &start).await {
        Ok(stream) => (stream, !has_token),
        Err(OpenError::HistoryLost(lost))
            if shared.replay.is_none()
                && shared.config.history.policy(name) == HistoryLostPolicy::RestartFromNow =>
        {
            (restart_from_now(shared, name, target, &lost).await?, true)
        }
        Err(e) => return Err(e),
    };
    if fresh
        && !shared.dry_run()
        && let Some(token) = stream.resume_token()
    {
        shared
            .checkpoints
            .save(&Checkpoint {
                stream: name.to_owned(),
                token,
                cluster_time: None,
                wall_time: None,
                events_since_start: 0,
            })
            .await?;
        shared.metrics.checkpoint_saved(name);
    }
    Ok(stream)
}

/// Opens at `start`, first checking that its history is still in the oplog (when the
/// oplog can be read; the server's own error covers the rest).
async fn open_at(
    shared: &Shared,
    name: &str,
    target: &WatchedDatabase,
    start: &StartAt,
) -> Result<mongodb::change_stream::ChangeStream<source::RawChange>, OpenError> {
    let lost = |oldest, cause: String| {
        OpenError::HistoryLost(Box::new(HistoryLost {
            stream: name.to_owned(),
            resume_from: history::resume_time(start),
            oldest,
            cause,
            replay: shared.replay.is_some(),
        }))
    };
    if !matches!(start, StartAt::Now)
        && let Some(oldest) = history::oldest_available(&shared.client, name).await
        && history::is_lost(start, oldest)
    {
        return Err(lost(
            Some(oldest),
            "found before resuming: the resume point is older than the oldest oplog entry".into(),
        ));
    }
    match source::open(&shared.client, target, &shared.config.engine, start).await {
        Err(e) if e.is_history_lost() => {
            let oldest = history::oldest_available(&shared.client, name).await;
            Err(lost(oldest, format!("the server: {e}")))
        }
        other => Ok(other?),
    }
}

/// `restart-from-now`: opens at the present, records the gap (before the checkpoint
/// moves past it, so a crash cannot lose the record) and says so loudly.
async fn restart_from_now(
    shared: &Shared,
    name: &str,
    target: &WatchedDatabase,
    lost: &HistoryLost,
) -> Result<mongodb::change_stream::ChangeStream<source::RawChange>, OpenError> {
    let stream = source::open(&shared.client, target, &shared.config.engine, &StartAt::Now).await?;
    let lost_to = stream.resume_token().as_ref().and_then(token_time);
    let gap = crate::state::gaps::Gap::after(lost, lost_to);
    shared.gaps.record(&gap).await.map_err(OpenError::Gap)?;
    shared.metrics.gaps.with_label_values(&[name]).inc();
    tracing::error!(
        stream = %name,
        lost_from = %gap.lost_from.map_or_else(|| "unknown".to_owned(), describe),
        lost_to = %gap.lost_to.map_or_else(|| "unknown".to_owned(), describe),
        cause = %lost.cause,
        "history lost: continuing from now (history.on_lost = restart-from-now); the gap is recorded in changeflow_gaps"
    );
    Ok(stream)
}

/// Everything one open stream needs; rebuilt on every reopen (the previous one drained).
struct Session<'a> {
    shared: &'a Shared,
    name: Arc<str>,
    acker: Acker<Position>,
    lanes: Lanes<Job>,
    /// Jobs in progress, polled by this task: no spawn or cross-thread wake-up per event.
    running: FuturesUnordered<BoxFuture<'static, Completion>>,
    ctx: Arc<JobContext>,
    /// Metric handles by label, looked up once per session instead of once per event.
    received: HashMap<&'static str, IntCounter>,
    handled: HashMap<&'static str, IntCounter>,
    /// Newest fully handled position not yet handed to the writer, with its sequence
    /// number (see [`Acker::released`]).
    unsaved: Option<(Position, u64)>,
    writer: Option<CheckpointWriter>,
    /// Sequence number of the newest checkpoint handed to the writer.
    submitted: u64,
    /// Sequence number of the newest stored checkpoint, reported by the writer.
    stored: watch::Receiver<u64>,
    /// Its value, taken once per round of the session loop, not once per event.
    durable: u64,
    events_since_save: u64,
    events_since_start: u64,
    /// Set when a job ended fatally: the session stops.
    fatal: Option<String>,
    /// Set by dispatch when the stream must stop at the change it was given.
    stop: Option<EngineError>,
    /// Events with work to do, oldest first, for the stuck check.
    unfinished: Unfinished,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, name: Arc<str>, events_since_start: u64) -> Session<'a> {
        let writer = CheckpointWriter::start(shared.checkpoints.clone(), shared.metrics.clone());
        Session {
            shared,
            ctx: Arc::new(JobContext {
                stream: name.clone(),
                metrics: shared.metrics.clone(),
                dead_letters: shared.dead_letters.clone(),
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
            acker: Acker::new(),
            lanes: Lanes::new(),
            running: FuturesUnordered::new(),
            unsaved: None,
            submitted: 0,
            stored: writer.stored(),
            durable: 0,
            writer: Some(writer),
            events_since_save: 0,
            events_since_start,
            fatal: None,
            stop: None,
            unfinished: Unfinished::default(),
        }
    }

    async fn run(
        &mut self,
        stream: mongodb::change_stream::ChangeStream<source::RawChange>,
        shutdown: &CancellationToken,
    ) -> End {
        let shared: &'a Shared = self.shared;
        let config = &shared.config;
        let replay = shared.replay.as_deref();
        let progress = replay_progress(shared, &self.name);
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
        ));
        // At least every half bound: one checkpoint is stored while the other half is read,
        // so reading does not stall on the writer.
        let half_window = config.engine.max_in_flight_events as u64 / 2;
        let save_every = config.checkpoint.every_events.min(half_window).max(1);
        let mut pauses = PauseClock::new(shared.metrics.dispatch_pauses(&self.name));
        let mut tick = tokio::time::interval(Duration::from_millis(config.checkpoint.every_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        // The chunk being worked through; taken up again whenever in-flight work allows.
        let mut pending = Vec::new().into_iter();
        let end = 'session: loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => break End::Shutdown,
                Some(done) = self.running.next() => self.complete(done),
                _ = tick.tick() => {
                    self.save();
                    self.check_stuck();
                }
                Ok(()) = self.stored.changed() => {}
                chunk = rx.recv(), if pending.len() == 0 => match chunk {
                    Some(chunk) => pending = chunk.into_iter(),
                    None => break End::Closed,
                },
            }
            self.durable = *self.stored.borrow_and_update();
            let mut burst = 0;
            while self.may_read() {
                let Some(item) = pending.next() else { break };
                burst += 1;
                if burst % YIELD_EVERY == 0 {
                    tokio::task::yield_now().await;
                }
                match item {
                    Item::Change { token, raw } => {
                        let (decoded, times) = shared.domains.decode(raw);
                        let last = match replay {
                            None => false,
                            Some(replay) => {
                                match replay.change(&token, times.cluster_time, progress) {
                                    ReplayStep::Past => break 'session End::Complete,
                                    ReplayStep::Last => true,
                                    ReplayStep::Within => false,
                                }
                            }
                        };
                        let position = Position {
                            token,
                            cluster_time: times.cluster_time,
                            wall_time: times.wall_time,
                        };
                        if !self.dispatch(position, decoded, shutdown).await {
                            break 'session End::Shutdown;
                        }
                        if let Some(stop) = self.stop.take() {
                            break 'session End::Stop(stop);
                        }
                        if last {
                            break 'session End::Complete;
                        }
                    }
                    Item::Idle(position) => {
                        let passed = replay.is_some_and(|r| r.idle(&position.token, progress));
                        self.acker.mark(position);
                        if passed {
                            break 'session End::Complete;
                        }
                    }
                    Item::Failed(e) => break 'session End::Failed(e),
                    Item::Closed => break 'session End::Closed,
                }
                if self.events_since_save >= save_every {
                    self.save();
                }
            }
            self.collect_advanced();
            let held_back = self.held_back();
            if held_back.is_some() && self.durable >= self.submitted {
                // The writer is idle while reading waits on it: give it the newest position.
                self.save();
            }
            pauses.observe(held_back);
            if let Some(reason) = self.fatal.take() {
                break End::Fatal(reason);
            }
        };
        pauses.observe(None);
        reader.abort();
        // An aborted read is not a server that stopped answering.
        shared.health.source(&self.name).answered();
        self.clear_stuck();
        self.drain().await;
        self.save();
        if let Some(writer) = self.writer.take() {
            writer.finish(tokio::time::sleep(FINAL_CHECKPOINT)).await;
        }
        end
    }

    /// Hands one change to its handlers (or the dead-letter collection). False when
    /// shutdown interrupted recording a namespace event: the change stays unacknowledged.
    async fn dispatch(
        &mut self,
        position: Position,
        decoded: Decoded,
        shutdown: &CancellationToken,
    ) -> bool {
        let label = decoded.label();
        let (metrics, name) = (&self.shared.metrics, &self.name);
        self.received
            .entry(label)
            .or_insert_with(|| metrics.events_received.with_label_values(&[name, label]))
            .inc();
        self.events_since_save += 1;
        match decoded {
            Decoded::Event(event) => self.route(position, Routable::Typed(Arc::new(event))),
            Decoded::Raw(event) => {
                let lane: Arc<str> = format!("{}:{}", event.target, event.key).into();
                let event = Arc::new(event);
                self.route(position, Routable::Raw { event, lane });
            }
            Decoded::Other => {
                self.acker.track(position, 0);
            }
            Decoded::Namespace(event) => {
                return self.dispatch_namespace(position, event, shutdown).await;
            }
            Decoded::Invalid {
                raw,
                event_id,
                error,
            } => {
                if self.shared.dry_run() {
                    tracing::warn!(stream = %self.name, event_id = %event_id, reason = %error, "bad input (dry run: not dead-lettered)");
                    self.acker.track(position, 0);
                    return true;
                }
                if let DecodeError::Oversize { size } = error {
                    let fail = self.shared.config.engine.oversize == OversizePolicy::Fail;
                    self.shared
                        .metrics
                        .oversized_events
                        .with_label_values(&[
                            name.as_ref(),
                            if fail { "fail" } else { "dead_letter" },
                        ])
                        .inc();
                    if fail {
                        // Not tracked: the checkpoint stays before it.
                        self.stop = Some(oversize::stop_error(name, &raw, &position, size));
                        return true;
                    }
                }
                let mut letter = DeadLetter::from_raw(
                    "decode",
                    &self.name,
                    event_id.as_str(),
                    &raw,
                    error.to_string(),
                );
                if let DecodeError::Oversize { size } = error {
                    letter.size = usize::try_from(size).ok();
                }
                tracing::warn!(stream = %self.name, event_id = %event_id, reason = %error, "bad input; dead-lettering it");
                // Stored by a job: a slow or failing store holds back only the checkpoint,
                // never the reading of later changes (up to the read-ahead bound).
                let lane: Arc<str> = format!("dl:{event_id}").into();
                let job = Job {
                    ticket: self.track(position, event_id, "invalid", 1),
                    part: Part::Laned,
                    work: Work::DeadLetter {
                        letter: Arc::new(letter),
                        lane: lane.clone(),
                    },
                };
                self.submit(&lane, job);
            }
        }
        true
    }

    /// A namespace event: logged, recorded (before the checkpoint may pass it) and, with a
    /// Kafka sink, published. False when shutdown came first.
    async fn dispatch_namespace(
        &mut self,
        position: Position,
        event: NamespaceEvent,
        shutdown: &CancellationToken,
    ) -> bool {
        let text = event.describe();
        match event.change {
            NamespaceChange::StreamInvalidated => {
                tracing::warn!(stream = %self.name, event_id = %event.event_id, "{text}")
            }
            _ => tracing::error!(stream = %self.name, event_id = %event.event_id, "{text}"),
        }
        if self.shared.dry_run() {
            self.acker.track(position, 0);
            return true;
        }
        let log = &self.shared.namespace_log;
        if !crate::state::retry::until_ok("record a namespace event", shutdown, || {
            log.record(&self.name, &event)
        })
        .await
        {
            return false;
        }
        let lane: Arc<str> = format!("ns:{}", event.subject(&self.name)).into();
        let event = Arc::new(event);
        self.route(position, Routable::Namespace { event, lane });
        true
    }

    /// Hands `item` to the targets of its route: the ordered ones in its lane, those whose
    /// effects commute beside it.
    fn route(&mut self, position: Position, item: Routable) {
        let shared = self.shared;
        let (ordered, free) = shared.router.split(item.input());
        let parts = u32::from(!ordered.is_empty()) + u32::from(!free.is_empty());
        if parts == 0 {
            self.acker.track(position, 0);
            return;
        }
        let ticket = self.track(position, item.event_id(), item.label(), parts);
        if !free.is_empty() {
            let part = if ordered.is_empty() {
                Part::Free
            } else {
                Part::Beside
            };
            let work = Work::Event {
                item: item.clone(),
                route: free.clone(),
            };
            self.start(Job { ticket, work, part });
        }
        if !ordered.is_empty() {
            let work = Work::Event {
                item: item.clone(),
                route: ordered.clone(),
            };
            let job = Job {
                ticket,
                work,
                part: Part::Laned,
            };
            self.submit(item.lane(), job);
        }
    }

    /// Tracks a change whose targets run in `parts` jobs, remembering when it was read.
    fn track(
        &mut self,
        position: Position,
        event_id: EventId,
        kind: &'static str,
        parts: u32,
    ) -> Ticket {
        let ticket = self.acker.track(position, parts);
        let (tracked, released) = (self.acker.tracked(), self.acker.released());
        self.unfinished.read(tracked, event_id, kind, released);
        ticket
    }

    /// Reports the stream stuck while its oldest unfinished event has waited
    /// `health.stuck_after_ms` (see [`super::stuck`]).
    fn check_stuck(&mut self) {
        let shared = self.shared;
        let check = stuck::Check {
            config: &shared.config,
            health: &shared.health,
            metrics: &shared.metrics,
            router: &shared.router,
            ctx: &self.ctx,
            stream: &self.name,
        };
        check.run(&mut self.unfinished, self.acker.released());
    }

    fn clear_stuck(&mut self) {
        self.unfinished.clear();
        let shared = self.shared;
        stuck::report(
            &shared.health,
            &shared.metrics,
            &self.name,
            StuckCause::Handlers,
            None,
        );
    }

    /// Starts `job` now, or queues it behind the running job of its lane. The caller lends
    /// the lane key from its own handle on the event: no copy of it per event.
    fn submit(&mut self, lane: &str, job: Job) {
        if let Some(job) = self.lanes.submit(lane, job) {
            self.start(job);
        }
    }

    fn start(&mut self, job: Job) {
        self.running.push(job::run(job, self.ctx.clone()).boxed());
    }

    fn complete(&mut self, done: Completion) {
        if let Some(reason) = done.fatal {
            tracing::error!(stream = %self.name, reason = %reason, "stopping the stream");
            self.fatal.get_or_insert(reason);
            return;
        }
        if done.finished {
            if let Err(e) = self.acker.route_done(done.ticket) {
                tracing::error!(error = %e, "acker refused a completion");
            }
            if done.part != Part::Beside {
                let kind = done.work.label();
                let metrics = &self.shared.metrics;
                self.handled
                    .entry(kind)
                    .or_insert_with(|| metrics.events_handled.with_label_values(&[kind]))
                    .inc();
            }
        }
        if done.part == Part::Laned
            && let Some(next) = self.lanes.finish(done.work.lane())
        {
            self.start(next);
        }
    }

    fn collect_advanced(&mut self) {
        if let Some(position) = self.acker.take_advanced() {
            self.unsaved = Some((position, self.acker.released()));
        }
    }

    /// Whether another change may be read: fewer than `engine.max_in_flight_events` were
    /// read after the newest stored checkpoint, so a crash repeats at most that many. A dry
    /// run stores none; there the bound counts from the newest handled position.
    fn may_read(&self) -> bool {
        let behind = if self.shared.dry_run() {
            self.acker.released()
        } else {
            self.durable
        };
        let ahead = self.acker.tracked().saturating_sub(behind);
        ahead < self.shared.config.engine.max_in_flight_events as u64
    }

    /// Why reading is held back now, if it is.
    fn held_back(&self) -> Option<Cause> {
        if self.may_read() {
            None
        } else if self.acker.in_flight() >= self.shared.config.engine.max_in_flight_events {
            Some(Cause::Handlers)
        } else {
            Some(Cause::Checkpoint)
        }
    }

    /// Lets running and queued jobs finish, up to the shutdown timeout; then abandons the
    /// rest (the checkpoint stays before them, so they run again after a restart).
    async fn drain(&mut self) {
        let timeout = Duration::from_millis(self.shared.config.engine.shutdown_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let waiting = self.acker.in_flight();
        if waiting > 0 {
            tracing::info!(stream = %self.name, in_flight = waiting, "waiting for in-flight events");
        }
        while !self.running.is_empty() {
            tokio::select! {
                Some(done) = self.running.next() => self.complete(done),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        stream = %self.name,
                        abandoned = self.acker.in_flight(),
                        "shutdown timeout: abandoning unfinished events (they run again after restart)"
                    );
                    self.ctx.cancel.cancel();
                    self.running = FuturesUnordered::new();
                    break;
                }
            }
        }
        self.collect_advanced();
    }

    /// Hands the newest handled position to the writer, if it moved: on the clock
    /// (`every_ms`), after `every_events` events (or half the read-ahead bound, if less),
    /// when reading waits on the writer, and when the session ends.
    fn save(&mut self) {
        self.collect_advanced();
        if self.shared.dry_run() {
            return;
        }
        let (Some((position, sequence)), Some(writer)) = (self.unsaved.take(), &self.writer) else {
            return;
        };
        let token = match reader::resume_token(&position.token) {
            Ok(token) => token,
            Err(e) => {
                // Not expected from a server token; the checkpoint stays where it was.
                tracing::error!(stream = %self.name, error = %e, "unreadable resume token; checkpoint not moved");
                return;
            }
        };
        self.events_since_start += self.events_since_save;
        self.events_since_save = 0;
        let checkpoint = Checkpoint {
            stream: self.name.to_string(),
            token,
            cluster_time: position.cluster_time,
            wall_time: position.wall_time,
            events_since_start: self.events_since_start,
        };
        writer.submit(checkpoint, sequence);
        self.submitted = sequence;
    }
}
