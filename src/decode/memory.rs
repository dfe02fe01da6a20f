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

use mongodb::bson::{DateTime, RawArray, RawBsonRef, RawDocument};

use super::{DecodeError, Envelope, Fields, type_name};
use crate::domain::ChangeMeta;
use crate::domain::memory::*;

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

    fn thread_updated(&self, changes: &Changes<'a>) -> Result<MemoryChange, DecodeError> {
        let folded = self.fold(changes)?;
        let summary_changed = changes.touches("summary");
        if summary_changed || folded.dropped.is_some_and(|n| n > 0) {
            let summary = match changes.after("summary")? {
                Some((_, RawBsonRef::String(s))) => Some(Content::new(s, self.privacy.short_term)),
                Some((_, RawBsonRef::Null)) | None => None,
                Some((doc, other)) => return Err(doc.wrong_type("summary", "a string", other)),
            };
            return Ok(MemoryChange::ThreadSummarized {
                summary,
                messages_dropped: folded.dropped,
                messages_appended: folded.appended,
                messages_remaining: folded.remaining,
            });
        }
        if !folded.appended.is_empty() {
            return Ok(MemoryChange::MessagesAppended {
                messages: folded.appended,
            });
        }
        Ok(MemoryChange::ThreadUpdated {
            changed_fields: changes.names(),
        })
    }

    /// What an update did to `messages`: appended, dropped (when the previous messages are
    /// known) and what is left.
    fn fold(&self, changes: &Changes<'a>) -> Result<Fold, DecodeError> {
        let previous: Option<Vec<&RawDocument>> = match self.before {
            Some(before) => match before.lookup("messages")? {
                Some(RawBsonRef::Array(a)) => Some(documents(a)),
                _ => Some(Vec::new()),
            },
            None => None,
        };
        let mut fold = Fold {
            appended: Vec::new(),
            dropped: Some(0),
            remaining: previous.as_ref().map(|p| len_u32(p.len())),
        };
        let Some(updated) = changes.updated else {
            if let Some(after) = changes.replaced {
                // A replacement: compare the two arrays like a whole-array update.
                if let Some(value) = after.lookup("messages")? {
                    self.whole_array(&after, value, previous.as_deref(), &mut fold)?;
                }
            }
            return Ok(fold);
        };
        for element in updated.doc.iter() {
            let (key, value) = element.map_err(|_| malformed(&updated))?;
            if key == "messages" {
                self.whole_array(&updated, value, previous.as_deref(), &mut fold)?;
            } else if let Some(index) = key
                .strip_prefix("messages.")
                .and_then(|i| i.parse::<usize>().ok())
            {
                // `$push` sets `messages.<n>` for each new element; an index below the
                // previous length rewrote an existing message instead.
                if previous.as_ref().is_none_or(|p| index >= p.len()) {
                    let message = self.message(&updated, key, Some(value))?;
                    fold.appended.push(message);
                    fold.remaining = fold.remaining.map(|r| r + 1);
                }
            }
        }
        for (field, new_size) in &changes.truncated {
            if *field == "messages" {
                fold.dropped = previous
                    .as_ref()
                    .map(|p| len_u32(p.len()).saturating_sub(*new_size));
                fold.remaining = Some(*new_size + len_u32(fold.appended.len()));
            }
        }
        Ok(fold)
    }

    /// `messages` replaced as a whole: the smallest number of leading messages whose removal
    /// leaves the previous array as a prefix of the new one was dropped; what follows that
    /// prefix was appended. Without the previous array, neither is known.
    fn whole_array<'d>(
        &self,
        doc: &Fields<'d>,
        value: RawBsonRef<'d>,
        previous: Option<&[&RawDocument]>,
        fold: &mut Fold,
    ) -> Result<(), DecodeError> {
        let RawBsonRef::Array(array) = value else {
            return Err(doc.wrong_type("messages", "an array", value));
        };
        let new = documents(array);
        fold.remaining = Some(len_u32(new.len()));
        let Some(previous) = previous else {
            fold.dropped = None;
            return Ok(());
        };
        let dropped = (0..=previous.len())
            .find(|&k| {
                let kept = &previous[k..];
                kept.len() <= new.len()
                    && kept
                        .iter()
                        .zip(&new)
                        .all(|(a, b)| a.as_bytes() == b.as_bytes())
            })
            .unwrap_or(previous.len());
        fold.dropped = Some(len_u32(dropped));
        let kept = previous.len() - dropped;
        fold.appended
            .extend(self.message_list(array, &doc.path("messages"), kept)?);
        Ok(())
    }

    fn memory_updated(&self, changes: &Changes<'a>) -> Result<MemoryChange, DecodeError> {
        let changed_fields = changes.names();
        if ["content", "type", "embedding"]
            .iter()
            .any(|f| changes.touches(f))
        {
            return Ok(MemoryChange::MemoryRevised {
                memory_type: changes
                    .after("type")?
                    .map(|(doc, v)| memory_type_of(&doc, Some(v)))
                    .transpose()?,
                content: match changes.after("content")? {
                    Some((doc, value)) => Some(Content::new(
                        doc.str_of("content", Some(value))?,
                        self.privacy.semantic,
                    )),
                    None => None,
                },
                embedding: match changes.after("embedding")? {
                    Some((doc, value)) => self.embedding(&doc, Some(value))?,
                    None => None,
                },
                changed_fields,
            });
        }
        let strength = match changes.after("strength")? {
            Some((doc, value)) => Some(strength_of(&doc, "strength", Some(value))?),
            None => None,
        };
        let previous_strength = match self.before {
            Some(before) => match before.lookup("strength")? {
                None | Some(RawBsonRef::Null) => None,
                value => Some(strength_of(&before, "strength", value)?),
            },
            None => None,
        };
        let direction = match (strength, previous_strength) {
            _ if !changes.touches("strength") => Direction::Unchanged,
            (Some(now), Some(before)) if now > before => Direction::Up,
            (Some(now), Some(before)) if now < before => Direction::Down,
            (Some(_), Some(_)) => Direction::Unchanged,
            _ => Direction::Unknown,
        };
        Ok(match (direction, strength, previous_strength) {
            (Direction::Up, Some(strength), Some(previous_strength))
                if changes.touches("last_accessed_at") =>
            {
                MemoryChange::MemoryRecalled {
                    strength,
                    previous_strength,
                    last_accessed_at: match changes.after("last_accessed_at")? {
                        Some((doc, value)) => optional_date(&doc, "last_accessed_at", Some(value))?,
                        None => None,
                    },
                }
            }
            (Direction::Down, Some(strength), Some(previous_strength)) => {
                MemoryChange::MemoryDecayed {
                    strength,
                    previous_strength,
                }
            }
            _ => MemoryChange::MemoryUpdated {
                changed_fields,
                strength,
                previous_strength,
                direction,
            },
        })
    }

    fn episode<'d>(&self, doc: &Fields<'d>) -> Result<Episode, DecodeError> {
        let [
            thread_id,
            outcome,
            tags,
            tool_calls,
            started_at,
            ended_at,
            summary,
        ] = doc.pick([
            "thread_id",
            "outcome",
            "tags",
            "tool_calls",
            "started_at",
            "ended_at",
            "summary",
        ])?;
        let tags = match tags {
            None | Some(RawBsonRef::Null) => Vec::new(),
            Some(RawBsonRef::Array(a)) => {
                let tags_path = doc.path("tags");
                let tags_doc = Fields::new(array_doc(a)?, &tags_path);
                let mut out = Vec::new();
                for (i, value) in a.into_iter().enumerate() {
                    let value = value.map_err(|_| malformed(&tags_doc))?;
                    out.push(tags_doc.str_of(&i.to_string(), Some(value))?.to_owned());
                }
                out
            }
            Some(other) => return Err(doc.wrong_type("tags", "an array", other)),
        };
        let (calls, failed) = match tool_calls {
            None | Some(RawBsonRef::Null) => (0, 0),
            Some(RawBsonRef::Array(a)) => {
                let calls_path = doc.path("tool_calls");
                let calls_doc = Fields::new(array_doc(a)?, &calls_path);
                let mut failed = 0;
                for (i, call) in documents(a).into_iter().enumerate() {
                    let index = i.to_string();
                    let call_path = calls_doc.path(&index);
                    let call = Fields::new(call, &call_path);
                    match call.lookup("success")? {
                        Some(RawBsonRef::Boolean(true)) => {}
                        Some(RawBsonRef::Boolean(false)) => failed += 1,
                        other => {
                            return Err(match other {
                                Some(v) => call.wrong_type("success", "a boolean", v),
                                None => DecodeError::missing(call.path("success")),
                            });
                        }
                    }
                }
                (count(a), failed)
            }
            Some(other) => return Err(doc.wrong_type("tool_calls", "an array", other)),
        };
        Ok(Episode {
            thread_id: optional_str(doc, "thread_id", thread_id)?,
            outcome: outcome_of(doc, outcome)?,
            tags,
            tool_calls: calls,
            failed_tool_calls: failed,
            started_at: date_of(doc, "started_at", started_at)?,
            ended_at: date_of(doc, "ended_at", ended_at)?,
            summary: Content::new(doc.str_of("summary", summary)?, self.privacy.episodic),
        })
    }

    fn messages<'d>(
        &self,
        doc: &Fields<'d>,
        key: &str,
        value: Option<RawBsonRef<'d>>,
    ) -> Result<Vec<Message>, DecodeError> {
        let array = match doc.required(key, value)? {
            RawBsonRef::Array(a) => a,
            other => return Err(doc.wrong_type(key, "an array", other)),
        };
        self.message_list(array, &doc.path(key), 0)
    }

    /// The messages of `array` (whose dotted path is `path`), from index `from` on.
    fn message_list(
        &self,
        array: &RawArray,
        path: &str,
        from: usize,
    ) -> Result<Vec<Message>, DecodeError> {
        let items = Fields::new(array_doc(array)?, path);
        let mut messages = Vec::new();
        for (i, value) in array.into_iter().enumerate().skip(from) {
            let value = value.map_err(|_| malformed(&items))?;
            messages.push(self.message(&items, &i.to_string(), Some(value))?);
        }
        Ok(messages)
    }

    fn message<'d>(
        &self,
        doc: &Fields<'d>,
        key: &str,
        value: Option<RawBsonRef<'d>>,
    ) -> Result<Message, DecodeError> {
        let path = doc.path(key);
        let message = Fields::new(doc.document_of(key, value)?, &path);
        let [role, content, timestamp, token_count] =
            message.pick(["role", "content", "timestamp", "token_count"])?;
        Ok(Message {
            role: message.non_empty_str_of("role", role)?.to_owned(),
            content: Content::new(message.str_of("content", content)?, self.privacy.short_term),
            timestamp: date_of(&message, "timestamp", timestamp)?,
            token_count: match message.required("token_count", token_count)? {
                RawBsonRef::Int32(n) if n >= 0 => i64::from(n),
                RawBsonRef::Int64(n) if n >= 0 => n,
                RawBsonRef::Int32(_) | RawBsonRef::Int64(_) => {
                    return Err(DecodeError::invalid(
                        message.path("token_count"),
                        "is negative",
                    ));
                }
                other => return Err(message.wrong_type("token_count", "an integer", other)),
            },
        })
    }

    fn embedding<'d>(
        &self,
        doc: &Fields<'d>,
        value: Option<RawBsonRef<'d>>,
    ) -> Result<Option<Embedding>, DecodeError> {
        let array = match value {
            None | Some(RawBsonRef::Null) => return Ok(None),
            Some(RawBsonRef::Array(a)) => a,
            Some(other) => return Err(doc.wrong_type("embedding", "an array", other)),
        };
        let mut values = Vec::new();
        let mut dimensions = 0;
        for (i, element) in array.into_iter().enumerate() {
            let element = element
                .map_err(|_| DecodeError::invalid(doc.path("embedding"), "malformed BSON"))?;
            let number = number_of(element).ok_or_else(|| DecodeError::WrongType {
                field: format!("{}.{i}", doc.path("embedding")),
                expected: "a number",
                found: type_name(element.element_type()).to_owned(),
            })?;
            if self.privacy.include_embeddings {
                values.push(number);
            }
            dimensions += 1;
        }
        Ok(Some(Embedding {
            dimensions,
            values: self.privacy.include_embeddings.then_some(values),
        }))
    }
}

/// What an update did to a thread's messages.
struct Fold {
    appended: Vec<Message>,
    dropped: Option<u32>,
    remaining: Option<u32>,
}

/// What an update or replace changed, and the document after it where known.
struct Changes<'a> {
    /// `updateDescription.updatedFields` (updates).
    updated: Option<Fields<'a>>,
    /// `updateDescription.removedFields` (updates).
    removed: Vec<&'a str>,
    /// `updateDescription.truncatedArrays` as (field, new size).
    truncated: Vec<(&'a str, u32)>,
    /// The new document (replaces).
    replaced: Option<Fields<'a>>,
    /// The state before the change.
    before: Option<Fields<'a>>,
    /// The looked-up document (may hold later changes: a fallback only).
    looked_up: Option<Fields<'a>>,
    /// Top-level names of every changed field, in order, once each.
    names: Vec<String>,
}

impl<'a> Changes<'a> {
    fn read(
        envelope: &Envelope<'a>,
        replace: bool,
        before: Option<Fields<'a>>,
        after: Option<Fields<'a>>,
    ) -> Result<Changes<'a>, DecodeError> {
        let mut changes = Changes {
            updated: None,
            removed: Vec::new(),
            truncated: Vec::new(),
            replaced: None,
            before,
            looked_up: after,
            names: Vec::new(),
        };
        if replace {
            let new = after.ok_or(DecodeError::NoFullDocument)?;
            changes.replaced = Some(new);
            for element in new.doc.iter() {
                let (key, value) = element.map_err(|_| malformed(&new))?;
                let same = match before {
                    Some(before) => before.lookup(key)?.is_some_and(|old| old == value),
                    None => false,
                };
                if key != "_id" && !same {
                    changes.add_name(key);
                }
            }
            if let Some(before) = before {
                for element in before.doc.iter() {
                    let (key, _) = element.map_err(|_| malformed(&before))?;
                    if new.lookup(key)?.is_none() {
                        changes.add_name(key);
                    }
                }
            }
            return Ok(changes);
        }
        let description = envelope.section("updateDescription", envelope.update_description)?;
        let [updated, removed, truncated] =
            description.pick(["updatedFields", "removedFields", "truncatedArrays"])?;
        let updated = Fields::new(
            description.document_of("updatedFields", updated)?,
            "updateDescription.updatedFields",
        );
        changes.updated = Some(updated);
        for element in updated.doc.iter() {
            let (key, _) = element.map_err(|_| malformed(&updated))?;
            changes.add_name(key);
        }
        if let Some(RawBsonRef::Array(removed)) = removed {
            for value in removed {
                if let Ok(RawBsonRef::String(field)) = value {
                    changes.removed.push(field);
                    changes.add_name(field);
                }
            }
        }
        if let Some(RawBsonRef::Array(truncated)) = truncated {
            for value in truncated {
                let Ok(RawBsonRef::Document(entry)) = value else {
                    continue;
                };
                if let (Ok(field), Ok(size)) = (entry.get_str("field"), entry.get_i32("newSize")) {
                    changes
                        .truncated
                        .push((field, u32::try_from(size).unwrap_or(0)));
                    changes.add_name(field);
                }
            }
        }
        Ok(changes)
    }

    fn add_name(&mut self, path: &str) {
        let top = path.split('.').next().unwrap_or(path);
        if !self.names.iter().any(|n| n == top) {
            self.names.push(top.to_owned());
        }
    }

    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn touches(&self, field: &str) -> bool {
        self.names.iter().any(|n| n == field)
    }

    /// `field`'s value after the change, with the document it was read from (for errors):
    /// from the change itself, else unchanged from the pre-image, else from the looked-up
    /// document. `None` when removed or unknown.
    fn after(&self, field: &str) -> Result<Option<(Fields<'a>, RawBsonRef<'a>)>, DecodeError> {
        if let Some(new) = self.replaced {
            return Ok(new.lookup(field)?.map(|v| (new, v)));
        }
        if let Some(updated) = self.updated
            && let Some(value) = updated.lookup(field)?
        {
            return Ok(Some((updated, value)));
        }
        if self.removed.contains(&field) {
            return Ok(None);
        }
        for doc in [self.before, self.looked_up].into_iter().flatten() {
            if let Some(value) = doc.lookup(field)? {
                return Ok(Some((doc, value)));
            }
        }
        Ok(None)
    }
}

fn malformed(doc: &Fields<'_>) -> DecodeError {
    DecodeError::invalid(doc.path("(element)"), "malformed BSON")
}

/// An array's elements as a document keyed "0", "1"… (its BSON encoding is one).
fn array_doc(array: &RawArray) -> Result<&RawDocument, DecodeError> {
    RawDocument::from_bytes(array.as_bytes())
        .map_err(|_| DecodeError::invalid("(array)", "malformed BSON"))
}

fn documents(array: &RawArray) -> Vec<&RawDocument> {
    array
        .into_iter()
        .filter_map(|v| match v {
            Ok(RawBsonRef::Document(d)) => Some(d),
            _ => None,
        })
        .collect()
}

fn count(array: &RawArray) -> u32 {
    len_u32(array.into_iter().count())
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn number_of(value: RawBsonRef<'_>) -> Option<f64> {
    match value {
        RawBsonRef::Double(f) => Some(f),
        RawBsonRef::Int32(i) => Some(f64::from(i)),
        RawBsonRef::Int64(i) => Some(i as f64),
        RawBsonRef::Decimal128(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

fn strength_of(
    doc: &Fields<'_>,
    key: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<f64, DecodeError> {
    let value = doc.required(key, value)?;
    let number = number_of(value).ok_or_else(|| doc.wrong_type(key, "a number", value))?;
    if !(0.0..=1.0).contains(&number) {
        return Err(DecodeError::invalid(
            doc.path(key),
            format!("{number} is outside 0..=1"),
        ));
    }
    Ok(number)
}

fn date_of(
    doc: &Fields<'_>,
    key: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<DateTime, DecodeError> {
    match doc.required(key, value)? {
        RawBsonRef::DateTime(d) => Ok(d),
        other => Err(doc.wrong_type(key, "a date", other)),
    }
}

/// A field that may be absent or null.
fn optional<'a, T>(
    doc: &Fields<'a>,
    value: Option<RawBsonRef<'a>>,
    read: impl Fn(&Fields<'a>, Option<RawBsonRef<'a>>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    match value {
        None | Some(RawBsonRef::Null) => Ok(None),
        value => read(doc, value).map(Some),
    }
}

fn optional_date(
    doc: &Fields<'_>,
    key: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<Option<DateTime>, DecodeError> {
    optional(doc, value, |doc, v| date_of(doc, key, v))
}

fn optional_str(
    doc: &Fields<'_>,
    key: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<Option<String>, DecodeError> {
    optional(doc, value, |doc, v| doc.str_of(key, v).map(str::to_owned))
}

fn outcome_of(doc: &Fields<'_>, value: Option<RawBsonRef<'_>>) -> Result<Outcome, DecodeError> {
    match doc.str_of("outcome", value)? {
        "succeeded" => Ok(Outcome::Succeeded),
        "failed" => Ok(Outcome::Failed),
        "abandoned" => Ok(Outcome::Abandoned),
        other => Err(DecodeError::invalid(
            doc.path("outcome"),
            format!(
                "unknown outcome `{}` (expected succeeded, failed or abandoned)",
                crate::domain::excerpt(other)
            ),
        )),
    }
}

fn memory_type_of(
    doc: &Fields<'_>,
    value: Option<RawBsonRef<'_>>,
) -> Result<MemoryType, DecodeError> {
    match doc.str_of("type", value)? {
        "preference" => Ok(MemoryType::Preference),
        "fact" => Ok(MemoryType::Fact),
        "instruction" => Ok(MemoryType::Instruction),
        other => Err(DecodeError::invalid(
            doc.path("type"),
            format!(
                "unknown memory type `{}` (expected preference, fact or instruction)",
                crate::domain::excerpt(other)
            ),
        )),
    }
}
