//! Leases: one reader per stream. A lease in `changeflow_leases` names its stream, its owner
//! (host, pid, run id), a term and an expiry set by the server's clock (`$$NOW`, never a
//! host's). Taking a lease over raises the term; every checkpoint write carries the term
//! and is refused once a newer one is stamped on the checkpoint
//! ([`crate::state::checkpoints::CheckpointStore::save_fenced`]), so a deposed owner (paused,
//! partitioned) can never move a checkpoint past its successor.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

/// The environment variable that overrides the host name an instance gives.
pub const HOST_VAR: &str = "CHANGEFLOW_HOST";

/// The collection (in the checkpoint database).
pub const COLLECTION: &str = "changeflow_leases";

/// Who holds, or asks for, a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Unique per process start.
    pub run_id: String,
}

impl Owner {
    /// Whether this owner, seen by `me`, ran on this host and its process is gone: `me`
    /// has its pid (a restarted container's process 1), no process has it, or one running
    /// another program does. A crashed instance restarted on its host need not wait for
    /// its lease to run out. False wherever that cannot be told (another host, no
    /// `/proc`): the lease then expires as usual. Callers also require that the lease went
    /// unrenewed for a while, so a live holder on another host of the same name keeps it.
    pub fn exited_here(&self, me: &Owner) -> bool {
        if self.host != me.host || self.run_id == me.run_id {
            return false;
        }
        if self.pid == me.pid {
            return true;
        }
        // By program name: a binary replaced on disk while its old process runs (an
        // upgrade) reads `… (deleted)`, and that process is alive.
        let program = |link: std::path::PathBuf| {
            let name = link.file_name()?.to_string_lossy().into_owned();
            Some(name.trim_end_matches(" (deleted)").to_owned())
        };
        let Some(own) = std::fs::read_link("/proc/self/exe").ok().and_then(program) else {
            return false;
        };
        match std::fs::read_link(format!("/proc/{}/exe", self.pid)) {
            Ok(exe) => program(exe).is_some_and(|p| p != own),
            // No such process, or a zombie (exited, not yet reaped).
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// This process: its host, pid and a run id unique per start.
    pub fn this_process() -> Owner {
        let host = host_name();
        let pid = std::process::id();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Owner {
            run_id: format!("{host}:{pid}:{started}"),
            host,
            pid,
        }
    }
}

/// A lease this process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Its term: raised on every acquisition; checkpoint writes are fenced by it.
    pub term: i64,
    /// It was another instance's before (expired or released).
    pub taken_over: bool,
}

/// A stream's lease as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The stream.
    pub stream: String,
    /// Its owner.
    pub owner: Owner,
    /// Its term.
    pub term: i64,
    /// When it was taken (server clock).
    pub acquired_at: DateTime,
    /// When it expires unless renewed (server clock).
    pub expires_at: DateTime,
}

/// Reads and writes leases.
#[derive(Debug, Clone)]
pub struct Leases {
    collection: Collection<Document>,
}

/// `d` in whole milliseconds, as the server's date arithmetic takes it.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Leases {
    /// The leases of `database` (the checkpoint database).
    pub fn new(database: &Database) -> Leases {
        Leases {
            collection: database.collection(COLLECTION),
        }
    }

    /// Takes `stream`'s lease for `ttl` if it is free, expired, or already `owner`'s; the
    /// term goes up by one. None while another owner holds it.
    pub async fn acquire(
        &self,
        stream: &str,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<Held>, mongodb::error::Error> {
        let free = doc! {"$or": [
            {"$lte": ["$expires_at", "$$NOW"]},
            {"$eq": ["$owner.run_id", {"$literal": &owner.run_id}]},
        ]};
        let update = taking(owner, ttl);
        // An expired (or own) lease is taken over; the server allows no `$expr` in an
        // upsert's filter, so a missing one is created by a second, plain upsert.
        let before = match self
            .collection
            .find_one_and_update(doc! {"_id": stream, "$expr": free}, update.clone())
            .return_document(ReturnDocument::Before)
            .write_concern(super::majority_within(ttl))
            .await
        {
            Ok(before) => before,
            Err(e) if super::is_write_concern_timeout(&e) => {
                return self.read_back(stream, owner).await;
            }
            Err(e) => return Err(e),
        };
        if let Some(before) = before {
            let previous = before
                .get_document("owner")
                .and_then(|o| o.get_str("run_id"))
                .unwrap_or_default();
            return Ok(Some(Held {
                term: before.get_i64("term").unwrap_or(0) + 1,
                // A lease an operator's fence created has no owner to take it from.
                taken_over: !previous.is_empty() && previous != owner.run_id,
            }));
        }
        let held = |lease: Option<Document>| {
            lease.and_then(|l| l.get_i64("term").ok()).map(|term| Held {
                term,
                taken_over: false,
            })
        };
        let created = self
            .collection
            .find_one_and_update(doc! {"_id": stream, "term": {"$exists": false}}, update)
            .upsert(true)
            .return_document(ReturnDocument::After)
            .write_concern(super::majority_within(ttl))
            .await;
        match created {
            Ok(lease) => Ok(held(lease)),
            Err(e) if super::is_write_concern_timeout(&e) => self.read_back(stream, owner).await,
            // The upsert met the held lease's `_id`: someone else holds it.
            Err(e) if super::is_duplicate(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes `stream`'s lease from `dead`, an owner known to have exited (see
    /// [`Owner::exited_here`]), without waiting for its expiry; the term goes up by one, as
    /// for any takeover. None when the lease is no longer `dead`'s.
    pub async fn take_from_exited(
        &self,
        stream: &str,
        dead: &Owner,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<Held>, mongodb::error::Error> {
        let before = self
            .collection
            .find_one_and_update(
                doc! {"_id": stream, "owner.run_id": &dead.run_id},
                taking(owner, ttl),
            )
            .return_document(ReturnDocument::Before)
            .write_concern(super::majority_within(ttl))
            .await;
        match before {
            Ok(before) => Ok(before.map(|b| Held {
                term: b.get_i64("term").unwrap_or(0) + 1,
                taken_over: true,
            })),
            Err(e) if super::is_write_concern_timeout(&e) => self.read_back(stream, owner).await,
            Err(e) => Err(e),
        }
    }

    /// After a write no majority acknowledged in time (applied on the primary): the lease
    /// as the primary has it, when it is `owner`'s. Without a majority nothing this stream
    /// reads can be checkpointed, so reading up to the read-ahead bound on such a lease
    /// risks at most repeats.
    async fn read_back(
        &self,
        stream: &str,
        owner: &Owner,
    ) -> Result<Option<Held>, mongodb::error::Error> {
        let lease = self.collection.find_one(doc! {"_id": stream}).await?;
        Ok(lease.as_ref().and_then(lease_of).filter(|l| l.owner.run_id == owner.run_id).map(|l| {
            tracing::warn!(stream = %stream, term = l.term, "lease taken without a majority's acknowledgement (none answers in time)");
            Held { term: l.term, taken_over: false }
        }))
    }

    /// Extends `held` by `ttl` from now; false when it is no longer this owner's (taken
    /// over: its term passed). A lease that expired while nobody took it (the set had no
    /// majority, this process was cut off) is still this owner's: the term fences, not the
    /// clock.
    pub async fn renew(
        &self,
        stream: &str,
        owner: &Owner,
        held: Held,
        ttl: Duration,
    ) -> Result<bool, mongodb::error::Error> {
        let renewed = self
            .collection
            .update_one(
                doc! {"_id": stream, "owner.run_id": &owner.run_id, "term": held.term},
                vec![doc! {"$set": {
                    "renewed_at": "$$NOW",
                    "expires_at": {"$add": ["$$NOW", millis(ttl)]},
                }}],
            )
            .write_concern(super::majority_within(ttl))
            .await?;
        Ok(renewed.matched_count == 1)
    }

    /// Gives `held` up at once (after the final checkpoint), so a standby takes the stream
    /// without waiting for the expiry.
    pub async fn release(
        &self,
        stream: &str,
        owner: &Owner,
        held: Held,
    ) -> Result<bool, mongodb::error::Error> {
        let released = self
            .collection
            .update_one(
                doc! {"_id": stream, "owner.run_id": &owner.run_id, "term": held.term},
                vec![doc! {"$set": {"expires_at": "$$NOW"}}],
            )
            .write_concern(super::majority_within(std::time::Duration::from_secs(2)))
            .await?;
        Ok(released.matched_count == 1)
    }

    /// `stream`'s lease while it is live (not expired by the server's clock), with the
    /// milliseconds since it was last renewed.
    pub async fn live(&self, stream: &str) -> Result<Option<(Lease, i64)>, mongodb::error::Error> {
        let pipeline = vec![
            doc! {"$match": {"_id": stream, "$expr": {"$gt": ["$expires_at", "$$NOW"]}}},
            doc! {"$addFields": {"age_ms": {"$subtract": [
                "$$NOW", {"$ifNull": ["$renewed_at", "$acquired_at"]},
            ]}}},
        ];
        let found = super::aggregated(&self.collection, pipeline).await?;
        Ok(found
            .first()
            .and_then(|d| lease_of(d).map(|l| (l, super::millis_in(d, "age_ms")))))
    }

    /// Raises `stream`'s lease term to `term` (an operator's change of its checkpoint, see
    /// [`crate::state::checkpoints::CheckpointStore::fence`]): a live holder loses the lease
    /// at its next renewal, and whoever takes it next gets a term above the fence at once.
    pub async fn raise_term(&self, stream: &str, term: i64) -> Result<(), mongodb::error::Error> {
        let raised = self
            .collection
            .update_one(
                doc! {"_id": stream, "term": {"$lt": term}},
                doc! {"$set": {"term": term}},
            )
            .write_concern(super::majority_within(Duration::from_secs(2)))
            .await?;
        if raised.matched_count == 0 && self.term(stream).await?.is_none() {
            // Never held: an expired lease with just the term.
            let created = self
                .collection
                .insert_one(doc! {"_id": stream, "term": term, "expires_at": DateTime::now()})
                .write_concern(super::majority_within(Duration::from_secs(2)))
                .await;
            match created {
                Err(e) if !super::is_duplicate(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The term of `stream`'s lease, live or not (None: it never had one).
    pub async fn term(&self, stream: &str) -> Result<Option<i64>, mongodb::error::Error> {
        let lease = self.collection.find_one(doc! {"_id": stream}).await?;
        Ok(lease.and_then(|l| l.get_i64("term").ok()))
    }

    /// How many of `streams`' leases each owner (by run id) holds live, by the server's
    /// clock.
    pub async fn live_counts(
        &self,
        streams: &[String],
    ) -> Result<BTreeMap<String, usize>, mongodb::error::Error> {
        let pipeline = vec![
            doc! {"$match": {
                "_id": {"$in": streams},
                "$expr": {"$gt": ["$expires_at", "$$NOW"]},
            }},
            doc! {"$group": {"_id": "$owner.run_id", "n": {"$sum": 1_i64}}},
        ];
        let found = super::aggregated(&self.collection, pipeline).await?;
        Ok(found
            .iter()
            .filter_map(|d| {
                let n = d.get_i64("n").ok().and_then(|n| usize::try_from(n).ok())?;
                Some((d.get_str("_id").ok()?.to_owned(), n))
            })
            .collect())
    }

    /// Every lease, by stream.
    pub async fn all(&self) -> Result<Vec<Lease>, mongodb::error::Error> {
        let docs = super::all_by_id(&self.collection).await?;
        Ok(docs.iter().filter_map(lease_of).collect())
    }
}

/// The update that makes `owner` the holder for `ttl`, one term up.
fn taking(owner: &Owner, ttl: Duration) -> Vec<Document> {
    vec![doc! {"$set": {
        // Literals: a pipeline's `$set` would read a host name starting with `$` as a path.
        "owner": {
            "host": {"$literal": &owner.host},
            "pid": i64::from(owner.pid),
            "run_id": {"$literal": &owner.run_id},
        },
        "term": {"$add": [{"$ifNull": ["$term", 0_i64]}, 1_i64]},
        "acquired_at": "$$NOW",
        "renewed_at": "$$NOW",
        "expires_at": {"$add": ["$$NOW", millis(ttl)]},
    }}]
}

fn lease_of(d: &Document) -> Option<Lease> {
    let owner = d.get_document("owner").ok()?;
    Some(Lease {
        stream: d.get_str("_id").ok()?.to_owned(),
        owner: Owner {
            host: owner.get_str("host").unwrap_or_default().to_owned(),
            pid: owner
                .get_i64("pid")
                .ok()
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0),
            run_id: owner.get_str("run_id").unwrap_or_default().to_owned(),
        },
        term: d.get_i64("term").ok()?,
        acquired_at: *d.get_datetime("acquired_at").ok()?,
        expires_at: *d.get_datetime("expires_at").ok()?,
    })
}

/// This machine's name (best effort), or `CHANGEFLOW_HOST` where the machine's name does
/// not tell instances apart (containers sharing a host name).
fn host_name() -> String {
    std::env::var(HOST_VAR)
        .ok()
        .map(|h| h.trim().chars().take(255).collect::<String>())
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_gone_process_of_this_host_counts_as_exited() {
        let me = Owner::this_process();
        assert!(!me.exited_here(&me), "this process is alive");
        let earlier = Owner {
            run_id: format!("{}-before", me.run_id),
            ..me.clone()
        };
        assert!(
            earlier.exited_here(&me),
            "this pid's earlier process is gone"
        );
        // Above the kernel's largest pid (4 194 304): no such process.
        let gone = Owner {
            pid: 4_194_305,
            ..earlier.clone()
        };
        assert!(gone.exited_here(&me));
        let elsewhere = Owner {
            host: format!("{}-elsewhere", me.host),
            ..gone
        };
        assert!(
            !elsewhere.exited_here(&me),
            "another host's processes are not seen"
        );
    }
}
