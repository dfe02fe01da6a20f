//! The checkpoint store: one document per stream in `changeflow_checkpoints`, written with
//! majority write concern so a failover cannot roll it back.

use mongodb::bson::{self, DateTime, Document, Timestamp, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

/// The collection that holds checkpoints.
pub const COLLECTION: &str = "changeflow_checkpoints";

/// Where one stream stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The stream's name (one stream per watched database).
    pub stream: String,
    /// Resume here with `startAfter`.
    pub token: ResumeToken,
    /// Cluster time of the last handled change, when known (not for post-batch tokens).
    pub cluster_time: Option<Timestamp>,
    /// Wall time of the last handled change, when known.
    pub wall_time: Option<DateTime>,
    /// Events handled since this process started the stream.
    pub events_since_start: u64,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or did not answer.
    #[error("checkpoint store: {0}")]
    Database(#[from] mongodb::error::Error),
    /// A stored checkpoint does not have the expected shape.
    #[error("checkpoint of stream `{stream}` is malformed: {reason}")]
    Malformed {
        /// The stream.
        stream: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads and writes checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    collection: Collection<Document>,
}

impl CheckpointStore {
    /// A store in `database`'s `changeflow_checkpoints` collection.
    pub fn new(database: &Database) -> CheckpointStore {
        CheckpointStore {
            collection: database.collection(COLLECTION),
        }
    }

    /// The stored checkpoint of `stream`, if any.
    pub async fn load(&self, stream: &str) -> Result<Option<Checkpoint>, StoreError> {
        let Some(doc) = self.collection.find_one(doc! {"_id": stream}).await? else {
            return Ok(None);
        };
        let malformed = |reason: String| StoreError::Malformed {
            stream: stream.to_owned(),
            reason,
        };
        let token = doc
            .get("token")
            .cloned()
            .ok_or_else(|| malformed("no `token`".into()))?;
        let token: ResumeToken =
            bson::from_bson(token).map_err(|e| malformed(format!("`token`: {e}")))?;
        let events = doc.get_i64("events_since_start").unwrap_or(0);
        Ok(Some(Checkpoint {
            stream: stream.to_owned(),
            token,
            cluster_time: doc.get_timestamp("cluster_time").ok(),
            wall_time: doc.get_datetime("wall_time").ok().copied(),
            events_since_start: u64::try_from(events).unwrap_or(0),
        }))
    }

    /// Stores `checkpoint` (replacing the stream's previous one), majority-acknowledged.
    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let token = bson::to_bson(&checkpoint.token).map_err(|e| StoreError::Malformed {
            stream: checkpoint.stream.clone(),
            reason: format!("token does not serialise: {e}"),
        })?;
        let mut set = doc! {
            "token": token,
            "updated_at": DateTime::now(),
            "events_since_start": i64::try_from(checkpoint.events_since_start).unwrap_or(i64::MAX),
        };
        // Times unknown for this position must not keep describing an older one.
        let mut unset = Document::new();
        match checkpoint.cluster_time {
            Some(t) => set.insert("cluster_time", t),
            None => unset.insert("cluster_time", ""),
        };
        match checkpoint.wall_time {
            Some(t) => set.insert("wall_time", t),
            None => unset.insert("wall_time", ""),
        };
        let mut update = doc! {"$set": set};
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        self.collection
            .update_one(doc! {"_id": &checkpoint.stream}, update)
            .upsert(true)
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }
}
