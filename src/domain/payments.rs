//! Payment events: a payment requested, settled, changed or deleted. The decode rules are
//! in `crate::decode::payments`.

use std::str::FromStr;

use crate::domain::money::Amount;

use super::{ChangeMeta, EventKind};

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Created, waiting for the provider.
    Pending,
    /// The provider accepted it.
    Confirmed,
    /// The provider refused it.
    Failed,
}

impl PaymentStatus {
    /// The value stored in MongoDB.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Confirmed => "CONFIRMED",
            PaymentStatus::Failed => "FAILED",
        }
    }
}

impl FromStr for PaymentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "PENDING" => Ok(PaymentStatus::Pending),
            "CONFIRMED" => Ok(PaymentStatus::Confirmed),
            "FAILED" => Ok(PaymentStatus::Failed),
            other => Err(format!(
                "unknown status `{}` (expected PENDING, CONFIRMED or FAILED)",
                super::excerpt(other)
            )),
        }
    }
}

/// What was bought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Product code (a UUID in the reference sample; any non-empty string is accepted).
    pub code: String,
    /// Display name.
    pub name: String,
}

/// A payment document as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The document's `_id` (UUID string, or BSON UUID rendered hyphenated).
    pub id: String,
    /// Unit price × quantity; exact, digit for digit as the Decimal128 holds it.
    pub amount: Amount,
    /// Status.
    pub status: PaymentStatus,
    /// What was bought.
    pub product: Product,
}

/// A payment as of one change.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentSnapshot {
    /// Where the change came from.
    pub meta: ChangeMeta,
    /// The payment.
    pub payment: Payment,
}

/// A payment was deleted; only its id is known.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentDeleted {
    /// Where the change came from.
    pub meta: ChangeMeta,
    /// The deleted payment's id.
    pub payment_id: String,
}

/// A typed payment event.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentEvent {
    /// A PENDING payment was created.
    Requested(PaymentSnapshot),
    /// The payment became CONFIRMED.
    Confirmed(PaymentSnapshot),
    /// The payment became FAILED.
    Failed(PaymentSnapshot),
    /// Any other change to a payment.
    Updated(PaymentSnapshot),
    /// The payment was deleted.
    Deleted(PaymentDeleted),
    /// The payment as a snapshot read it.
    Observed(PaymentSnapshot),
}

impl PaymentEvent {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            PaymentEvent::Requested(_) => EventKind::PaymentRequested,
            PaymentEvent::Confirmed(_) => EventKind::PaymentConfirmed,
            PaymentEvent::Failed(_) => EventKind::PaymentFailed,
            PaymentEvent::Updated(_) => EventKind::PaymentUpdated,
            PaymentEvent::Deleted(_) => EventKind::PaymentDeleted,
            PaymentEvent::Observed(_) => EventKind::PaymentObserved,
        }
    }

    /// What every event carries about its change.
    pub fn meta(&self) -> &ChangeMeta {
        match self {
            PaymentEvent::Requested(s)
            | PaymentEvent::Confirmed(s)
            | PaymentEvent::Failed(s)
            | PaymentEvent::Updated(s)
            | PaymentEvent::Observed(s) => &s.meta,
            PaymentEvent::Deleted(d) => &d.meta,
        }
    }

    /// [`PaymentEvent::meta`], to amend.
    pub fn meta_mut(&mut self) -> &mut ChangeMeta {
        match self {
            PaymentEvent::Requested(s)
            | PaymentEvent::Confirmed(s)
            | PaymentEvent::Failed(s)
            | PaymentEvent::Updated(s)
            | PaymentEvent::Observed(s) => &mut s.meta,
            PaymentEvent::Deleted(d) => &mut d.meta,
        }
    }

    /// The payment's id: the aggregate id, the key of its ordered lane and Kafka key.
    pub fn payment_id(&self) -> &str {
        match self {
            PaymentEvent::Requested(s)
            | PaymentEvent::Confirmed(s)
            | PaymentEvent::Failed(s)
            | PaymentEvent::Updated(s)
            | PaymentEvent::Observed(s) => &s.payment.id,
            PaymentEvent::Deleted(d) => &d.payment_id,
        }
    }
}
