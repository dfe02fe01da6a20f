//! One session of a stream: read, dispatch, collect completions, move and store the
//! checkpoint, until the stream ends, fails or the run stops; then drain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use prometheus::IntCounter;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::observe::health::StuckCause;
use crate::pipeline::acker::Acker;
use crate::pipeline::checkpoint_writer::CheckpointWriter;
use crate::pipeline::job::{Completion, Job, JobContext};
use crate::pipeline::lanes::Lanes;
use crate::pipeline::pause::{Cause, PauseClock};
use crate::pipeline::stuck::{self, Unfinished};
use crate::pipeline::until::ReplayStep;
use crate::pipeline::{EngineError, Shared};
use crate::source;
use crate::source::reader::{self, Item, Position};
use crate::state::checkpoints::Checkpoint;

/// Everything one open stream needs; rebuilt on every reopen (the previous one drained).
pub(super) struct Session<'a> {
    pub(super) shared: &'a Shared,
    pub(super) name: Arc<str>,
    pub(super) acker: Acker<Position>,
    pub(super) lanes: Lanes<Job>,
    /// Jobs in progress, polled by this task: no spawn or cross-thread wake-up per event.
    pub(super) running: FuturesUnordered<BoxFuture<'static, Completion>>,
    pub(super) ctx: Arc<JobContext>,
    /// Metric handles by label, looked up once per session instead of once per event.
    pub(super) received: HashMap<&'static str, IntCounter>,
    pub(super) handled: HashMap<&'static str, IntCounter>,
    /// Newest fully handled position not yet handed to the writer, with its sequence
    /// number (see [`Acker::released`]).
    pub(super) unsaved: Option<(Position, u64)>,
    pub(super) writer: Option<CheckpointWriter>,
    /// Sequence number of the newest checkpoint handed to the writer.
    pub(super) submitted: u64,
    /// Sequence number of the newest stored checkpoint, reported by the writer.
    pub(super) stored: watch::Receiver<u64>,
    /// Its value, taken once per round of the session loop, not once per event.
    pub(super) durable: u64,
    pub(super) events_since_save: u64,
    pub(super) events_since_start: u64,
    /// Set when a job ended fatally: the session stops.
    pub(super) fatal: Option<String>,
    /// Set by dispatch when the stream must stop at the change it was given.
    pub(super) stop: Option<EngineError>,
    /// Events with work to do, oldest first, for the stuck check.
    pub(super) unfinished: Unfinished,
}

impl<'a> Session<'a> {
    pub(super) fn new(shared: &'a Shared, name: Arc<str>, events_since_start: u64) -> Session<'a> {
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

    pub(super) async fn run(
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

    /// Reports the stream stuck while its oldest unfinished event has waited
    /// `health.stuck_after_ms` (see [`super::stuck`]).
    pub(super) fn check_stuck(&mut self) {
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
        check.checkpoint(self.writer.as_ref().and_then(CheckpointWriter::waiting));
    }

    pub(super) fn clear_stuck(&mut self) {
        self.unfinished.clear();
        let shared = self.shared;
        for cause in [StuckCause::Handlers, StuckCause::Checkpoint] {
            stuck::report(&shared.health, &shared.metrics, &self.name, cause, None);
        }
    }

    pub(super) fn collect_advanced(&mut self) {
        if let Some(position) = self.acker.take_advanced() {
            self.unsaved = Some((position, self.acker.released()));
        }
    }

    /// Whether another change may be read: fewer than `engine.max_in_flight_events` were
    /// read after the newest stored checkpoint, so a crash repeats at most that many. A dry
    /// run stores none; there the bound counts from the newest handled position.
    pub(super) fn may_read(&self) -> bool {
        let behind = if self.shared.dry_run() {
            self.acker.released()
        } else {
            self.durable
        };
        let ahead = self.acker.tracked().saturating_sub(behind);
        ahead < self.shared.config.engine.max_in_flight_events as u64
    }

    /// Why reading is held back now, if it is.
    pub(super) fn held_back(&self) -> Option<Cause> {
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
    pub(super) async fn drain(&mut self) {
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
    pub(super) fn save(&mut self) {
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
