//! The top-level fields of a change event, read once.

use mongodb::bson::{RawBsonRef, RawDocument};

use super::{ChangeTimes, DecodeError, Fields, walk};
use crate::domain::{ChangeMeta, EventId};

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
            update: matches!(self.operation_type, Some(RawBsonRef::String("update"))),
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
            looked_up: false,
        })
    }
}
