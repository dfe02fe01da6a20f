//! Telling stuck from idle, and saying so. The stream's core decides on its clock whether
//! its oldest unfinished event has waited `health.stuck_after_ms`, or its checkpoint has
//! gone unstored that long; this module names the event, the target failing on it and its
//! last error. A watch reports a stream whose reader has waited that long for the server.
//! Every way: `/healthz` (503), the run's heartbeat (`status`), the
//! `changeflow_stream_stuck` metric and one error line when it starts, one info line
//! when it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::core::Report;
use super::job::JobContext;
use super::router::Router;
use crate::config::Config;
use crate::domain::{EventId, EventKind};
use crate::observe::health::{Health, Stuck, StuckCause};
use crate::observe::metrics::Metrics;
use crate::pipeline::target::Input;

/// What a session's stuck check needs.
pub(super) struct Check<'a> {
    pub health: &'a Health,
    pub metrics: &'a Metrics,
    pub router: &'a Router,
    pub ctx: &'a JobContext,
    pub stream: &'a str,
}

impl Check<'_> {
    /// Publishes the core's report: the oldest unfinished event's wait, and the stream
    /// stuck (naming the event and the target failing on it) while it has waited
    /// `health.stuck_after_ms`, cleared once it moved.
    pub(super) fn run(&self, report: &Report) {
        self.metrics
            .oldest_unfinished
            .with_label_values(&[self.stream])
            .set(report.oldest.map_or(0.0, |o| o.waited.as_secs_f64()));
        let stuck = report
            .oldest
            .filter(|_| report.handlers_stuck)
            .map(|o| self.why(o.waited, o.event_id, o.kind));
        report_stuck(
            self.health,
            self.metrics,
            self.stream,
            StuckCause::Handlers,
            stuck,
        );
        self.checkpoint(report);
    }

    /// Reports the stream stuck while a checkpoint handed to the writer has waited
    /// `health.stuck_after_ms` with none stored (`waiting`: how long, and the writer's last
    /// error if its writes fail); clears it once one is stored.
    fn checkpoint(&self, report: &Report) {
        let stuck = report
            .checkpoint_wait
            .clone()
            .filter(|_| report.checkpoint_stuck)
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
        report_stuck(
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
pub(crate) fn report_stuck(
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
            report_stuck(&health, &metrics, stream, StuckCause::Source, stuck);
        }
    }
}
