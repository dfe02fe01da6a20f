//! Which instances are running: one document per live `changeflow run` in
//! `changeflow_runs` (its owner identity, its role, and why any stream it reads is stuck),
//! renewed with its leases and expiring by the server's clock. The instances that read
//! streams share them out from it ([`crate::pipeline::spread`]); the holder of a stream is
//! its lease's owner ([`holder`]): `checkpoint set/reset` refuse while one is live, and
//! `status` shows it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Collection, Database};
use serde::Serialize;

use tokio_util::sync::CancellationToken;

use super::leases::{self, Owner};
use crate::config::role::Role;

/// The collection (in the checkpoint database).
pub const COLLECTION: &str = "changeflow_runs";
/// The server deletes the documents of instances gone this long (a TTL index).
pub(crate) const FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);

/// The live instance holding a stream's lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Holder {
    /// Its host name.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// Unique per process start.
    pub run_id: String,
    /// Seconds since it last renewed the lease, by the server's clock.
    pub seen_seconds_ago: f64,
    /// Why it found the stream stuck when it last reported (empty: not stuck).
    pub stuck: Vec<String>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "changeflow run pid {} on {} (lease renewed {:.0} s ago)",
            self.pid, self.host, self.seen_seconds_ago
        )
    }
}

/// A live instance, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    /// Its host name.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// Unique per process start.
    pub run_id: String,
    /// What it runs (`run --role`).
    pub role: String,
    /// Seconds since its last heartbeat, by the server's clock.
    pub seen_seconds_ago: f64,
}

/// This process's entry.
#[derive(Debug, Clone)]
pub(crate) struct Presence {
    collection: Collection<Document>,
    owner: Owner,
    role: Role,
}

impl Presence {
    /// The entry of `owner` running `role`, kept in `database`.
    pub fn new(database: &Database, owner: Owner, role: Role) -> Presence {
        Presence {
            collection: database.collection(COLLECTION),
            owner,
            role,
        }
    }

    /// Beats every `every` (live for `ttl`) until `stop`, then removes the entry: for an
    /// instance that reads no stream, so takes no census ([`Presence::register`] first).
    pub async fn keep(self, ttl: Duration, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            self.beat_or_warn(ttl, &BTreeMap::new()).await;
        }
        self.release_or_warn().await;
    }

    /// Creates the TTL index, with a warning when it cannot (entries then stay until
    /// removed).
    pub async fn register_index(&self) {
        if let Err(e) = self.ensure_index().await {
            tracing::warn!(error = %e, "cannot create the TTL index of {COLLECTION}");
        }
    }

    /// [`Presence::beat`], with a warning when it fails (the entry expires by itself).
    pub async fn beat_or_warn(&self, ttl: Duration, stuck: &BTreeMap<String, Vec<String>>) {
        if let Err(e) = self.beat(ttl, stuck).await {
            tracing::warn!(error = %e, "cannot stamp this instance in {COLLECTION}");
        }
    }

    /// Makes sure the entries of instances long gone are removed by the server (TTL).
    pub async fn ensure_index(&self) -> Result<(), mongodb::error::Error> {
        let index = mongodb::IndexModel::builder()
            .keys(doc! {"expires_at": 1})
            .options(
                mongodb::options::IndexOptions::builder()
                    .name("expires_ttl".to_owned())
                    .expire_after(FORGOTTEN_AFTER)
                    .build(),
            )
            .build();
        self.collection.create_index(index).await?;
        Ok(())
    }

    /// Stamps this instance live for `ttl` (server time), with why each stream it reads is
    /// stuck (`stuck`: stream → one line per cause).
    pub async fn beat(
        &self,
        ttl: Duration,
        stuck: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), mongodb::error::Error> {
        // Literals: `$set` in a pipeline would read strings with `$` as paths.
        let stuck: Vec<Bson> = stuck
            .iter()
            .filter(|(_, lines)| !lines.is_empty())
            .map(|(stream, lines)| {
                let lines: Vec<Bson> = lines.iter().map(|l| doc! {"$literal": l}.into()).collect();
                doc! {"stream": {"$literal": stream}, "lines": lines}.into()
            })
            .collect();
        let owner = &self.owner;
        self.collection
            .update_one(
                doc! {"_id": &owner.run_id},
                vec![doc! {"$set": {
                    "host": {"$literal": &owner.host},
                    "pid": i64::from(owner.pid),
                    "role": self.role.as_str(),
                    "heartbeat_at": "$$NOW",
                    "expires_at": {"$add": ["$$NOW", leases::millis(ttl)]},
                    "stuck": stuck,
                }}],
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// [`Presence::release`], with a warning when it fails (the entry expires by itself).
    pub async fn release_or_warn(&self) {
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "cannot remove this instance from {COLLECTION}; it expires by itself");
        }
    }

    /// Removes this instance's entry (a graceful stop).
    pub async fn release(&self) -> Result<(), mongodb::error::Error> {
        self.collection
            .delete_one(doc! {"_id": &self.owner.run_id})
            .await?;
        Ok(())
    }

    /// The run ids of the live instances that read streams (this one included once it
    /// has beaten), by the server's clock.
    pub async fn live_readers(&self) -> Result<Vec<String>, mongodb::error::Error> {
        let found: Vec<Document> = self
            .collection
            .find(doc! {
                "role": {"$in": Role::ALL.iter().filter(|r| r.reads_streams()).map(|r| r.as_str()).collect::<Vec<_>>()},
                "$expr": {"$gt": ["$expires_at", "$$NOW"]},
            })
            .projection(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(found
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }
}

/// Every live instance registered in `database`, by run id.
pub(crate) async fn live_instances(
    database: &Database,
) -> Result<Vec<Instance>, mongodb::error::Error> {
    let pipeline = vec![
        doc! {"$match": {"$expr": {"$gt": ["$expires_at", "$$NOW"]}}},
        doc! {"$addFields": {"age_ms": {"$subtract": ["$$NOW", "$heartbeat_at"]}}},
        doc! {"$sort": {"_id": 1}},
    ];
    let found = super::aggregated(&database.collection(COLLECTION), pipeline).await?;
    Ok(found
        .iter()
        .filter_map(|d| {
            Some(Instance {
                host: d.get_str("host").ok()?.to_owned(),
                pid: u32::try_from(d.get_i64("pid").ok()?).ok()?,
                run_id: d.get_str("_id").ok()?.to_owned(),
                role: d.get_str("role").ok()?.to_owned(),
                seen_seconds_ago: super::millis_in(d, "age_ms") as f64 / 1000.0,
            })
        })
        .collect())
}

/// The live instance holding `stream`'s lease in `database`, if any.
pub(crate) async fn holder(
    database: &Database,
    stream: &str,
) -> Result<Option<Holder>, mongodb::error::Error> {
    let Some((lease, age_ms)) = leases::Leases::new(database).live(stream).await? else {
        return Ok(None);
    };
    let entry = database
        .collection::<Document>(COLLECTION)
        .find_one(doc! {"_id": &lease.owner.run_id})
        .await?;
    let stuck = entry
        .as_ref()
        .and_then(|e| e.get_array("stuck").ok())
        .into_iter()
        .flatten()
        .filter_map(Bson::as_document)
        .filter(|s| s.get_str("stream").is_ok_and(|s| s == stream))
        .filter_map(|s| s.get_array("lines").ok())
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    Ok(Some(Holder {
        host: lease.owner.host,
        pid: lease.owner.pid,
        run_id: lease.owner.run_id,
        seen_seconds_ago: age_ms as f64 / 1000.0,
        stuck,
    }))
}
