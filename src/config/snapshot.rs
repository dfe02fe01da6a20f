//! The `[snapshot]` section: copying the documents that exist before a stream starts (or
//! that changed while its history was lost) into the same ordered flow as the changes.

use serde::{Deserialize, Serialize};

/// When a stream snapshots its collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    /// Only on request (`changeflow snapshot`); a first start begins at the present.
    #[default]
    Never,
    /// When a stream starts without a checkpoint: the documents that exist already are
    /// emitted as `*_observed` events (raw collections: as copy-existing records).
    Initial,
    /// As `initial`, and also after lost history when the policy is `resnapshot`.
    WhenNeeded,
}

impl SnapshotMode {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Never => "never",
            SnapshotMode::Initial => "initial",
            SnapshotMode::WhenNeeded => "when-needed",
        }
    }
}

/// Snapshots: when, and in what steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// When a stream snapshots its collections.
    pub mode: SnapshotMode,
    /// Documents per chunk: one read at one cluster time, and the unit of progress (a
    /// restart reads at most one chunk again). Bounds the memory a snapshot takes.
    pub chunk_size: u32,
    /// Collections of one stream snapshotted at once.
    pub parallelism: u32,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::Never,
            chunk_size: 1000,
            parallelism: 2,
        }
    }
}

impl SnapshotConfig {
    /// The sizes must be usable.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=100_000).contains(&self.chunk_size) {
            return Err((
                "snapshot.chunk_size".into(),
                format!("{} is out of range: use 1 to 100000", self.chunk_size),
            ));
        }
        if !(1..=64).contains(&self.parallelism) {
            return Err((
                "snapshot.parallelism".into(),
                format!("{} is out of range: use 1 to 64", self.parallelism),
            ));
        }
        Ok(())
    }
}
