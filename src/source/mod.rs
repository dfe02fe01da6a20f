//! The change-stream source: exactly one stream per watched database, filtered server-side
//! to the configured collections, read as raw BSON so each event is decoded once.

use mongodb::bson::{Document, RawDocumentBuf, Timestamp, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ResumeToken;
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::options::FullDocumentBeforeChangeType;
use mongodb::{Client, Database};

use crate::config::{EngineConfig, WatchedDatabase};
pub use images::Images;

pub mod batch;
pub mod connect;
pub mod history;
pub mod images;
pub mod large;
pub mod oplog;
pub mod position;
pub mod reader;
pub mod snapshot;

/// A change event exactly as the server sent it; its `_id` is the resume token.
pub type RawChange = RawDocumentBuf;

/// Where a stream starts reading.
#[derive(Debug, Clone, PartialEq)]
pub enum StartAt {
    /// Only changes made after the stream opens.
    Now,
    /// The change right after this token (`startAfter`: also valid after an invalidate).
    After(ResumeToken),
    /// The first change at or after this cluster time (`startAtOperationTime`).
    OperationTime(Timestamp),
}

/// Why a stream could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The server or driver refused to open the stream.
    #[error("opening the change stream on database `{database}`: {source}")]
    Open {
        /// The watched database.
        database: String,
        /// The driver's error.
        source: DriverError,
    },
    /// Reading the next event failed after the driver's own automatic resume.
    #[error("reading the change stream on database `{database}`: {source}")]
    Read {
        /// The watched database.
        database: String,
        /// The driver's error.
        source: DriverError,
    },
    /// The fragments of a split event did not fit together.
    #[error("reading the change stream on database `{database}`: {reason}")]
    Fragments {
        /// The watched database.
        database: String,
        /// What did not fit.
        reason: String,
    },
}

impl SourceError {
    /// Whether reopening the stream from the last checkpoint may succeed. Everything is
    /// worth retrying (servers come back, elections end) except errors that reopening
    /// cannot fix: a resume point that fell off the oplog, a refused pipeline or token,
    /// bad credentials.
    pub fn is_retryable(&self) -> bool {
        let Some(source) = self.driver_error() else {
            // Fragments that do not fit: read them again from the checkpoint.
            return true;
        };
        /// ChangeStreamHistoryLost, ChangeStreamFatalError, InvalidResumeToken,
        /// BadValue, FailedToParse, Unauthorized, AuthenticationFailed, InvalidNamespace.
        const FATAL_CODES: [i32; 8] = [286, 280, 260, 2, 9, 13, 18, 73];
        match source.kind.as_ref() {
            ErrorKind::Command(c) => !FATAL_CODES.contains(&c.code),
            ErrorKind::Authentication { .. }
            | ErrorKind::InvalidArgument { .. }
            | ErrorKind::InvalidResponse { .. } => false,
            _ => !source.contains_label("NonResumableChangeStreamError"),
        }
    }

    /// Whether the server said the resume point is no longer in the oplog
    /// (ChangeStreamHistoryLost 286, or ChangeStreamFatalError 280: the token's entry was
    /// not found).
    pub fn is_history_lost(&self) -> bool {
        matches!(self.driver_error().map(|e| e.kind.as_ref()), Some(ErrorKind::Command(c)) if c.code == 286 || c.code == 280)
    }

    /// The driver's error, when the driver failed.
    pub fn driver_error(&self) -> Option<&DriverError> {
        match self {
            SourceError::Open { source, .. } | SourceError::Read { source, .. } => Some(source),
            SourceError::Fragments { .. } => None,
        }
    }
}

/// Operations on a watched collection itself, always passed on (surfaced, never handled).
const NAMESPACE_OPERATIONS: [&str; 2] = ["drop", "rename"];

/// The server-side filter: only the watched collections of the database and the given
/// operation types, plus what happens to the namespaces themselves (a watched collection
/// dropped or renamed, or renamed into a watched name; the database dropped; the
/// invalidate that follows), which are surfaced on their own. `last` ends the pipeline
/// (how events over 16 MB are read, see [`large`]).
pub fn pipeline(
    collections: &[String],
    operation_types: &[String],
    last: Option<Document>,
) -> Vec<Document> {
    let mut operations: Vec<&str> = operation_types.iter().map(String::as_str).collect();
    for op in NAMESPACE_OPERATIONS {
        if !operations.contains(&op) {
            operations.push(op);
        }
    }
    let filter = doc! { "$match": { "$or": [
        { "ns.coll": { "$in": collections }, "operationType": { "$in": operations } },
        { "to.coll": { "$in": collections }, "operationType": "rename" },
        { "operationType": { "$in": ["dropDatabase", "invalidate"] } },
    ] } };
    std::iter::once(filter).chain(last).collect()
}

/// An open stream and how its updates get their document.
pub struct Opened {
    /// The stream.
    pub stream: ChangeStream<RawChange>,
    /// Post-images or lookups ([`images`]).
    pub images: Images,
}

/// Opens the one change stream of `target`'s database, filtered and batched by `options`.
/// Events over 16 MB come split where the server can split them (it is asked, not
/// judged by its version) and `engine.split_large_events` allows; otherwise marked.
pub async fn open(
    client: &Client,
    target: &WatchedDatabase,
    options: &EngineConfig,
    start: &StartAt,
) -> Result<ChangeStream<RawChange>, SourceError> {
    Ok(open_stream(client, target, options, start).await?.stream)
}

/// [`open`], saying which document its updates carry: post-images where every watched
/// collection keeps them, lookups otherwise.
pub async fn open_stream(
    client: &Client,
    target: &WatchedDatabase,
    options: &EngineConfig,
    start: &StartAt,
) -> Result<Opened, SourceError> {
    let db = client.database(&target.database);
    let images = images::of(&db, &target.collections)
        .await
        .map_err(|source| SourceError::Open {
            database: target.database.clone(),
            source,
        })?;
    let stream = open_images(&db, target, options, start, &images).await?;
    Ok(Opened { stream, images })
}

async fn open_images(
    db: &Database,
    target: &WatchedDatabase,
    options: &EngineConfig,
    start: &StartAt,
    images: &Images,
) -> Result<ChangeStream<RawChange>, SourceError> {
    let batch = batch::size(db, &target.collections, options.batch_size).await;
    if batch < options.batch_size {
        tracing::debug!(database = %target.database, batch, "large documents: fewer changes per batch");
    }
    if options.split_large_events {
        match open_with(
            db,
            target,
            options,
            (batch, images),
            start,
            large::split_stage(),
        )
        .await
        {
            Err(SourceError::Open { source, .. }) if matches!(source.kind.as_ref(), ErrorKind::Command(c) if c.code == large::UNKNOWN_STAGE) =>
            {
                tracing::info!(
                    database = %target.database,
                    policy = ?options.oversize,
                    "the server cannot split change events over 16 MB ($changeStreamSplitLargeEvent \
                     needs MongoDB 6.0.9 or later); such events are read without their images and \
                     go by engine.oversize"
                );
            }
            other => return other,
        }
    }
    open_with(
        db,
        target,
        options,
        (batch, images),
        start,
        large::mark_stage(),
    )
    .await
}

/// Opens the stream of `db` with `batch` changes per server batch and update documents as
/// `images` says, ending its pipeline with `last`.
async fn open_with(
    db: &Database,
    target: &WatchedDatabase,
    options: &EngineConfig,
    (batch, images): (u32, &Images),
    start: &StartAt,
    last: Document,
) -> Result<ChangeStream<RawChange>, SourceError> {
    let watch = db
        .watch()
        .pipeline(pipeline(
            &target.collections,
            &options.operation_types,
            Some(last),
        ))
        .batch_size(batch)
        .full_document(images.full_document())
        // Pre-images where the collection keeps them (the memory collections: their
        // decoders tell recall from decay and TTL expiry from deletion by them); elsewhere
        // the server sends null, at no cost.
        .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable);
    let watch = match start {
        StartAt::Now => watch,
        StartAt::After(token) => watch.start_after(token.clone()),
        StartAt::OperationTime(ts) => watch.start_at_operation_time(*ts),
    };
    let stream = watch.await.map_err(|source| SourceError::Open {
        database: target.database.clone(),
        source,
    })?;
    Ok(stream.with_type::<RawChange>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_matches_only_the_watched_collections() {
        let p = pipeline(
            &["payments".to_owned(), "refunds".to_owned()],
            &["insert".to_owned()],
            None,
        );
        assert_eq!(
            p,
            vec![doc! {"$match": {"$or": [
                {"ns.coll": {"$in": ["payments", "refunds"]}, "operationType": {"$in": ["insert", "drop", "rename"]}},
                {"to.coll": {"$in": ["payments", "refunds"]}, "operationType": "rename"},
                {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
            ]}}]
        );
    }
}
