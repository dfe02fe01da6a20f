//! `GET /payment-counters` (also `/payment-counter`, the reference sample's path).

use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};

use super::error::ApiError;
use super::page::Page;

/// One page of counters, by product code.
pub async fn list(counters: &Collection<Document>, page: Page) -> Result<Value, ApiError> {
    let (docs, total) = page.fetch(counters, doc! {"_id": 1}).await?;
    let items: Vec<Value> = docs.iter().map(counter_json).collect();
    Ok(json!({"page": page.page, "size": page.size, "total": total, "items": items}))
}

/// A counter field (`successfulPayments`, `failedPayments`); absent or not a number is 0.
pub(crate) fn counter_value(doc: &Document, field: &str) -> i64 {
    match doc.get(field) {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn counter_json(doc: &Document) -> Value {
    let count = |field: &str| counter_value(doc, field);
    json!({
        "productCode": doc.get("_id").map(|id| id.clone().into_relaxed_extjson()),
        "productName": doc.get_str("productName").ok(),
        "successfulPayments": count("successfulPayments"),
        "failedPayments": count("failedPayments"),
    })
}
