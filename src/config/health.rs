//! The `[health]` section: when a stream counts as stuck rather than idle.

use serde::{Deserialize, Serialize};

/// When `/healthz`, `status` and `changeflow_stream_stuck` call a stream stuck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// A stream is stuck when its oldest unfinished event has not finished for this long
    /// while work waits, or when it has received nothing for this long while its
    /// database's oplog moved on (or the server could not be asked), in milliseconds.
    pub stuck_after_ms: u64,
    /// MongoDB counts as unavailable (`/healthz` 503) when the client has seen no writable
    /// primary for this long, in milliseconds. An election takes up to about 12 s with
    /// the server's default `electionTimeoutMillis`; longer means a majority is down or
    /// cut off.
    #[serde(default = "no_primary_after_ms")]
    pub no_primary_after_ms: u64,
}

fn no_primary_after_ms() -> u64 {
    15_000
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            stuck_after_ms: 60_000,
            no_primary_after_ms: no_primary_after_ms(),
        }
    }
}

impl HealthConfig {
    /// Checks the bound: shorter than a second would call busy streams stuck.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.stuck_after_ms < 1000 {
            return Err((
                "health.stuck_after_ms".into(),
                "must be at least 1000: a busy stream is not a stuck one".into(),
            ));
        }
        if self.no_primary_after_ms < 1000 {
            return Err((
                "health.no_primary_after_ms".into(),
                "must be at least 1000: an election takes seconds".into(),
            ));
        }
        Ok(())
    }
}
