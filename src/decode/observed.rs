//! Documents a snapshot read, turned into what consumers see: a payment becomes a
//! `payment_observed` event, a thread, episode or semantic memory a `thread_observed`,
//! `episode_observed` or `memory_observed` event; a document of a raw collection becomes the record the MongoDB
//! Kafka connector's copy-existing emits (`_id: {_id, copyingData: true}`, `operationType:
//! "insert"`, `ns`, `documentKey`, `fullDocument`), so its consumers keep working.

use mongodb::bson::{RawBson, RawDocument, RawDocumentBuf, Timestamp, rawdoc};

use super::{DecodeError, Decoded, Domains, Namespace, memory, payments};
use crate::domain::payments::{PaymentEvent, PaymentSnapshot};
use crate::domain::raw::RawChangeEvent;
use crate::domain::{ChangeMeta, DomainEvent, EventId};

impl Domains {
    /// Whether a snapshot of `database.collection` emits anything (a typed or raw
    /// collection).
    pub fn snapshots(&self, database: &str, collection: &str) -> bool {
        !matches!(self.namespace_of(database, collection), Namespace::Other)
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
        let meta = || ChangeMeta {
            event_id,
            database: database.to_owned(),
            collection: collection.to_owned(),
            cluster_time: at,
            wall_time: None,
            document_key: document_key(&document),
            looked_up: false,
        };
        match self.namespace_of(database, collection) {
            Namespace::Memory(kind, privacy) => {
                match memory::observed(&document, kind, privacy, meta()) {
                    Ok(event) => Decoded::Event(DomainEvent::Memory(event)),
                    Err(error) => invalid(document, event_id, error),
                }
            }
            Namespace::Payments => {
                let meta = meta();
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
            Namespace::Other => Decoded::Other,
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
    fn memories_become_their_observed_kinds_with_what_a_snapshot_knows() {
        use crate::config::MemoryConfig;
        use crate::domain::EventKind;
        use crate::domain::memory::MemoryChange;
        let memory = MemoryConfig {
            database: "shop".into(),
            ..crate::config::Config::default().memory
        };
        let domains = domains().with_memory(crate::decode::MemoryDomain::from_config(&memory));
        let thread = rawdoc! {"_id": 1_i64, "thread_id": "t-1", "user_id": "u-1",
        "messages": [], "summary": "so far"};
        let Decoded::Event(DomainEvent::Memory(event)) =
            domains.observe("shop", "short_term_memory", thread, AT)
        else {
            panic!("not a memory event");
        };
        assert_eq!(event.kind(), EventKind::ThreadObserved);
        assert_eq!(
            (event.user_id.as_str(), event.document_id.as_str()),
            ("u-1", "t-1")
        );
        assert!(matches!(
            event.change,
            MemoryChange::ThreadObserved {
                summary: Some(_),
                ..
            }
        ));
        let semantic = rawdoc! {"_id": 2_i64, "memory_id": "m-1", "user_id": "u-1",
        "type": "fact", "content": "x", "strength": 0.5,
        "last_accessed_at": mongodb::bson::DateTime::from_millis(0)};
        let Decoded::Event(DomainEvent::Memory(event)) =
            domains.observe("shop", "semantic_memory", semantic, AT)
        else {
            panic!("not a memory event");
        };
        assert!(matches!(
            event.change,
            MemoryChange::MemoryObserved {
                last_accessed_at: Some(_),
                ..
            }
        ));
        let orphan = rawdoc! {"_id": 3_i64, "episode_id": "e-1"};
        let decoded = domains.observe("shop", "episodic_memory", orphan, AT);
        assert!(
            matches!(decoded, Decoded::Invalid { .. }),
            "no user: bad input"
        );
    }

    #[test]
    fn a_payment_that_does_not_fit_is_bad_input() {
        let decoded = domains().observe("shop", "payments", rawdoc! {"_id": "p-2"}, AT);
        assert!(matches!(decoded, Decoded::Invalid { .. }), "{decoded:?}");
    }
}
