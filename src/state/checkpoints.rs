//! The checkpoint store: one document per stream in `changeflow_checkpoints`, written with
//! majority write concern so a failover cannot roll it back.

use mongodb::bson::{self, DateTime, Document, Timestamp, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

use crate::source::StartAt;
use crate::source::position::token_time;

/// The collection that holds checkpoints.
pub const COLLECTION: &str = "changeflow_checkpoints";
/// The collection that holds the positions of replays.
pub(crate) const REPLAY_COLLECTION: &str = "changeflow_replay_checkpoints";

/// Field of a checkpoint set to a time by an operator (`checkpoint set --time`): the
/// stream then starts at that cluster time, and its first save replaces it with a token.
const START_AT_FIELD: &str = "start_at_operation_time";

/// Where a stored checkpoint resumes.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// Right after the change (or post-batch position) of this token.
    After(ResumeToken),
    /// At the first change at or after this cluster time (set by an operator).
    AtTime(Timestamp),
}

/// A stored checkpoint as `checkpoint show` and the stream opener read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The stream.
    pub stream: String,
    /// Where it resumes.
    pub resume: Resume,
    /// Wall time of the last handled change, when known.
    pub wall_time: Option<DateTime>,
    /// When it was written.
    pub updated_at: Option<DateTime>,
}

impl Stored {
    /// Its cluster time: the token's (every server token carries one) or the set time.
    pub fn cluster_time(&self) -> Option<Timestamp> {
        match &self.resume {
            Resume::After(token) => token_time(token),
            Resume::AtTime(t) => Some(*t),
        }
    }

    /// Where a stream opened from it starts.
    pub fn start_at(&self) -> StartAt {
        match &self.resume {
            Resume::After(token) => StartAt::After(token.clone()),
            Resume::AtTime(t) => StartAt::OperationTime(*t),
        }
    }
}

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
    /// A newer lease term was stamped on the checkpoint: another instance reads the stream
    /// now, and this one must stop without writing anything more.
    #[error(
        "checkpoint of stream `{stream}` is fenced: term {term} was taken over by a newer lease"
    )]
    Fenced {
        /// The stream.
        stream: String,
        /// The writer's term.
        term: i64,
    },
    /// A stored checkpoint does not have the expected shape.
    #[error(
        "checkpoint of stream `{stream}` is malformed: {reason} \
         (`changeflow checkpoint reset --stream {stream}` removes it)"
    )]
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
    /// Prepended to stream names: a replay keeps its positions apart from the live ones.
    prefix: String,
}

impl CheckpointStore {
    /// A store in `database`'s `changeflow_checkpoints` collection.
    pub fn new(database: &Database) -> CheckpointStore {
        CheckpointStore::in_collection(database, COLLECTION)
    }

    /// A store in `database`.`collection`.
    pub fn in_collection(database: &Database, collection: &str) -> CheckpointStore {
        CheckpointStore {
            collection: database.collection(collection),
            prefix: String::new(),
        }
    }

    /// The positions of replay `id`, in `database`'s `changeflow_replay_checkpoints`: never
    /// the live checkpoints.
    pub fn for_replay(database: &Database, id: &str) -> CheckpointStore {
        CheckpointStore {
            collection: database.collection(REPLAY_COLLECTION),
            prefix: format!("{id}/"),
        }
    }

    fn key(&self, stream: &str) -> String {
        format!("{}{stream}", self.prefix)
    }

    /// The stored token checkpoint of `stream`, if any (None also when an operator set the
    /// stream to a time it has not opened at yet; [`CheckpointStore::load_stored`] tells).
    pub async fn load(&self, stream: &str) -> Result<Option<Checkpoint>, StoreError> {
        let Some(doc) = self
            .collection
            .find_one(doc! {"_id": self.key(stream)})
            .await?
        else {
            return Ok(None);
        };
        let Some(Stored {
            resume: Resume::After(token),
            ..
        }) = stored(&doc)?
        else {
            return Ok(None);
        };
        let events = doc.get_i64("events_since_start").unwrap_or(0);
        Ok(Some(Checkpoint {
            stream: stream.to_owned(),
            token,
            cluster_time: doc.get_timestamp("cluster_time").ok(),
            wall_time: doc.get_datetime("wall_time").ok().copied(),
            events_since_start: u64::try_from(events).unwrap_or(0),
        }))
    }

    /// Where `stream` resumes, if it has a checkpoint.
    pub async fn load_stored(&self, stream: &str) -> Result<Option<Stored>, StoreError> {
        match self
            .collection
            .find_one(doc! {"_id": self.key(stream)})
            .await?
        {
            Some(doc) => stored(&doc),
            None => Ok(None),
        }
    }

    /// Every checkpoint in the store's collection, by stream name.
    pub async fn list(&self) -> Result<Vec<Stored>, StoreError> {
        let docs = super::all_by_id(&self.collection).await?;
        docs.iter().filter_map(|d| stored(d).transpose()).collect()
    }

    /// Makes `stream` start at the first change at or after `at` when it next opens. An
    /// operator's write: it carries `fence` (see [`CheckpointStore::fence`]), so a holder
    /// deposed before it cannot write over it.
    pub async fn set_time(
        &self,
        stream: &str,
        at: Timestamp,
        fence: i64,
    ) -> Result<(), StoreError> {
        let replacement = doc! {START_AT_FIELD: at, "updated_at": DateTime::now(), "term": fence};
        self.collection
            .replace_one(doc! {"_id": self.key(stream)}, replacement)
            .upsert(true)
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }

    /// Removes `stream`'s position (the next run starts at `--start-at`) but keeps `fence`
    /// on it, so a holder deposed before the reset cannot put its position back.
    pub async fn reset(&self, stream: &str, fence: i64) -> Result<(), StoreError> {
        self.collection
            .replace_one(
                doc! {"_id": self.key(stream)},
                doc! {"term": fence, "updated_at": DateTime::now()},
            )
            .upsert(true)
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }

    /// The term an operator's write carries: above every lease term the stream had
    /// (`lease_term`) and the one stamped on its checkpoint, so every earlier holder's
    /// writes are refused; the next holder's term reaches it.
    pub async fn fence(&self, stream: &str, lease_term: Option<i64>) -> Result<i64, StoreError> {
        let stamped = self
            .collection
            .find_one(doc! {"_id": self.key(stream)})
            .await?
            .and_then(|d| d.get_i64("term").ok());
        Ok(stamped.max(lease_term).unwrap_or(0) + 1)
    }

    /// Removes `stream`'s checkpoint; true when there was one.
    pub async fn delete(&self, stream: &str) -> Result<bool, StoreError> {
        let deleted = self
            .collection
            .delete_one(doc! {"_id": self.key(stream)})
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(deleted.deleted_count > 0)
    }

    /// Stores `checkpoint` (replacing the stream's previous one), majority-acknowledged.
    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.write(checkpoint, None).await
    }

    /// [`CheckpointStore::save`] by the holder of lease `term`: refused
    /// ([`StoreError::Fenced`]) once a newer term is stamped on the checkpoint.
    pub async fn save_fenced(&self, checkpoint: &Checkpoint, term: i64) -> Result<(), StoreError> {
        self.write(checkpoint, Some(term)).await
    }

    /// Stamps lease `term` on `stream`'s checkpoint (when it has one), so writes of older
    /// terms are refused from now on; fails with [`StoreError::Fenced`] when a newer term
    /// is already there.
    pub async fn stamp(&self, stream: &str, term: i64) -> Result<(), StoreError> {
        let stamped = self
            .collection
            .update_one(
                doc! {"_id": self.key(stream), "$or": [{"term": {"$lte": term}}, {"term": {"$exists": false}}]},
                doc! {"$set": {"term": term}},
            )
            .write_concern(super::majority_within(std::time::Duration::from_secs(2)))
            .await?;
        let exists = || async {
            let found = self
                .collection
                .find_one(doc! {"_id": self.key(stream)})
                .await?;
            Ok::<_, StoreError>(found.is_some())
        };
        if stamped.matched_count == 0 && exists().await? {
            return Err(StoreError::Fenced {
                stream: stream.to_owned(),
                term,
            });
        }
        Ok(())
    }

    async fn write(&self, checkpoint: &Checkpoint, term: Option<i64>) -> Result<(), StoreError> {
        let token = bson::to_bson(&checkpoint.token).map_err(|e| StoreError::Malformed {
            stream: checkpoint.stream.clone(),
            reason: format!("token does not serialise: {e}"),
        })?;
        let mut set = doc! {
            "token": token,
            "updated_at": DateTime::now(),
            "events_since_start": i64::try_from(checkpoint.events_since_start).unwrap_or(i64::MAX),
        };
        // Times unknown for this position must not keep describing an older one, and a
        // start time set by an operator is used up once the stream has a token.
        let mut unset = Document::new();
        match checkpoint.cluster_time {
            Some(t) => set.insert("cluster_time", t),
            None => unset.insert("cluster_time", ""),
        };
        match checkpoint.wall_time {
            Some(t) => set.insert("wall_time", t),
            None => unset.insert("wall_time", ""),
        };
        unset.insert(START_AT_FIELD, "");
        let mut filter = doc! {"_id": self.key(&checkpoint.stream)};
        if let Some(term) = term {
            set.insert("term", term);
            filter.insert(
                "$or",
                vec![
                    doc! {"term": {"$lte": term}},
                    doc! {"term": {"$exists": false}},
                ],
            );
        }
        let mut update = doc! {"$set": set};
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        let written = self
            .collection
            .update_one(filter, update)
            .upsert(true)
            .write_concern(WriteConcern::majority())
            .await;
        match (written, term) {
            // The upsert met the checkpoint a newer term holds.
            (Err(e), Some(term)) if super::is_duplicate(&e) => Err(StoreError::Fenced {
                stream: checkpoint.stream.clone(),
                term,
            }),
            (written, _) => written.map(drop).map_err(StoreError::from),
        }
    }
}

fn malformed(stream: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Malformed {
        stream: stream.to_owned(),
        reason: reason.into(),
    }
}

/// The position `doc` holds; None for a reset (only a fencing term left).
fn stored(doc: &Document) -> Result<Option<Stored>, StoreError> {
    let stream = doc
        .get_str("_id")
        .map_err(|_| malformed("?", "`_id` is not a stream name"))?;
    let resume = match (doc.get("token"), doc.get_timestamp(START_AT_FIELD)) {
        (Some(token), _) => Resume::After(
            bson::from_bson(token.clone())
                .map_err(|e| malformed(stream, format!("`token`: {e}")))?,
        ),
        (None, Ok(at)) => Resume::AtTime(at),
        (None, Err(_)) if doc.get_i64("term").is_ok() => return Ok(None),
        (None, Err(_)) => return Err(malformed(stream, "neither `token` nor a start time")),
    };
    Ok(Some(Stored {
        stream: stream.to_owned(),
        resume,
        wall_time: doc.get_datetime("wall_time").ok().copied(),
        updated_at: doc.get_datetime("updated_at").ok().copied(),
    }))
}
