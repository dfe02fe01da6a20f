//! Per-product payment counters, exactly once under replay and crash (see
//! [`exactly_once`](super::exactly_once)): a second delivery of the same event changes
//! nothing.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::error::Error as DriverError;
use mongodb::{Client, ClientSession, Collection};

use super::exactly_once::{Effect, ExactlyOnce};
use super::{Handler, HandlerError};
use crate::domain::payments::{PaymentEvent, PaymentSnapshot};
use crate::domain::{DomainEvent, EventKind};

pub use super::exactly_once::{Applied, PROCESSED_EVENTS};

/// Collection of the counters, one document per product code.
pub const COUNTERS: &str = "payment_counters";
/// The handler's name in `[routes]`, logs and metrics.
pub const NAME: &str = "counters";
/// The event kinds it can take.
pub const KINDS: &[EventKind] = &[EventKind::PaymentConfirmed, EventKind::PaymentFailed];

/// Counts CONFIRMED and FAILED payments per product.
#[derive(Debug, Clone)]
pub struct Counters {
    counters: Collection<Document>,
    once: ExactlyOnce,
}

impl Counters {
    /// Counters in `database`; processed ids are kept `processed_ttl` (longer than any
    /// replay you may run: an event replayed after its id expired is counted again).
    pub fn new(client: &Client, database: &str, processed_ttl: Duration) -> Counters {
        Counters {
            counters: client.database(database).collection(COUNTERS),
            once: ExactlyOnce::new(client, database, NAME, processed_ttl),
        }
    }

    /// Creates the TTL index on processed ids (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), HandlerError> {
        self.once.ensure_indexes().await
    }

    /// Counts `snapshot`'s outcome in `field` once.
    pub async fn apply(
        &self,
        snapshot: &PaymentSnapshot,
        field: &str,
    ) -> Result<Applied, HandlerError> {
        let increment = Increment {
            counters: &self.counters,
            product_code: &snapshot.payment.product.code,
            product_name: &snapshot.payment.product.name,
            field,
        };
        self.once.apply(snapshot.meta.event_id, &increment).await
    }
}

/// One product's counter moving by one.
struct Increment<'a> {
    counters: &'a Collection<Document>,
    product_code: &'a str,
    product_name: &'a str,
    field: &'a str,
}

impl Effect for Increment<'_> {
    fn apply<'s>(
        &'s self,
        session: &'s mut ClientSession,
    ) -> BoxFuture<'s, Result<(), DriverError>> {
        async move {
            self.counters
                .update_one(
                    doc! {"_id": self.product_code},
                    doc! {
                        "$inc": {self.field: 1_i64},
                        "$set": {"productName": self.product_name, "updatedAt": DateTime::now()},
                    },
                )
                .upsert(true)
                .session(session)
                .await
                .map(drop)
        }
        .boxed()
    }
}

impl Handler for Counters {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self, kind: EventKind) -> bool {
        KINDS.contains(&kind)
    }

    fn handle<'a>(&'a self, event: &'a DomainEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
        async move {
            match event {
                DomainEvent::Payment(PaymentEvent::Confirmed(s)) => {
                    self.apply(s, "successfulPayments").await.map(drop)
                }
                DomainEvent::Payment(PaymentEvent::Failed(s)) => {
                    self.apply(s, "failedPayments").await.map(drop)
                }
                _ => Ok(()),
            }
        }
        .boxed()
    }
}
