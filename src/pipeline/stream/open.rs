//! Opening a stream: from the checkpoint, a replay's start or now, with the history-lost
//! policy applied when the resume point has left the oplog.

use crate::config::{SnapshotMode, WatchedDatabase};
use crate::pipeline::Shared;
use crate::pipeline::core::{OnLost, on_history_lost};
use crate::source::history::{self, HistoryLost};
use crate::source::position::{describe, token_time};
use crate::source::{self, SourceError, StartAt};
use crate::state::checkpoints::{Checkpoint, Resume, Stored};
use crate::state::snapshots::Reason;

/// Why a stream could not be (re)opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    Source(SourceError),
    #[error(transparent)]
    Checkpoint(#[from] crate::state::checkpoints::StoreError),
    #[error(transparent)]
    HistoryLost(Box<HistoryLost>),
    #[error("recording the gap in changeflow_gaps: {0}")]
    Gap(mongodb::error::Error),
    #[error("recording a snapshot in changeflow_snapshots: {0}")]
    Snapshot(mongodb::error::Error),
    /// Asked to stop (shutdown, or the stream handed over) while opening.
    #[error("stopped while opening")]
    Stopped,
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
pub(super) async fn open(
    shared: &Shared,
    name: &str,
    target: &WatchedDatabase,
    term: Option<i64>,
) -> Result<source::Opened, OpenError> {
    let stored = shared.checkpoints.load_stored(name).await?;
    let start = stored
        .as_ref()
        .map_or_else(|| shared.start.clone(), Stored::start_at);
    let has_token = matches!(&stored, Some(s) if matches!(s.resume, Resume::After(_)));
    if stored.is_none() {
        // Before the opening position is stored: a crash in between cannot skip it.
        begin_initial_snapshot(shared, name, target).await?;
    }
    let (stream, fresh) = match open_at(shared, name, target, &start).await {
        Ok(stream) => (stream, !has_token),
        Err(OpenError::HistoryLost(lost)) => {
            let policy = shared.config.history.policy(name);
            let mode = shared.config.snapshot.mode;
            let repair = match on_history_lost(policy, mode, shared.replay.is_some()) {
                OnLost::Fail => return Err(OpenError::HistoryLost(lost)),
                OnLost::RestartFromNow => false,
                OnLost::Resnapshot => true,
            };
            (
                restart_from_now(shared, name, target, &lost, repair).await?,
                true,
            )
        }
        Err(e) => return Err(e),
    };
    if fresh
        && !shared.dry_run()
        && let Some(token) = stream.stream.resume_token()
    {
        let opening = Checkpoint {
            stream: name.to_owned(),
            token,
            cluster_time: None,
            wall_time: None,
            events_since_start: 0,
        };
        match term {
            Some(term) => shared.checkpoints.save_fenced(&opening, term).await?,
            None => shared.checkpoints.save(&opening).await?,
        }
        shared.metrics.checkpoint_saved(name);
    }
    Ok(stream)
}

/// `snapshot.mode = "initial"` (or `when-needed`): a stream without a checkpoint snapshots
/// its collections that have a domain or are published raw.
async fn begin_initial_snapshot(
    shared: &Shared,
    name: &str,
    target: &WatchedDatabase,
) -> Result<(), OpenError> {
    if shared.config.snapshot.mode == SnapshotMode::Never || shared.replay.is_some() {
        return Ok(());
    }
    begin_snapshots(shared, name, target, Reason::Initial).await
}

/// Records a snapshot of each of the stream's collections that has a domain or is
/// published raw; the session takes them up.
async fn begin_snapshots(
    shared: &Shared,
    name: &str,
    target: &WatchedDatabase,
    reason: Reason,
) -> Result<(), OpenError> {
    for collection in &target.collections {
        if shared.domains.snapshots(&target.database, collection) {
            shared
                .snapshots
                .begin(name, collection, reason)
                .await
                .map_err(OpenError::Snapshot)?;
        }
    }
    Ok(())
}

/// Opens at `start`, first checking that its history is still in the oplog (when the
/// oplog can be read; the server's own error covers the rest).
async fn open_at(
    shared: &Shared,
    name: &str,
    target: &WatchedDatabase,
    start: &StartAt,
) -> Result<source::Opened, OpenError> {
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
    match source::open_stream(&shared.client, target, &shared.config.engine, start).await {
        Err(e) if e.is_history_lost() => {
            let oldest = history::oldest_available(&shared.client, name).await;
            Err(lost(oldest, format!("the server: {e}")))
        }
        other => Ok(other?),
    }
}

/// `restart-from-now`: opens at the present, records the gap (before the checkpoint
/// moves past it, so a crash cannot lose the record) and says so loudly. With `repair`
/// (`resnapshot`), the stream's collections are snapshotted too, recorded before the gap.
async fn restart_from_now(
    shared: &Shared,
    name: &str,
    target: &WatchedDatabase,
    lost: &HistoryLost,
    repair: bool,
) -> Result<source::Opened, OpenError> {
    let opened =
        source::open_stream(&shared.client, target, &shared.config.engine, &StartAt::Now).await?;
    let lost_to = opened.stream.resume_token().as_ref().and_then(token_time);
    let mut gap = crate::state::gaps::Gap::after(lost, lost_to);
    if repair {
        begin_snapshots(shared, name, target, Reason::Resnapshot).await?;
        gap.repair_started_at = Some(mongodb::bson::DateTime::now());
    }
    shared.gaps.record(&gap).await.map_err(OpenError::Gap)?;
    shared.metrics.gaps.with_label_values(&[name]).inc();
    tracing::error!(
        stream = %name,
        lost_from = %gap.lost_from.map_or_else(|| "unknown".to_owned(), describe),
        lost_to = %gap.lost_to.map_or_else(|| "unknown".to_owned(), describe),
        cause = %lost.cause,
        repair = if repair { "snapshot of the stream's collections" } else { "none" },
        "history lost: continuing from now; the gap is recorded in changeflow_gaps"
    );
    Ok(opened)
}
