//! Raw passthrough: a change of a `kafka.raw` collection as relaxed Extended JSON.

use std::sync::Arc;

use mongodb::bson::{Bson, Document, RawDocument};

use super::event_id_of;
use crate::domain::raw::RawChangeEvent;

impl RawChangeEvent {
    /// Converts a raw change. Fails only on BSON the server does not send.
    pub fn from_raw(raw: &RawDocument, namespace: Arc<str>) -> Result<RawChangeEvent, String> {
        let document = Document::try_from(raw).map_err(|e| e.to_string())?;
        let key = match document.get("documentKey") {
            Some(key) => key.clone().into_relaxed_extjson().to_string(),
            None => "{}".to_owned(),
        };
        let cluster_time = document.get_timestamp("clusterTime").ok();
        let value = Bson::Document(document).into_relaxed_extjson().to_string();
        Ok(RawChangeEvent {
            event_id: event_id_of(raw),
            namespace,
            key,
            value: value.into_bytes(),
            cluster_time,
            looked_up: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventId;
    use mongodb::bson::Timestamp;
    use mongodb::bson::{DateTime, rawdoc};

    #[test]
    fn the_change_becomes_relaxed_extended_json_keyed_by_its_document_key() {
        let raw = rawdoc! {
            "_id": {"_data": "8265"},
            "operationType": "insert",
            "clusterTime": Timestamp { time: 1_700_000_000, increment: 2 },
            "wallTime": DateTime::from_millis(1_700_000_000_000),
            "ns": {"db": "shop", "coll": "orders"},
            "documentKey": {"_id": 42_i64},
            "fullDocument": {"_id": 42_i64, "total": 9.5, "note": "x"},
        };
        let event = RawChangeEvent::from_raw(&raw, "shop.orders".into()).expect("converts");
        assert_eq!(event.key, r#"{"_id":42}"#);
        assert_eq!(&*event.namespace, "shop.orders");
        assert_eq!(event.event_id, EventId::from_token_data("8265"));
        let value: serde_json::Value = serde_json::from_slice(&event.value).expect("JSON");
        assert_eq!(value["operationType"], "insert");
        assert_eq!(value["fullDocument"]["total"], 9.5);
        assert_eq!(
            value["wallTime"],
            serde_json::json!({"$date": "2023-11-14T22:13:20Z"})
        );
        assert_eq!(
            value["clusterTime"],
            serde_json::json!({"$timestamp": {"t": 1_700_000_000_u32, "i": 2}})
        );
    }
}
