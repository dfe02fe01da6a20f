//! `GET /payment-counters` (also `/payment-counter`, the reference sample's path).

use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};

use super::error::ApiError;
use super::page::Page;

/// One page of counters, by product code.
pub async fn list(counters: &Collection<Document>, page: Page) -> Result<Value, ApiError> {
    let docs: Vec<Document> = counters
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .skip(page.skip())
        .limit(page.size as i64)
        .await
        .map_err(ApiError::database)?
        .try_collect()
        .await
        .map_err(ApiError::database)?;
    let total = counters
        .estimated_document_count()
        .await
        .map_err(ApiError::database)?;
    let items: Vec<Value> = docs.iter().map(counter_json).collect();
    Ok(json!({"page": page.page, "size": page.size, "total": total, "items": items}))
}

fn counter_json(doc: &Document) -> Value {
    let count = |field: &str| match doc.get(field) {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        _ => 0,
    };
    json!({
        "productCode": doc.get("_id").map(|id| id.clone().into_relaxed_extjson()),
        "productName": doc.get_str("productName").ok(),
        "successfulPayments": count("successfulPayments"),
        "failedPayments": count("failedPayments"),
    })
}
