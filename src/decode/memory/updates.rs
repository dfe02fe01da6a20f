//! Updates: what changed, read from `updatedFields`, `truncatedArrays` and the pre-image,
//! and the event it makes for each collection.

use mongodb::bson::{RawBsonRef, RawDocument};

use super::Decoder;
use super::values::*;
use crate::decode::{DecodeError, Envelope, Fields};
use crate::domain::memory::*;

impl<'a> Decoder<'a> {
    pub(super) fn thread_updated(
        &self,
        changes: &Changes<'a>,
    ) -> Result<MemoryChange, DecodeError> {
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
    pub(super) fn fold(&self, changes: &Changes<'a>) -> Result<Fold, DecodeError> {
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
    pub(super) fn whole_array<'d>(
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

    pub(super) fn memory_updated(
        &self,
        changes: &Changes<'a>,
    ) -> Result<MemoryChange, DecodeError> {
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
}

/// What an update did to a thread's messages.
pub(super) struct Fold {
    appended: Vec<Message>,
    dropped: Option<u32>,
    remaining: Option<u32>,
}

/// What an update or replace changed, and the document after it where known.
pub(super) struct Changes<'a> {
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
    pub(super) fn read(
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

    pub(super) fn add_name(&mut self, path: &str) {
        let top = path.split('.').next().unwrap_or(path);
        if !self.names.iter().any(|n| n == top) {
            self.names.push(top.to_owned());
        }
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    pub(super) fn touches(&self, field: &str) -> bool {
        self.names.iter().any(|n| n == field)
    }

    /// `field`'s value after the change, with the document it was read from (for errors):
    /// from the change itself, else unchanged from the pre-image, else from the looked-up
    /// document. `None` when removed or unknown.
    pub(super) fn after(
        &self,
        field: &str,
    ) -> Result<Option<(Fields<'a>, RawBsonRef<'a>)>, DecodeError> {
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
