//! Raw change events turned into what consumers see. Decoding is pure: a raw change event
//! in, a typed event or a [`DecodeError`] out. A decode error is bad input, not a crash:
//! the caller dead-letters the raw event with [`DecodeError`]'s message as the reason and
//! moves on.

mod envelope;
pub mod extjson;
mod fields;
pub mod memory;
pub mod namespace;
mod observed;
pub mod payments;
pub mod raw;
mod walk;

use std::sync::Arc;

use mongodb::bson::{DateTime, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp};

use crate::domain::namespace::NamespaceEvent;
use crate::domain::raw::RawChangeEvent;
use crate::domain::{ChangeMeta, DomainEvent, EventId};
pub(crate) use envelope::Envelope;
pub(crate) use fields::{Fields, type_name};

/// Why a raw change event does not fit its domain type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// A required field is absent.
    #[error("missing field `{field}`")]
    Missing {
        /// Dotted path of the field.
        field: String,
    },
    /// A field has the wrong BSON type.
    #[error("field `{field}` is {found}, expected {expected}")]
    WrongType {
        /// Dotted path of the field.
        field: String,
        /// What the domain type needs.
        expected: &'static str,
        /// What the document holds.
        found: String,
    },
    /// A field has the right type but an unacceptable value.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// The change carries no full document where the event needs one (for an update:
    /// the document was deleted before the server looked it up).
    #[error("change has no full document (deleted before the lookup?)")]
    NoFullDocument,
    /// A delete without a pre-image: whose document it was is not known.
    #[error(
        "delete without a pre-image: the document's user is unknown (enable \
         changeStreamPreAndPostImages on the collection: `changeflow setup` does; pre-images \
         older than the server's expireAfterSeconds are gone)"
    )]
    NoPreImage,
    /// The change was over MongoDB's 16 MB limit and could not be split: the server sent
    /// it without its document images.
    #[error(
        "the change is over MongoDB's 16 MB limit ({size} bytes of document images) and the \
         stream cannot split it (MongoDB before 6.0.9, or engine.split_large_events = false): \
         it arrived without fullDocument, fullDocumentBeforeChange and updateDescription"
    )]
    Oversize {
        /// Bytes of the images and document key left out.
        size: i64,
    },
}

impl DecodeError {
    fn missing(field: impl Into<String>) -> DecodeError {
        DecodeError::Missing {
            field: field.into(),
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A raw change after decoding: a typed event, a change no domain claims, or bad input.
#[derive(Debug)]
pub enum Decoded {
    /// A change of a domain collection.
    Event(DomainEvent),
    /// A change of a watched collection without a domain type, or a change that is not
    /// about one document (drop, rename): nothing to handle, the checkpoint passes it.
    Other,
    /// A change of a collection published raw (`kafka.raw`).
    Raw(RawChangeEvent),
    /// A watched collection or database dropped or renamed, or the stream invalidated.
    Namespace(NamespaceEvent),
    /// A change that does not fit its domain type: it goes to the dead-letter collection.
    Invalid {
        /// The change as read.
        raw: RawDocumentBuf,
        /// Its stable id.
        event_id: EventId,
        /// Why it does not fit.
        error: DecodeError,
    },
}

impl Decoded {
    /// Metric label of the event's kind (bounded set).
    pub fn label(&self) -> &'static str {
        match self {
            Decoded::Event(e) => e.kind().as_str(),
            Decoded::Other => "other",
            Decoded::Raw(_) => "raw",
            Decoded::Namespace(e) => e.label(),
            Decoded::Invalid { .. } => "invalid",
        }
    }
}

/// Where the agent-memory collections live and what their events may carry.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryDomain {
    /// Database of the three collections.
    pub database: String,
    /// The short-term (threads) collection.
    pub short_term: String,
    /// The episodic collection.
    pub episodic: String,
    /// The semantic collection.
    pub semantic: String,
    /// Content and embedding handling.
    pub privacy: crate::domain::memory::Privacy,
}

impl MemoryDomain {
    /// Where the memory collections of `config` live and what their events carry.
    pub fn from_config(config: &crate::config::MemoryConfig) -> MemoryDomain {
        MemoryDomain {
            database: config.database.clone(),
            short_term: config.short_term.clone(),
            episodic: config.episodic.clone(),
            semantic: config.semantic.clone(),
            privacy: crate::domain::memory::Privacy {
                include_embeddings: config.include_embeddings,
                short_term: config.content.short_term,
                episodic: config.content.episodic,
                semantic: config.content.semantic,
            },
        }
    }
}

/// Maps each watched collection to its domain and decodes changes accordingly.
#[derive(Debug, Clone)]
pub struct Domains {
    payments_database: String,
    payments_collection: String,
    memory: Option<MemoryDomain>,
    /// (database, collection, `database.collection`) of each collection decoded raw.
    raw: Vec<(String, String, Arc<str>)>,
}

impl Domains {
    /// Payments live in `database`.`collection`.
    pub fn new(payments_database: &str, payments_collection: &str) -> Domains {
        Domains {
            payments_database: payments_database.to_owned(),
            payments_collection: payments_collection.to_owned(),
            memory: None,
            raw: Vec::new(),
        }
    }

    /// The domains a configuration sets: payments, memory and its `kafka.raw` collections
    /// (a running engine also takes the raw collections of library targets).
    pub fn of_config(config: &crate::config::Config) -> Domains {
        let raw = config
            .kafka
            .raw
            .iter()
            .map(|r| (r.database.clone(), r.collection.clone()))
            .collect();
        Domains::new(&config.payments.database, &config.payments.collection)
            .with_memory(MemoryDomain::from_config(&config.memory))
            .with_raw(raw)
    }

    /// Changes of the memory collections decode to memory events.
    pub fn with_memory(mut self, memory: MemoryDomain) -> Domains {
        self.memory = Some(memory);
        self
    }

    /// Changes of these (database, collection) pairs are passed on raw.
    pub fn with_raw(mut self, raw: Vec<(String, String)>) -> Domains {
        self.raw = raw
            .into_iter()
            .map(|(db, coll)| {
                let namespace = format!("{db}.{coll}").into();
                (db, coll, namespace)
            })
            .collect();
        self
    }

    /// Decodes one raw change by the domain of its namespace, and says when it happened
    /// (for the checkpoint), from the same pass over the event.
    pub fn decode(&self, raw: RawDocumentBuf) -> (Decoded, ChangeTimes) {
        let mut times = ChangeTimes::default();
        let mut raw_target = None;
        let mut namespace_event = None;
        let decoded = Envelope::read(&raw).and_then(|envelope| {
            times = envelope.times();
            if let Some(size) = crate::source::large::marked_size(&raw) {
                return Err(DecodeError::Oversize { size });
            }
            if let Some(event) = namespace::from_envelope(&raw, &envelope) {
                namespace_event = Some(event);
                return Ok(None);
            }
            match self.namespace(&envelope) {
                Namespace::Payments => {
                    Ok(payments::from_envelope(&envelope)?.map(DomainEvent::Payment))
                }
                Namespace::Memory(collection, privacy) => {
                    Ok(memory::from_envelope(&envelope, collection, privacy)?
                        .map(DomainEvent::Memory))
                }
                Namespace::Raw(namespace) => {
                    raw_target = Some(namespace);
                    Ok(None)
                }
                Namespace::Other => Ok(None),
            }
        });
        if let Some(event) = namespace_event {
            return (Decoded::Namespace(event), times);
        }
        let decoded = match (decoded, raw_target) {
            (Ok(_), Some(namespace)) => match RawChangeEvent::from_raw(&raw, namespace) {
                Ok(event) => Decoded::Raw(event),
                Err(reason) => Decoded::Invalid {
                    event_id: event_id_of(&raw),
                    raw,
                    error: DecodeError::Invalid {
                        field: "(change)".into(),
                        reason,
                    },
                },
            },
            (Ok(Some(event)), None) => Decoded::Event(event),
            (Ok(None), None) => Decoded::Other,
            (Err(error), _) => Decoded::Invalid {
                event_id: event_id_of(&raw),
                raw,
                error,
            },
        };
        (decoded, times)
    }

    fn namespace(&self, envelope: &Envelope<'_>) -> Namespace<'_> {
        let Some(RawBsonRef::Document(ns)) = envelope.ns else {
            return Namespace::Other;
        };
        let Ok([Some(RawBsonRef::String(db)), Some(RawBsonRef::String(coll))]) =
            walk::pick(ns, ["db", "coll"])
        else {
            return Namespace::Other;
        };
        self.namespace_of(db, coll)
    }

    fn namespace_of(&self, db: &str, coll: &str) -> Namespace<'_> {
        if db == self.payments_database && coll == self.payments_collection {
            return Namespace::Payments;
        }
        if let Some(memory) = &self.memory
            && db == memory.database
        {
            let collection = if coll == memory.short_term {
                Some(memory::Collection::ShortTerm)
            } else if coll == memory.episodic {
                Some(memory::Collection::Episodic)
            } else if coll == memory.semantic {
                Some(memory::Collection::Semantic)
            } else {
                None
            };
            if let Some(collection) = collection {
                return Namespace::Memory(collection, &memory.privacy);
            }
        }
        match self.raw.iter().find(|(d, c, _)| d == db && c == coll) {
            Some((_, _, namespace)) => Namespace::Raw(namespace.clone()),
            None => Namespace::Other,
        }
    }
}

/// Which domain a change's namespace belongs to.
enum Namespace<'a> {
    Payments,
    Memory(memory::Collection, &'a crate::domain::memory::Privacy),
    Raw(Arc<str>),
    Other,
}

/// When a change happened, as far as its envelope says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChangeTimes {
    /// The change's position in the oplog.
    pub cluster_time: Option<Timestamp>,
    /// The server's wall clock at the change.
    pub wall_time: Option<DateTime>,
    /// An update: the document it carries is the post-image or a lookup, by the stream's
    /// mode ([`crate::source::images`]).
    pub update: bool,
}

/// The event id of a raw change; a change without a token (never sent by a server) is
/// named by a hash of its bytes instead.
pub fn event_id_of(raw: &RawDocument) -> EventId {
    match raw.get_document("_id").and_then(|t| t.get_str("_data")) {
        Ok(data) => EventId::from_token_data(data),
        Err(_) => EventId::from_token_data(&format!("{:?}", raw.as_bytes())),
    }
}

/// Reads the envelope every change event has: token, namespace, times.
pub fn change_meta(event: &RawDocument) -> Result<ChangeMeta, DecodeError> {
    Envelope::read(event)?.meta()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::excerpt;

    #[test]
    fn long_bad_values_are_shown_as_an_excerpt_with_their_size() {
        assert_eq!(excerpt("PAID"), "PAID");
        let long = "é".repeat(500_000);
        let shown = excerpt(&long);
        assert!(shown.len() < 200, "{} bytes", shown.len());
        assert!(shown.ends_with("… (1000000 bytes)"), "{shown}");
    }

    #[test]
    fn event_id_is_stable_and_distinct() {
        let a = EventId::from_token_data("826B020F61000000032B022C0100296E5A1004");
        let again = EventId::from_token_data("826B020F61000000032B022C0100296E5A1004");
        let b = EventId::from_token_data("826B020F61000000042B022C0100296E5A1004");
        assert_eq!(a, again);
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn event_id_is_the_documented_hash() {
        // BLAKE3("abc") begins 6437b3ac38465133ffb63b75273a8db5 (the BLAKE3 test vector).
        assert_eq!(
            EventId::from_token_data("abc").as_str(),
            "6437b3ac38465133ffb63b75273a8db5"
        );
    }
}
