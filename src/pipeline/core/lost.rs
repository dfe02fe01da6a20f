//! History lost: the stream's resume point has left the oplog. What follows is decided
//! here, without I/O; the shell (`stream::open`) finds the loss and does what this says.

use crate::config::{HistoryLostPolicy, SnapshotMode};

/// What a stream does when its history is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLost {
    /// Stop with the history-lost error and the ways out it names.
    Fail,
    /// Record the gap (before the checkpoint can pass it), then continue from now.
    RestartFromNow,
    /// As [`OnLost::RestartFromNow`], and snapshot the stream's collections meanwhile.
    Resnapshot,
}

/// A replay asked for exactly the history that is gone, so it always fails; a live stream
/// follows its policy, and `snapshot.mode = "when-needed"` repairs every restart from now.
pub(crate) fn on_history_lost(
    policy: HistoryLostPolicy,
    mode: SnapshotMode,
    replay: bool,
) -> OnLost {
    match policy {
        _ if replay => OnLost::Fail,
        HistoryLostPolicy::Fail => OnLost::Fail,
        HistoryLostPolicy::RestartFromNow if mode == SnapshotMode::WhenNeeded => OnLost::Resnapshot,
        HistoryLostPolicy::RestartFromNow => OnLost::RestartFromNow,
        HistoryLostPolicy::Resnapshot => OnLost::Resnapshot,
    }
}
