//! Everything changeflow keeps in MongoDB: the `changeflow_*` collections (checkpoints,
//! run presence, dead letters, history gaps, the namespace log, replays) and how their writes are
//! retried.

pub mod checkpoints;
pub mod dead_letters;
pub mod gaps;
pub mod leases;
pub mod namespace_log;
pub mod presence;
pub mod replays;
pub mod retry;
pub mod snapshots;

/// A write refused for a duplicate key (E11000): an insert or upsert met an existing `_id`.
pub(crate) fn is_duplicate(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

/// Every document of `collection`, in `_id` order.
pub(crate) async fn all_by_id(
    collection: &mongodb::Collection<mongodb::bson::Document>,
) -> Result<Vec<mongodb::bson::Document>, mongodb::error::Error> {
    use futures::TryStreamExt;
    collection
        .find(mongodb::bson::doc! {})
        .sort(mongodb::bson::doc! {"_id": 1})
        .await?
        .try_collect()
        .await
}

/// Every document `pipeline` gives over `collection`.
pub(crate) async fn aggregated(
    collection: &mongodb::Collection<mongodb::bson::Document>,
    pipeline: Vec<mongodb::bson::Document>,
) -> Result<Vec<mongodb::bson::Document>, mongodb::error::Error> {
    use futures::TryStreamExt;
    collection.aggregate(pipeline).await?.try_collect().await
}

/// The milliseconds `$subtract` of two dates put in `field` (an int64, or an int32 from
/// some servers); 0 when missing.
pub(crate) fn millis_in(d: &mongodb::bson::Document, field: &str) -> i64 {
    d.get_i64(field)
        .or_else(|_| d.get_i32(field).map(i64::from))
        .unwrap_or(0)
}

/// A majority write the server applied but could not get a majority to acknowledge in
/// time (`wtimeout`: the set has no majority, or it lags).
pub(crate) fn is_write_concern_timeout(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => w.code == 64,
        ErrorKind::Command(c) => c.code == 64,
        _ => false,
    }
}

/// Majority write concern that gives up waiting after `timeout` (the write stays applied
/// on the primary).
pub(crate) fn majority_within(timeout: std::time::Duration) -> mongodb::options::WriteConcern {
    mongodb::options::WriteConcern::builder()
        .w(mongodb::options::Acknowledgment::Majority)
        .w_timeout(Some(timeout))
        .build()
}
