//! Sets payments' outcomes with conditional updates: only a PENDING payment changes, so a
//! replayed or late outcome for a payment that is already settled changes nothing.
//!
//! One writer task takes every outcome waiting and sets them with one `updateMany` per
//! outcome (majority-acknowledged, so a failover cannot undo them): a backlog settles at
//! the speed of batches, not of one round trip per payment.

use super::batch::{self, Batches, Submit, Waiting};
use super::write_errors::is_permanent;
use crate::domain::payments::PaymentStatus;
use crate::pipeline::target::TargetError;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::Error as DriverError;
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

const NAME: &str = "status_updater";
/// Outcomes set by one batch at most.
const MAX_BATCH: usize = 1000;

/// The outcome writer used by the provider simulator.
#[derive(Debug, Clone)]
pub struct StatusUpdater {
    requests: Submit<Outcome, Result<(), TargetError>>,
}

/// One payment's outcome.
struct Outcome {
    key: Document,
    outcome: PaymentStatus,
}

/// An outcome waiting for the writer, and where its answer goes.
type Settle = Waiting<Outcome, Result<(), TargetError>>;

impl StatusUpdater {
    /// Writes to `collection` in `database`. Starts the writer task (it ends when the last
    /// clone is dropped), so it must be called within a Tokio runtime.
    pub fn new(database: &Database, collection: &str) -> StatusUpdater {
        let (requests, batches) = batch::queue(MAX_BATCH);
        tokio::spawn(write_loop(database.collection(collection), batches));
        StatusUpdater { requests }
    }

    /// Sets the payment whose document key is `key` to `outcome` if it is still PENDING;
    /// returns once a majority acknowledged it (or the payment was not PENDING).
    pub async fn settle(&self, key: &Document, outcome: PaymentStatus) -> Result<(), TargetError> {
        if outcome == PaymentStatus::Pending {
            return Err(TargetError::Permanent {
                handler: NAME,
                reason: "PENDING is not an outcome".into(),
            });
        }
        let item = Outcome {
            key: key.clone(),
            outcome,
        };
        self.requests.call(item, NAME).await?
    }
}

async fn write_loop(
    payments: Collection<Document>,
    mut batches: Batches<Outcome, Result<(), TargetError>>,
) {
    while let Some(batch) = batches.next().await {
        settle_batch(&payments, batch).await;
    }
}

/// Sets each outcome group of `batch` with one update; a group the server refuses is set
/// one payment at a time, so only the payment at fault gets the error.
async fn settle_batch(payments: &Collection<Document>, batch: Vec<Settle>) {
    let (confirmed, failed): (Vec<Settle>, Vec<Settle>) = batch
        .into_iter()
        .partition(|s| s.item.outcome == PaymentStatus::Confirmed);
    for group in [confirmed, failed] {
        if group.is_empty() {
            continue;
        }
        match update(payments, &group).await {
            Ok(()) => group.into_iter().for_each(|s| s.answer(Ok(()))),
            Err(e) if is_permanent(&e) && group.len() > 1 => {
                for settle in group {
                    let result = update(payments, std::slice::from_ref(&settle)).await;
                    settle.answer(result.map_err(error));
                }
            }
            Err(e) => group
                .into_iter()
                .for_each(|s| s.answer(Err(error(e.clone())))),
        }
    }
}

/// One `updateMany` setting every payment of `group` (one outcome) that is still PENDING.
async fn update(payments: &Collection<Document>, group: &[Settle]) -> Result<(), DriverError> {
    let Some(first) = group.first() else {
        return Ok(());
    };
    let mut filter = keys_filter(group.iter().map(|s| &s.item.key));
    filter.insert("status", PaymentStatus::Pending.as_str());
    payments
        .update_many(
            filter,
            doc! {"$set": {"status": first.item.outcome.as_str(), "updated_at": DateTime::now()}},
        )
        .write_concern(WriteConcern::majority())
        .await
        .map(drop)
}

/// A filter matching the documents with `keys`: `_id: {$in}` when every key is an `_id`
/// alone (the common case, which uses the `_id` index), else an `$or` of the keys.
fn keys_filter<'a>(keys: impl Iterator<Item = &'a Document> + Clone) -> Document {
    let ids: Option<Vec<Bson>> = keys
        .clone()
        .map(|k| match (k.len(), k.get("_id")) {
            (1, Some(id)) => Some(id.clone()),
            _ => None,
        })
        .collect();
    match ids {
        Some(ids) => doc! {"_id": {"$in": ids}},
        None => doc! {"$or": keys.cloned().collect::<Vec<Document>>()},
    }
}

fn error(source: DriverError) -> TargetError {
    if is_permanent(&source) {
        TargetError::Permanent {
            handler: NAME,
            reason: crate::observe::error_text::Tidy(&source).to_string(),
        }
    } else {
        TargetError::Database {
            handler: NAME,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_filter_uses_in_for_plain_ids_and_or_otherwise() {
        let plain = [doc! {"_id": 1}, doc! {"_id": "b"}];
        assert_eq!(keys_filter(plain.iter()), doc! {"_id": {"$in": [1, "b"]}});
        let sharded = [doc! {"_id": 1}, doc! {"region": "eu", "_id": 2}];
        assert_eq!(
            keys_filter(sharded.iter()),
            doc! {"$or": [{"_id": 1}, {"region": "eu", "_id": 2}]}
        );
    }
}
