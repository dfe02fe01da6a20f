//! Lost history: a resume point that is no longer in the oplog, found before resuming
//! (its time is older than the oldest entry) or by the server (errors 286 and 280). The
//! policy decides: stop with the ways out, or continue from now and record the gap.

use std::fmt;

use mongodb::Client;
use mongodb::bson::Timestamp;

use crate::observe::error_text::Tidy;
use crate::source::StartAt;
use crate::source::oplog;
use crate::source::position::{cluster_time_text, describe, human_seconds, seconds_between};

/// A resume point older than the oplog: what was asked for and what is left.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryLost {
    /// The stream.
    pub stream: String,
    /// The cluster time the stream was to resume from, when known.
    pub resume_from: Option<Timestamp>,
    /// The oldest oplog entry, when it could be read.
    pub oldest: Option<Timestamp>,
    /// What found it: the pre-check or the server's error.
    pub cause: String,
    /// A replay's start point rather than a live checkpoint.
    pub replay: bool,
}

impl fmt::Display for HistoryLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = &self.stream;
        let from = self
            .resume_from
            .map_or_else(|| "unknown time".to_owned(), describe);
        let (oldest, oldest_arg) = match self.oldest {
            Some(t) => (describe(t), cluster_time_text(t)),
            None => (
                "unknown (local.oplog.rs could not be read)".to_owned(),
                "<TIME>".to_owned(),
            ),
        };
        let lost = match (self.resume_from, self.oldest) {
            (Some(from), Some(oldest)) if oldest.time >= from.time => format!(
                " ({} of changes lost)",
                human_seconds(seconds_between(from, oldest))
            ),
            _ => String::new(),
        };
        if self.replay {
            return write!(
                f,
                "stream `{stream}`: the replay's start point {from} is no longer in the oplog; \
                 the oldest time still available is {oldest}. Replay from there with \
                 `--from-time {oldest_arg}` (or later). [{}]",
                self.cause
            );
        }
        write!(
            f,
            "stream `{stream}`: its checkpoint {from} is no longer in the oplog; the oldest \
             time still available is {oldest}{lost}. Nothing was skipped. Ways out: \
             (1) `changeflow checkpoint set --stream {stream} --time {oldest_arg}` resumes at \
             the oldest change still there; \
             (2) `changeflow checkpoint reset --stream {stream}` starts from now; \
             (3) `history.on_lost_streams.{stream} = \"restart-from-now\"` continues from now \
             and records each gap in changeflow_gaps. [{}]",
            self.cause
        )
    }
}

/// The cluster time a start position resumes from, when it names one.
pub(crate) fn resume_time(start: &StartAt) -> Option<Timestamp> {
    match start {
        StartAt::Now => None,
        StartAt::After(token) => crate::source::position::token_time(token),
        StartAt::OperationTime(t) => Some(*t),
    }
}

/// The oldest oplog entry the stream's reads can reach; None (logged) when it cannot be
/// read: the server's own error then tells.
pub async fn oldest_available(client: &Client, stream: &str) -> Option<Timestamp> {
    match oplog::oldest_entry(client).await {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!(stream, error = %Tidy(&e), "oplog not readable; relying on the server to report lost history");
            None
        }
    }
}

/// Whether resuming at `start` would need history older than `oldest` (resuming after a
/// token needs the token's own entry; starting at a time needs nothing before it).
pub(crate) fn is_lost(start: &StartAt, oldest: Timestamp) -> bool {
    resume_time(start).is_some_and(|t| t < oldest)
}

impl std::error::Error for HistoryLost {}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(replay: bool) -> HistoryLost {
        HistoryLost {
            stream: "shop".into(),
            resume_from: Some(Timestamp {
                time: 1_763_820_000,
                increment: 2,
            }),
            oldest: Some(Timestamp {
                time: 1_763_823_600,
                increment: 1,
            }),
            cause: "checkpoint older than the oldest oplog entry".into(),
            replay,
        }
    }

    #[test]
    fn the_message_names_both_times_and_the_three_ways_out() {
        let text = lost(false).to_string();
        for part in [
            "stream `shop`",
            "2025-11-22T14:00:00Z (1763820000.2)",
            "2025-11-22T15:00:00Z (1763823600.1)",
            "1h 0m of changes lost",
            "checkpoint set --stream shop --time 1763823600.1",
            "checkpoint reset --stream shop",
            "history.on_lost_streams.shop = \"restart-from-now\"",
        ] {
            assert!(text.contains(part), "`{part}` missing from: {text}");
        }
        let replay = lost(true).to_string();
        assert!(replay.contains("--from-time 1763823600.1"), "{replay}");
    }

    #[test]
    fn only_points_before_the_oldest_entry_are_lost() {
        let oldest = Timestamp {
            time: 100,
            increment: 5,
        };
        let at = |time, increment| StartAt::OperationTime(Timestamp { time, increment });
        assert!(is_lost(&at(100, 4), oldest));
        assert!(!is_lost(&at(100, 5), oldest));
        assert!(!is_lost(&StartAt::Now, oldest));
    }
}
