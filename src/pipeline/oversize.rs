//! A change over 16 MB the stream cannot split, under `engine.oversize = "fail"`: the error
//! that stops the stream, naming what an operator needs to decide.

use mongodb::bson::{Bson, Document, RawDocumentBuf};

use super::EngineError;
use crate::source::position::raw_token_data;
use crate::source::reader::Position;

/// The error that stops a stream at an oversized change (`engine.oversize = "fail"`).
pub(super) fn stop_error(
    stream: &str,
    raw: &RawDocumentBuf,
    at: &Position,
    size: i64,
) -> EngineError {
    let text = |key: &str| {
        raw.get_document(key)
            .ok()
            .and_then(|d| Document::try_from(d).ok())
    };
    let namespace = text("ns").map_or_else(
        || "?".to_owned(),
        |ns| {
            format!(
                "{}.{}",
                ns.get_str("db").unwrap_or("?"),
                ns.get_str("coll").unwrap_or("?")
            )
        },
    );
    let document_key = text("documentKey").map_or_else(
        || "?".to_owned(),
        |k| {
            crate::domain::excerpt(&Bson::Document(k).into_relaxed_extjson().to_string())
                .into_owned()
        },
    );
    EngineError::Oversize {
        stream: stream.to_owned(),
        namespace,
        document_key,
        size,
        token: raw_token_data(&at.token).unwrap_or_default().to_owned(),
    }
}
