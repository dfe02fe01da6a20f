//! Reading a published payment event back: a Kafka record of the payments topic (binary
//! or structured content mode) as the typed event it was made from, for the handlers
//! role. What the handlers need survives the trip: the event id (so the exactly-once
//! records match the ones a single process writes), the kind, the payment exactly (the
//! amount digit for digit), its namespace and wall time. Not carried: the change's
//! cluster time (zero here; no handler reads it).

use mongodb::bson::{DateTime, RawDocumentBuf, Timestamp, rawdoc};
use serde::Deserialize;

use crate::domain::payments::{
    Payment, PaymentDeleted, PaymentEvent, PaymentSnapshot, PaymentStatus, Product,
};
use crate::domain::{ChangeMeta, DomainEvent, EventId, EventKind, excerpt};
use crate::events::cloudevent::STRUCTURED_CONTENT_TYPE;
use crate::events::data::{PaymentData, PaymentDeletedData, PaymentStatusData};
use crate::events::types::event_type;

/// Why a record is not a payment event changeflow published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A required attribute is missing (header `ce_<name>`, or the structured field).
    #[error("attribute `{0}` missing")]
    Missing(&'static str),
    /// An attribute holds something changeflow never writes.
    #[error("attribute `{name}`: {reason}")]
    Attribute {
        /// The attribute.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The data does not match the event type's schema.
    #[error("data of {event_type}: {reason}")]
    Data {
        /// The CloudEvent type.
        event_type: String,
        /// Why.
        reason: String,
    },
}

/// The attributes of one record, by name (`id`, `type`, …), whichever content mode.
struct Attributes<'a> {
    id: &'a str,
    event_type: &'a str,
    source: &'a str,
    time: Option<&'a str>,
}

/// Structured mode's envelope.
#[derive(Deserialize)]
struct Structured<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(rename = "type", borrow)]
    event_type: Option<&'a str>,
    #[serde(borrow)]
    source: Option<&'a str>,
    #[serde(borrow)]
    time: Option<&'a str>,
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

/// The payment event a record carries. `header` looks a Kafka header up by name; `value`
/// is the record's value.
pub fn payment_event<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    value: &'a [u8],
) -> Result<DomainEvent, ParseError> {
    let structured = header("content-type") == Some(STRUCTURED_CONTENT_TYPE);
    let (attributes, data) = if structured {
        let envelope: Structured<'a> =
            serde_json::from_slice(value).map_err(|e| ParseError::Attribute {
                name: "data",
                reason: format!("not a structured CloudEvent: {e}"),
            })?;
        let attributes = Attributes {
            id: envelope.id.ok_or(ParseError::Missing("id"))?,
            event_type: envelope.event_type.ok_or(ParseError::Missing("type"))?,
            source: envelope.source.ok_or(ParseError::Missing("source"))?,
            time: envelope.time,
        };
        let data = envelope.data.ok_or(ParseError::Missing("data"))?.get();
        (attributes, data.as_bytes())
    } else {
        let attributes = Attributes {
            id: header("ce_id").ok_or(ParseError::Missing("id"))?,
            event_type: header("ce_type").ok_or(ParseError::Missing("type"))?,
            source: header("ce_source").ok_or(ParseError::Missing("source"))?,
            time: header("ce_time"),
        };
        (attributes, value)
    };
    let kind = EventKind::ALL
        .iter()
        .copied()
        .find(|k| event_type(*k).name == attributes.event_type)
        .ok_or_else(|| ParseError::Attribute {
            name: "type",
            reason: format!("`{}` is no event type", excerpt(attributes.event_type)),
        })?;
    let meta = meta(&attributes)?;
    let data_error = |reason: String| ParseError::Data {
        event_type: attributes.event_type.to_owned(),
        reason,
    };
    if kind == EventKind::PaymentDeleted {
        let deleted: PaymentDeletedData =
            serde_json::from_slice(data).map_err(|e| data_error(e.to_string()))?;
        let meta = with_key(meta, &deleted.payment_id);
        return Ok(DomainEvent::Payment(PaymentEvent::Deleted(
            PaymentDeleted {
                meta,
                payment_id: deleted.payment_id,
            },
        )));
    }
    let payment: PaymentData =
        serde_json::from_slice(data).map_err(|e| data_error(e.to_string()))?;
    let amount = payment
        .amount
        .parse()
        .map_err(|e| data_error(format!("amount: {e}")))?;
    let snapshot = PaymentSnapshot {
        meta: with_key(meta, &payment.payment_id),
        payment: Payment {
            id: payment.payment_id,
            amount,
            status: match payment.status {
                PaymentStatusData::Pending => PaymentStatus::Pending,
                PaymentStatusData::Confirmed => PaymentStatus::Confirmed,
                PaymentStatusData::Failed => PaymentStatus::Failed,
            },
            product: Product {
                code: payment.product.code,
                name: payment.product.name,
            },
        },
    };
    let event = match kind {
        EventKind::PaymentRequested => PaymentEvent::Requested(snapshot),
        EventKind::PaymentConfirmed => PaymentEvent::Confirmed(snapshot),
        EventKind::PaymentFailed => PaymentEvent::Failed(snapshot),
        EventKind::PaymentUpdated => PaymentEvent::Updated(snapshot),
        EventKind::PaymentObserved => PaymentEvent::Observed(snapshot),
        other => {
            return Err(ParseError::Attribute {
                name: "type",
                reason: format!("{} is not a payment event", other.as_str()),
            });
        }
    };
    Ok(DomainEvent::Payment(event))
}

fn meta(attributes: &Attributes<'_>) -> Result<ChangeMeta, ParseError> {
    let event_id = EventId::parse(attributes.id).ok_or_else(|| ParseError::Attribute {
        name: "id",
        reason: format!("`{}` is not a changeflow event id", excerpt(attributes.id)),
    })?;
    let (database, collection) = attributes
        .source
        .strip_prefix("/mongodb/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(db, coll)| !db.is_empty() && !coll.is_empty())
        .ok_or_else(|| ParseError::Attribute {
            name: "source",
            reason: format!(
                "`{}` is not /mongodb/<database>/<collection>",
                excerpt(attributes.source)
            ),
        })?;
    let wall_time = attributes
        .time
        .and_then(|t| DateTime::parse_rfc3339_str(t).ok());
    Ok(ChangeMeta {
        event_id,
        database: database.to_owned(),
        collection: collection.to_owned(),
        cluster_time: Timestamp {
            time: 0,
            increment: 0,
        },
        wall_time,
        document_key: None,
        looked_up: false,
    })
}

/// The payment's document key: `{_id: <payment id>}` (the handlers role settles payments
/// whose `_id` is a string; see the README's roles section).
fn with_key(mut meta: ChangeMeta, payment_id: &str) -> ChangeMeta {
    let key: RawDocumentBuf = rawdoc! {"_id": payment_id};
    meta.document_key = Some(key);
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Amount;
    use crate::events::cloudevent::CloudEvent;

    fn confirmed(amount: &str) -> DomainEvent {
        let snapshot = PaymentSnapshot {
            meta: ChangeMeta {
                event_id: EventId::from_token_data("8263"),
                database: "shop".into(),
                collection: "payments".into(),
                cluster_time: Timestamp {
                    time: 0,
                    increment: 0,
                },
                wall_time: Some(DateTime::from_millis(1_795_297_121_000)),
                document_key: Some(rawdoc! {"_id": "p-1"}),
                looked_up: false,
            },
            payment: Payment {
                id: "p-1".into(),
                amount: amount.parse::<Amount>().expect("amount"),
                status: PaymentStatus::Confirmed,
                product: Product {
                    code: "c-1".into(),
                    name: "Pen".into(),
                },
            },
        };
        DomainEvent::Payment(PaymentEvent::Confirmed(snapshot))
    }

    #[test]
    fn both_content_modes_give_back_the_published_event() {
        let event = confirmed("1.000000000000000000000000000000001");
        let published = CloudEvent::of(&event);
        let headers = published.binary_headers();
        let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(payment_event(header, &published.data), Ok(event.clone()));

        let value = published.structured().expect("structured");
        let header = |name: &str| (name == "content-type").then_some(STRUCTURED_CONTENT_TYPE);
        assert_eq!(payment_event(header, &value), Ok(event));
    }

    #[test]
    fn what_changeflow_never_writes_is_refused_with_the_attribute() {
        let event = confirmed("49.80");
        let published = CloudEvent::of(&event);
        let headers = published.binary_headers();
        let without = |skip: &'static str| {
            move |name: &str| {
                (name != skip)
                    .then(|| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
                    .flatten()
            }
        };
        assert_eq!(
            payment_event(without("ce_id"), &published.data),
            Err(ParseError::Missing("id"))
        );
        let bad_id = |name: &str| match name {
            "ce_id" => Some("not-an-id"),
            other => headers.iter().find(|(n, _)| *n == other).map(|(_, v)| *v),
        };
        let err = payment_event(bad_id, &published.data).expect_err("bad id");
        assert!(err.to_string().contains("`not-an-id`"), "{err}");
        let header = without("");
        let err = payment_event(header, br#"{"paymentId":"p-1"}"#).expect_err("no amount");
        assert!(err.to_string().contains("missing field `amount`"), "{err}");
        let err = payment_event(
            header,
            br#"{"paymentId":"p-1","amount":"12,5","status":"CONFIRMED","product":{"code":"c","name":"n"}}"#,
        )
        .expect_err("not a decimal");
        assert!(err.to_string().contains("amount: "), "{err}");
    }
}
