//! The published event types: CloudEvent `type`, the `$id` of the JSON Schema of its data
//! (`dataschema`), when it fires. `schemas/events/` holds the generated schemas and
//! `schemas/README.md` the catalog a consumer reads.

use std::fmt::Write;

use mongodb::bson::{DateTime, Timestamp};
use schemars::Schema;

use crate::domain::payments::{
    Payment, PaymentDeleted, PaymentEvent, PaymentEventKind, PaymentSnapshot, PaymentStatus,
    Product,
};
use crate::domain::{ChangeMeta, EventId};
use crate::publish::cloudevent::CloudEvent;
use crate::publish::data::{PaymentData, PaymentDeletedData};

/// The topic payment events go to unless configured otherwise.
pub const DEFAULT_PAYMENT_TOPIC: &str = "changeflow.payments";

/// Where the schemas' `$id`s live; `<base><type>.json` is the file in `schemas/events/`.
pub const SCHEMA_BASE: &str = "https://changeflow.dev/schemas/events/";

/// One published event type and version.
#[derive(Debug)]
pub struct EventType {
    /// CloudEvent `type`, versioned: `changeflow.payment.confirmed.v1`.
    pub name: &'static str,
    /// `$id` of its data's schema, the CloudEvent `dataschema`.
    pub schema_id: &'static str,
    /// The payment event kind it publishes.
    pub kind: PaymentEventKind,
    /// When it fires, for the catalog.
    pub fires: &'static str,
    schema: fn() -> Schema,
}

macro_rules! payment_type {
    ($name:literal, $kind:ident, $data:ty, $fires:literal) => {
        EventType {
            name: $name,
            schema_id: concat!("https://changeflow.dev/schemas/events/", $name, ".json"),
            kind: PaymentEventKind::$kind,
            fires: $fires,
            schema: || schemars::schema_for!($data),
        }
    };
}

/// Every payment event type, in [`PaymentEventKind::ALL`] order.
pub static PAYMENT_TYPES: [EventType; 5] = [
    payment_type!(
        "changeflow.payment.requested.v1",
        Requested,
        PaymentData,
        "A payment was inserted with status PENDING."
    ),
    payment_type!(
        "changeflow.payment.confirmed.v1",
        Confirmed,
        PaymentData,
        "An update set a payment's status to CONFIRMED (or it was inserted CONFIRMED)."
    ),
    payment_type!(
        "changeflow.payment.failed.v1",
        Failed,
        PaymentData,
        "An update set a payment's status to FAILED (or it was inserted FAILED)."
    ),
    payment_type!(
        "changeflow.payment.updated.v1",
        Updated,
        PaymentData,
        "Any other update of a payment, and every replace."
    ),
    payment_type!(
        "changeflow.payment.deleted.v1",
        Deleted,
        PaymentDeletedData,
        "A payment was deleted."
    ),
];

/// The published type of payment events of `kind`.
pub fn payment_type(kind: PaymentEventKind) -> &'static EventType {
    let index = PaymentEventKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default();
    &PAYMENT_TYPES[index]
}

impl EventType {
    /// File name of its schema in `schemas/events/`.
    pub fn file_name(&self) -> String {
        format!("{}.json", self.name)
    }

    /// The JSON Schema (draft 2020-12) of its data, with `$id` and description set.
    pub fn schema(&self) -> Schema {
        let mut schema = (self.schema)();
        schema.insert("$id".into(), self.schema_id.into());
        schema.insert(
            "description".into(),
            format!("Data of the CloudEvent `{}`: {}", self.name, self.fires).into(),
        );
        schema
    }
}

/// A sample event of `kind`, for the catalog's examples and tests.
pub fn example_payment_event(kind: PaymentEventKind) -> PaymentEvent {
    let meta = ChangeMeta {
        event_id: EventId::from_token_data("8265A1B2C3000000012B022C0100296E5A1004"),
        database: "changeflow".into(),
        collection: "payments".into(),
        cluster_time: Timestamp {
            time: 1_700_000_000,
            increment: 1,
        },
        wall_time: Some(DateTime::from_millis(1_700_000_000_250)),
        document_key: None,
    };
    let id = "0b6f1c9e-2d7a-4c3e-9f10-5a8e4d2c7b61";
    let snapshot = |status| PaymentSnapshot {
        meta: meta.clone(),
        payment: Payment {
            id: id.into(),
            amount: rust_decimal::Decimal::new(2550, 2),
            status,
            product: Product {
                code: "5f2e8a4c-1b3d-4e6f-8a9b-0c1d2e3f4a5b".into(),
                name: "Green tea".into(),
            },
        },
    };
    match kind {
        PaymentEventKind::Requested => PaymentEvent::Requested(snapshot(PaymentStatus::Pending)),
        PaymentEventKind::Confirmed => PaymentEvent::Confirmed(snapshot(PaymentStatus::Confirmed)),
        PaymentEventKind::Failed => PaymentEvent::Failed(snapshot(PaymentStatus::Failed)),
        PaymentEventKind::Updated => PaymentEvent::Updated(snapshot(PaymentStatus::Pending)),
        PaymentEventKind::Deleted => PaymentEvent::Deleted(PaymentDeleted {
            meta,
            payment_id: id.into(),
        }),
    }
}

/// `schemas/README.md`: the catalog of published events, generated so it cannot drift.
pub fn readme() -> String {
    let mut out = String::from(
        "# Schemas\n\n\
         Generated by `CHANGEFLOW_UPDATE_SCHEMAS=1 cargo test --test schemas`; \
         the same test fails when these files differ from what the code generates.\n\n\
         Every event is a [CloudEvent 1.0](https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md) \
         in the Kafka protocol binding, binary content mode by default: the attributes are \
         `ce_*` headers and the record value is the event's JSON data, which validates \
         against the JSON Schema (draft 2020-12) in `events/` whose `$id` is the \
         `ce_dataschema` header.\n\n\
         | header | value |\n|---|---|\n\
         | `ce_specversion` | `1.0` |\n\
         | `ce_id` | stable id of the change: the first 128 bits of BLAKE3 over the resume \
         token's `_data` string, as 32 lowercase hex digits. The same change always gets the \
         same id (after a restart or a replay too), so consumers drop duplicates by it. |\n\
         | `ce_source` | `/mongodb/<database>/<collection>` |\n\
         | `ce_type` | the event type below |\n\
         | `ce_time` | the change's wall time (its cluster time when the server gave none), RFC 3339, UTC |\n\
         | `ce_subject` | the document's id |\n\
         | `ce_dataschema` | `$id` of the data's schema |\n\
         | `content-type` | `application/json` |\n\n\
         In structured mode the record value is the whole CloudEvent as one JSON object \
         (`content-type: application/cloudevents+json`), with the data under `data`.\n\n\
         ## Event types\n\n\
         | type | topic (default) | key | fires when | schema |\n|---|---|---|---|---|\n",
    );
    for event_type in &PAYMENT_TYPES {
        let _ = writeln!(
            out,
            "| `{}` | `{DEFAULT_PAYMENT_TOPIC}` | payment id | {} | [`events/{}`](events/{}) |",
            event_type.name,
            event_type.fires,
            event_type.file_name(),
            event_type.file_name()
        );
    }
    out.push_str("\n## Examples\n");
    for event_type in &PAYMENT_TYPES {
        let event = CloudEvent::of_payment(&example_payment_event(event_type.kind));
        let data: serde_json::Value = serde_json::from_slice(&event.data).unwrap_or_default();
        let _ = write!(out, "\n### `{}`\n\nHeaders:\n\n```\n", event_type.name);
        for (name, value) in event.binary_headers() {
            let _ = writeln!(out, "{name}: {value}");
        }
        let _ = write!(
            out,
            "```\n\nValue:\n\n```json\n{}\n```\n",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_kind_order_and_ids_follow_the_base() {
        for (kind, event_type) in PaymentEventKind::ALL.iter().zip(&PAYMENT_TYPES) {
            assert_eq!(*kind, event_type.kind);
            assert_eq!(payment_type(*kind).name, event_type.name);
            assert_eq!(
                event_type.schema_id,
                format!("{SCHEMA_BASE}{}", event_type.file_name())
            );
        }
    }

    #[test]
    fn schemas_are_draft_2020_12_with_their_id() {
        for event_type in &PAYMENT_TYPES {
            let schema = event_type.schema();
            assert_eq!(
                schema.get("$schema").and_then(|v| v.as_str()),
                Some("https://json-schema.org/draft/2020-12/schema")
            );
            assert_eq!(
                schema.get("$id").and_then(|v| v.as_str()),
                Some(event_type.schema_id)
            );
        }
    }
}
