//! The `data` of each published agent-memory event. Every one carries the stable event id,
//! the change's cluster time, the user and the document's own id; text fields appear as
//! configured (`content` / `contentSha256` / neither), embeddings as their dimension count
//! unless configured otherwise.

use schemars::JsonSchema;
use serde::Serialize;

use crate::domain::memory::{
    Content, Direction, Embedding, MemoryChange, MemoryEvent, MemoryType, Message, Outcome,
};
use crate::source::position::{cluster_time_text, datetime_rfc3339 as rfc3339};

/// Declares a data type with the fields every memory event carries.
macro_rules! memory_data {
    ($(#[$meta:meta])* $name:ident, $id:ident { $($(#[$field_meta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        $(#[$meta])*
        pub struct $name {
            /// The stable event id (also `ce_id`).
            #[schemars(regex(pattern = r"^[0-9a-f]{32}$"))]
            pub event_id: String,
            /// The change's cluster time, `<seconds>.<increment>`.
            #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
            pub cluster_time: String,
            /// The user whose memory changed; the Kafka key.
            #[schemars(length(min = 1))]
            pub user_id: String,
            /// The document's own id; the CloudEvent subject.
            #[schemars(length(min = 1))]
            pub $id: String,
            $($(#[$field_meta])* pub $field: $ty,)*
        }
    };
}

/// A text as configured: the text, its SHA-256, or neither.
#[derive(Default)]
struct Text {
    text: Option<String>,
    sha256: Option<String>,
}

impl From<&Content> for Text {
    fn from(content: &Content) -> Text {
        match content {
            Content::Text(t) => Text {
                text: Some(t.clone()),
                sha256: None,
            },
            Content::Sha256(h) => Text {
                text: None,
                sha256: Some(h.clone()),
            },
            Content::Dropped => Text::default(),
        }
    }
}

/// One turn of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageData {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// When it was said, RFC 3339.
    pub timestamp: String,
    /// Its size in tokens.
    #[schemars(range(min = 0))]
    pub token_count: i64,
    /// The content, as configured (absent: hashed or dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// SHA-256 of the content, hex (content mode `hash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub content_sha256: Option<String>,
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeData {
    /// The task was done.
    Succeeded,
    /// The task failed.
    Failed,
    /// The user left.
    Abandoned,
}

/// What a semantic memory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemoryTypeData {
    /// Something the user likes.
    Preference,
    /// Something true about the user.
    Fact,
    /// Something the user asked to be done a certain way.
    Instruction,
}

/// Which way a memory's strength moved; `unknown` when the previous strength is not known
/// (no pre-image): no guess is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DirectionData {
    /// Stronger.
    Up,
    /// Weaker.
    Down,
    /// Not changed.
    Unchanged,
    /// Not known.
    Unknown,
}

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

fn message(m: &Message) -> MessageData {
    let text = Text::from(&m.content);
    MessageData {
        role: m.role.clone(),
        timestamp: rfc3339(m.timestamp),
        token_count: m.token_count,
        content: text.text,
        content_sha256: text.sha256,
    }
}

fn messages(list: &[Message]) -> Vec<MessageData> {
    list.iter().map(message).collect()
}

fn outcome(o: Outcome) -> OutcomeData {
    match o {
        Outcome::Succeeded => OutcomeData::Succeeded,
        Outcome::Failed => OutcomeData::Failed,
        Outcome::Abandoned => OutcomeData::Abandoned,
    }
}

fn memory_type(t: MemoryType) -> MemoryTypeData {
    match t {
        MemoryType::Preference => MemoryTypeData::Preference,
        MemoryType::Fact => MemoryTypeData::Fact,
        MemoryType::Instruction => MemoryTypeData::Instruction,
    }
}

fn direction(d: Direction) -> DirectionData {
    match d {
        Direction::Up => DirectionData::Up,
        Direction::Down => DirectionData::Down,
        Direction::Unchanged => DirectionData::Unchanged,
        Direction::Unknown => DirectionData::Unknown,
    }
}

fn embedding(e: Option<&Embedding>) -> (Option<usize>, Option<Vec<EmbeddingValue>>) {
    match e {
        Some(e) => (
            Some(e.dimensions),
            e.values
                .as_ref()
                .map(|values| values.iter().copied().map(EmbeddingValue).collect()),
        ),
        None => (None, None),
    }
}

/// One value of an embedding: a JSON number when finite; JSON has no NaN or infinity, so
/// those are the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (the spelling of
/// Protocol Buffers' JSON mapping), never `null`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbeddingValue(pub f64);

impl Serialize for EmbeddingValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        if value.is_finite() {
            serializer.serialize_f64(value)
        } else if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if value > 0.0 {
            serializer.serialize_str("Infinity")
        } else {
            serializer.serialize_str("-Infinity")
        }
    }
}

impl JsonSchema for EmbeddingValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EmbeddingValue".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number; NaN and the infinities, which JSON cannot write as numbers, as the strings \"NaN\", \"Infinity\" and \"-Infinity\".",
            "oneOf": [
                {"type": "number"},
                {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}
            ]
        })
    }
}

/// The JSON data of a memory event.
pub fn memory_json(event: &MemoryEvent) -> Vec<u8> {
    let event_id = event.meta.event_id.to_string();
    let cluster_time = cluster_time_text(event.meta.cluster_time);
    let user_id = event.user_id.clone();
    let id = event.document_id.clone();
    macro_rules! data {
        ($name:ident, $id_field:ident { $($field:ident : $value:expr),* $(,)? }) => {
            serde_json::to_vec(&$name {
                event_id,
                cluster_time,
                user_id,
                $id_field: id,
                $($field: $value,)*
            })
        };
    }
    let encoded = match &event.change {
        MemoryChange::ThreadStarted {
            messages: m,
            created_at,
            expires_at,
        } => data!(
            ThreadStartedData,
            thread_id {
                messages: messages(m),
                created_at: created_at.map(rfc3339),
                expires_at: expires_at.map(rfc3339),
            }
        ),
        MemoryChange::MessagesAppended { messages: m } => {
            data!(
                MessagesAppendedData,
                thread_id {
                    messages: messages(m)
                }
            )
        }
        MemoryChange::ThreadSummarized {
            summary,
            messages_dropped,
            messages_appended,
            messages_remaining,
        } => {
            let text = summary.as_ref().map(Text::from).unwrap_or_default();
            data!(
                ThreadSummarizedData,
                thread_id {
                    summary: text.text,
                    summary_sha256: text.sha256,
                    messages_dropped: *messages_dropped,
                    messages_appended: messages(messages_appended),
                    messages_remaining: *messages_remaining,
                }
            )
        }
        MemoryChange::ThreadUpdated { changed_fields } => {
            data!(
                ThreadUpdatedData,
                thread_id {
                    changed_fields: changed_fields.clone()
                }
            )
        }
        MemoryChange::ThreadExpired {
            expires_at,
            message_count,
        } => data!(
            ThreadExpiredData,
            thread_id {
                expires_at: rfc3339(*expires_at),
                message_count: *message_count,
            }
        ),
        MemoryChange::ThreadDeleted {
            expires_at,
            message_count,
        } => data!(
            ThreadDeletedData,
            thread_id {
                expires_at: expires_at.map(rfc3339),
                message_count: *message_count,
            }
        ),
        MemoryChange::EpisodeRecorded(e) => {
            let text = Text::from(&e.summary);
            data!(
                EpisodeRecordedData,
                episode_id {
                    thread_id: e.thread_id.clone(),
                    outcome: outcome(e.outcome),
                    tags: e.tags.clone(),
                    tool_calls: e.tool_calls,
                    failed_tool_calls: e.failed_tool_calls,
                    started_at: rfc3339(e.started_at),
                    ended_at: rfc3339(e.ended_at),
                    duration_ms: e.ended_at.timestamp_millis() - e.started_at.timestamp_millis(),
                    summary: text.text,
                    summary_sha256: text.sha256,
                }
            )
        }
        MemoryChange::EpisodeAmended {
            changed_fields,
            outcome: o,
        } => data!(
            EpisodeAmendedData,
            episode_id {
                changed_fields: changed_fields.clone(),
                outcome: o.map(outcome),
            }
        ),
        MemoryChange::EpisodePurged { outcome: o } => {
            data!(
                EpisodePurgedData,
                episode_id {
                    outcome: o.map(outcome)
                }
            )
        }
        MemoryChange::MemoryLearned {
            memory_type: t,
            content,
            embedding: e,
            source_episode_id,
            strength,
        } => {
            let text = Text::from(content);
            let (dimensions, values) = embedding(e.as_ref());
            data!(
                MemoryLearnedData,
                memory_id {
                    memory_type: memory_type(*t),
                    content: text.text,
                    content_sha256: text.sha256,
                    embedding_dimensions: dimensions,
                    embedding: values,
                    source_episode_id: source_episode_id.clone(),
                    strength: *strength,
                }
            )
        }
        MemoryChange::MemoryRecalled {
            strength,
            previous_strength,
            last_accessed_at,
        } => data!(
            MemoryRecalledData,
            memory_id {
                strength: *strength,
                previous_strength: *previous_strength,
                last_accessed_at: last_accessed_at.map(rfc3339),
            }
        ),
        MemoryChange::MemoryDecayed {
            strength,
            previous_strength,
        } => data!(
            MemoryDecayedData,
            memory_id {
                strength: *strength,
                previous_strength: *previous_strength,
            }
        ),
        MemoryChange::MemoryRevised {
            changed_fields,
            memory_type: t,
            content,
            embedding: e,
        } => {
            let text = content.as_ref().map(Text::from).unwrap_or_default();
            let (dimensions, values) = embedding(e.as_ref());
            data!(
                MemoryRevisedData,
                memory_id {
                    changed_fields: changed_fields.clone(),
                    memory_type: t.map(memory_type),
                    content: text.text,
                    content_sha256: text.sha256,
                    embedding_dimensions: dimensions,
                    embedding: values,
                }
            )
        }
        MemoryChange::MemoryUpdated {
            changed_fields,
            strength,
            previous_strength,
            direction: d,
        } => data!(
            MemoryUpdatedData,
            memory_id {
                changed_fields: changed_fields.clone(),
                strength: *strength,
                previous_strength: *previous_strength,
                direction: direction(*d),
            }
        ),
        MemoryChange::MemoryForgotten { memory_type: t } => {
            data!(
                MemoryForgottenData,
                memory_id {
                    memory_type: t.map(memory_type)
                }
            )
        }
    };
    // Plain structs of strings and finite numbers serialise without fail.
    encoded.unwrap_or_else(|e| unreachable!("memory data is serialisable: {e}"))
}
