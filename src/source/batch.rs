//! How many changes one server batch asks for. `engine.batch_size` bounds the count; the
//! bytes matter as much. Large changes (a memory with a 1 024-number embedding, updated
//! with both images, is about 30 KB) fill the server's 16 MiB cap at 1 000 a batch, and
//! the reply and its parsed batch are then held at once. So each time a stream opens, the
//! count is fitted to [`BATCH_BYTES`] from what the server says of the watched
//! collections: their average document size (`$collStats`), counted twice where the
//! collection keeps pre-images (the change then carries the document before and after).

use futures::TryStreamExt;
use futures::future::try_join_all;
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};

/// What one batch should hold at most, about.
pub const BATCH_BYTES: u64 = 4 << 20;
/// The fewest changes a batch asks for, however large they are.
pub const MIN_BATCH: u32 = 16;
/// A change's envelope and update description, beside its documents.
const ENVELOPE_BYTES: u64 = 1024;

/// The batch size for a stream over `collections` of `db`: `most` (`engine.batch_size`),
/// or fewer where the collections' documents are large. Anything the server does not say
/// (no privilege, no collection yet, no documents) leaves `most`.
pub async fn size(db: &Database, collections: &[String], most: u32) -> u32 {
    let looked_up = futures::try_join!(
        with_pre_images(db, collections),
        try_join_all(collections.iter().map(|c| average_size(db, c))),
    );
    let (with_images, averages) = match looked_up {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(database = %db.name(), error = %e, "no collection statistics; batch size unchanged");
            return most;
        }
    };
    let largest = collections
        .iter()
        .zip(averages)
        .map(|(c, size)| {
            if with_images.contains(c) {
                size * 2
            } else {
                size
            }
        })
        .max()
        .unwrap_or(0);
    fit(largest, most)
}

/// The count that keeps a batch of changes whose documents take `document_bytes` within
/// [`BATCH_BYTES`], between [`MIN_BATCH`] and `most`.
pub fn fit(document_bytes: u64, most: u32) -> u32 {
    let per_change = document_bytes + ENVELOPE_BYTES;
    let fits = (BATCH_BYTES / per_change).min(u64::from(u32::MAX)) as u32;
    fits.clamp(MIN_BATCH.min(most), most)
}

/// Which of `collections` keep pre-images (`changeStreamPreAndPostImages`).
async fn with_pre_images(
    db: &Database,
    collections: &[String],
) -> mongodb::error::Result<Vec<String>> {
    let specs: Vec<_> = db
        .list_collections()
        .filter(doc! {"name": {"$in": collections}})
        .await?
        .try_collect()
        .await?;
    Ok(specs
        .into_iter()
        .filter(|s| {
            s.options
                .change_stream_pre_and_post_images
                .as_ref()
                .is_some_and(|o| o.enabled)
        })
        .map(|s| s.name)
        .collect())
}

/// The average document size of `collection` in bytes (0 when it has none or is missing).
async fn average_size(db: &Database, collection: &str) -> mongodb::error::Result<u64> {
    let stats: Vec<Document> = db
        .collection::<Document>(collection)
        .aggregate([doc! {"$collStats": {"storageStats": {}}}])
        .await?
        .try_collect()
        .await
        .or_else(|e| match e.kind.as_ref() {
            // NamespaceNotFound: not created yet.
            mongodb::error::ErrorKind::Command(c) if c.code == 26 => Ok(Vec::new()),
            _ => Err(e),
        })?;
    let average = stats
        .first()
        .and_then(|s| s.get_document("storageStats").ok())
        .and_then(|s| s.get("avgObjSize"))
        .map_or(0, |v| match v {
            Bson::Int32(n) => u64::try_from(*n).unwrap_or(0),
            Bson::Int64(n) => u64::try_from(*n).unwrap_or(0),
            Bson::Double(n) if n.is_finite() && *n > 0.0 => *n as u64,
            _ => 0,
        });
    Ok(average)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_documents_keep_the_configured_count_and_large_ones_fit_the_bytes() {
        assert_eq!(fit(0, 1000), 1000);
        assert_eq!(fit(200, 1000), 1000);
        // A memory with an embedding, both images: about 30 KB a change.
        let memory = fit(2 * 14_500, 1000);
        assert!((130..=145).contains(&memory), "{memory}");
        assert_eq!(fit(16 * 1024 * 1024, 1000), MIN_BATCH);
        // Never above what was configured, even when that is below the floor.
        assert_eq!(fit(16 * 1024 * 1024, 4), 4);
        assert_eq!(fit(100, 50), 50);
    }
}
