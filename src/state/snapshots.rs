//! Snapshot progress: one document per stream and collection in `changeflow_snapshots`,
//! holding the last `_id` whose chunk was delivered, so a restart continues after it and
//! reads at most one chunk again.

use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

/// The collection that holds snapshot progress (in the checkpoint database).
pub const COLLECTION: &str = "changeflow_snapshots";

/// Why a snapshot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The stream started without a checkpoint (`snapshot.mode = "initial"`).
    Initial,
    /// `changeflow snapshot` asked for it.
    Requested,
    /// The stream lost history (`history.on_lost = "resnapshot"`).
    Resnapshot,
}

impl Reason {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Requested => "requested",
            Reason::Resnapshot => "resnapshot",
        }
    }

    fn parse(s: &str) -> Reason {
        match s {
            "initial" => Reason::Initial,
            "resnapshot" => Reason::Resnapshot,
            _ => Reason::Requested,
        }
    }
}

/// Where one collection's snapshot stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The stream (watched database) it belongs to.
    pub stream: String,
    /// The collection.
    pub collection: String,
    /// Why it runs.
    pub reason: Reason,
    /// The `_id` of the last document of the last delivered chunk; None before the first.
    pub after: Option<Bson>,
    /// Documents delivered so far.
    pub documents: u64,
    /// Whether every chunk was delivered.
    pub done: bool,
    /// When it began.
    pub started_at: DateTime,
    /// When it ended.
    pub finished_at: Option<DateTime>,
}

impl Progress {
    fn id(stream: &str, collection: &str) -> String {
        format!("{stream}.{collection}")
    }

    fn from_document(d: &Document) -> Option<Progress> {
        Some(Progress {
            stream: d.get_str("stream").ok()?.to_owned(),
            collection: d.get_str("collection").ok()?.to_owned(),
            reason: Reason::parse(d.get_str("reason").unwrap_or_default()),
            after: d.get("after").cloned(),
            documents: d
                .get_i64("documents")
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            done: d.get_bool("done").unwrap_or(false),
            started_at: d
                .get_datetime("started_at")
                .copied()
                .unwrap_or(DateTime::MIN),
            finished_at: d.get_datetime("finished_at").ok().copied(),
        })
    }
}

/// Reads and writes snapshot progress.
#[derive(Debug, Clone)]
pub struct Snapshots {
    collection: Collection<Document>,
}

impl Snapshots {
    /// The progress documents of `database` (the checkpoint database).
    pub fn new(database: &Database) -> Snapshots {
        Snapshots {
            collection: database.collection(COLLECTION),
        }
    }

    /// Starts a snapshot of `collection` unless one is running: a finished one starts over,
    /// a running one keeps its place. True when one was started.
    pub async fn begin(
        &self,
        stream: &str,
        collection: &str,
        reason: Reason,
    ) -> Result<bool, mongodb::error::Error> {
        let id = Progress::id(stream, collection);
        let fresh = doc! {
            "_id": &id,
            "stream": stream,
            "collection": collection,
            "reason": reason.as_str(),
            "documents": 0_i64,
            "done": false,
            "started_at": DateTime::now(),
        };
        let replaced = self
            .collection
            .replace_one(doc! {"_id": &id, "done": true}, fresh.clone())
            .write_concern(WriteConcern::majority())
            .await?;
        if replaced.matched_count > 0 {
            return Ok(true);
        }
        match self
            .collection
            .insert_one(fresh)
            .write_concern(WriteConcern::majority())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if super::is_duplicate(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records that the chunk ending at `after` (with `documents` more) was delivered, and
    /// whether it was the last.
    pub async fn advance(
        &self,
        stream: &str,
        collection: &str,
        after: Option<&Bson>,
        documents: u64,
        done: bool,
    ) -> Result<(), mongodb::error::Error> {
        let mut set = doc! {"done": done, "updated_at": DateTime::now()};
        if let Some(after) = after {
            set.insert("after", after.clone());
        }
        if done {
            set.insert("finished_at", DateTime::now());
        }
        self.collection
            .update_one(
                doc! {"_id": Progress::id(stream, collection)},
                doc! {"$set": set, "$inc": {"documents": i64::try_from(documents).unwrap_or(i64::MAX)}},
            )
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }

    /// Every snapshot of `stream`, running or finished.
    pub async fn of_stream(&self, stream: &str) -> Result<Vec<Progress>, mongodb::error::Error> {
        let docs: Vec<Document> = self
            .collection
            .find(doc! {"stream": stream})
            .await?
            .try_collect()
            .await?;
        Ok(docs.iter().filter_map(Progress::from_document).collect())
    }

    /// Every snapshot, running or finished.
    pub async fn all(&self) -> Result<Vec<Progress>, mongodb::error::Error> {
        let docs: Vec<Document> = self.collection.find(doc! {}).await?.try_collect().await?;
        Ok(docs.iter().filter_map(Progress::from_document).collect())
    }
}
