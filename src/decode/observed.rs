//! Documents a snapshot read, turned into what consumers see: a payment becomes a
//! `payment_observed` event; a document of a raw collection becomes the record the MongoDB
//! Kafka connector's copy-existing emits (`_id: {_id, copyingData: true}`, `operationType:
//! "insert"`, `ns`, `documentKey`, `fullDocument`), so its consumers keep working.

use mongodb::bson::{RawBson, RawDocument, RawDocumentBuf, Timestamp, rawdoc};

use super::{DecodeError, Decoded, Domains, Namespace, payments};
use crate::domain::payments::{PaymentEvent, PaymentSnapshot};
use crate::domain::raw::RawChangeEvent;
use crate::domain::{ChangeMeta, DomainEvent, EventId};

impl Domains {
    /// Whether a snapshot of `database.collection` emits anything (a typed or raw
    /// collection).
    pub fn snapshots(&self, database: &str, collection: &str) -> bool {
        matches!(
            self.namespace_of(database, collection),
            Namespace::Payments | Namespace::Raw(_)
        )
    }

    /// The event of `document`, read by a snapshot of `database.collection` at `at`.
    pub fn observe(
        &self,
        database: &str,
        collection: &str,
        document: RawDocumentBuf,
        at: Timestamp,
    ) -> Decoded {
        let namespace = format!("{database}.{collection}");
        let event_id = EventId::observed(&namespace, document.as_bytes());
        match self.namespace_of(database, collection) {
            Namespace::Payments => {
                let meta = ChangeMeta {
                    event_id,
                    database: database.to_owned(),
                    collection: collection.to_owned(),
                    cluster_time: at,
                    wall_time: None,
                    document_key: document_key(&document),
                };
                match payments::payment_from_document(&document) {
                    Ok(payment) => Decoded::Event(DomainEvent::Payment(PaymentEvent::Observed(
                        PaymentSnapshot { meta, payment },
                    ))),
                    Err(error) => invalid(document, event_id, error),
                }
            }
            Namespace::Raw(namespace) => {
                let Some(key) = document_key(&document) else {
                    return invalid(document, event_id, DecodeError::missing("_id"));
                };
                let record = rawdoc! {
                    "_id": {"_id": id_of(&document), "copyingData": true},
                    "operationType": "insert",
                    "ns": {"db": database, "coll": collection},
                    "documentKey": key,
                    "fullDocument": document.clone(),
                };
                match RawChangeEvent::from_raw(&record, namespace) {
                    Ok(mut event) => {
                        event.event_id = event_id;
                        Decoded::Raw(event)
                    }
                    Err(reason) => invalid(
                        document,
                        event_id,
                        DecodeError::invalid("(document)", reason),
                    ),
                }
            }
            Namespace::Memory(..) | Namespace::Other => Decoded::Other,
        }
    }
}

fn id_of(document: &RawDocument) -> RawBson {
    match document.get("_id") {
        Ok(Some(id)) => id.to_raw_bson(),
        _ => RawBson::Null,
    }
}

/// `{_id: …}` of `document`, as a change's `documentKey` holds it.
fn document_key(document: &RawDocument) -> Option<RawDocumentBuf> {
    match document.get("_id") {
        Ok(Some(id)) => Some(rawdoc! {"_id": id.to_raw_bson()}),
        _ => None,
    }
}

fn invalid(raw: RawDocumentBuf, event_id: EventId, error: DecodeError) -> Decoded {
    Decoded::Invalid {
        raw,
        event_id,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::Decimal128;

    fn domains() -> Domains {
        Domains::new("shop", "payments").with_raw(vec![("shop".into(), "orders".into())])
    }

    const AT: Timestamp = Timestamp {
        time: 1_800_000_000,
        increment: 1,
    };

    #[test]
    fn a_payment_becomes_payment_observed_with_an_id_stable_per_state() {
        let amount: Decimal128 = "49.80".parse().expect("decimal");
        let doc = |status: &str| {
            rawdoc! {"_id": "p-1", "amount": amount, "status": status,
            "product": {"code": "c-1", "name": "Book"}}
        };
        let Decoded::Event(DomainEvent::Payment(PaymentEvent::Observed(s))) =
            domains().observe("shop", "payments", doc("PENDING"), AT)
        else {
            panic!("not observed");
        };
        assert_eq!(s.payment.id, "p-1");
        assert_eq!(s.payment.amount.to_string(), "49.80");
        assert_eq!(s.meta.cluster_time, AT);
        let again = domains().observe("shop", "payments", doc("PENDING"), AT);
        let settled = domains().observe("shop", "payments", doc("CONFIRMED"), AT);
        let id = |d: &Decoded| match d {
            Decoded::Event(e) => e.meta().event_id,
            other => panic!("{other:?}"),
        };
        assert_eq!(id(&again), s.meta.event_id, "same state, same id");
        assert_ne!(id(&settled), s.meta.event_id, "another state, another id");
    }

    #[test]
    fn a_raw_document_takes_the_copy_existing_shape() {
        let Decoded::Raw(event) =
            domains().observe("shop", "orders", rawdoc! {"_id": 7_i64, "total": 9.5}, AT)
        else {
            panic!("not raw");
        };
        assert_eq!(event.key, r#"{"_id":7}"#);
        let value: serde_json::Value = serde_json::from_slice(&event.value).expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "_id": {"_id": 7, "copyingData": true},
                "operationType": "insert",
                "ns": {"db": "shop", "coll": "orders"},
                "documentKey": {"_id": 7},
                "fullDocument": {"_id": 7, "total": 9.5},
            })
        );
    }

    #[test]
    fn a_payment_that_does_not_fit_is_bad_input() {
        let decoded = domains().observe("shop", "payments", rawdoc! {"_id": "p-2"}, AT);
        assert!(matches!(decoded, Decoded::Invalid { .. }), "{decoded:?}");
    }
}
