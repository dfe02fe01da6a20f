//! Recorded gaps: stretches of history a stream skipped because they had left the oplog
//! (`history.on_lost = "restart-from-now"`). One document per gap in `changeflow_gaps`,
//! so what was lost is never only in a log line.

use futures::TryStreamExt;
use mongodb::bson::{DateTime, Document, Timestamp, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

use crate::source::history::HistoryLost;

/// The collection that holds gaps (in the checkpoint database).
pub const COLLECTION: &str = "changeflow_gaps";

/// One stretch of history a stream did not see.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The stream.
    pub stream: String,
    /// The checkpoint's cluster time: changes after it were lost (unknown only for a
    /// checkpoint without time, which the server never hands out).
    pub lost_from: Option<Timestamp>,
    /// Where the stream continued: changes before it were lost.
    pub lost_to: Option<Timestamp>,
    /// The oldest oplog entry when the loss was found, when it could be read.
    pub oldest_available: Option<Timestamp>,
    /// The server's or the pre-check's reason.
    pub reason: String,
    /// When it was recorded.
    pub recorded_at: DateTime,
    /// When a repair snapshot (`history.on_lost = "resnapshot"`) began, if one runs.
    pub repair_started_at: Option<DateTime>,
    /// When that snapshot ended.
    pub repair_finished_at: Option<DateTime>,
}

/// Reads and writes gaps.
#[derive(Debug, Clone)]
pub struct Gaps {
    collection: Collection<Document>,
}

impl Gaps {
    /// The gaps of `database` (the checkpoint database).
    pub fn new(database: &Database) -> Gaps {
        Gaps {
            collection: database.collection(COLLECTION),
        }
    }

    /// Records `gap`, majority-acknowledged: before the stream moves on, not after.
    pub async fn record(&self, gap: &Gap) -> Result<(), mongodb::error::Error> {
        let mut document = doc! {
            "stream": &gap.stream,
            "reason": &gap.reason,
            "recorded_at": gap.recorded_at,
        };
        for (field, at) in [
            ("repair_started_at", gap.repair_started_at),
            ("repair_finished_at", gap.repair_finished_at),
        ] {
            if let Some(at) = at {
                document.insert(field, at);
            }
        }
        for (field, time) in [
            ("lost_from", gap.lost_from),
            ("lost_to", gap.lost_to),
            ("oldest_available", gap.oldest_available),
        ] {
            if let Some(time) = time {
                document.insert(field, time);
            }
        }
        self.collection
            .insert_one(document)
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }

    /// The repair snapshots of `stream`'s gaps ended now.
    pub async fn repaired(&self, stream: &str) -> Result<(), mongodb::error::Error> {
        self.collection
            .update_many(
                doc! {"stream": stream, "repair_started_at": {"$exists": true},
                "repair_finished_at": {"$exists": false}},
                doc! {"$set": {"repair_finished_at": DateTime::now()}},
            )
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }

    /// How many gaps `stream` has.
    pub async fn count(&self, stream: &str) -> Result<u64, mongodb::error::Error> {
        self.collection
            .count_documents(doc! {"stream": stream})
            .await
    }

    /// Every gap of `stream`, oldest first.
    pub async fn of_stream(&self, stream: &str) -> Result<Vec<Gap>, mongodb::error::Error> {
        let docs: Vec<Document> = self
            .collection
            .find(doc! {"stream": stream})
            .sort(doc! {"recorded_at": 1, "_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .map(|d| Gap {
                stream: stream.to_owned(),
                lost_from: d.get_timestamp("lost_from").ok(),
                lost_to: d.get_timestamp("lost_to").ok(),
                oldest_available: d.get_timestamp("oldest_available").ok(),
                reason: d.get_str("reason").unwrap_or_default().to_owned(),
                recorded_at: d
                    .get_datetime("recorded_at")
                    .copied()
                    .unwrap_or(DateTime::MIN),
                repair_started_at: d.get_datetime("repair_started_at").ok().copied(),
                repair_finished_at: d.get_datetime("repair_finished_at").ok().copied(),
            })
            .collect())
    }
}

impl Gap {
    /// The gap a restart from now leaves after `lost`, for the record.
    pub fn after(lost: &HistoryLost, lost_to: Option<Timestamp>) -> Gap {
        Gap {
            stream: lost.stream.clone(),
            lost_from: lost.resume_from,
            lost_to,
            oldest_available: lost.oldest,
            reason: lost.cause.clone(),
            recorded_at: DateTime::now(),
            repair_started_at: None,
            repair_finished_at: None,
        }
    }
}
