//! Raw passthrough: a change of a collection configured as `raw`, kept as the change event
//! itself in relaxed Extended JSON (the shape the MongoDB Kafka source connector publishes by
//! default), keyed by its `documentKey`.

use std::sync::Arc;

use mongodb::bson::Timestamp;

use super::EventId;

/// A change to publish as is.
#[derive(Debug, Clone, PartialEq)]
pub struct RawChangeEvent {
    /// Stable id derived from the resume token.
    pub event_id: EventId,
    /// The collection it came from, `<database>.<collection>`.
    pub namespace: Arc<str>,
    /// `documentKey` as relaxed Extended JSON (the record key); `{}` for changes without
    /// one (drop, rename).
    pub key: String,
    /// The whole change event as relaxed Extended JSON (the record value).
    pub value: Vec<u8>,
    /// The change's position in the oplog.
    pub cluster_time: Option<Timestamp>,
    /// An update whose `fullDocument` was looked up when read (it may hold later changes):
    /// published with the header `ce_fulldocument: lookup`.
    pub looked_up: bool,
}
