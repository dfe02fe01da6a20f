//! Agent-memory events: decode rules for the three memory collections.
//!
//! | collection | change | event |
//! |---|---|---|
//! | short-term | insert | `ThreadStarted` |
//! | short-term | update appending to `messages` (`$push`: `messages.N`) | `MessagesAppended` |
//! | short-term | update changing `summary` and/or dropping messages | `ThreadSummarized` |
//! | short-term | any other update, every replace | `ThreadUpdated` |
//! | short-term | delete whose pre-image's `expires_at` is not after the delete | `ThreadExpired` |
//! | short-term | any other delete | `ThreadDeleted` |
//! | episodic | insert / update, replace / delete | `EpisodeRecorded` / `EpisodeAmended` / `EpisodePurged` |
//! | semantic | insert | `MemoryLearned` |
//! | semantic | update changing `content`, `type` or `embedding` | `MemoryRevised` |
//! | semantic | strength up and `last_accessed_at` changed (pre-image known) | `MemoryRecalled` |
//! | semantic | strength down (pre-image known) | `MemoryDecayed` |
//! | semantic | any other update (strength direction `unknown` without a pre-image) | `MemoryUpdated` |
//! | semantic | delete | `MemoryForgotten` |
//!
//! What changed is read from the change itself (`updatedFields`, `truncatedArrays`) and
//! the pre-image (`fullDocumentBeforeChange`); the looked-up full document is only a
//! fallback for fields the change does not carry. Every event carries its `user_id`: a
//! change whose user cannot be known (no `user_id`, or a delete without a pre-image) is bad
//! input and is dead-lettered. Content is included, hashed or dropped as configured, and
//! embeddings are reduced to their dimension count unless configured otherwise, before the
//! event exists: nothing downstream (Kafka, dead letters, logs) sees what was left out.

use mongodb::bson::{DateTime, RawBsonRef, RawDocument};

use crate::decode::{DecodeError, Envelope, Fields};
use crate::domain::ChangeMeta;
use crate::domain::memory::*;

mod updates;
mod values;

use updates::Changes;
use values::*;

/// Which memory collection a change comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// Conversation threads.
    ShortTerm,
    /// Finished threads.
    Episodic,
    /// Learned facts, preferences and instructions.
    Semantic,
}

impl Collection {
    /// The field holding the document's own id.
    pub fn id_field(self) -> &'static str {
        match self {
            Collection::ShortTerm => "thread_id",
            Collection::Episodic => "episode_id",
            Collection::Semantic => "memory_id",
        }
    }
}

/// Decodes one change of a memory collection. `Ok(None)` for changes that are not about
/// one document (drop, rename, invalidate…).
pub(crate) fn from_envelope(
    envelope: &Envelope<'_>,
    collection: Collection,
    privacy: &Privacy,
) -> Result<Option<MemoryEvent>, DecodeError> {
    let operation = envelope.operation()?;
    if !matches!(operation, "insert" | "update" | "replace" | "delete") {
        return Ok(None);
    }
    let meta = envelope.meta()?;
    let before = envelope.optional_section("fullDocumentBeforeChange", envelope.before)?;
    let after = envelope.optional_section("fullDocument", envelope.full_document)?;
    let decoder = Decoder {
        collection,
        privacy,
        before,
    };
    let (owner, change) = match operation {
        "insert" => {
            let doc = after.ok_or(DecodeError::NoFullDocument)?;
            (doc, decoder.inserted(&doc)?)
        }
        "delete" => {
            let doc = before.ok_or(DecodeError::NoPreImage)?;
            (doc, decoder.deleted(&doc, &meta)?)
        }
        _ => {
            // The pre-image holds the state the change started from; the looked-up document
            // may be gone (deleted since) or hold later changes.
            let doc = before.or(after).ok_or(DecodeError::NoFullDocument)?;
            let changes = Changes::read(envelope, operation == "replace", before, after)?;
            (doc, decoder.updated(&changes)?)
        }
    };
    Ok(Some(MemoryEvent {
        user_id: owner.non_empty_str("user_id")?.to_owned(),
        document_id: owner.non_empty_str(collection.id_field())?.to_owned(),
        meta,
        change,
    }))
}

/// A memory document as a snapshot read it: the state of the document, as an
/// `*_observed` event, with the fields its first event would carry and the ones a snapshot
/// also knows (a thread's summary, a memory's last access).
pub(crate) fn observed(
    document: &RawDocument,
    collection: Collection,
    privacy: &Privacy,
    meta: ChangeMeta,
) -> Result<MemoryEvent, DecodeError> {
    let doc = Fields::new(document, "");
    let decoder = Decoder {
        collection,
        privacy,
        before: None,
    };
    let change = match decoder.inserted(&doc)? {
        MemoryChange::ThreadStarted {
            messages,
            created_at,
            expires_at,
        } => MemoryChange::ThreadObserved {
            messages,
            summary: optional_str(&doc, "summary", doc.lookup("summary")?)?
                .map(|s| Content::new(&s, privacy.short_term)),
            created_at,
            expires_at,
        },
        MemoryChange::EpisodeRecorded(episode) => MemoryChange::EpisodeObserved(episode),
        MemoryChange::MemoryLearned {
            memory_type,
            content,
            embedding,
            source_episode_id,
            strength,
        } => MemoryChange::MemoryObserved {
            memory_type,
            content,
            embedding,
            source_episode_id,
            strength,
            last_accessed_at: optional_date(
                &doc,
                "last_accessed_at",
                doc.lookup("last_accessed_at")?,
            )?,
        },
        other => other,
    };
    Ok(MemoryEvent {
        user_id: doc.non_empty_str("user_id")?.to_owned(),
        document_id: doc.non_empty_str(collection.id_field())?.to_owned(),
        meta,
        change,
    })
}

struct Decoder<'a> {
    collection: Collection,
    privacy: &'a Privacy,
    before: Option<Fields<'a>>,
}

impl<'a> Decoder<'a> {
    fn inserted(&self, doc: &Fields<'a>) -> Result<MemoryChange, DecodeError> {
        Ok(match self.collection {
            Collection::ShortTerm => MemoryChange::ThreadStarted {
                messages: match doc.lookup("messages")? {
                    None | Some(RawBsonRef::Null) => Vec::new(),
                    value => self.messages(doc, "messages", value)?,
                },
                created_at: optional_date(doc, "created_at", doc.lookup("created_at")?)?,
                expires_at: optional_date(doc, "expires_at", doc.lookup("expires_at")?)?,
            },
            Collection::Episodic => MemoryChange::EpisodeRecorded(Box::new(self.episode(doc)?)),
            Collection::Semantic => {
                let [memory_type, content, embedding, source, strength] = doc.pick([
                    "type",
                    "content",
                    "embedding",
                    "source_episode_id",
                    "strength",
                ])?;
                MemoryChange::MemoryLearned {
                    memory_type: memory_type_of(doc, memory_type)?,
                    content: Content::new(doc.str_of("content", content)?, self.privacy.semantic),
                    embedding: self.embedding(doc, embedding)?,
                    source_episode_id: optional_str(doc, "source_episode_id", source)?,
                    strength: strength_of(doc, "strength", strength)?,
                }
            }
        })
    }

    fn deleted(&self, doc: &Fields<'a>, meta: &ChangeMeta) -> Result<MemoryChange, DecodeError> {
        Ok(match self.collection {
            Collection::ShortTerm => {
                let [expires_at, messages] = doc.pick(["expires_at", "messages"])?;
                let expires_at = optional_date(doc, "expires_at", expires_at)?;
                let message_count = match messages {
                    Some(RawBsonRef::Array(a)) => count(a),
                    _ => 0,
                };
                // The TTL monitor deletes a document once `expires_at` has passed; a delete
                // before that was made by someone else.
                let deleted_at = meta.wall_time.unwrap_or_else(|| {
                    DateTime::from_millis(i64::from(meta.cluster_time.time) * 1000)
                });
                match expires_at {
                    Some(at) if at <= deleted_at => MemoryChange::ThreadExpired {
                        expires_at: at,
                        message_count,
                    },
                    _ => MemoryChange::ThreadDeleted {
                        expires_at,
                        message_count,
                    },
                }
            }
            Collection::Episodic => MemoryChange::EpisodePurged {
                outcome: optional(doc, doc.lookup("outcome")?, outcome_of)?,
            },
            Collection::Semantic => MemoryChange::MemoryForgotten {
                memory_type: optional(doc, doc.lookup("type")?, memory_type_of)?,
            },
        })
    }

    fn updated(&self, changes: &Changes<'a>) -> Result<MemoryChange, DecodeError> {
        match self.collection {
            Collection::ShortTerm => self.thread_updated(changes),
            Collection::Episodic => Ok(MemoryChange::EpisodeAmended {
                changed_fields: changes.names(),
                outcome: changes
                    .after("outcome")?
                    .map(|(doc, value)| outcome_of(&doc, Some(value)))
                    .transpose()?,
            }),
            Collection::Semantic => self.memory_updated(changes),
        }
    }
}
