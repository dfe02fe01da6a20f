//! Everything changeflow keeps in MongoDB: the `changeflow_*` collections (checkpoints,
//! run presence, dead letters, history gaps, the namespace log, replays) and how their writes are
//! retried.

pub mod checkpoints;
pub mod dead_letters;
pub mod gaps;
pub mod namespace_log;
pub mod presence;
pub mod replays;
pub mod retry;
pub mod snapshots;
