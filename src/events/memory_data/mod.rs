//! The `data` of each published agent-memory event. Every one carries the stable event id,
//! the change's cluster time, the user and the document's own id; text fields appear as
//! configured (`content` / `contentSha256` / neither), embeddings as their dimension count
//! unless configured otherwise.

use schemars::JsonSchema;
use serde::Serialize;

use crate::domain::memory::{Content, Direction, Embedding, MemoryType, Message, Outcome};
use crate::source::position::datetime_rfc3339 as rfc3339;

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
pub(super) struct Text {
    pub(super) text: Option<String>,
    pub(super) sha256: Option<String>,
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

mod json;
mod types;

pub(crate) use json::memory_json;
pub use types::*;

pub(super) fn message(m: &Message) -> MessageData {
    let text = Text::from(&m.content);
    MessageData {
        role: m.role.clone(),
        timestamp: rfc3339(m.timestamp),
        token_count: m.token_count,
        content: text.text,
        content_sha256: text.sha256,
    }
}

pub(super) fn messages(list: &[Message]) -> Vec<MessageData> {
    list.iter().map(message).collect()
}

pub(super) fn outcome(o: Outcome) -> OutcomeData {
    match o {
        Outcome::Succeeded => OutcomeData::Succeeded,
        Outcome::Failed => OutcomeData::Failed,
        Outcome::Abandoned => OutcomeData::Abandoned,
    }
}

pub(super) fn memory_type(t: MemoryType) -> MemoryTypeData {
    match t {
        MemoryType::Preference => MemoryTypeData::Preference,
        MemoryType::Fact => MemoryTypeData::Fact,
        MemoryType::Instruction => MemoryTypeData::Instruction,
    }
}

pub(super) fn direction(d: Direction) -> DirectionData {
    match d {
        Direction::Up => DirectionData::Up,
        Direction::Down => DirectionData::Down,
        Direction::Unchanged => DirectionData::Unchanged,
        Direction::Unknown => DirectionData::Unknown,
    }
}

pub(super) fn embedding(e: Option<&Embedding>) -> (Option<usize>, Option<Vec<EmbeddingValue>>) {
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
