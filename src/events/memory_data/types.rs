//! One data type per memory event, each with the fields every memory event carries.

use schemars::JsonSchema;
use serde::Serialize;

use super::*;

memory_data!(
    #[schemars(title = "ThreadStarted")]
    /// A conversation thread was created.
    ThreadStartedData, thread_id {
        /// Its first messages, in order (often none).
        messages: Vec<MessageData>,
        /// When it was created, RFC 3339.
        created_at: Option<String>,
        /// When the TTL monitor may remove it, RFC 3339.
        expires_at: Option<String>,
    }
);

memory_data!(
    #[schemars(title = "MessagesAppended")]
    /// Messages were appended to a thread (one update: all its new messages, in order).
    MessagesAppendedData, thread_id {
        /// The new messages, in order.
        #[schemars(length(min = 1))]
        messages: Vec<MessageData>,
    }
);

memory_data!(
    #[schemars(title = "ThreadSummarized")]
    /// A thread's summary changed and/or old messages were dropped.
    ThreadSummarizedData, thread_id {
        /// The summary after the change (absent: none, hashed or dropped).
        #[serde(skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        /// SHA-256 of the summary, hex (content mode `hash`).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
        summary_sha256: Option<String>,
        /// Messages the change dropped; null when the previous messages are not known.
        messages_dropped: Option<u32>,
        /// Messages the same change appended, in order.
        messages_appended: Vec<MessageData>,
        /// Messages left after the change; null when not known.
        messages_remaining: Option<u32>,
    }
);

memory_data!(
    #[schemars(title = "ThreadUpdated")]
    /// Any other change of a thread (e.g. its expiry moved).
    ThreadUpdatedData, thread_id {
        /// Top-level fields the change set or removed.
        changed_fields: Vec<String>,
    }
);

memory_data!(
    #[schemars(title = "ThreadExpired")]
    /// The TTL monitor removed a thread whose expiry had passed.
    ThreadExpiredData,
    thread_id {
        /// The expiry it passed, RFC 3339.
        expires_at: String,
        /// How many messages it held.
        message_count: u32,
    }
);

memory_data!(
    #[schemars(title = "ThreadDeleted")]
    /// A thread was deleted before its expiry.
    ThreadDeletedData, thread_id {
        /// The expiry it had, RFC 3339.
        expires_at: Option<String>,
        /// How many messages it held.
        message_count: u32,
    }
);

memory_data!(
    #[schemars(title = "EpisodeRecorded")]
    /// A finished thread was recorded as an episode.
    EpisodeRecordedData, episode_id {
        /// The thread it came from.
        thread_id: Option<String>,
        /// How it ended.
        outcome: OutcomeData,
        /// Its tags.
        tags: Vec<String>,
        /// Tool calls made.
        tool_calls: u32,
        /// Tool calls that failed.
        failed_tool_calls: u32,
        /// When it started, RFC 3339.
        started_at: String,
        /// When it ended, RFC 3339.
        ended_at: String,
        /// `endedAt - startedAt` in milliseconds.
        duration_ms: i64,
        /// Its summary (absent: hashed or dropped).
        #[serde(skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        /// SHA-256 of the summary, hex (content mode `hash`).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
        summary_sha256: Option<String>,
    }
);

memory_data!(
    #[schemars(title = "EpisodeAmended")]
    /// An episode was changed.
    EpisodeAmendedData, episode_id {
        /// Top-level fields the change set or removed.
        changed_fields: Vec<String>,
        /// The outcome after the change; null when not known.
        outcome: Option<OutcomeData>,
    }
);

memory_data!(
    #[schemars(title = "EpisodePurged")]
    /// An episode was deleted (e.g. by a retention sweep).
    EpisodePurgedData, episode_id {
        /// Its outcome.
        outcome: Option<OutcomeData>,
    }
);

memory_data!(
    #[schemars(title = "MemoryLearned")]
    /// A semantic memory was created.
    MemoryLearnedData, memory_id {
        /// What it holds.
        #[serde(rename = "type")]
        memory_type: MemoryTypeData,
        /// The content (absent: hashed or dropped).
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        /// SHA-256 of the content, hex (content mode `hash`).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
        content_sha256: Option<String>,
        /// Dimensions of its embedding; null without one.
        embedding_dimensions: Option<usize>,
        /// The embedding's values, only with `memory.include_embeddings = true`.
        #[serde(skip_serializing_if = "Option::is_none")]
        embedding: Option<Vec<EmbeddingValue>>,
        /// The episode it was extracted from.
        source_episode_id: Option<String>,
        /// Its strength.
        #[schemars(range(min = 0.0, max = 1.0))]
        strength: f64,
    }
);

memory_data!(
    #[schemars(title = "MemoryRecalled")]
    /// A memory was accessed and grew stronger.
    MemoryRecalledData, memory_id {
        /// Strength after.
        #[schemars(range(min = 0.0, max = 1.0))]
        strength: f64,
        /// Strength before.
        #[schemars(range(min = 0.0, max = 1.0))]
        previous_strength: f64,
        /// When it was accessed, RFC 3339.
        last_accessed_at: Option<String>,
    }
);

memory_data!(
    #[schemars(title = "MemoryDecayed")]
    /// A memory grew weaker.
    MemoryDecayedData,
    memory_id {
        /// Strength after.
        #[schemars(range(min = 0.0, max = 1.0))]
        strength: f64,
        /// Strength before.
        #[schemars(range(min = 0.0, max = 1.0))]
        previous_strength: f64,
    }
);

memory_data!(
    #[schemars(title = "MemoryRevised")]
    /// A memory's content, type or embedding changed.
    MemoryRevisedData, memory_id {
        /// Top-level fields the change set or removed.
        changed_fields: Vec<String>,
        /// What it holds after the change; null when not known.
        #[serde(rename = "type")]
        memory_type: Option<MemoryTypeData>,
        /// The content after the change (absent: hashed, dropped or not known).
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        /// SHA-256 of the content, hex (content mode `hash`).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
        content_sha256: Option<String>,
        /// Dimensions of its embedding after the change; null when none or not known.
        embedding_dimensions: Option<usize>,
        /// The embedding's values, only with `memory.include_embeddings = true`.
        #[serde(skip_serializing_if = "Option::is_none")]
        embedding: Option<Vec<EmbeddingValue>>,
    }
);

memory_data!(
    #[schemars(title = "MemoryUpdated")]
    /// Any other change of a memory; `direction` says how its strength moved.
    MemoryUpdatedData, memory_id {
        /// Top-level fields the change set or removed.
        changed_fields: Vec<String>,
        /// Strength after; null when not known.
        strength: Option<f64>,
        /// Strength before; null when not known.
        previous_strength: Option<f64>,
        /// Which way the strength moved.
        direction: DirectionData,
    }
);

memory_data!(
    #[schemars(title = "MemoryForgotten")]
    /// A memory was deleted.
    MemoryForgottenData, memory_id {
        /// What it held.
        #[serde(rename = "type")]
        memory_type: Option<MemoryTypeData>,
    }
);

memory_data!(
    #[schemars(title = "ThreadObserved")]
    /// A thread as a snapshot read it.
    ThreadObservedData, thread_id {
        /// Its messages, in order.
        messages: Vec<MessageData>,
        /// Its summary (absent: none, hashed or dropped).
        #[serde(skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        /// SHA-256 of the summary, hex (content mode `hash`).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
        summary_sha256: Option<String>,
        /// When it was created, RFC 3339.
        created_at: Option<String>,
        /// When the TTL monitor may remove it, RFC 3339.
        expires_at: Option<String>,
    }
);

memory_data!(
    #[schemars(title = "MemoryObserved")]
    /// A semantic memory as a snapshot read it.
    MemoryObservedData, memory_id {
        /// What it holds.
        #[serde(rename = "type")]
        memory_type: MemoryTypeData,
        /// The content (absent: hashed or dropped).
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        /// SHA-256 of the content, hex (content mode `hash`).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
        content_sha256: Option<String>,
        /// Dimensions of its embedding; null without one.
        embedding_dimensions: Option<usize>,
        /// The embedding's values, only with `memory.include_embeddings = true`.
        #[serde(skip_serializing_if = "Option::is_none")]
        embedding: Option<Vec<EmbeddingValue>>,
        /// The episode it was extracted from.
        source_episode_id: Option<String>,
        /// Its strength.
        #[schemars(range(min = 0.0, max = 1.0))]
        strength: f64,
        /// When it was last accessed, RFC 3339.
        last_accessed_at: Option<String>,
    }
);
