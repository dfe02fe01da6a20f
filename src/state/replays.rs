//! `changeflow_replays`: one record per replay, named by an id derived from the request, so
//! running the same replay again after an interruption continues it with the same end.

use anyhow::{Context, bail};
use mongodb::bson::{DateTime, Document, Timestamp, doc};
use mongodb::options::WriteConcern;
use mongodb::{Client, Collection, Database};

use crate::source::position::Until;

/// The collection that records replays (in the checkpoint database).
pub const COLLECTION: &str = "changeflow_replays";

/// The replay records.
pub(crate) struct Replays {
    client: Client,
    records: Collection<Document>,
}

impl Replays {
    /// The records in `state_db` (the checkpoint database).
    pub fn new(client: &Client, state_db: &Database) -> Replays {
        Replays {
            client: client.clone(),
            records: state_db.collection(COLLECTION),
        }
    }

    /// The end of replay `id` when it was interrupted (its record still says running).
    pub async fn interrupted_end(&self, id: &str) -> anyhow::Result<Option<Until>> {
        let Some(previous) = self.records.find_one(doc! {"_id": id}).await? else {
            return Ok(None);
        };
        if previous.get_str("status") != Ok("running") {
            return Ok(None);
        }
        match (
            previous.get_timestamp("until_time"),
            previous.get_str("until_token"),
        ) {
            (_, Ok(token)) => Ok(Some(Until::Token(token.to_owned()))),
            (Ok(t), _) => Ok(Some(Until::Time(t))),
            _ => bail!("replay record `{id}` in {COLLECTION} has no end; delete it to start over"),
        }
    }

    /// Records replay `id` as running; returns the cluster time of that write, the default
    /// end of a new replay.
    pub async fn start(
        &self,
        id: &str,
        from: &str,
        streams: &[&str],
        dry_run: bool,
    ) -> anyhow::Result<Timestamp> {
        let mut session = self.client.start_session().await?;
        self.records
            .replace_one(
                doc! {"_id": id},
                doc! {
                    "status": "running",
                    "from": from,
                    "streams": streams,
                    "dry_run": dry_run,
                    "started_at": DateTime::now(),
                },
            )
            .upsert(true)
            .write_concern(WriteConcern::majority())
            .session(&mut session)
            .await?;
        session
            .operation_time()
            .context("the server returned no operation time (not a replica set?)")
    }

    /// Records where replay `id` ends. Written right after [`Replays::start`], it also puts
    /// an oplog entry beyond the default end, so quiet streams see their end passed without
    /// waiting for other traffic.
    pub async fn set_end(&self, id: &str, end: &Until) -> anyhow::Result<()> {
        let set = match end {
            Until::Time(t) => doc! {"until_time": *t},
            Until::Token(data) => doc! {"until_token": data},
        };
        self.records
            .update_one(doc! {"_id": id}, doc! {"$set": set})
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }

    /// Records replay `id` as complete: running it again starts over.
    pub async fn complete(&self, id: &str) -> anyhow::Result<()> {
        self.records
            .update_one(
                doc! {"_id": id},
                doc! {"$set": {"status": "complete", "completed_at": DateTime::now()}},
            )
            .write_concern(WriteConcern::majority())
            .await?;
        Ok(())
    }
}
