//! The checkpoint writer: a task that stores the newest checkpoint it was given, so the
//! stream never waits for a majority write. Newer checkpoints replace unwritten ones.
//! Each checkpoint comes with the stream's sequence number of its position; the writer
//! reports the newest one stored, which bounds how far reading may run ahead of it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::observe::error_text::Tidy;
use crate::observe::metrics::Metrics;
use crate::state::checkpoints::{Checkpoint, CheckpointStore};

/// Pause before retrying a failed write when no newer checkpoint arrives.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A checkpoint and the sequence number (events and marks of the session before and at
/// its position) it stands for.
type Numbered = (Checkpoint, u64);

/// Whether handed checkpoints wait to be stored, for the stuck check.
#[derive(Debug, Default)]
struct Waiting {
    /// Since when a handed checkpoint has waited with none stored (None: all are stored).
    since: Option<Instant>,
    /// The error of the last failed write, until a write succeeds.
    error: Option<String>,
}

/// Hands checkpoints to the writer task.
pub(crate) struct CheckpointWriter {
    latest: watch::Sender<Option<Numbered>>,
    stored: watch::Receiver<u64>,
    waiting: Arc<Mutex<Waiting>>,
    task: JoinHandle<()>,
}

impl CheckpointWriter {
    /// Starts the writer task for one stream.
    pub fn start(store: CheckpointStore, metrics: Arc<Metrics>) -> CheckpointWriter {
        let (latest, rx) = watch::channel(None);
        let (stored_tx, stored) = watch::channel(0);
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let task = tokio::spawn(write_loop(store, metrics, rx, stored_tx, waiting.clone()));
        CheckpointWriter {
            latest,
            stored,
            waiting,
            task,
        }
    }

    /// Queues `checkpoint`, replacing any not yet written; `sequence` counts the events
    /// and marks up to and including its position.
    pub fn submit(&self, checkpoint: Checkpoint, sequence: u64) {
        self.latest.send_replace(Some((checkpoint, sequence)));
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.since.get_or_insert_with(Instant::now);
        }
    }

    /// The sequence number of the newest stored checkpoint; it changes after each write.
    pub fn stored(&self) -> watch::Receiver<u64> {
        self.stored.clone()
    }

    /// While a handed checkpoint waits to be stored: how long none has been stored, and
    /// the error of the last failed write if writes fail.
    pub fn waiting(&self) -> Option<(Duration, Option<String>)> {
        let waiting = self.waiting.lock().ok()?;
        waiting
            .since
            .map(|since| (since.elapsed(), waiting.error.clone()))
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

async fn write_loop(
    store: CheckpointStore,
    metrics: Arc<Metrics>,
    mut rx: watch::Receiver<Option<Numbered>>,
    stored: watch::Sender<u64>,
    waiting: Arc<Mutex<Waiting>>,
) {
    // `changed` still reports a value sent just before the sender was dropped.
    while rx.changed().await.is_ok() {
        let mut next = rx.borrow_and_update().clone();
        while let Some((checkpoint, sequence)) = next.take() {
            match store.save(&checkpoint).await {
                Ok(()) => {
                    if let Ok(mut waiting) = waiting.lock() {
                        // A newer one queued meanwhile waits from now.
                        let newer = rx.has_changed().unwrap_or(false);
                        waiting.since = newer.then(Instant::now);
                        waiting.error = None;
                    }
                    metrics.checkpoint_saved(&checkpoint.stream);
                    stored.send_replace(sequence);
                }
                Err(e) => {
                    if let Ok(mut waiting) = waiting.lock() {
                        waiting.error = Some(Tidy(&e).to_string());
                    }
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
