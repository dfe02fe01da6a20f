//! The typed domain events consumers see, their kinds, and what every event carries about
//! its change. Decoding them from raw change events is `crate::decode`'s job.

pub mod kind;
pub mod memory;
pub mod money;
pub mod namespace;
pub mod payments;
pub mod raw;

use std::fmt;

pub use kind::EventKind;

use mongodb::bson::{DateTime, RawDocumentBuf, Timestamp};

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
        EventId::from_digest(blake3::hash(token_data.as_bytes()).as_bytes())
    }

    /// The id of a document as a snapshot read it: BLAKE3 over `observed`, the namespace
    /// and the document's BSON bytes, so the same document in the same state gets the same
    /// id on every snapshot, and any other state another.
    pub fn observed(namespace: &str, document: &[u8]) -> EventId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"observed\0");
        hasher.update(namespace.as_bytes());
        hasher.update(b"\0");
        hasher.update(document);
        EventId::from_digest(hasher.finalize().as_bytes())
    }

    fn from_digest(digest: &[u8; 32]) -> EventId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(&digest[..16]) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        EventId(hex)
    }

    /// An id as [`EventId::as_str`] wrote it (32 lowercase hex digits, as a CloudEvent's
    /// `id` carries it); None for anything else.
    pub fn parse(text: &str) -> Option<EventId> {
        let bytes: [u8; 32] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(EventId(bytes))
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
    /// The document an update event carries was looked up when the change was read
    /// (`fullDocument: updateLookup`, on a collection without post-images), so it may
    /// already hold later changes. Published as the CloudEvent extension
    /// `fulldocument=lookup`.
    pub looked_up: bool,
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

    /// [`DomainEvent::meta`], to amend.
    pub fn meta_mut(&mut self) -> &mut ChangeMeta {
        match self {
            DomainEvent::Payment(e) => e.meta_mut(),
            DomainEvent::Memory(e) => &mut e.meta,
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

/// `text` for an error message: whole when short, else its start and its size, so a
/// megabyte of bad input does not become a megabyte of log line and dead-letter reason.
pub fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
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
