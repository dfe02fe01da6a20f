//! The committed schemas and catalog (`schemas/`) are what the code generates, and the
//! published data validates against them. Regenerate with
//! `CHANGEFLOW_UPDATE_SCHEMAS=1 cargo test --test it schemas`.

use std::path::{Path, PathBuf};

use crate::common::schemas::{self, committed_event_schema};
use changeflow::events::catalog::{published_types, readme};

const UPDATE: &str = "CHANGEFLOW_UPDATE_SCHEMAS";

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// Compares `path` with `generated`, or writes it when regenerating.
fn check_file(path: &Path, generated: &str) -> Option<String> {
    if std::env::var_os(UPDATE).is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create schemas dir");
        }
        std::fs::write(path, generated).expect("write schema file");
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(committed) if committed == generated => None,
        Ok(_) => Some(format!("{} differs from the code", path.display())),
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

#[test]
fn committed_schemas_and_catalog_match_the_code() {
    let dir = schemas_dir();
    let mut drift = Vec::new();
    for event_type in published_types() {
        let text = serde_json::to_string_pretty(&event_type.schema()).expect("schema JSON") + "\n";
        drift.extend(check_file(
            &dir.join("events").join(event_type.file_name()),
            &text,
        ));
    }
    drift.extend(check_file(&dir.join("README.md"), &readme()));
    assert!(
        drift.is_empty(),
        "{}\nregenerate with `{UPDATE}=1 cargo test --test it schemas` and commit the result",
        drift.join("\n")
    );
}

fn validator(file_name: &str) -> jsonschema::Validator {
    schemas::validator(&committed_event_schema(file_name))
}

#[test]
fn published_data_validates_against_its_committed_schema() {
    for event_type in published_types() {
        let event = event_type.example();
        assert_eq!(event.event_type, event_type.name);
        let data: serde_json::Value = serde_json::from_slice(&event.data).expect("data is JSON");
        let validator = validator(&event_type.file_name());
        let errors: Vec<String> = validator
            .iter_errors(&data)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", event_type.name);
    }
}

#[test]
fn schemas_refuse_data_that_breaks_the_contract() {
    let validator = validator("changeflow.payment.confirmed.v1.json");
    let good = serde_json::json!({
        "paymentId": "p-1", "amount": "12.50", "status": "CONFIRMED",
        "product": {"code": "c", "name": "n"},
    });
    assert!(validator.is_valid(&good));
    for (what, bad) in [
        (
            "amount as a float",
            serde_json::json!({"paymentId": "p-1", "amount": 12.5, "status": "CONFIRMED", "product": {"code": "c", "name": "n"}}),
        ),
        (
            "unknown status",
            serde_json::json!({"paymentId": "p-1", "amount": "12.50", "status": "PAID", "product": {"code": "c", "name": "n"}}),
        ),
        (
            "missing product",
            serde_json::json!({"paymentId": "p-1", "amount": "12.50", "status": "CONFIRMED"}),
        ),
        (
            "empty payment id",
            serde_json::json!({"paymentId": "", "amount": "12.50", "status": "CONFIRMED", "product": {"code": "c", "name": "n"}}),
        ),
        (
            "unknown field",
            serde_json::json!({"paymentId": "p-1", "amount": "12.50", "status": "CONFIRMED", "product": {"code": "c", "name": "n"}, "extra": 1}),
        ),
    ] {
        assert!(!validator.is_valid(&bad), "{what} must not validate");
    }
}
