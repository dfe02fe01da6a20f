//! Raw BSON rendered as relaxed Extended JSON: the shape the MongoDB Kafka source
//! connector emits and what `changeflow tail` prints.

use mongodb::bson::{Bson, Document, RawDocument};

/// Why a raw document could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("change event is not well-formed BSON: {0}")]
pub struct RenderError(String);

/// Relaxed Extended JSON of a raw document.
pub(crate) fn to_relaxed_json(raw: &RawDocument) -> Result<serde_json::Value, RenderError> {
    let doc = Document::try_from(raw).map_err(|e| RenderError(e.to_string()))?;
    Ok(Bson::Document(doc).into_relaxed_extjson())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{DateTime, Decimal128, rawdoc};
    use std::str::FromStr;

    #[test]
    fn decimals_stay_exact_and_dates_are_iso() {
        let amount = Decimal128::from_str("1234.50").unwrap();
        let raw = rawdoc! {
            "amount": amount,
            "at": DateTime::from_millis(0),
            "n": 7_i64,
        };
        let json = to_relaxed_json(&raw).unwrap();
        assert_eq!(
            json["amount"],
            serde_json::json!({"$numberDecimal": "1234.50"})
        );
        assert_eq!(
            json["at"],
            serde_json::json!({"$date": "1970-01-01T00:00:00Z"})
        );
        assert_eq!(json["n"], serde_json::json!(7));
    }
}
