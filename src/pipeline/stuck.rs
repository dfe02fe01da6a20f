//! Telling stuck from idle. The session keeps its unfinished events in read order and,
//! on its clock, reports the stream stuck once the oldest has waited
//! `health.stuck_after_ms` (naming the event, the target failing on it and its last
//! error); a watch reports a stream whose reader has waited that long for the server.
//! The session also reports a stream whose checkpoint cannot be stored for that long.
//! Every way: `/healthz` (503), the run's heartbeat (`status`), the
//! `changeflow_stream_stuck` metric and one error line when it starts, one info line
//! when it ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::job::JobContext;
use super::router::Router;
use crate::config::Config;
use crate::domain::{EventId, EventKind};
use crate::observe::health::{Health, Stuck, StuckCause};
use crate::observe::metrics::Metrics;
use crate::pipeline::target::Input;

/// The events of a session that have work to do, oldest first.
#[derive(Default)]
pub(super) struct Unfinished {
    /// Acker sequence number, when read, id, kind label.
    events: VecDeque<(u64, Instant, EventId, &'static str)>,
}

impl Unfinished {
    /// Remembers the event the acker numbered `sequence`, read now, and forgets those it
    /// released (`released`: its sequence so far): at most the read-ahead bound is kept.
    pub(super) fn read(&mut self, sequence: u64, id: EventId, kind: &'static str, released: u64) {
        self.forget_released(released);
        self.events.push_back((sequence, Instant::now(), id, kind));
    }

    fn forget_released(&mut self, released: u64) {
        while self
            .events
            .front()
            .is_some_and(|(seq, ..)| *seq <= released)
        {
            self.events.pop_front();
        }
    }

    /// Forgets every event (the session ended).
    pub(super) fn clear(&mut self) {
        self.events.clear();
    }

    /// The oldest event not released by the acker (`released`: its sequence so far), and
    /// how long it has waited.
    fn oldest(&mut self, released: u64) -> Option<(Duration, EventId, &'static str)> {
        while self
            .events
            .front()
            .is_some_and(|(seq, ..)| *seq <= released)
        {
            self.events.pop_front();
        }
        self.events
            .front()
            .map(|(_, at, id, kind)| (at.elapsed(), *id, *kind))
    }
}

/// What a session's stuck check needs.
pub(super) struct Check<'a> {
    pub config: &'a Config,
    pub health: &'a Health,
    pub metrics: &'a Metrics,
    pub router: &'a Router,
    pub ctx: &'a JobContext,
    pub stream: &'a str,
}

impl Check<'_> {
    /// Reports the stream stuck while its oldest unfinished event has waited
    /// `health.stuck_after_ms`, and clears it once it moved.
    pub(super) fn run(&self, unfinished: &mut Unfinished, released: u64) {
        let oldest = unfinished.oldest(released);
        self.metrics
            .oldest_unfinished
            .with_label_values(&[self.stream])
            .set(oldest.map_or(0.0, |(waited, ..)| waited.as_secs_f64()));
        let limit = Duration::from_millis(self.config.health.stuck_after_ms);
        let stuck = oldest
            .filter(|(waited, ..)| *waited >= limit)
            .map(|(waited, id, kind)| self.why(waited, id, kind));
        report(
            self.health,
            self.metrics,
            self.stream,
            StuckCause::Handlers,
            stuck,
        );
    }

    /// Reports the stream stuck while a checkpoint handed to the writer has waited
    /// `health.stuck_after_ms` with none stored (`waiting`: how long, and the writer's last
    /// error if its writes fail); clears it once one is stored.
    pub(super) fn checkpoint(&self, waiting: Option<(Duration, Option<String>)>) {
        let limit = Duration::from_millis(self.config.health.stuck_after_ms);
        let stuck = waiting
            .filter(|(w, _)| *w >= limit)
            .map(|(waited, failing)| {
                let why = match &failing {
                    Some(_) => "every write fails",
                    None => {
                        "the write has not returned (a majority write waits while no majority of \
                     the replica set's data-bearing members acknowledges it)"
                    }
                };
                Stuck {
                    cause: StuckCause::Checkpoint,
                    for_seconds: waited.as_secs_f64(),
                    event_id: None,
                    handler: None,
                    last_error: failing,
                    detail: format!(
                        "no checkpoint stored for {} s: {why}; reading holds at \
                     engine.max_in_flight_events past the last stored one",
                        waited.as_secs()
                    ),
                }
            });
        report(
            self.health,
            self.metrics,
            self.stream,
            StuckCause::Checkpoint,
            stuck,
        );
    }

    fn why(&self, waited: Duration, id: EventId, kind: &str) -> Stuck {
        let trouble = self.ctx.trouble(&id);
        let detail = match &trouble {
            Some(t) => format!(
                "the oldest unfinished event ({kind}) has waited {} s; `{}` keeps failing on it",
                waited.as_secs(),
                t.target
            ),
            None => format!(
                "the oldest unfinished event ({kind}) has waited {} s for {} (no call has \
                 failed yet: one that does not return)",
                waited.as_secs(),
                self.targets_of(kind)
            ),
        };
        Stuck {
            cause: StuckCause::Handlers,
            for_seconds: waited.as_secs_f64(),
            event_id: Some(id.to_string()),
            handler: trouble.as_ref().map(|t| t.target.to_owned()),
            last_error: trouble.map(|t| t.error),
            detail,
        }
    }

    /// The targets events of `kind` (a metric label) go to, for people.
    fn targets_of(&self, kind: &str) -> String {
        let input = match EventKind::ALL.iter().find(|k| k.as_str() == kind) {
            Some(k) => Input::Typed(*k),
            None if kind == "invalid" => return "the dead-letter store".to_owned(),
            None if kind == "raw" => Input::Raw,
            None => Input::Namespace,
        };
        let names: Vec<&str> = self.router.route(input).iter().map(|t| t.name()).collect();
        names.join(", ")
    }
}

/// Records whether `stream` is stuck for `cause` in health and the metric, logging when
/// that changes.
pub(crate) fn report(
    health: &Health,
    metrics: &Metrics,
    stream: &str,
    cause: StuckCause,
    stuck: Option<Stuck>,
) {
    let line = stuck.as_ref().map(Stuck::line);
    let is_stuck = stuck.is_some();
    if health.set_stuck(stream, cause, stuck) {
        match line {
            Some(line) => tracing::error!(stream = %stream, "stream stuck: {line}"),
            None => {
                tracing::info!(stream = %stream, cause = cause.as_str(), "stream no longer stuck")
            }
        }
    }
    metrics
        .stream_stuck
        .with_label_values(&[stream, cause.as_str()])
        .set(i64::from(is_stuck));
}

/// Every second, reports a stream stuck while its reader has waited
/// `health.stuck_after_ms` for the server: an idle stream's server answers within a
/// second or so with nothing; one that does not answer at all is stalled or cut off
/// without the connection closing.
pub(crate) async fn watch_sources(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let limit = config.health.stuck_after_ms;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for watched in &config.watch {
            let stream = watched.database.as_str();
            let waiting = health.source(stream).waiting_for_server_ms();
            let stuck = waiting.filter(|ms| *ms >= limit).map(|ms| Stuck {
                cause: StuckCause::Source,
                for_seconds: ms as f64 / 1000.0,
                event_id: None,
                handler: None,
                last_error: None,
                detail: format!(
                    "no answer from the server for {} s to the stream's read (a stalled \
                     server or a connection cut without closing)",
                    ms / 1000
                ),
            });
            report(&health, &metrics, stream, StuckCause::Source, stuck);
        }
    }
}
