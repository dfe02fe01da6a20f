//! The committed event schemas (`schemas/events/`), as the tests read them.

use std::path::Path;

/// The committed schema file `schemas/events/<file_name>`.
pub fn committed_event_schema(file_name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/events")
        .join(file_name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// A draft 2020-12 validator of `schema`.
pub fn validator(schema: &serde_json::Value) -> jsonschema::Validator {
    jsonschema::draft202012::new(schema).expect("a valid draft 2020-12 schema")
}
