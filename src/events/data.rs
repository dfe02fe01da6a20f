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
    /// Unit price × quantity, exactly as the document holds it: a Decimal128's canonical
    /// string, with all of its up to 34 significant digits and its scale (`49.80`,
    /// `1.000000000000000000000000000000001`, `1.2E+5`, `5E-7`). Never rounded, never a
    /// binary float; an int32/int64 amount is written as the whole number, a double at its
    /// shortest decimal form.
    #[schemars(regex(pattern = r"^-?[0-9]+(\.[0-9]+)?(E[+-][0-9]+)?$"))]
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
        | PaymentEvent::Updated(s)
        | PaymentEvent::Observed(s) => serde_json::to_vec(&PaymentData::from(s)),
        PaymentEvent::Deleted(d) => serde_json::to_vec(&PaymentDeletedData {
            payment_id: d.payment_id.clone(),
        }),
    };
    // Plain structs of strings serialise without fail.
    encoded.unwrap_or_else(|e| unreachable!("payment data is serialisable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::payments::decode;
    use crate::domain::money::Amount;
    use mongodb::bson::{Bson, Decimal128, RawDocumentBuf, doc};
    use proptest::prelude::*;

    /// An insert of a PENDING payment whose amount is `amount`.
    fn insert_with(amount: Decimal128) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&doc! {
            "_id": {"_data": "826B020F61000000022B022C0100296E5A1004"},
            "operationType": "insert",
            "clusterTime": mongodb::bson::Timestamp { time: 1_795_297_121, increment: 2 },
            "ns": {"db": "shop", "coll": "payments"},
            "documentKey": {"_id": "p-1"},
            "fullDocument": {
                "_id": "p-1",
                "amount": Bson::Decimal128(amount),
                "status": "PENDING",
                "product": {"code": "c-1", "name": "Pen"},
            },
        })
        .expect("a change event")
    }

    /// The `amount` string of the event JSON decoded from `change`.
    fn amount_in_event(change: &RawDocumentBuf) -> String {
        let event = decode(change).expect("decodes").expect("a payment event");
        let json: serde_json::Value =
            serde_json::from_slice(&payment_json(&event)).expect("event JSON");
        json["amount"].as_str().expect("amount string").to_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Any finite Decimal128 (1 to 34 digits, trailing zeros included, the whole
        /// exponent range, both signs) survives decode → event JSON → parse: the string is
        /// the Decimal128's canonical one, and parsing it gives back the same digits and
        /// exponent. A negative one is refused with its exact value in the reason.
        #[test]
        fn every_decimal128_amount_survives_decode_event_json_and_parse(
            digits in 1usize..=34,
            seed in any::<u128>(),
            trailing_zeros in 0usize..34,
            exponent in -6176i32..=6111,
            negative in any::<bool>(),
        ) {
            let zeros = trailing_zeros.min(digits - 1);
            let head = digits - zeros;
            let mut coefficient = seed % 10u128.pow(head as u32);
            coefficient = coefficient.max(1) * 10u128.pow(zeros as u32);
            let sign = if negative { "-" } else { "" };
            let text = format!("{sign}{coefficient}E{exponent}");
            let decimal: Decimal128 = text.parse().expect("bson parses it");
            let exact: Amount = text.parse().expect("an amount");
            prop_assert_eq!(exact.to_string(), decimal.to_string());
            prop_assert_eq!(exact.to_decimal128().bytes(), decimal.bytes());
            if negative {
                // Refused, and the dead letter's reason quotes it digit for digit.
                match decode(&insert_with(decimal)) {
                    Err(e) => prop_assert!(
                        e.to_string().contains(&format!("{decimal} is negative")),
                        "{}", e
                    ),
                    Ok(event) => prop_assert!(false, "a negative amount decoded: {event:?}"),
                }
                return Ok(());
            }
            let amount = amount_in_event(&insert_with(decimal));
            prop_assert_eq!(&amount, &decimal.to_string());
            let parsed: Amount = amount.parse().expect("the event's amount parses");
            prop_assert_eq!(parsed.coefficient(), coefficient);
            prop_assert_eq!(parsed.exponent(), exponent);
            prop_assert_eq!(parsed.to_decimal128().bytes(), decimal.bytes());
        }
    }

    #[test]
    fn one_point_zero_and_one_point_zero_zero_stay_distinct() {
        let one_place = amount_in_event(&insert_with("1.0".parse().expect("1.0")));
        let two_places = amount_in_event(&insert_with("1.00".parse().expect("1.00")));
        assert_eq!((one_place.as_str(), two_places.as_str()), ("1.0", "1.00"));
    }
}
