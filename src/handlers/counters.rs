//! Per-product payment counters, exactly once under replay and crash: the event id is
//! recorded in `changeflow_processed_events` in the same transaction as the `$inc`, so a
//! second delivery of the same event finds its id and changes nothing.

use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use futures::FutureExt;
use futures::future::BoxFuture;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::error::{
    Error as DriverError, ErrorKind, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT, WriteFailure,
};
use mongodb::options::{IndexOptions, WriteConcern};
use mongodb::{Client, ClientSession, Collection, IndexModel};

use super::{Handler, HandlerError};
use crate::domain::payments::{PaymentEvent, PaymentEventKind, PaymentSnapshot};

/// Collection of processed event ids (shared by exactly-once handlers; ids are prefixed
/// by the handler's name).
pub const PROCESSED_EVENTS: &str = "changeflow_processed_events";
/// Collection of the counters, one document per product code.
pub const COUNTERS: &str = "payment_counters";
/// How long a transaction keeps retrying transient errors (write conflicts on a busy
/// product's counter) before the error goes to the caller.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// The handler's name in `[routes]`, logs and metrics.
pub const NAME: &str = "counters";
/// The event kinds it can take.
pub const KINDS: &[PaymentEventKind] = &[PaymentEventKind::Confirmed, PaymentEventKind::Failed];

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The counter moved.
    Counted,
    /// The event had been counted before: nothing changed.
    Duplicate,
}

/// Counts CONFIRMED and FAILED payments per product.
#[derive(Debug, Clone)]
pub struct Counters {
    client: Client,
    counters: Collection<Document>,
    processed: Collection<Document>,
    processed_ttl: Duration,
}

impl Counters {
    /// Counters in `database`; processed ids are kept `processed_ttl` (longer than any
    /// replay you may run: an event replayed after its id expired is counted again).
    pub fn new(client: &Client, database: &str, processed_ttl: Duration) -> Counters {
        let db = client.database(database);
        Counters {
            client: client.clone(),
            counters: db.collection(COUNTERS),
            processed: db.collection(PROCESSED_EVENTS),
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
            .map_err(|source| HandlerError::Database {
                handler: NAME,
                source,
            })?;
        Ok(())
    }

    /// Counts `snapshot`'s outcome once: a transaction records the event id and applies
    /// the `$inc`; a duplicate id aborts it as already counted.
    pub async fn apply(
        &self,
        snapshot: &PaymentSnapshot,
        field: &str,
    ) -> Result<Applied, HandlerError> {
        let processed_id = format!("{NAME}:{}", snapshot.meta.event_id);
        let product = &snapshot.payment.product;
        let database = |source| HandlerError::Database {
            handler: NAME,
            source,
        };
        let mut session = self.client.start_session().await.map_err(database)?;
        // Jittered backoff spreads out transactions that collide on one counter document.
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
                .map_err(database)?;
            let body = self
                .transaction_body(
                    &mut session,
                    &processed_id,
                    &product.code,
                    &product.name,
                    field,
                )
                .await;
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
                        None => return Err(database(e)),
                    }
                }
                Err(e) => return Err(database(e)),
            }
        }
    }

    async fn transaction_body(
        &self,
        session: &mut ClientSession,
        processed_id: &str,
        product_code: &str,
        product_name: &str,
        field: &str,
    ) -> Result<(), DriverError> {
        self.processed
            .insert_one(doc! {"_id": processed_id, "at": DateTime::now()})
            .session(&mut *session)
            .await?;
        self.counters
            .update_one(
                doc! {"_id": product_code},
                doc! {
                    "$inc": {field: 1_i64},
                    "$set": {"productName": product_name, "updatedAt": DateTime::now()},
                },
            )
            .upsert(true)
            .session(&mut *session)
            .await?;
        Ok(())
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

impl Handler for Counters {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self, kind: PaymentEventKind) -> bool {
        KINDS.contains(&kind)
    }

    fn handle<'a>(&'a self, event: &'a PaymentEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
        async move {
            match event {
                PaymentEvent::Confirmed(s) => self.apply(s, "successfulPayments").await.map(drop),
                PaymentEvent::Failed(s) => self.apply(s, "failedPayments").await.map(drop),
                _ => Ok(()),
            }
        }
        .boxed()
    }
}
