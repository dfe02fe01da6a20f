//! `changeflow setup`: creates what changeflow works with, idempotently (running it again
//! changes nothing and says so):
//! - the payments collection with its `$jsonSchema` validator, its index, and the indexes of
//!   the counters and processed events;
//! - the three agent-memory collections with their validators and the indexes of the
//!   design, and change-stream pre- and post-images where decoding needs the previous state
//!   (a thread's `expires_at` when it is deleted, a memory's strength before a change).
//!
//! The validators are committed in `schemas/collections/`.

use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{
    ChangeStreamPreAndPostImages, IndexOptions, ValidationAction, ValidationLevel,
};
use mongodb::{Client, Database, IndexModel};

use crate::config::Config;
use crate::http::payments::PaymentsApi;
use crate::source::connect::connect;
use crate::targets::counters::Counters;
use crate::targets::memory_stats::MemoryStats;

/// The committed validator of the payments collection.
pub(crate) const PAYMENTS_VALIDATOR: &str =
    include_str!("../../schemas/collections/payments.validator.json");
/// The committed validator of the short-term memory collection.
pub(crate) const SHORT_TERM_VALIDATOR: &str =
    include_str!("../../schemas/collections/short_term_memory.validator.json");
/// The committed validator of the episodic memory collection.
pub(crate) const EPISODIC_VALIDATOR: &str =
    include_str!("../../schemas/collections/episodic_memory.validator.json");
/// The committed validator of the semantic memory collection.
pub(crate) const SEMANTIC_VALIDATOR: &str =
    include_str!("../../schemas/collections/semantic_memory.validator.json");

/// Why setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A committed validator is not a JSON document (a build-time mistake).
    #[error("the validator of `{collection}`: {reason}")]
    Validator {
        /// The collection.
        collection: String,
        /// What is wrong.
        reason: String,
    },
    /// The counters' indexes could not be created.
    #[error("creating the counters' indexes: {0}")]
    Counters(#[from] crate::pipeline::target::TargetError),
    /// The server refused a step.
    #[error("{step} `{namespace}`: {source}")]
    Database {
        /// What was being done.
        step: &'static str,
        /// `database.collection`.
        namespace: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
}

/// What setup did to one collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Created it with its validator (and pre- and post-images where needed).
    Created,
    /// It existed; its validator or pre- and post-images setting was brought up to date.
    Updated,
    /// It already was as it should be.
    Unchanged,
}

/// One collection's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `database.collection`.
    pub namespace: String,
    /// What was done.
    pub step: Step,
}

/// A collection as changeflow wants it.
struct CollectionSpec<'a> {
    database: &'a str,
    name: &'a str,
    validator: &'static str,
    indexes: Vec<IndexModel>,
    pre_and_post_images: bool,
}

/// Runs every step, payments first; returns what was done to each collection.
pub async fn run(client: &Client, config: &Config) -> Result<Vec<Report>, SetupError> {
    let mut reports = Vec::new();
    for spec in specs(config) {
        reports.push(ensure_collection(&client.database(spec.database), &spec).await?);
    }
    let payments_db = client.database(&config.payments.database);
    PaymentsApi::new(payments_db.collection(&config.payments.collection))
        .ensure_indexes()
        .await
        .map_err(|source| SetupError::Database {
            step: "creating the index of",
            namespace: format!(
                "{}.{}",
                config.payments.database, config.payments.collection
            ),
            source,
        })?;
    Counters::from_config(client, &config.payments)
        .ensure_indexes()
        .await?;
    MemoryStats::from_config(client, &config.memory)
        .ensure_indexes()
        .await?;
    Ok(reports)
}

fn index(keys: Document) -> IndexModel {
    IndexModel::builder().keys(keys).build()
}

fn unique(keys: Document) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().unique(true).build())
        .build()
}

/// The collections of the payments and memory domains, with the design's indexes.
fn specs(config: &Config) -> Vec<CollectionSpec<'_>> {
    let memory = &config.memory;
    vec![
        CollectionSpec {
            database: &config.payments.database,
            name: &config.payments.collection,
            validator: PAYMENTS_VALIDATOR,
            indexes: Vec::new(),
            // Post-images: each update event carries the payment as that change left it.
            pre_and_post_images: true,
        },
        CollectionSpec {
            database: &memory.database,
            name: &memory.short_term,
            validator: SHORT_TERM_VALIDATOR,
            indexes: vec![
                unique(doc! {"thread_id": 1}),
                IndexModel::builder()
                    .keys(doc! {"expires_at": 1})
                    .options(
                        IndexOptions::builder()
                            .expire_after(Duration::from_secs(0))
                            .build(),
                    )
                    .build(),
            ],
            // A delete by the TTL monitor is told from a manual one by the pre-image.
            pre_and_post_images: true,
        },
        CollectionSpec {
            database: &memory.database,
            name: &memory.episodic,
            validator: EPISODIC_VALIDATOR,
            indexes: vec![
                unique(doc! {"episode_id": 1}),
                index(doc! {"user_id": 1, "started_at": -1}),
                index(doc! {"user_id": 1, "tags": 1, "started_at": -1}),
                index(doc! {"summary": "text"}),
            ],
            // A purged episode's user is only known from the pre-image.
            pre_and_post_images: true,
        },
        CollectionSpec {
            database: &memory.database,
            name: &memory.semantic,
            validator: SEMANTIC_VALIDATOR,
            indexes: vec![
                unique(doc! {"memory_id": 1}),
                index(doc! {"user_id": 1, "type": 1, "strength": -1}),
                index(doc! {"source_episode_id": 1}),
                index(doc! {"user_id": 1, "last_accessed_at": 1}),
            ],
            // Recalled vs decayed compares the strength before and after.
            pre_and_post_images: true,
        },
    ]
}

/// A committed validator as a BSON document.
pub fn validator(collection: &str, json: &str) -> Result<Document, SetupError> {
    let invalid = |reason: String| SetupError::Validator {
        collection: collection.to_owned(),
        reason,
    };
    let json: serde_json::Value = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
    match Bson::try_from(json) {
        Ok(Bson::Document(doc)) => Ok(doc),
        Ok(other) => Err(invalid(format!("expected an object, found {other}"))),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// Creates the collection as `spec` says, or brings an existing one up to date; then its
/// indexes (creating an index that exists changes nothing).
async fn ensure_collection(db: &Database, spec: &CollectionSpec<'_>) -> Result<Report, SetupError> {
    let namespace = format!("{}.{}", spec.database, spec.name);
    let validator = validator(&namespace, spec.validator)?;
    let failed = |step| {
        let namespace = namespace.clone();
        move |source| SetupError::Database {
            step,
            namespace,
            source,
        }
    };
    let listed = db
        .run_command(doc! {"listCollections": 1, "filter": {"name": spec.name}})
        .await
        .map_err(failed("listing"))?;
    let options = listed
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .and_then(|batch| batch.first())
        .and_then(Bson::as_document)
        .map(|info| info.get_document("options").cloned().unwrap_or_default());
    let step = match options {
        None => {
            db.create_collection(spec.name)
                .validator(validator)
                .validation_level(ValidationLevel::Strict)
                .validation_action(ValidationAction::Error)
                .change_stream_pre_and_post_images(
                    ChangeStreamPreAndPostImages::builder()
                        .enabled(spec.pre_and_post_images)
                        .build(),
                )
                .await
                .map_err(failed("creating"))?;
            Step::Created
        }
        Some(options) => {
            let same_validator = options.get_document("validator").ok() == Some(&validator);
            let images = options
                .get_document("changeStreamPreAndPostImages")
                .and_then(|i| i.get_bool("enabled"))
                .unwrap_or(false);
            if same_validator && images == spec.pre_and_post_images {
                Step::Unchanged
            } else {
                db.run_command(doc! {
                    "collMod": spec.name,
                    "validator": validator,
                    "validationLevel": "strict",
                    "validationAction": "error",
                    "changeStreamPreAndPostImages": {"enabled": spec.pre_and_post_images},
                })
                .await
                .map_err(failed("updating"))?;
                Step::Updated
            }
        }
    };
    if !spec.indexes.is_empty() {
        db.collection::<Document>(spec.name)
            .create_indexes(spec.indexes.clone())
            .await
            .map_err(failed("creating the indexes of"))?;
    }
    Ok(Report { namespace, step })
}

/// `changeflow setup`: connects, creates, prints what changed.
pub async fn command(config: &Config) -> anyhow::Result<()> {
    let client = connect(&config.mongodb.uri).await?;
    for report in run(&client, config).await? {
        let namespace = &report.namespace;
        match report.step {
            Step::Created => println!("created {namespace} with its validator"),
            Step::Updated => println!("brought {namespace} up to date"),
            Step::Unchanged => println!("{namespace} is already set up"),
        }
    }
    println!("indexes are in place");
    Ok(())
}
