//! Reading a published payment event back: a Kafka record of the payments topic (binary
//! or structured content mode) as the typed event it was made from, for the handlers
//! role. What the handlers need survives the trip: the event id (so the exactly-once
//! records match the ones a single process writes), the kind, the payment exactly (the
//! amount digit for digit), its namespace, wall time and document key (a BSON UUID `_id`
//! through the `idtype` extension). Not carried: the change's
//! cluster time (zero here; no handler reads it).

use mongodb::bson::{Binary, DateTime, RawBson, RawDocumentBuf, Timestamp, Uuid, rawdoc};
use serde::Deserialize;

use crate::domain::payments::{
    Payment, PaymentDeleted, PaymentEvent, PaymentSnapshot, PaymentStatus, Product,
};
use crate::domain::{ChangeMeta, DomainEvent, EventId, EventKind, excerpt};
use crate::events::cloudevent::{IDTYPE_HEADER, STRUCTURED_CONTENT_TYPE, UUID_ID};
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
    idtype: Option<&'a str>,
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
    idtype: Option<&'a str>,
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
            idtype: envelope.idtype,
        };
        let data = envelope.data.ok_or(ParseError::Missing("data"))?.get();
        (attributes, data.as_bytes())
    } else {
        let attributes = Attributes {
            id: header("ce_id").ok_or(ParseError::Missing("id"))?,
            event_type: header("ce_type").ok_or(ParseError::Missing("type"))?,
            source: header("ce_source").ok_or(ParseError::Missing("source"))?,
            time: header("ce_time"),
            idtype: header(IDTYPE_HEADER),
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
        let meta = with_key(meta, &deleted.payment_id, attributes.idtype)?;
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
        meta: with_key(meta, &payment.payment_id, attributes.idtype)?,
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

/// The payment's document key: `{_id: <payment id>}`, the id a string, or a BSON UUID
/// where the `idtype` extension says `uuid`.
fn with_key(
    mut meta: ChangeMeta,
    payment_id: &str,
    idtype: Option<&str>,
) -> Result<ChangeMeta, ParseError> {
    let key: RawDocumentBuf = match idtype {
        None => rawdoc! {"_id": payment_id},
        Some(UUID_ID) => {
            let uuid = Uuid::parse_str(payment_id).map_err(|_| ParseError::Attribute {
                name: "idtype",
                reason: format!("uuid, but the payment id `{}` is none", excerpt(payment_id)),
            })?;
            rawdoc! {"_id": RawBson::Binary(Binary::from_uuid(uuid))}
        }
        Some(other) => {
            return Err(ParseError::Attribute {
                name: "idtype",
                reason: format!("`{}` (expected uuid or nothing)", excerpt(other)),
            });
        }
    };
    meta.document_key = Some(key);
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Amount;
    use crate::events::cloudevent::CloudEvent;

    fn confirmed(amount: &str) -> DomainEvent {
        confirmed_with_key(amount, "p-1", rawdoc! {"_id": "p-1"})
    }

    fn confirmed_with_key(amount: &str, id: &str, key: RawDocumentBuf) -> DomainEvent {
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
                document_key: Some(key),
                looked_up: false,
            },
            payment: Payment {
                id: id.into(),
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

    /// `event` published in both content modes and read back.
    fn round_trips(event: DomainEvent) {
        let published = CloudEvent::of(&event);
        let headers: Vec<_> = published
            .binary_headers()
            .into_iter()
            .chain(published.extension_headers().map(|(k, v)| (k, v as &str)))
            .collect();
        let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(payment_event(header, &published.data), Ok(event.clone()));

        let value = published.structured().expect("structured");
        let header = |name: &str| (name == "content-type").then_some(STRUCTURED_CONTENT_TYPE);
        assert_eq!(payment_event(header, &value), Ok(event));
    }

    #[test]
    fn both_content_modes_give_back_the_published_event() {
        round_trips(confirmed("1.000000000000000000000000000000001"));
    }

    #[test]
    fn a_bson_uuid_id_comes_back_as_one() {
        let id = "7e9a1c30-5b6d-4f2e-8a1b-2c3d4e5f6a7b";
        let uuid = Uuid::parse_str(id).expect("uuid");
        let event = confirmed_with_key(
            "49.80",
            id,
            rawdoc! {"_id": RawBson::Binary(Binary::from_uuid(uuid))},
        );
        assert_eq!(CloudEvent::of(&event).idtype, Some(UUID_ID));
        round_trips(event);
        assert_eq!(CloudEvent::of(&confirmed("1")).idtype, None, "a string id");

        let published = CloudEvent::of(&confirmed("1"));
        let headers = published.binary_headers();
        for (idtype, says) in [("uuid", "is none"), ("oid", "expected uuid")] {
            let header = |name: &str| match name {
                IDTYPE_HEADER => Some(idtype),
                other => headers.iter().find(|(n, _)| *n == other).map(|(_, v)| *v),
            };
            let err = payment_event(header, &published.data).expect_err(idtype);
            assert!(err.to_string().contains(says), "{err}");
        }
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
