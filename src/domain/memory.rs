//! Agent-memory events: what happens to a user's threads, episodes and memories. The
//! decode rules (which change becomes which event) are in `crate::decode::memory`.

use mongodb::bson::DateTime;
use sha2::{Digest, Sha256};

use super::{ChangeMeta, EventKind};
use crate::config::TextMode;

/// What memory events may carry, per collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Privacy {
    /// Copy embedding values into events (otherwise only their dimension count).
    pub include_embeddings: bool,
    /// Message content and summaries of threads.
    pub short_term: TextMode,
    /// Episode summaries.
    pub episodic: TextMode,
    /// Memory content.
    pub semantic: TextMode,
}

/// A text field as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The text.
    Text(String),
    /// SHA-256 of its UTF-8 bytes, 64 lowercase hex digits.
    Sha256(String),
    /// Left out.
    Dropped,
}

impl Content {
    /// `text` under `mode`.
    pub fn new(text: &str, mode: TextMode) -> Content {
        match mode {
            TextMode::Include => Content::Text(text.to_owned()),
            TextMode::Hash => Content::Sha256(sha256_hex(text)),
            TextMode::Drop => Content::Dropped,
        }
    }
}

fn sha256_hex(text: &str) -> String {
    use std::fmt::Write;
    Sha256::digest(text.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// One turn of a thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text, as configured.
    pub content: Content,
    /// When it was said.
    pub timestamp: DateTime,
    /// Its size in tokens.
    pub token_count: i64,
}

/// An embedding: always its size, its values only when configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// Number of dimensions.
    pub dimensions: usize,
    /// The values (`memory.include_embeddings`).
    pub values: Option<Vec<f64>>,
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The task was done.
    Succeeded,
    /// The task failed.
    Failed,
    /// The user left.
    Abandoned,
}

impl Outcome {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// What a semantic memory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryType {
    /// Something the user likes.
    Preference,
    /// Something true about the user.
    Fact,
    /// Something the user asked to be done a certain way.
    Instruction,
}

impl MemoryType {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryType::Preference => "preference",
            MemoryType::Fact => "fact",
            MemoryType::Instruction => "instruction",
        }
    }
}

/// Which way a memory's strength moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Stronger.
    Up,
    /// Weaker.
    Down,
    /// Not changed.
    Unchanged,
    /// The previous strength is not known (no pre-image): no guess is made.
    Unknown,
}

impl Direction {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Unchanged => "unchanged",
            Direction::Unknown => "unknown",
        }
    }
}

/// A typed agent-memory event.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEvent {
    /// Where the change came from.
    pub meta: ChangeMeta,
    /// The user whose memory changed: the aggregate id, Kafka key and lane.
    pub user_id: String,
    /// The document's own id: `thread_id`, `episode_id` or `memory_id`.
    pub document_id: String,
    /// What happened.
    pub change: MemoryChange,
}

/// What happened to a memory document.
#[derive(Debug, Clone, PartialEq)]
pub enum MemoryChange {
    /// A thread was created with these messages.
    ThreadStarted {
        /// Its first messages (often none).
        messages: Vec<Message>,
        /// When it was created.
        created_at: Option<DateTime>,
        /// When the TTL monitor may remove it.
        expires_at: Option<DateTime>,
    },
    /// Messages were appended.
    MessagesAppended {
        /// The new messages, in order.
        messages: Vec<Message>,
    },
    /// The summary changed and/or old messages were dropped.
    ThreadSummarized {
        /// The summary after the change (`None`: none, or not known).
        summary: Option<Content>,
        /// Messages dropped by the change; `None` when the previous messages are not known.
        messages_dropped: Option<u32>,
        /// Messages the same change appended.
        messages_appended: Vec<Message>,
        /// Messages left after the change, when known.
        messages_remaining: Option<u32>,
    },
    /// Any other change of a thread.
    ThreadUpdated {
        /// Top-level fields the change set or removed.
        changed_fields: Vec<String>,
    },
    /// The TTL monitor removed the thread.
    ThreadExpired {
        /// The expiry it passed.
        expires_at: DateTime,
        /// How many messages it held.
        message_count: u32,
    },
    /// The thread was deleted before its expiry.
    ThreadDeleted {
        /// The expiry it had, if any.
        expires_at: Option<DateTime>,
        /// How many messages it held.
        message_count: u32,
    },
    /// A thread as a snapshot read it.
    ThreadObserved {
        /// Its messages, in order.
        messages: Vec<Message>,
        /// Its summary, if it has one.
        summary: Option<Content>,
        /// When it was created.
        created_at: Option<DateTime>,
        /// When the TTL monitor may remove it.
        expires_at: Option<DateTime>,
    },
    /// A finished thread became an episode.
    EpisodeRecorded(Box<Episode>),
    /// An episode as a snapshot read it.
    EpisodeObserved(Box<Episode>),
    /// An episode changed.
    EpisodeAmended {
        /// Top-level fields the change set or removed.
        changed_fields: Vec<String>,
        /// The outcome after the change, when known.
        outcome: Option<Outcome>,
    },
    /// An episode was deleted.
    EpisodePurged {
        /// Its outcome.
        outcome: Option<Outcome>,
    },
    /// A semantic memory was created.
    MemoryLearned {
        /// What it holds.
        memory_type: MemoryType,
        /// The content, as configured.
        content: Content,
        /// The embedding's size (and values, when configured).
        embedding: Option<Embedding>,
        /// The episode it was extracted from.
        source_episode_id: Option<String>,
        /// Its strength, 0..=1.
        strength: f64,
    },
    /// A memory was accessed and grew stronger.
    MemoryRecalled {
        /// Strength after.
        strength: f64,
        /// Strength before.
        previous_strength: f64,
        /// When it was accessed.
        last_accessed_at: Option<DateTime>,
    },
    /// A memory grew weaker.
    MemoryDecayed {
        /// Strength after.
        strength: f64,
        /// Strength before.
        previous_strength: f64,
    },
    /// A memory's content, type or embedding changed.
    MemoryRevised {
        /// Top-level fields the change set or removed.
        changed_fields: Vec<String>,
        /// What it holds after the change, when known.
        memory_type: Option<MemoryType>,
        /// Its content after the change, when known.
        content: Option<Content>,
        /// Its embedding after the change, when known.
        embedding: Option<Embedding>,
    },
    /// Any other change of a memory.
    MemoryUpdated {
        /// Top-level fields the change set or removed.
        changed_fields: Vec<String>,
        /// Strength after, when known.
        strength: Option<f64>,
        /// Strength before, when known.
        previous_strength: Option<f64>,
        /// Which way the strength moved.
        direction: Direction,
    },
    /// A memory was deleted.
    MemoryForgotten {
        /// What it held.
        memory_type: Option<MemoryType>,
    },
    /// A semantic memory as a snapshot read it.
    MemoryObserved {
        /// What it holds.
        memory_type: MemoryType,
        /// The content, as configured.
        content: Content,
        /// The embedding's size (and values, when configured).
        embedding: Option<Embedding>,
        /// The episode it was extracted from.
        source_episode_id: Option<String>,
        /// Its strength, 0..=1.
        strength: f64,
        /// When it was last accessed.
        last_accessed_at: Option<DateTime>,
    },
}

/// A finished thread, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// The thread it came from.
    pub thread_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Its tags.
    pub tags: Vec<String>,
    /// Tool calls made.
    pub tool_calls: u32,
    /// Tool calls that failed.
    pub failed_tool_calls: u32,
    /// When it started.
    pub started_at: DateTime,
    /// When it ended.
    pub ended_at: DateTime,
    /// Its summary, as configured.
    pub summary: Content,
}

impl MemoryChange {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            MemoryChange::ThreadStarted { .. } => EventKind::ThreadStarted,
            MemoryChange::MessagesAppended { .. } => EventKind::MessagesAppended,
            MemoryChange::ThreadSummarized { .. } => EventKind::ThreadSummarized,
            MemoryChange::ThreadUpdated { .. } => EventKind::ThreadUpdated,
            MemoryChange::ThreadExpired { .. } => EventKind::ThreadExpired,
            MemoryChange::ThreadDeleted { .. } => EventKind::ThreadDeleted,
            MemoryChange::ThreadObserved { .. } => EventKind::ThreadObserved,
            MemoryChange::EpisodeRecorded(_) => EventKind::EpisodeRecorded,
            MemoryChange::EpisodeAmended { .. } => EventKind::EpisodeAmended,
            MemoryChange::EpisodePurged { .. } => EventKind::EpisodePurged,
            MemoryChange::EpisodeObserved(_) => EventKind::EpisodeObserved,
            MemoryChange::MemoryLearned { .. } => EventKind::MemoryLearned,
            MemoryChange::MemoryRecalled { .. } => EventKind::MemoryRecalled,
            MemoryChange::MemoryDecayed { .. } => EventKind::MemoryDecayed,
            MemoryChange::MemoryRevised { .. } => EventKind::MemoryRevised,
            MemoryChange::MemoryUpdated { .. } => EventKind::MemoryUpdated,
            MemoryChange::MemoryForgotten { .. } => EventKind::MemoryForgotten,
            MemoryChange::MemoryObserved { .. } => EventKind::MemoryObserved,
        }
    }
}

impl MemoryEvent {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.change.kind()
    }
}
