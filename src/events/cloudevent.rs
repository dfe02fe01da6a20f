//! CloudEvents 1.0 envelopes for the Kafka protocol binding: binary content mode (attributes
//! as `ce_` headers, the data as the record value) and structured mode (the whole event as
//! one JSON value, content type `application/cloudevents+json`).

use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{DateTime, RawBsonRef, Timestamp};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::namespace::NamespaceEvent;
use crate::domain::{ChangeMeta, DomainEvent};
use crate::events::data::event_json;
use crate::events::namespace_data::NamespaceData;
use crate::events::types::{event_type, namespace_type};

/// The CloudEvents version written.
pub(crate) const SPEC_VERSION: &str = "1.0";
/// Content type of the data (binary mode's `content-type` header, `datacontenttype`).
pub(crate) const DATA_CONTENT_TYPE: &str = "application/json";
/// Content type of a structured-mode record.
pub(crate) const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// One event, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// Stable id derived from the change's resume token: the same change always gets the
    /// same id, so consumers can drop duplicates.
    pub id: String,
    /// `/mongodb/<database>/<collection>`.
    pub source: String,
    /// Versioned event type, e.g. `changeflow.payment.confirmed.v1`.
    pub event_type: &'static str,
    /// The change's wall time (its cluster time when the server gave none), RFC 3339.
    pub time: String,
    /// The document's id.
    pub subject: String,
    /// `$id` of the data's JSON Schema.
    pub dataschema: &'static str,
    /// The data, JSON.
    pub data: Vec<u8>,
    /// The `fulldocument` extension: `lookup` when the document the data was built from was
    /// looked up when the change was read (it may hold later changes); absent otherwise
    /// (the change's own document, a post-image, or a snapshot's read).
    pub fulldocument: Option<&'static str>,
    /// The `idtype` extension: `uuid` when a payment's `_id` is a BSON UUID (the subject is
    /// its hyphenated text); absent when it is a string. The handlers role rebuilds the
    /// document key from it.
    pub idtype: Option<&'static str>,
}

/// The `fulldocument` extension's value for a looked-up document.
pub(crate) const LOOKUP: &str = "lookup";
/// The `fulldocument` extension attribute in binary mode.
pub(crate) const FULLDOCUMENT_HEADER: &str = "ce_fulldocument";
/// The `idtype` extension's value for a BSON UUID `_id`.
pub(crate) const UUID_ID: &str = "uuid";
/// The `idtype` extension attribute in binary mode.
pub(crate) const IDTYPE_HEADER: &str = "ce_idtype";

impl CloudEvent {
    /// The CloudEvent of a typed event.
    pub fn of(event: &DomainEvent) -> CloudEvent {
        let meta = event.meta();
        let event_type = event_type(event.kind());
        CloudEvent {
            id: meta.event_id.to_string(),
            source: source_of(meta),
            event_type: event_type.name,
            time: time_of(meta.wall_time, meta.cluster_time),
            subject: event.subject().to_owned(),
            dataschema: event_type.schema_id,
            data: event_json(event),
            fulldocument: meta.looked_up.then_some(LOOKUP),
            idtype: (matches!(event, DomainEvent::Payment(_)) && uuid_id(meta)).then_some(UUID_ID),
        }
    }

    /// The CloudEvent of a namespace event seen by `stream`; its subject (and record key)
    /// is the namespace, or the stream for an invalidate.
    pub fn of_namespace(stream: &str, event: &NamespaceEvent) -> CloudEvent {
        let event_type = namespace_type(&event.change);
        let subject = event.subject(stream).to_owned();
        let cluster_time = event.cluster_time.unwrap_or(Timestamp {
            time: 0,
            increment: 0,
        });
        let data = serde_json::to_vec(&NamespaceData::of(stream, event))
            .unwrap_or_else(|e| unreachable!("namespace data is serialisable: {e}"));
        CloudEvent {
            id: event.event_id.to_string(),
            source: format!("/mongodb/{}", subject.replacen('.', "/", 1)),
            event_type: event_type.name,
            time: time_of(event.wall_time, cluster_time),
            subject,
            dataschema: event_type.schema_id,
            data,
            fulldocument: None,
            idtype: None,
        }
    }

    /// Binary content mode: the Kafka headers (the record value is [`CloudEvent::data`]).
    pub fn binary_headers(&self) -> [(&'static str, &str); 8] {
        [
            ("ce_specversion", SPEC_VERSION),
            ("ce_id", &self.id),
            ("ce_source", &self.source),
            ("ce_type", self.event_type),
            ("ce_time", &self.time),
            ("ce_subject", &self.subject),
            ("ce_dataschema", self.dataschema),
            ("content-type", DATA_CONTENT_TYPE),
        ]
    }

    /// Binary content mode: the extension attributes this event has, as headers.
    pub fn extension_headers(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        [
            self.fulldocument.map(|v| (FULLDOCUMENT_HEADER, v)),
            self.idtype.map(|v| (IDTYPE_HEADER, v)),
        ]
        .into_iter()
        .flatten()
    }

    /// Structured content mode: the whole event as one JSON value (send it with
    /// `content-type: application/cloudevents+json`). Fails only when [`CloudEvent::data`]
    /// is not JSON.
    pub fn structured(&self) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(Serialize)]
        struct Structured<'a> {
            specversion: &'a str,
            id: &'a str,
            source: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            time: &'a str,
            subject: &'a str,
            dataschema: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            fulldocument: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            idtype: Option<&'a str>,
            datacontenttype: &'a str,
            data: &'a RawValue,
        }
        let data: &RawValue = serde_json::from_slice(&self.data)?;
        serde_json::to_vec(&Structured {
            specversion: SPEC_VERSION,
            id: &self.id,
            source: &self.source,
            event_type: self.event_type,
            time: &self.time,
            subject: &self.subject,
            dataschema: self.dataschema,
            fulldocument: self.fulldocument,
            idtype: self.idtype,
            datacontenttype: DATA_CONTENT_TYPE,
            data,
        })
    }
}

/// Whether the change's document key has a BSON UUID `_id`.
fn uuid_id(meta: &ChangeMeta) -> bool {
    let id = meta
        .document_key
        .as_ref()
        .and_then(|k| k.get("_id").ok().flatten());
    matches!(id, Some(RawBsonRef::Binary(b)) if b.subtype == BinarySubtype::Uuid)
}

/// `/mongodb/<database>/<collection>`.
fn source_of(meta: &ChangeMeta) -> String {
    format!("/mongodb/{}/{}", meta.database, meta.collection)
}

/// RFC 3339 with milliseconds, UTC: the wall time, or the cluster time's seconds.
fn time_of(wall: Option<DateTime>, cluster: Timestamp) -> String {
    let at = wall.unwrap_or_else(|| DateTime::from_millis(i64::from(cluster.time) * 1000));
    crate::source::position::datetime_rfc3339(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventId;
    use crate::domain::payments::{
        Payment, PaymentDeleted, PaymentEvent, PaymentSnapshot, PaymentStatus, Product,
    };

    fn meta() -> ChangeMeta {
        ChangeMeta {
            event_id: EventId::from_token_data("abc"),
            database: "shop".into(),
            collection: "payments".into(),
            cluster_time: Timestamp {
                time: 1_700_000_000,
                increment: 3,
            },
            wall_time: Some(DateTime::from_millis(1_700_000_000_123)),
            document_key: None,
            looked_up: false,
        }
    }

    fn confirmed() -> PaymentEvent {
        PaymentEvent::Confirmed(PaymentSnapshot {
            meta: meta(),
            payment: Payment {
                id: "p-1".into(),
                amount: "25.50".parse().expect("decimal"),
                status: PaymentStatus::Confirmed,
                product: Product {
                    code: "c-1".into(),
                    name: "Tea".into(),
                },
            },
        })
    }

    #[test]
    fn binary_mode_headers_carry_every_required_attribute() {
        let event = CloudEvent::of(&DomainEvent::Payment(confirmed()));
        let headers = event.binary_headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        assert_eq!(get("ce_specversion"), "1.0");
        assert_eq!(get("ce_id"), "6437b3ac38465133ffb63b75273a8db5");
        assert_eq!(get("ce_source"), "/mongodb/shop/payments");
        assert_eq!(get("ce_type"), "changeflow.payment.confirmed.v1");
        assert_eq!(get("ce_time"), "2023-11-14T22:13:20.123Z");
        assert_eq!(get("ce_subject"), "p-1");
        assert_eq!(
            get("ce_dataschema"),
            "https://changeflow.dev/schemas/events/changeflow.payment.confirmed.v1.json"
        );
        assert_eq!(get("content-type"), "application/json");
        let data: serde_json::Value = serde_json::from_slice(&event.data).expect("JSON data");
        assert_eq!(
            data,
            serde_json::json!({
                "paymentId": "p-1",
                "amount": "25.50",
                "status": "CONFIRMED",
                "product": {"code": "c-1", "name": "Tea"},
            })
        );
    }

    #[test]
    fn structured_mode_embeds_the_data_as_json() {
        let event = CloudEvent::of(&DomainEvent::Payment(PaymentEvent::Deleted(
            PaymentDeleted {
                meta: ChangeMeta {
                    wall_time: None,
                    ..meta()
                },
                payment_id: "p-9".into(),
            },
        )));
        let value: serde_json::Value =
            serde_json::from_slice(&event.structured().expect("data is JSON"))
                .expect("structured JSON");
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["type"], "changeflow.payment.deleted.v1");
        assert_eq!(value["subject"], "p-9");
        assert_eq!(value["datacontenttype"], "application/json");
        assert_eq!(
            value["time"], "2023-11-14T22:13:20Z",
            "cluster time when the server gave no wall time"
        );
        assert_eq!(value["data"], serde_json::json!({"paymentId": "p-9"}));
    }
}
