//! The `[memory]` section: where the agent-memory collections live and what their events
//! carry.

use serde::{Deserialize, Serialize};

/// The agent-memory domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Database of the three memory collections.
    pub database: String,
    /// Conversation threads (TTL on `expires_at`).
    pub short_term: String,
    /// Finished threads: what happened.
    pub episodic: String,
    /// Facts, preferences and instructions learned about a user.
    pub semantic: String,
    /// How long `memory_stats` remembers a processed event id, in hours.
    pub processed_ttl_hours: u64,
    /// Copy embedding values into events; otherwise only their dimension count.
    pub include_embeddings: bool,
    /// What events carry of each collection's text.
    pub content: MemoryContentConfig,
}

/// Per memory collection: `include` the text, `hash` it (SHA-256) or `drop` it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryContentConfig {
    /// Message content and thread summaries.
    pub short_term: TextMode,
    /// Episode summaries.
    pub episodic: TextMode,
    /// Memory content.
    pub semantic: TextMode,
}

/// What an event carries of a text field (message content, summaries, memory content).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextMode {
    /// The text itself.
    #[default]
    Include,
    /// Its SHA-256, hex: consumers can compare texts without reading them.
    Hash,
    /// Nothing.
    Drop,
}
