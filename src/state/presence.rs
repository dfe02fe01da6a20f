//! Which `changeflow run` is processing which stream. Each live run keeps a heartbeat
//! document per stream (stamped with the server's clock, so hosts' clocks do not matter),
//! removed on a graceful stop. `checkpoint set/reset` refuse to move a position a running
//! process would overwrite with its next checkpoint, `status` shows who runs, and a second
//! run on the same checkpoints is warned about.

use std::fmt;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};
use serde::Serialize;

/// The collection (in the checkpoint database).
pub const COLLECTION: &str = "changeflow_runs";
/// How often a run stamps its heartbeat.
pub(crate) const BEAT_EVERY: Duration = Duration::from_secs(5);
/// A heartbeat older than this belongs to a process that is gone (killed, host lost).
pub(crate) const GONE_AFTER: Duration = Duration::from_secs(20);
/// The server deletes heartbeats this old (a TTL index).
pub(crate) const FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);

/// A run holding a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Holder {
    /// Its host name.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// Unique per process start.
    pub run_id: String,
    /// Seconds since its last heartbeat, by the server's clock.
    pub seen_seconds_ago: f64,
    /// Why the run found the stream stuck at its last heartbeat (empty: not stuck).
    pub stuck: Vec<String>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "changeflow run pid {} on {} (seen {:.0} s ago)",
            self.pid, self.host, self.seen_seconds_ago
        )
    }
}

/// This process's heartbeats.
#[derive(Debug, Clone)]
pub(crate) struct Presence {
    collection: Collection<Document>,
    host: String,
    pid: u32,
    run_id: String,
}

impl Presence {
    /// The heartbeats of this process, kept in `database`.
    pub fn new(database: &Database) -> Presence {
        let owner = super::leases::Owner::this_process();
        Presence {
            collection: database.collection(COLLECTION),
            run_id: owner.run_id,
            host: owner.host,
            pid: owner.pid,
        }
    }

    /// Makes sure heartbeats of processes long gone are removed by the server (TTL).
    pub async fn ensure_index(&self) -> Result<(), mongodb::error::Error> {
        let index = mongodb::IndexModel::builder()
            .keys(doc! {"heartbeat_at": 1})
            .options(
                mongodb::options::IndexOptions::builder()
                    .name("heartbeat_ttl".to_owned())
                    .expire_after(FORGOTTEN_AFTER)
                    .build(),
            )
            .build();
        self.collection.create_index(index).await?;
        Ok(())
    }

    /// Stamps the heartbeat of each of `streams` (server time), with why the stream is
    /// stuck (`stuck`: one line per cause; none when it is not). Each run has its own
    /// document per stream, so two runs never overwrite each other's.
    pub async fn beat(
        &self,
        streams: &[String],
        stuck: impl Fn(&str) -> Vec<String>,
    ) -> Result<(), mongodb::error::Error> {
        futures::future::try_join_all(streams.iter().map(|stream| {
            // A literal: `$set` in a pipeline would read strings with `$` as paths.
            let stuck: Vec<mongodb::bson::Bson> = stuck(stream)
                .into_iter()
                .map(|line| doc! {"$literal": line}.into())
                .collect();
            self.collection
                .update_one(
                    doc! {"_id": format!("{stream}/{}", self.run_id)},
                    vec![doc! {"$set": {
                        "stream": stream,
                        "host": &self.host,
                        "pid": i64::from(self.pid),
                        "run_id": &self.run_id,
                        "heartbeat_at": "$$NOW",
                        "stuck": stuck,
                    }}],
                )
                .upsert(true)
                .into_future()
        }))
        .await?;
        Ok(())
    }

    /// Removes this process's heartbeats (a graceful stop).
    pub async fn release(&self) -> Result<(), mongodb::error::Error> {
        self.collection
            .delete_many(doc! {"run_id": &self.run_id})
            .await?;
        Ok(())
    }

    /// A live run other than this process holding `stream`.
    pub async fn other_holder(
        &self,
        stream: &str,
    ) -> Result<Option<Holder>, mongodb::error::Error> {
        live_holder(
            &self.collection,
            doc! {"stream": stream, "run_id": {"$ne": &self.run_id}},
        )
        .await
    }
}

/// The live run holding `stream` in `database`, if any.
pub(crate) async fn holder(
    database: &Database,
    stream: &str,
) -> Result<Option<Holder>, mongodb::error::Error> {
    live_holder(&database.collection(COLLECTION), doc! {"stream": stream}).await
}

/// The most recently seen run matching `filter`, if its heartbeat is live.
async fn live_holder(
    collection: &Collection<Document>,
    filter: Document,
) -> Result<Option<Holder>, mongodb::error::Error> {
    let found: Vec<Document> = collection
        .aggregate(vec![
            doc! {"$match": filter},
            doc! {"$sort": {"heartbeat_at": -1}},
            doc! {"$limit": 1},
            doc! {"$project": {
                "host": 1, "pid": 1, "run_id": 1, "stuck": 1,
                "age_ms": {"$subtract": ["$$NOW", "$heartbeat_at"]},
            }},
        ])
        .await?
        .try_collect()
        .await?;
    let Some(found) = found.first() else {
        return Ok(None);
    };
    let age_ms = found
        .get_i64("age_ms")
        .or_else(|_| found.get_i32("age_ms").map(i64::from))
        .unwrap_or(i64::MAX);
    if age_ms >= GONE_AFTER.as_millis() as i64 {
        return Ok(None);
    }
    Ok(Some(Holder {
        host: found.get_str("host").unwrap_or("?").to_owned(),
        pid: found
            .get_i64("pid")
            .ok()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        run_id: found.get_str("run_id").unwrap_or("?").to_owned(),
        seen_seconds_ago: age_ms as f64 / 1000.0,
        stuck: found
            .get_array("stuck")
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }))
}
