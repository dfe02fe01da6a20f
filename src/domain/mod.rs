//! Typed domain events decoded from raw change events, and what every event carries.
//!
//! Decoding is pure: a raw change event in, a typed event or a [`DecodeError`] out. A
//! decode error is bad input, not a crash: the caller dead-letters the raw event with
//! [`DecodeError`]'s message as the reason and moves on.

pub mod kind;
pub mod memory;
pub mod namespace;
pub mod payments;
pub mod raw;
mod walk;

use std::fmt;

pub use kind::EventKind;

use mongodb::bson::{
    DateTime, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp, spec::ElementType,
};

/// A stable event id: the same change, however it is read or replayed, gets the same id.
/// It is the first 128 bits of BLAKE3 over the resume token's `_data` (its UTF-8 hex text),
/// as 32 lowercase hex digits, so anyone holding the token can compute it. BLAKE3 rather
/// than SHA-256: just as collision-resistant, and many times cheaper without SHA CPU
/// instructions, which matters for a hash computed once per change. Held inline: no
/// allocation either.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId([u8; 32]);

impl EventId {
    /// The id of the change whose resume token `_data` is `token_data`.
    pub fn from_token_data(token_data: &str) -> EventId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = blake3::hash(token_data.as_bytes());
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(&digest.as_bytes()[..16]) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        EventId(hex)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.as_str())
    }
}

/// What every domain event carries about the change it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeMeta {
    /// Stable id derived from the resume token.
    pub event_id: EventId,
    /// Database of the changed document.
    pub database: String,
    /// Collection of the changed document.
    pub collection: String,
    /// The change's position in the oplog.
    pub cluster_time: Timestamp,
    /// The server's wall clock at the change (MongoDB 6.0+).
    pub wall_time: Option<DateTime>,
    /// The changed document's key (`_id`, plus the shard key on sharded collections),
    /// exactly as stored: filters built from it match the document whatever its `_id` type.
    /// Kept raw: most events never need it as a [`Document`].
    pub document_key: Option<RawDocumentBuf>,
}

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

/// Typed access to one document's fields, with errors that name the full dotted path.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    doc: &'a RawDocument,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(doc: &'a RawDocument, prefix: &'a str) -> Fields<'a> {
        Fields { doc, prefix }
    }

    pub(crate) fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The values of `keys`, found in one pass over the document (a lookup per key would
    /// scan it again each time); `None` for a key the document lacks.
    pub(crate) fn pick<const N: usize>(
        &self,
        keys: [&str; N],
    ) -> Result<[Option<RawBsonRef<'a>>; N], DecodeError> {
        walk::pick(self.doc, keys)
            .map_err(|_| DecodeError::invalid(self.prefix_or_root(), "malformed BSON"))
    }

    fn prefix_or_root(&self) -> String {
        if self.prefix.is_empty() {
            "(document)".to_owned()
        } else {
            self.prefix.to_owned()
        }
    }

    pub(crate) fn lookup(&self, key: &str) -> Result<Option<RawBsonRef<'a>>, DecodeError> {
        let [value] = walk::pick(self.doc, [key])
            .map_err(|_| DecodeError::invalid(self.path(key), "malformed BSON"))?;
        Ok(value)
    }

    /// `value` (of `key`), which must be present.
    pub(crate) fn required(
        &self,
        key: &str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<RawBsonRef<'a>, DecodeError> {
        value.ok_or_else(|| DecodeError::missing(self.path(key)))
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: RawBsonRef<'_>) -> DecodeError {
        DecodeError::WrongType {
            field: self.path(key),
            expected,
            found: type_name(found.element_type()).to_owned(),
        }
    }

    /// `value` (of `key`) as a string.
    pub(crate) fn str_of(
        &self,
        key: &str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<&'a str, DecodeError> {
        match self.required(key, value)? {
            RawBsonRef::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// `value` (of `key`) as a string with more than white space.
    pub(crate) fn non_empty_str_of(
        &self,
        key: &str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<&'a str, DecodeError> {
        let value = self.str_of(key, value)?;
        if value.trim().is_empty() {
            return Err(DecodeError::invalid(self.path(key), "is empty"));
        }
        Ok(value)
    }

    /// `value` (of `key`) as a document.
    pub(crate) fn document_of(
        &self,
        key: &str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<&'a RawDocument, DecodeError> {
        match self.required(key, value)? {
            RawBsonRef::Document(d) => Ok(d),
            other => Err(self.wrong_type(key, "a document", other)),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<&'a str, DecodeError> {
        self.str_of(key, self.lookup(key)?)
    }

    pub(crate) fn non_empty_str(&self, key: &str) -> Result<&'a str, DecodeError> {
        self.non_empty_str_of(key, self.lookup(key)?)
    }

    pub(crate) fn document(&self, key: &str) -> Result<&'a RawDocument, DecodeError> {
        self.document_of(key, self.lookup(key)?)
    }
}

/// `text` for an error message: whole when short, else its start and its size, so a
/// megabyte of bad input does not become a megabyte of log line and dead-letter reason.
pub(crate) fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    shorten(text, 64)
}

/// `text` cut to about `shown` bytes (at a character boundary), with its size, when longer.
pub(crate) fn shorten(text: &str, shown: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= shown + 16 {
        return text.into();
    }
    let mut end = shown;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len()).into()
}

/// A readable name for a BSON type in error messages.
pub(crate) fn type_name(t: ElementType) -> &'static str {
    match t {
        ElementType::Double => "a double",
        ElementType::String => "a string",
        ElementType::EmbeddedDocument => "a document",
        ElementType::Array => "an array",
        ElementType::Binary => "binary data",
        ElementType::ObjectId => "an ObjectId",
        ElementType::Boolean => "a boolean",
        ElementType::DateTime => "a date",
        ElementType::Null => "null",
        ElementType::Int32 => "an int32",
        ElementType::Timestamp => "a timestamp",
        ElementType::Int64 => "an int64",
        ElementType::Decimal128 => "a decimal128",
        _ => "an unsupported BSON type",
    }
}

/// A typed event of any domain.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    /// A change of the payments collection.
    Payment(payments::PaymentEvent),
    /// A change of one of the agent-memory collections.
    Memory(memory::MemoryEvent),
}

impl DomainEvent {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            DomainEvent::Payment(e) => e.kind(),
            DomainEvent::Memory(e) => e.kind(),
        }
    }

    /// What every event carries about its change.
    pub fn meta(&self) -> &ChangeMeta {
        match self {
            DomainEvent::Payment(e) => e.meta(),
            DomainEvent::Memory(e) => &e.meta,
        }
    }

    /// The aggregate id — payment id, or the memory's `user_id` — whose events stay in
    /// order: the key of the event's lane and its Kafka key.
    pub fn key(&self) -> &str {
        match self {
            DomainEvent::Payment(e) => e.payment_id(),
            DomainEvent::Memory(e) => &e.user_id,
        }
    }

    /// The changed document's own id (payment id, `thread_id`, `episode_id`, `memory_id`).
    pub fn subject(&self) -> &str {
        match self {
            DomainEvent::Payment(e) => e.payment_id(),
            DomainEvent::Memory(e) => &e.document_id,
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
    Raw(raw::RawChangeEvent),
    /// A watched collection or database dropped or renamed, or the stream invalidated.
    Namespace(namespace::NamespaceEvent),
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
    pub privacy: memory::Privacy,
}

impl MemoryDomain {
    /// Where the memory collections of `config` live and what their events carry.
    pub fn from_config(config: &crate::config::MemoryConfig) -> MemoryDomain {
        MemoryDomain {
            database: config.database.clone(),
            short_term: config.short_term.clone(),
            episodic: config.episodic.clone(),
            semantic: config.semantic.clone(),
            privacy: memory::Privacy {
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
    /// (database, collection) of each raw collection, in `kafka.raw` order.
    raw: Vec<(String, String)>,
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

    /// Changes of the memory collections decode to memory events.
    pub fn with_memory(mut self, memory: MemoryDomain) -> Domains {
        self.memory = Some(memory);
        self
    }

    /// Changes of these (database, collection) pairs are published raw, in this order.
    pub fn with_raw(mut self, raw: Vec<(String, String)>) -> Domains {
        self.raw = raw;
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
                Namespace::Raw(target) => {
                    raw_target = Some(target);
                    Ok(None)
                }
                Namespace::Other => Ok(None),
            }
        });
        if let Some(event) = namespace_event {
            return (Decoded::Namespace(event), times);
        }
        let decoded = match (decoded, raw_target) {
            (Ok(_), Some(target)) => match raw::RawChangeEvent::from_raw(&raw, target) {
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
        match self.raw.iter().position(|(d, c)| d == db && c == coll) {
            Some(target) => Namespace::Raw(target),
            None => Namespace::Other,
        }
    }
}

/// Which domain a change's namespace belongs to.
enum Namespace<'a> {
    Payments,
    Memory(memory::Collection, &'a memory::Privacy),
    Raw(usize),
    Other,
}

/// When a change happened, as far as its envelope says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChangeTimes {
    /// The change's position in the oplog.
    pub cluster_time: Option<Timestamp>,
    /// The server's wall clock at the change.
    pub wall_time: Option<DateTime>,
}

/// The event id of a raw change; a change without a token (never sent by a server) is
/// named by a hash of its bytes instead.
pub fn event_id_of(raw: &RawDocument) -> EventId {
    match raw.get_document("_id").and_then(|t| t.get_str("_data")) {
        Ok(data) => EventId::from_token_data(data),
        Err(_) => EventId::from_token_data(&format!("{:?}", raw.as_bytes())),
    }
}

/// The top-level fields of a change event, found in one pass over it (a lookup per field
/// would scan the event again each time).
pub(crate) struct Envelope<'a> {
    /// The event itself, for typed access with errors naming top-level fields.
    pub(crate) root: Fields<'a>,
    pub(crate) id: Option<RawBsonRef<'a>>,
    pub(crate) operation_type: Option<RawBsonRef<'a>>,
    pub(crate) cluster_time: Option<RawBsonRef<'a>>,
    pub(crate) wall_time: Option<RawBsonRef<'a>>,
    pub(crate) ns: Option<RawBsonRef<'a>>,
    pub(crate) document_key: Option<RawBsonRef<'a>>,
    pub(crate) full_document: Option<RawBsonRef<'a>>,
    pub(crate) update_description: Option<RawBsonRef<'a>>,
    /// `fullDocumentBeforeChange`: the pre-image, where the stream asked for it.
    pub(crate) before: Option<RawBsonRef<'a>>,
}

impl<'a> Envelope<'a> {
    pub(crate) fn read(event: &'a RawDocument) -> Result<Envelope<'a>, DecodeError> {
        let [
            id,
            operation_type,
            cluster_time,
            wall_time,
            ns,
            document_key,
            full_document,
            update_description,
            before,
        ] = walk::pick(
            event,
            [
                "_id",
                "operationType",
                "clusterTime",
                "wallTime",
                "ns",
                "documentKey",
                "fullDocument",
                "updateDescription",
                "fullDocumentBeforeChange",
            ],
        )
        .map_err(|_| DecodeError::invalid("(change event)", "malformed BSON"))?;
        Ok(Envelope {
            root: Fields::new(event, ""),
            id,
            operation_type,
            cluster_time,
            wall_time,
            ns,
            document_key,
            full_document,
            update_description,
            before,
        })
    }

    /// The top-level document `key` (whose value is `value`), with errors naming its fields.
    pub(crate) fn section(
        &self,
        key: &'a str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<Fields<'a>, DecodeError> {
        Ok(Fields::new(self.root.document_of(key, value)?, key))
    }

    /// Like [`Envelope::section`], for a section that may be absent or null.
    pub(crate) fn optional_section(
        &self,
        key: &'a str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<Option<Fields<'a>>, DecodeError> {
        match value {
            None | Some(RawBsonRef::Null) => Ok(None),
            value => self.section(key, value).map(Some),
        }
    }

    /// The change's times, where they have the expected types.
    pub(crate) fn times(&self) -> ChangeTimes {
        ChangeTimes {
            cluster_time: match self.cluster_time {
                Some(RawBsonRef::Timestamp(t)) => Some(t),
                _ => None,
            },
            wall_time: match self.wall_time {
                Some(RawBsonRef::DateTime(t)) => Some(t),
                _ => None,
            },
        }
    }

    /// `operationType` as text.
    pub(crate) fn operation(&self) -> Result<&'a str, DecodeError> {
        self.root.str_of("operationType", self.operation_type)
    }

    /// What every domain event carries about its change.
    pub(crate) fn meta(&self) -> Result<ChangeMeta, DecodeError> {
        let token = self.section("_id", self.id)?;
        let ns = self.section("ns", self.ns)?;
        let cluster_time = match self.cluster_time {
            Some(RawBsonRef::Timestamp(t)) => t,
            Some(other) => return Err(self.root.wrong_type("clusterTime", "a timestamp", other)),
            None => return Err(DecodeError::missing("clusterTime")),
        };
        let wall_time = match self.wall_time {
            Some(RawBsonRef::DateTime(t)) => Some(t),
            Some(other) => return Err(self.root.wrong_type("wallTime", "a date", other)),
            None => None,
        };
        Ok(ChangeMeta {
            event_id: EventId::from_token_data(token.str("_data")?),
            database: ns.str("db")?.to_owned(),
            collection: ns.str("coll").unwrap_or_default().to_owned(),
            cluster_time,
            wall_time,
            document_key: match self.document_key {
                Some(RawBsonRef::Document(key)) => Some(key.to_raw_document_buf()),
                _ => None,
            },
        })
    }
}

/// Reads the envelope every change event has: token, namespace, times.
pub fn change_meta(event: &RawDocument) -> Result<ChangeMeta, DecodeError> {
    Envelope::read(event)?.meta()
}

#[cfg(test)]
mod tests {
    use super::*;

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
