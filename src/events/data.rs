//! The `data` of each published event: the JSON a consumer reads. The committed JSON
//! Schemas are generated from these types, so the two cannot drift apart unnoticed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::DomainEvent;
use crate::domain::payments::{PaymentEvent, PaymentSnapshot, PaymentStatus};
use crate::events::memory_data::memory_json;

/// A payment as of the change that produced the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Payment")]
pub(crate) struct PaymentData {
    /// The payment's id: the document's `_id` (a UUID string, or a BSON UUID rendered
    /// hyphenated). Also the Kafka key and the CloudEvent subject.
    #[schemars(length(min = 1))]
    pub payment_id: String,
    /// Unit price × quantity as an exact decimal string (never a binary float).
    #[schemars(regex(pattern = r"^-?[0-9]+(\.[0-9]+)?$"))]
    pub amount: String,
    /// The payment's status after the change.
    pub status: PaymentStatusData,
    /// What was bought.
    pub product: ProductData,
}

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum PaymentStatusData {
    /// Created, waiting for the provider.
    Pending,
    /// The provider accepted it.
    Confirmed,
    /// The provider refused it.
    Failed,
}

/// What was bought.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ProductData {
    /// Product code; the key of the product's counters.
    #[schemars(length(min = 1))]
    pub code: String,
    /// Display name.
    pub name: String,
}

/// A deleted payment: only its id is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "PaymentDeleted")]
pub(crate) struct PaymentDeletedData {
    /// The deleted payment's id.
    #[schemars(length(min = 1))]
    pub payment_id: String,
}

impl From<PaymentStatus> for PaymentStatusData {
    fn from(status: PaymentStatus) -> Self {
        match status {
            PaymentStatus::Pending => PaymentStatusData::Pending,
            PaymentStatus::Confirmed => PaymentStatusData::Confirmed,
            PaymentStatus::Failed => PaymentStatusData::Failed,
        }
    }
}

impl From<&PaymentSnapshot> for PaymentData {
    fn from(snapshot: &PaymentSnapshot) -> Self {
        let payment = &snapshot.payment;
        PaymentData {
            payment_id: payment.id.clone(),
            amount: payment.amount.to_string(),
            status: payment.status.into(),
            product: ProductData {
                code: payment.product.code.clone(),
                name: payment.product.name.clone(),
            },
        }
    }
}

/// The JSON data of a typed event.
pub(crate) fn event_json(event: &DomainEvent) -> Vec<u8> {
    match event {
        DomainEvent::Payment(e) => payment_json(e),
        DomainEvent::Memory(e) => memory_json(e),
    }
}

/// The JSON data of a payment event.
pub(crate) fn payment_json(event: &PaymentEvent) -> Vec<u8> {
    let encoded = match event {
        PaymentEvent::Requested(s)
        | PaymentEvent::Confirmed(s)
        | PaymentEvent::Failed(s)
        | PaymentEvent::Updated(s) => serde_json::to_vec(&PaymentData::from(s)),
        PaymentEvent::Deleted(d) => serde_json::to_vec(&PaymentDeletedData {
            payment_id: d.payment_id.clone(),
        }),
    };
    // Plain structs of strings serialise without fail.
    encoded.unwrap_or_else(|e| unreachable!("payment data is serialisable: {e}"))
}
