//! Per-product payment counters, exactly once under replay, crash and any concurrency (see
//! [`exactly_once`](super::exactly_once)): a second delivery of the same event changes
//! nothing, and the effects of many events commit together.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use mongodb::Client;
use mongodb::bson::{DateTime, doc};

use super::exactly_once::{Counting, ExactlyOnce, Increment};
use crate::config::PaymentsConfig;
use crate::domain::payments::{PaymentEvent, PaymentSnapshot, PaymentStatus};
use crate::domain::{DomainEvent, EventKind};
use crate::pipeline::target::TargetError;

pub use super::exactly_once::{Applied, PROCESSED_EVENTS};

/// Collection of the counters, one document per product code.
pub const COUNTERS: &str = "payment_counters";
/// The handler's name in `[routes]`, logs and metrics.
pub(crate) const NAME: &str = "counters";
/// The event kinds it can take.
pub const KINDS: &[EventKind] = &[
    EventKind::PaymentConfirmed,
    EventKind::PaymentFailed,
    EventKind::PaymentObserved,
];

/// Counts CONFIRMED and FAILED payments per product: each payment's first terminal
/// outcome once, whether it arrives live, replayed or from a snapshot
/// (`payment_observed` in status CONFIRMED or FAILED).
#[derive(Debug, Clone)]
pub struct Counters {
    once: ExactlyOnce,
}

impl Counters {
    /// Counters in `database`; processed ids are kept `processed_ttl` (longer than any
    /// replay you may run: an event replayed after its id expired is counted again).
    pub fn new(client: &Client, database: &str, processed_ttl: Duration) -> Counters {
        Counters {
            once: ExactlyOnce::new(client, database, COUNTERS, NAME, processed_ttl),
        }
    }

    /// The counters of the payments database (`payments.processed_ttl_hours`).
    pub fn from_config(client: &Client, payments: &PaymentsConfig) -> Counters {
        let ttl = super::hours(payments.processed_ttl_hours);
        Counters::new(client, &payments.database, ttl)
    }

    /// Creates the TTL indexes on processed ids and effect sessions (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), TargetError> {
        self.once.ensure_indexes().await
    }

    /// Counts `snapshot`'s outcome in `field`, once per payment: the processed id is the
    /// payment's (`counters:outcome:<payment id>`, kept for good), so a later change or
    /// snapshot of the same payment counts nothing more.
    pub async fn apply(
        &self,
        snapshot: &PaymentSnapshot,
        field: &str,
    ) -> Result<Applied, TargetError> {
        let product = &snapshot.payment.product;
        let increment = Increment {
            id: product.code.clone(),
            inc: doc! {field: 1_i64},
            set: doc! {"productName": &product.name, "updatedAt": DateTime::now()},
        };
        let key = format!("outcome:{}", snapshot.payment.id);
        self.once.apply_once_per(&key, increment).await
    }
}

impl Counting for Counters {
    const NAME: &'static str = NAME;
    const KINDS: &'static [EventKind] = KINDS;

    fn count<'a>(&'a self, event: &'a DomainEvent) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            match event {
                DomainEvent::Payment(PaymentEvent::Confirmed(s)) => {
                    self.apply(s, "successfulPayments").await.map(drop)
                }
                DomainEvent::Payment(PaymentEvent::Failed(s)) => {
                    self.apply(s, "failedPayments").await.map(drop)
                }
                DomainEvent::Payment(PaymentEvent::Observed(s)) => match s.payment.status {
                    PaymentStatus::Confirmed => self.apply(s, "successfulPayments").await.map(drop),
                    PaymentStatus::Failed => self.apply(s, "failedPayments").await.map(drop),
                    PaymentStatus::Pending => Ok(()),
                },
                _ => Ok(()),
            }
        }
        .boxed()
    }
}
