//! The sessions exactly-once writers commit in, recorded in `changeflow_effect_sessions`
//! so that the transaction a killed process left open can be ended at once with
//! `killSessions` instead of blocking its documents until the server's
//! `transactionLifetimeLimitSeconds` runs out.
//!
//! A writer commits every transaction in one session. Before its first commit it ends the
//! recorded sessions of its handler (their processes are gone, or another run processes the
//! same stream, which only costs that run a retry), then records its own. A session of the
//! same MongoDB user may be ended without the `killAnySession` privilege; with another user
//! the kill is refused, logged, and the orphan expires on the server's clock.

use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, Database, IndexModel};

/// The collection of recorded sessions (in the database of the handler's effects).
pub const COLLECTION: &str = "changeflow_effect_sessions";
/// Records older than this are deleted by a TTL index (the server forgets an idle
/// session after 30 minutes anyway).
const KEEP: Duration = Duration::from_secs(24 * 3600);

/// The recorded sessions of one handler.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    admin: Database,
    records: Collection<Document>,
    handler: &'static str,
}

impl Sessions {
    /// Sessions of `handler`, recorded in `database`.
    pub fn new(client: &Client, database: &Database, handler: &'static str) -> Sessions {
        Sessions {
            admin: client.database("admin"),
            records: database.collection(COLLECTION),
            handler,
        }
    }

    /// Creates the TTL index (idempotent).
    pub async fn ensure_index(&self) -> Result<(), mongodb::error::Error> {
        let ttl = IndexModel::builder()
            .keys(doc! {"at": 1})
            .options(
                IndexOptions::builder()
                    .name("effect_sessions_ttl".to_owned())
                    .expire_after(KEEP)
                    .build(),
            )
            .build();
        self.records.create_index(ttl).await.map(drop)
    }

    /// Records `lsid` (a session's `{id: UUID}`) as this handler's.
    pub async fn record(&self, lsid: &Document) -> Result<(), mongodb::error::Error> {
        let id = session_uuid(lsid)?;
        self.records
            .update_one(
                doc! {"_id": id.clone()},
                doc! {"$set": {"handler": self.handler, "at": DateTime::now()}},
            )
            .upsert(true)
            .await
            .map(drop)
    }

    /// Ends every recorded session of this handler except `own` (aborting any transaction
    /// it left open) and forgets them; returns how many were ended.
    pub async fn end_others(&self, own: &Document) -> Result<usize, mongodb::error::Error> {
        let own = session_uuid(own)?;
        let others = self
            .records
            .distinct("_id", doc! {"handler": self.handler, "_id": {"$ne": own}})
            .await?;
        if others.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Document> = others.iter().map(|id| doc! {"id": id.clone()}).collect();
        self.admin.run_command(doc! {"killSessions": ids}).await?;
        self.records
            .delete_many(doc! {"_id": {"$in": others.clone()}})
            .await?;
        Ok(others.len())
    }
}

/// The UUID of a session id `{id: UUID}`.
fn session_uuid(lsid: &Document) -> Result<Bson, mongodb::error::Error> {
    lsid.get("id").cloned().ok_or_else(|| {
        mongodb::error::Error::custom(format!("session id without an `id` field: {lsid}"))
    })
}
