//! The dead-letter collection `changeflow_dead_letters`: events that do not fit their
//! domain type, or that a handler refused for good, with the raw event, the reason and
//! the resume token. Keyed by stage and event id, so a replay does not add a second copy.

use mongodb::bson::{Bson, DateTime, Document, RawDocument, Timestamp, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};
use tokio_util::sync::CancellationToken;

/// The collection that holds dead letters.
pub const COLLECTION: &str = "changeflow_dead_letters";
/// Raw events above this size are stored truncated: without the documents they carry
/// (`fullDocument`, `fullDocumentBeforeChange`, `updateDescription`), so that the dead
/// letter stays well under MongoDB's 16 MiB limit beside its reason.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// Characters of a record that is not a change kept in its dead letter.
const MAX_RECORD_CHARS: usize = 4096;
/// The parts of a change a truncated dead letter leaves out, largest first.
const BULKY_FIELDS: [&str; 3] = [
    "fullDocument",
    "fullDocumentBeforeChange",
    "updateDescription",
];

/// One event that could not be handled.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// `decode`, or `handler:<name>`.
    pub stage: String,
    /// Stable event id (from the resume token).
    pub event_id: String,
    /// Stream the event was read from.
    pub stream: String,
    /// Why it could not be handled.
    pub reason: String,
    /// The change's resume token (`_id`), to replay from it.
    pub token: Option<Document>,
    /// The change's cluster time.
    pub cluster_time: Option<Timestamp>,
    /// The event: the raw change for decode failures, the typed event for handler ones.
    pub event: Bson,
    /// The changed document's key (`documentKey`), when known.
    pub document_key: Option<Document>,
    /// Size of the raw change in bytes, when it was read raw.
    pub size: Option<usize>,
    /// Whether `event` leaves out parts of the change (it was too large to store whole).
    pub truncated: bool,
}

impl DeadLetter {
    /// A dead letter for the raw change `raw` at `stage`.
    pub fn from_raw(
        stage: &str,
        stream: &str,
        event_id: &str,
        raw: &RawDocument,
        reason: String,
    ) -> DeadLetter {
        let token = raw
            .get_document("_id")
            .ok()
            .and_then(|t| Document::try_from(t).ok());
        let size = raw.as_bytes().len();
        let truncated = size > MAX_EVENT_BYTES;
        let event = match whole_or_truncated(raw, truncated) {
            Ok(d) => Bson::Document(d),
            Err(e) => Bson::String(format!("event is not valid BSON: {e}")),
        };
        DeadLetter {
            stage: stage.to_owned(),
            event_id: event_id.to_owned(),
            stream: stream.to_owned(),
            reason,
            token,
            cluster_time: raw.get_timestamp("clusterTime").ok(),
            event,
            document_key: raw
                .get_document("documentKey")
                .ok()
                .and_then(|k| Document::try_from(k).ok()),
            size: Some(size),
            truncated,
        }
    }

    /// A dead letter for a record that is not a change (a Kafka record's `value`, read as
    /// text), at `stage`: the first [`MAX_RECORD_CHARS`] characters are kept.
    pub fn from_record(
        stage: &str,
        stream: &str,
        record_id: &str,
        value: &[u8],
        reason: String,
    ) -> DeadLetter {
        DeadLetter {
            stage: stage.to_owned(),
            event_id: record_id.to_owned(),
            stream: stream.to_owned(),
            reason,
            token: None,
            cluster_time: None,
            event: Bson::String(
                String::from_utf8_lossy(value)
                    .chars()
                    .take(MAX_RECORD_CHARS)
                    .collect(),
            ),
            document_key: None,
            size: Some(value.len()),
            truncated: value.len() > MAX_RECORD_CHARS,
        }
    }
}

/// `raw` as a document; `truncated`: without its [`BULKY_FIELDS`] (each replaced by a
/// note of its size), element by element, so a malformed part cannot spoil the rest.
fn whole_or_truncated(
    raw: &RawDocument,
    truncated: bool,
) -> Result<Document, mongodb::bson::raw::Error> {
    if !truncated {
        return Document::try_from(raw);
    }
    let mut doc = Document::new();
    for element in raw.iter_elements() {
        let element = element?;
        let key = element.key();
        if BULKY_FIELDS.contains(&key) {
            doc.insert(
                key,
                format!(
                    "left out: {} bytes (the change was too large to store whole)",
                    element.len()
                ),
            );
        } else {
            doc.insert(key, Bson::try_from(element.value()?)?);
        }
    }
    Ok(doc)
}

/// Writes dead letters.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetters {
    collection: Collection<Document>,
}

impl DeadLetters {
    /// The dead-letter collection in `database`.
    pub fn new(database: &Database) -> DeadLetters {
        DeadLetters {
            collection: database.collection(COLLECTION),
        }
    }

    /// Stores `letter` once (a second write of the same stage and event changes nothing),
    /// majority-acknowledged: the checkpoint passes the event only after this returns.
    pub async fn put(&self, letter: &DeadLetter) -> Result<(), mongodb::error::Error> {
        let id = format!("{}:{}", letter.stage, letter.event_id);
        let mut fields = doc! {
            "stage": &letter.stage,
            "event_id": &letter.event_id,
            "stream": &letter.stream,
            "reason": &letter.reason,
            "event": letter.event.clone(),
            "at": DateTime::now(),
        };
        if let Some(token) = &letter.token {
            fields.insert("token", token.clone());
        }
        if let Some(t) = letter.cluster_time {
            fields.insert("cluster_time", t);
        }
        if let Some(key) = &letter.document_key {
            fields.insert("document_key", key.clone());
        }
        if let Some(size) = letter.size {
            fields.insert("size", i64::try_from(size).unwrap_or(i64::MAX));
        }
        if letter.truncated {
            fields.insert("truncated", true);
        }
        self.collection
            .update_one(doc! {"_id": id}, doc! {"$setOnInsert": fields})
            .upsert(true)
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }

    /// Stores `letter`, retrying with backoff while the database fails: true once stored,
    /// false when `cancel` fires first (the event then stays unacknowledged).
    pub async fn put_until_stored(&self, letter: &DeadLetter, cancel: &CancellationToken) -> bool {
        crate::state::retry::until_ok("write a dead letter", cancel, || self.put(letter)).await
    }
}
