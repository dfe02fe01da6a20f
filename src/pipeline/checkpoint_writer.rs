//! The checkpoint writer: a task that stores the newest checkpoint it was given, so the
//! stream never waits for a majority write. Newer checkpoints replace unwritten ones.
//! Each checkpoint comes with the stream's sequence number of its position; the writer
//! reports the newest one stored, which bounds how far reading may run ahead of it, and
//! each failed write; the stream's core decides what they mean.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::observe::error_text::Tidy;
use crate::observe::metrics::Metrics;
use crate::state::checkpoints::{Checkpoint, CheckpointStore, StoreError};

/// Pause before retrying a failed write when no newer checkpoint arrives.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A checkpoint and the sequence number (events and marks of the session before and at
/// its position) it stands for.
type Numbered = (Checkpoint, u64);

/// Hands checkpoints to the writer task.
pub(crate) struct CheckpointWriter {
    latest: watch::Sender<Option<Numbered>>,
    stored: watch::Receiver<u64>,
    failed: watch::Receiver<Option<String>>,
    fenced: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl CheckpointWriter {
    /// Starts the writer task for one stream; with the stream's lease `term`, every write
    /// is fenced by it.
    pub fn start(
        store: CheckpointStore,
        metrics: Arc<Metrics>,
        term: Option<i64>,
    ) -> CheckpointWriter {
        let (latest, rx) = watch::channel(None);
        let (stored_tx, stored) = watch::channel(0);
        let (failed_tx, failed) = watch::channel(None);
        let (fenced_tx, fenced) = watch::channel(false);
        let reports = Reports {
            stored: stored_tx,
            failed: failed_tx,
            fenced: fenced_tx,
        };
        let task = tokio::spawn(write_loop(store, metrics, rx, reports, term));
        CheckpointWriter {
            latest,
            stored,
            failed,
            fenced,
            task,
        }
    }

    /// Turns true when a write was fenced (a newer lease term): the writer stopped.
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.clone()
    }

    /// Queues `checkpoint`, replacing any not yet written; `sequence` counts the events
    /// and marks up to and including its position.
    pub fn submit(&self, checkpoint: Checkpoint, sequence: u64) {
        self.latest.send_replace(Some((checkpoint, sequence)));
    }

    /// The sequence number of the newest stored checkpoint; it changes after each write.
    pub fn stored(&self) -> watch::Receiver<u64> {
        self.stored.clone()
    }

    /// The error of each failed write, as it happens (the writer retries by itself).
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failed.clone()
    }

    /// Stops at once, writing nothing more (the stream's lease is lost).
    pub fn abandon(self) {
        self.task.abort();
    }

    /// Writes the last queued checkpoint (retrying until `give_up` completes) and stops.
    pub async fn finish(self, give_up: impl Future<Output = ()>) {
        let CheckpointWriter {
            latest, mut task, ..
        } = self;
        drop(latest);
        tokio::select! {
            _ = &mut task => {}
            _ = give_up => {
                task.abort();
                tracing::warn!("final checkpoint not stored in time; the restart repeats some events");
            }
        }
    }
}

/// What the writer task tells the stream.
struct Reports {
    stored: watch::Sender<u64>,
    failed: watch::Sender<Option<String>>,
    fenced: watch::Sender<bool>,
}

async fn write_loop(
    store: CheckpointStore,
    metrics: Arc<Metrics>,
    mut rx: watch::Receiver<Option<Numbered>>,
    reports: Reports,
    term: Option<i64>,
) {
    // `changed` still reports a value sent just before the sender was dropped.
    while rx.changed().await.is_ok() {
        let mut next = rx.borrow_and_update().clone();
        while let Some((checkpoint, sequence)) = next.take() {
            let saved = match term {
                Some(term) => store.save_fenced(&checkpoint, term).await,
                None => store.save(&checkpoint).await,
            };
            match saved {
                Ok(()) => {
                    metrics.checkpoint_saved(&checkpoint.stream);
                    reports.stored.send_replace(sequence);
                }
                Err(e @ StoreError::Fenced { .. }) => {
                    // Another instance reads the stream now: nothing more is written.
                    tracing::warn!(stream = %checkpoint.stream, error = %e, "checkpoint write refused: the lease was taken over");
                    reports.fenced.send_replace(true);
                    return;
                }
                Err(e) => {
                    reports.failed.send_replace(Some(Tidy(&e).to_string()));
                    tracing::warn!(stream = %checkpoint.stream, error = %Tidy(&e), "cannot store the checkpoint; retrying");
                    let newer = tokio::select! {
                        changed = rx.changed() => match changed {
                            Ok(()) => true,
                            Err(_) => {
                                tokio::time::sleep(RETRY_PAUSE).await;
                                false
                            }
                        },
                        _ = tokio::time::sleep(RETRY_PAUSE) => false,
                    };
                    next = if newer {
                        rx.borrow_and_update().clone()
                    } else {
                        Some((checkpoint, sequence))
                    };
                }
            }
        }
    }
}
