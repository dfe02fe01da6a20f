//! Which document an update event carries. Where every watched collection of a stream keeps
//! change-stream post-images (`changeStreamPreAndPostImages`, which `changeflow setup`
//! turns on), the stream reads with `fullDocument: whenAvailable`: each update carries the
//! document exactly as that change left it, the same on every re-read and replay. Otherwise
//! it reads with `updateLookup`: the document as it is when the change is read, which may
//! hold later changes; such events are marked (`fulldocument=lookup`).

use mongodb::Database;
use mongodb::bson::{Bson, doc};
use mongodb::options::FullDocumentType;

/// How a stream's update events get their document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Images {
    /// Post-images: the state each change left.
    PostImages,
    /// Looked up when read; the collections without post-images (or not created yet).
    Lookup {
        /// Watched collections without post-images.
        without: Vec<String>,
    },
}

impl Images {
    /// The change stream's `fullDocument` option.
    pub fn full_document(&self) -> FullDocumentType {
        match self {
            Images::PostImages => FullDocumentType::WhenAvailable,
            Images::Lookup { .. } => FullDocumentType::UpdateLookup,
        }
    }

    /// Whether updates carry a looked-up document.
    pub fn is_lookup(&self) -> bool {
        matches!(self, Images::Lookup { .. })
    }

    /// `post-images` or `lookup`, as shown by `status` and `check-config`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Images::PostImages => "post-images",
            Images::Lookup { .. } => "lookup",
        }
    }
}

/// The mode of a stream over `collections` of `db`: post-images only if every one of them
/// exists and keeps them (a collection created later without them would send updates with
/// no document at all).
pub async fn of(db: &Database, collections: &[String]) -> Result<Images, mongodb::error::Error> {
    let reply = db
        .run_command(
            doc! {"listCollections": 1, "filter": {"name": {"$in": collections}},
            "nameOnly": false},
        )
        .await?;
    let listed: Vec<(String, bool)> = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|batch| {
            batch
                .iter()
                .filter_map(Bson::as_document)
                .filter_map(|info| {
                    let name = info.get_str("name").ok()?.to_owned();
                    let enabled = info
                        .get_document("options")
                        .and_then(|o| o.get_document("changeStreamPreAndPostImages"))
                        .and_then(|i| i.get_bool("enabled"))
                        .unwrap_or(false);
                    Some((name, enabled))
                })
                .collect()
        })
        .unwrap_or_default();
    let without: Vec<String> = collections
        .iter()
        .filter(|c| !listed.iter().any(|(name, on)| name == *c && *on))
        .cloned()
        .collect();
    Ok(if without.is_empty() {
        Images::PostImages
    } else {
        Images::Lookup { without }
    })
}
