//! Snapshot reads: one chunk of a collection, in `_id` order, at one cluster time.
//!
//! Each chunk is a `find` with `readConcern: {level: "snapshot", atClusterTime: T}`, T being
//! the stream's position, so the chunk shows the collection exactly as the changes up to
//! T left it. Chunks walk the `_id` index from the last `_id` delivered with `min` (index
//! bounds): `_id`s of mixed BSON types follow MongoDB's own comparison order, where a
//! `$gt` filter would stay within one type and skip the rest.

use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Bson, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp, doc};
use mongodb::error::{Error as DriverError, ErrorKind};

/// One chunk: the documents after the previous chunk's last `_id`, up to the chunk size.
#[derive(Debug)]
pub struct Chunk {
    /// The documents, in `_id` order, as stored.
    pub documents: Vec<RawDocumentBuf>,
    /// The last document's `_id` (where the next chunk starts); None when empty.
    pub last: Option<Bson>,
    /// Fewer documents than asked for came back: the collection has no more.
    pub end: bool,
}

/// Why a chunk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The server refused or failed the read.
    #[error("reading a snapshot chunk of `{database}.{collection}`: {source}")]
    Read {
        /// The database.
        database: String,
        /// The collection.
        collection: String,
        /// The driver's error.
        source: DriverError,
    },
    /// A document without a usable `_id`.
    #[error("snapshot of `{database}.{collection}`: a document has no `_id`")]
    NoId {
        /// The database.
        database: String,
        /// The collection.
        collection: String,
    },
}

impl SnapshotError {
    /// The read time is older than the server keeps snapshots for
    /// (`minSnapshotHistoryWindowInSeconds`, 300 s): the stream is behind; read the chunk
    /// again once it caught up.
    pub fn is_too_old(&self) -> bool {
        self.code() == Some(239)
    }

    fn code(&self) -> Option<i32> {
        match self {
            SnapshotError::Read { source, .. } => match source.kind.as_ref() {
                ErrorKind::Command(c) => Some(c.code),
                _ => None,
            },
            SnapshotError::NoId { .. } => None,
        }
    }
}

/// Reads up to `limit` documents of `database.collection` after `after` (from the start
/// when None), as the collection was at `at`.
pub async fn read_chunk(
    client: &Client,
    database: &str,
    collection: &str,
    after: Option<&Bson>,
    limit: u32,
    at: Timestamp,
) -> Result<Chunk, SnapshotError> {
    let error = |source| SnapshotError::Read {
        database: database.to_owned(),
        collection: collection.to_owned(),
        source,
    };
    // `min` is inclusive: one more, and the previous chunk's last document dropped.
    let asked = i64::from(limit) + i64::from(after.is_some());
    let mut command = doc! {
        "find": collection,
        "filter": {},
        "sort": {"_id": 1},
        "hint": {"_id": 1},
        "limit": asked,
        "batchSize": asked,
        "readConcern": {"level": "snapshot", "atClusterTime": at},
    };
    if let Some(after) = after {
        command.insert("min", doc! {"_id": after.clone()});
    }
    let cursor = client
        .database(database)
        .run_cursor_command(command)
        .await
        .map_err(error)?;
    let mut cursor = cursor.with_type::<RawDocumentBuf>();
    let mut documents = Vec::with_capacity(limit as usize);
    let mut fetched = 0i64;
    let mut last = None;
    while let Some(document) = cursor.try_next().await.map_err(error)? {
        fetched += 1;
        let id = document
            .get("_id")
            .ok()
            .flatten()
            .and_then(|id| Bson::try_from(id.to_raw_bson()).ok())
            .ok_or_else(|| SnapshotError::NoId {
                database: database.to_owned(),
                collection: collection.to_owned(),
            })?;
        if fetched == 1 && after == Some(&id) {
            continue;
        }
        last = Some(id);
        documents.push(document);
    }
    Ok(Chunk {
        documents,
        last,
        end: fetched < asked,
    })
}

/// The server's present cluster time (the `operationTime` of a majority read on the
/// stream's own `database`, which the stream's user can read): changes read before a
/// restart are older than it.
pub async fn cluster_time_now(client: &Client, database: &str) -> Result<Timestamp, DriverError> {
    let reply = client
        .database(database)
        .run_command(
            doc! {"find": "changeflow_no_such_collection", "batchSize": 0,
            "readConcern": {"level": "majority"}},
        )
        .await?;
    if let Ok(t) = reply.get_timestamp("operationTime") {
        return Ok(t);
    }
    reply
        .get_document("$clusterTime")
        .and_then(|c| c.get_timestamp("clusterTime"))
        .map_err(|e| DriverError::custom(format!("no operationTime in the reply: {e}")))
}

/// The bytes that name one document of a stream: its collection and its `_id` as BSON.
/// The same for a change (`documentKey._id`) and a snapshot's document.
pub fn key_bytes(collection: &str, id: RawBsonRef<'_>) -> Box<[u8]> {
    let mut key = Vec::with_capacity(collection.len() + 32);
    key.extend_from_slice(collection.as_bytes());
    key.push(0);
    let mut wrapped = RawDocumentBuf::new();
    wrapped.append("", id.to_raw_bson());
    key.extend_from_slice(wrapped.as_bytes());
    key.into_boxed_slice()
}

/// The key of the document a raw change is about, if it names one.
pub fn change_key(change: &RawDocument) -> Option<Box<[u8]>> {
    let collection = change.get_document("ns").ok()?.get_str("coll").ok()?;
    let id = change.get_document("documentKey").ok()?.get("_id").ok()??;
    Some(key_bytes(collection, id))
}
