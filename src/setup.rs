//! `changeflow setup`: creates what changeflow works with — the payments collection with
//! its `$jsonSchema` validator (`schemas/collections/payments.validator.json`), the indexes
//! of payments, counters and processed events — idempotently: running it again changes
//! nothing and says so.

use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Database};

use crate::config::Config;
use crate::handlers::counters::Counters;
use crate::http::payments::PaymentsApi;

/// The committed validator of the payments collection.
pub const PAYMENTS_VALIDATOR: &str = include_str!("../schemas/collections/payments.validator.json");

/// Why setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The committed validator is not a JSON document (a build-time mistake).
    #[error("schemas/collections/payments.validator.json: {0}")]
    Validator(String),
    /// The counters' indexes could not be created.
    #[error("creating the counters' indexes: {0}")]
    Counters(#[from] crate::handlers::HandlerError),
    /// The server refused a step.
    #[error("{step}: {source}")]
    Database {
        /// What was being done.
        step: &'static str,
        /// The driver's error.
        source: mongodb::error::Error,
    },
}

/// What one setup step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Created the collection with the validator.
    Created(String),
    /// The collection existed; its validator was replaced.
    ValidatorUpdated(String),
    /// The collection already had this validator.
    Unchanged(String),
}

/// The validator as a BSON document.
pub fn payments_validator() -> Result<Document, SetupError> {
    let json: serde_json::Value = serde_json::from_str(PAYMENTS_VALIDATOR)
        .map_err(|e| SetupError::Validator(e.to_string()))?;
    match Bson::try_from(json) {
        Ok(Bson::Document(doc)) => Ok(doc),
        Ok(other) => Err(SetupError::Validator(format!(
            "expected an object, found {other}"
        ))),
        Err(e) => Err(SetupError::Validator(e.to_string())),
    }
}

/// Runs every step; returns what the collection step did.
pub async fn run(client: &Client, config: &Config) -> Result<Step, SetupError> {
    let db = client.database(&config.payments.database);
    let step = ensure_validated_collection(&db, &config.payments.collection).await?;
    PaymentsApi::new(db.collection(&config.payments.collection))
        .ensure_indexes()
        .await
        .map_err(|source| SetupError::Database {
            step: "creating the payments index",
            source,
        })?;
    Counters::new(
        client,
        &config.payments.database,
        Duration::from_secs(config.payments.processed_ttl_hours * 3600),
    )
    .ensure_indexes()
    .await?;
    Ok(step)
}

/// Creates `name` with the payments validator, or brings an existing collection's
/// validator up to date.
async fn ensure_validated_collection(db: &Database, name: &str) -> Result<Step, SetupError> {
    let validator = payments_validator()?;
    let failed = |step| move |source| SetupError::Database { step, source };
    let existing = db
        .run_command(doc! {"listCollections": 1, "filter": {"name": name}})
        .await
        .map_err(failed("listing collections"))?;
    let current = existing
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .and_then(|batch| batch.first())
        .and_then(Bson::as_document)
        .map(|info| {
            info.get_document("options")
                .ok()
                .and_then(|o| o.get_document("validator").ok())
                .cloned()
        });
    match current {
        None => {
            db.create_collection(name)
                .validator(validator)
                .validation_level(mongodb::options::ValidationLevel::Strict)
                .validation_action(mongodb::options::ValidationAction::Error)
                .await
                .map_err(failed("creating the payments collection"))?;
            Ok(Step::Created(name.to_owned()))
        }
        Some(Some(found)) if found == validator => Ok(Step::Unchanged(name.to_owned())),
        Some(_) => {
            db.run_command(doc! {
                "collMod": name,
                "validator": validator,
                "validationLevel": "strict",
                "validationAction": "error",
            })
            .await
            .map_err(failed("updating the payments validator"))?;
            Ok(Step::ValidatorUpdated(name.to_owned()))
        }
    }
}
