//! History lost: the stream's resume point has left the oplog. What follows is decided
//! here, without I/O; the shell (`stream::open`) finds the loss and does what this says.

use crate::config::HistoryLostPolicy;

/// What a stream does when its history is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLost {
    /// Stop with the history-lost error and the ways out it names.
    Fail,
    /// Record the gap (before the checkpoint can pass it), then continue from now.
    RestartFromNow,
}

/// A replay asked for exactly the history that is gone, so it always fails; a live stream
/// follows its policy.
pub(crate) fn on_history_lost(policy: HistoryLostPolicy, replay: bool) -> OnLost {
    match policy {
        _ if replay => OnLost::Fail,
        HistoryLostPolicy::Fail => OnLost::Fail,
        HistoryLostPolicy::RestartFromNow => OnLost::RestartFromNow,
    }
}
