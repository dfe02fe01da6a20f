//! Exactly-once counter effects under replay and crash: the event id is recorded in
//! `changeflow_processed_events` in the same transaction as the `$inc`, so a second
//! delivery of the same event finds its id and changes nothing.

use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::error::{
    Error as DriverError, ErrorKind, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT, WriteFailure,
};
use mongodb::options::{IndexOptions, WriteConcern};
use mongodb::{Client, ClientSession, Collection, IndexModel};

use super::HandlerError;
use crate::domain::EventId;

/// Collection of processed event ids (shared by exactly-once handlers; ids are prefixed
/// by the handler's name).
pub const PROCESSED_EVENTS: &str = "changeflow_processed_events";
/// How long a transaction keeps retrying transient errors (write conflicts on a busy
/// document) before the error goes to the caller.
const RETRY_BUDGET: Duration = Duration::from_secs(30);

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The effect took place.
    Counted,
    /// The event had been applied before: nothing changed.
    Duplicate,
}

/// The effect of one event: counters of one document move (`$inc`), other fields are
/// set (`$set`); the document is created when missing.
#[derive(Debug, Clone)]
pub struct Increment<'a> {
    /// The collection of the counters.
    pub collection: &'a Collection<Document>,
    /// The counters' document.
    pub id: &'a str,
    /// `$inc`: field → amount.
    pub inc: Document,
    /// `$set`: field → value.
    pub set: Document,
}

/// Applies effects at most once per event id, for one handler, in one database.
#[derive(Debug, Clone)]
pub struct ExactlyOnce {
    client: Client,
    processed: Collection<Document>,
    handler: &'static str,
    processed_ttl: Duration,
}

impl ExactlyOnce {
    /// Records `handler`'s processed ids in `database`, kept `processed_ttl` (longer than
    /// any replay you may run: an event replayed after its id expired applies again).
    pub fn new(
        client: &Client,
        database: &str,
        handler: &'static str,
        processed_ttl: Duration,
    ) -> ExactlyOnce {
        ExactlyOnce {
            client: client.clone(),
            processed: client.database(database).collection(PROCESSED_EVENTS),
            handler,
            processed_ttl,
        }
    }

    /// Creates the TTL index on processed ids (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), HandlerError> {
        let ttl = IndexModel::builder()
            .keys(doc! {"at": 1})
            .options(
                IndexOptions::builder()
                    .name("processed_ttl".to_owned())
                    .expire_after(self.processed_ttl)
                    .build(),
            )
            .build();
        self.processed
            .create_index(ttl)
            .await
            .map_err(|source| self.database_error(source))?;
        Ok(())
    }

    fn database_error(&self, source: DriverError) -> HandlerError {
        HandlerError::Database {
            handler: self.handler,
            source,
        }
    }

    /// Applies `effect` for `event_id` once: a transaction records the id and performs the
    /// effect; a duplicate id aborts it as already applied.
    pub async fn apply(
        &self,
        event_id: EventId,
        effect: &Increment<'_>,
    ) -> Result<Applied, HandlerError> {
        let processed_id = format!("{}:{event_id}", self.handler);
        let mut session = self
            .client
            .start_session()
            .await
            .map_err(|e| self.database_error(e))?;
        // Jittered backoff spreads out transactions that collide on one document.
        let mut backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(2))
            .with_max_interval(Duration::from_millis(200))
            .with_max_elapsed_time(Some(RETRY_BUDGET))
            .build();
        loop {
            session
                .start_transaction()
                .write_concern(WriteConcern::majority())
                .await
                .map_err(|e| self.database_error(e))?;
            let body = self.body(&mut session, &processed_id, effect).await;
            let outcome = match body {
                Ok(()) => commit_with_retry(&mut session)
                    .await
                    .map(|()| Applied::Counted),
                Err(e) if is_duplicate_key(&e) => {
                    let _ = session.abort_transaction().await;
                    return Ok(Applied::Duplicate);
                }
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    Err(e)
                }
            };
            match outcome {
                Ok(applied) => return Ok(applied),
                Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => {
                    match backoff.next_backoff() {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => return Err(self.database_error(e)),
                    }
                }
                Err(e) => return Err(self.database_error(e)),
            }
        }
    }

    async fn body(
        &self,
        session: &mut ClientSession,
        processed_id: &str,
        effect: &Increment<'_>,
    ) -> Result<(), DriverError> {
        self.processed
            .insert_one(doc! {"_id": processed_id, "at": DateTime::now()})
            .session(&mut *session)
            .await?;
        effect
            .collection
            .update_one(
                doc! {"_id": effect.id},
                doc! {"$inc": effect.inc.clone(), "$set": effect.set.clone()},
            )
            .upsert(true)
            .session(session)
            .await
            .map(drop)
    }
}

async fn commit_with_retry(session: &mut ClientSession) -> Result<(), DriverError> {
    loop {
        match session.commit_transaction().await {
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => continue,
            other => return other,
        }
    }
}

fn is_duplicate_key(e: &DriverError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}
