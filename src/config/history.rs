//! The `[history]` section: what a stream does when its resume point has fallen off the
//! oplog, and when to warn that it is about to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a stream does when its checkpoint is no longer in the oplog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryLostPolicy {
    /// Stop with a message naming the checkpoint, the oldest time still available and the
    /// ways out. Nothing is skipped without an operator deciding it.
    #[default]
    Fail,
    /// Continue from the present and record the gap (stream, lost from, lost to) in
    /// `changeflow_gaps`, as an error log line and in `changeflow_gaps_total`.
    RestartFromNow,
    /// As `restart-from-now`, and snapshot the stream's collections while it runs: the
    /// documents that changed during the gap reach Kafka and the handlers (scoped repair:
    /// only the stream that lost history). The gap records when the repair began and ended.
    Resnapshot,
}

impl HistoryLostPolicy {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryLostPolicy::Fail => "fail",
            HistoryLostPolicy::RestartFromNow => "restart-from-now",
            HistoryLostPolicy::Resnapshot => "resnapshot",
        }
    }
}

/// Oplog history: the lost-history policy and the headroom watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Policy of every stream not named in `on_lost_streams`.
    pub on_lost: HistoryLostPolicy,
    /// Policy per stream (watched database name), overriding `on_lost`.
    pub on_lost_streams: BTreeMap<String, HistoryLostPolicy>,
    /// Below this many seconds of headroom (checkpoint time minus the oldest oplog entry),
    /// a warning is logged and `/healthz` reports `degraded`.
    pub headroom_warning_seconds: u64,
    /// How often `run` measures the oplog windows and the headroom, in milliseconds.
    pub check_every_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            on_lost: HistoryLostPolicy::Fail,
            on_lost_streams: BTreeMap::new(),
            headroom_warning_seconds: 6 * 3600,
            check_every_ms: 15_000,
        }
    }
}

impl HistoryConfig {
    /// The policy of `stream`.
    pub fn policy(&self, stream: &str) -> HistoryLostPolicy {
        self.on_lost_streams
            .get(stream)
            .copied()
            .unwrap_or(self.on_lost)
    }

    /// Checks the per-stream names against the watched databases and the interval.
    pub fn validate<'a>(
        &self,
        watched: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), (String, String)> {
        for stream in self.on_lost_streams.keys() {
            if !watched.clone().any(|w| w == stream) {
                let names: Vec<&str> = watched.clone().collect();
                return Err((
                    format!("history.on_lost_streams.{stream}"),
                    format!(
                        "`{stream}` is not a watched database (streams: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        if self.check_every_ms < 100 {
            return Err((
                "history.check_every_ms".into(),
                "must be at least 100: every check reads each member's oplog".into(),
            ));
        }
        Ok(())
    }
}
