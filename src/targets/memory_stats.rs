//! Per-user agent-memory statistics in `memory_stats`, one document per `user_id`, exactly
//! once under replay and crash like the payment counters (see
//! [`exactly_once`](super::exactly_once)).
//!
//! | field | moves on |
//! |---|---|
//! | `threads_started` | `thread_started` |
//! | `threads_expired` | `thread_expired` |
//! | `threads_summarized` | `thread_summarized` |
//! | `messages_appended` | messages of `messages_appended` and of `thread_summarized` |
//! | `episodes.<outcome>` | `episode_recorded` |
//! | `memories.<type>` | `memory_learned` |
//! | `recalls` / `decays` | `memory_recalled` / `memory_decayed` |

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use mongodb::Client;
use mongodb::bson::{DateTime, Document, doc};

use super::exactly_once::{Applied, Counting, ExactlyOnce, Increment};
use crate::config::MemoryConfig;
use crate::domain::memory::{MemoryChange, MemoryEvent};
use crate::domain::{DomainEvent, EventKind};
use crate::pipeline::target::TargetError;

/// Collection of the statistics, one document per user.
pub const MEMORY_STATS: &str = "memory_stats";
/// The handler's name in `[routes]`, logs and metrics.
pub(crate) const NAME: &str = "memory_stats";
/// The event kinds it can take.
pub const KINDS: &[EventKind] = &[
    EventKind::ThreadStarted,
    EventKind::MessagesAppended,
    EventKind::ThreadSummarized,
    EventKind::ThreadExpired,
    EventKind::EpisodeRecorded,
    EventKind::MemoryLearned,
    EventKind::MemoryRecalled,
    EventKind::MemoryDecayed,
];

/// Counts what happens to each user's memory.
#[derive(Debug, Clone)]
pub(crate) struct MemoryStats {
    once: ExactlyOnce,
}

impl MemoryStats {
    /// Statistics in `database` (the memory database); processed ids are kept
    /// `processed_ttl`.
    pub fn new(client: &Client, database: &str, processed_ttl: Duration) -> MemoryStats {
        MemoryStats {
            once: ExactlyOnce::new(client, database, MEMORY_STATS, NAME, processed_ttl),
        }
    }

    /// The statistics of the memory database (`memory.processed_ttl_hours`).
    pub fn from_config(client: &Client, memory: &MemoryConfig) -> MemoryStats {
        let ttl = super::hours(memory.processed_ttl_hours);
        MemoryStats::new(client, &memory.database, ttl)
    }

    /// Creates the TTL indexes on processed ids and effect sessions (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), TargetError> {
        self.once.ensure_indexes().await
    }

    /// Counts `event` once; `None` when the event moves no statistic.
    pub async fn apply(&self, event: &MemoryEvent) -> Result<Option<Applied>, TargetError> {
        let inc = increments(&event.change);
        if inc.is_empty() {
            return Ok(None);
        }
        let increment = Increment {
            id: event.user_id.clone(),
            inc,
            set: doc! {"updated_at": DateTime::now()},
        };
        self.once
            .apply(event.meta.event_id, increment)
            .await
            .map(Some)
    }
}

/// The `$inc` of one change.
fn increments(change: &MemoryChange) -> Document {
    let mut inc = Document::new();
    let mut add = |field: String, n: usize| {
        if n > 0 {
            inc.insert(field, i64::try_from(n).unwrap_or(i64::MAX));
        }
    };
    match change {
        MemoryChange::ThreadStarted { .. } => add("threads_started".into(), 1),
        MemoryChange::MessagesAppended { messages } => {
            add("messages_appended".into(), messages.len())
        }
        MemoryChange::ThreadSummarized {
            messages_appended, ..
        } => {
            add("threads_summarized".into(), 1);
            add("messages_appended".into(), messages_appended.len());
        }
        MemoryChange::ThreadExpired { .. } => add("threads_expired".into(), 1),
        MemoryChange::EpisodeRecorded(episode) => {
            add(format!("episodes.{}", episode.outcome.as_str()), 1)
        }
        MemoryChange::MemoryLearned { memory_type, .. } => {
            add(format!("memories.{}", memory_type.as_str()), 1)
        }
        MemoryChange::MemoryRecalled { .. } => add("recalls".into(), 1),
        MemoryChange::MemoryDecayed { .. } => add("decays".into(), 1),
        _ => {}
    }
    inc
}

impl Counting for MemoryStats {
    const NAME: &'static str = NAME;
    const KINDS: &'static [EventKind] = KINDS;

    fn count<'a>(&'a self, event: &'a DomainEvent) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            match event {
                DomainEvent::Memory(event) => self.apply(event).await.map(drop),
                DomainEvent::Payment(_) => Ok(()),
            }
        }
        .boxed()
    }
}
