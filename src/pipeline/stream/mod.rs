//! One watched database: open its stream from the checkpoint, read, dispatch to ordered
//! lanes, ack, store the checkpoint; on errors drain, store, and reopen with backoff.

mod dispatch;
mod handover;
mod lease;
mod open;
mod session;
mod snapshot;

use open::OpenError;
use session::Session;

use std::sync::Arc;
use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::config::WatchedDatabase;
use crate::observe::error_text::Tidy;
use crate::pipeline::until::StreamProgress;
use crate::pipeline::{EngineError, Shared};
use crate::source::SourceError;
use crate::state::checkpoints::StoreError;

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
    /// The stream's lease was lost: another instance reads it now.
    LeaseLost,
}

/// Runs the stream of `target` until `shutdown`, reopening after retryable errors. A live
/// stream is read only while this instance holds its lease: it stands by until it does,
/// and again after losing it.
pub async fn run(
    shared: Arc<Shared>,
    target: WatchedDatabase,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let name: Arc<str> = target.database.as_str().into();
    let mut lease = None;
    let result = read(&shared, &target, &name, &shutdown, &mut lease).await;
    if let Some(lease) = lease.take() {
        lease.release(&shared, &name).await;
    }
    result
}

/// The reading loop of [`run`]; `lease` is the lease held, given back by the caller.
async fn read(
    shared: &Arc<Shared>,
    target: &WatchedDatabase,
    name: &Arc<str>,
    shutdown: &CancellationToken,
    lease: &mut Option<lease::Lease>,
) -> Result<(), EngineError> {
    let mut reconnect = ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(200))
        .with_max_interval(Duration::from_secs(30))
        .with_max_elapsed_time(None)
        .build();
    let mut events_since_start = 0u64;
    loop {
        if shared.replay.is_none() && lease.is_none() {
            match lease::take(shared, name, shutdown).await {
                Some(taken) => *lease = Some(taken),
                None => return Ok(()),
            }
        }
        let held = lease.as_ref().map(|l| (l.held.term, l.lost.clone()));
        let term = held.as_ref().map(|(term, _)| *term);
        // A stop of this stream alone (handing it over) or of everything.
        let stop = lease
            .as_ref()
            .map_or_else(|| shutdown.clone(), |l| l.hand_over.clone());
        let opened = tokio::select! {
            _ = stop.cancelled() => Err(OpenError::Stopped),
            opened = open::open(shared, name, target, term) => opened,
        };
        let error = match opened {
            Ok(stream) => {
                record_open(shared, name, true);
                tracing::info!(stream = %name, collections = ?target.collections, "stream open");
                let mut session = Session::new(shared, name.clone(), events_since_start, held);
                let end = session.run(stream, &stop).await;
                events_since_start = session.events_since_start();
                record_open(shared, name, false);
                match end {
                    End::Shutdown if shutdown.is_cancelled() => return Ok(()),
                    End::Shutdown => {
                        hand_over(shared, name, lease).await;
                        continue;
                    }
                    End::Complete => {
                        tracing::info!(stream = %name, "replay reached its end");
                        if let Some(p) = replay_progress(shared, name) {
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
                    End::LeaseLost => {
                        shared.health.set_standby(name, true);
                        if let Some(lost) = lease.take() {
                            lost.forget(shared, name);
                        }
                        tracing::warn!(stream = %name, "lease lost: stopped reading; standing by");
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
            OpenError::Stopped if shutdown.is_cancelled() => return Ok(()),
            OpenError::Stopped => hand_over(shared, name, lease).await,
            OpenError::HistoryLost(lost) => return Err(EngineError::HistoryLost(lost)),
            // Reopening from the checkpoint applies the history-lost policy.
            OpenError::Source(e) if !e.is_retryable() && !e.is_history_lost() => {
                return Err(EngineError::Source(e));
            }
            OpenError::Checkpoint(StoreError::Fenced { .. }) => {
                if let Some(lost) = lease.take() {
                    lost.forget(shared, name);
                }
                tracing::warn!(stream = %name, "lease taken over while opening; standing by");
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
                    .with_label_values(&[name])
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

/// After the final checkpoint of a stream this instance gives up (its share shrank):
/// the lease goes back at once, and the stream waits in standby.
async fn hand_over(shared: &Shared, name: &str, lease: &mut Option<lease::Lease>) {
    if let Some(given) = lease.take() {
        given.release(shared, name).await;
    }
    shared.health.set_standby(name, true);
    tracing::info!(stream = %name, "handed over: the lease is released for another instance; standing by");
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
