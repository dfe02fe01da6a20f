//! Sets a payment's outcome with a conditional update: only a PENDING payment changes, so
//! a replayed or late outcome for a payment that is already settled changes nothing.

use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

use super::HandlerError;
use crate::domain::payments::PaymentStatus;

/// The outcome writer used by the provider simulator.
#[derive(Debug, Clone)]
pub struct StatusUpdater {
    payments: Collection<Document>,
}

/// What a call to [`StatusUpdater::settle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The payment was PENDING and now has the outcome.
    Applied,
    /// The payment was not PENDING (already settled, or gone): nothing changed.
    AlreadySettled,
}

impl StatusUpdater {
    /// Writes to `collection` in `database`.
    pub fn new(database: &Database, collection: &str) -> StatusUpdater {
        StatusUpdater {
            payments: database.collection(collection),
        }
    }

    /// Sets the payment whose document key is `key` to `outcome` if it is still PENDING,
    /// acknowledged by a majority so a failover cannot undo it.
    pub async fn settle(
        &self,
        key: &Document,
        outcome: PaymentStatus,
    ) -> Result<Settled, HandlerError> {
        if outcome == PaymentStatus::Pending {
            return Err(HandlerError::Permanent {
                handler: "status_updater",
                reason: "PENDING is not an outcome".into(),
            });
        }
        let mut filter = key.clone();
        filter.insert("status", PaymentStatus::Pending.as_str());
        let result = self
            .payments
            .update_one(
                filter,
                doc! {"$set": {"status": outcome.as_str(), "updated_at": DateTime::now()}},
            )
            .write_concern(WriteConcern::majority())
            .await
            .map_err(|source| HandlerError::Database {
                handler: "status_updater",
                source,
            })?;
        Ok(if result.modified_count == 1 {
            Settled::Applied
        } else {
            Settled::AlreadySettled
        })
    }
}
