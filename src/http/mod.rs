//! The HTTP API (axum): payments, counters, health and metrics.

pub mod counters;
pub mod error;
pub mod page;
pub mod payments;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mongodb::Collection;
use mongodb::bson::Document;
use serde_json::{Value, json};

use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use error::ApiError;
use page::Page;
use payments::{NewPayment, PaymentsApi, payment_json};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The payments collection.
    pub payments: PaymentsApi,
    /// The counters collection.
    pub counters: Collection<Document>,
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Stream health.
    pub health: Arc<Health>,
}

/// The API's routes.
pub(crate) fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/payments", get(list_payments).post(create_payment))
        .route("/payment-counters", get(list_counters))
        .route("/payment-counter", get(list_counters))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn page(query: Result<Query<HashMap<String, String>>, QueryRejection>) -> Result<Page, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(None, e.body_text()))?;
    Page::from_query(&query)
}

async fn create_payment(
    State(state): State<ApiState>,
    body: Result<Json<Box<serde_json::value::RawValue>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(None, e.body_text()))?;
    let new = NewPayment::from_json_text(body.get())?;
    let payment = state.payments.create(&new).await?;
    Ok((StatusCode::ACCEPTED, Json(payment_json(&payment))).into_response())
}

async fn list_payments(
    State(state): State<ApiState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.payments.list(page(query)?).await?))
}

async fn list_counters(
    State(state): State<ApiState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(counters::list(&state.counters, page(query)?).await?))
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let streams = state.health.snapshot();
    let stuck = state.health.stuck();
    let lost = state.health.primary_lost_for();
    let open = state.health.all_open() && lost.is_none();
    let status = if open && stuck.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let streams: serde_json::Map<String, Value> = streams
        .into_iter()
        .map(|(name, open)| {
            let state_of = match open {
                true => "open",
                false if state.health.is_standby(&name) => "standby",
                false => "closed",
            };
            (name, json!(state_of))
        })
        .collect();
    let mut stuck_json = serde_json::Map::new();
    for (stream, s) in &stuck {
        let entry = stuck_json
            .entry(stream.clone())
            .or_insert_with(|| json!([]));
        if let Value::Array(list) = entry {
            list.push(s.to_json());
        }
    }
    let warnings = state.health.warnings();
    // Degraded still answers 200: restarting the process would not give history back.
    // Stuck answers 503: the process is not doing its work, whatever the reason.
    let summary = match (open, stuck.is_empty(), warnings.is_empty()) {
        (false, _, _) => "unavailable",
        (true, false, _) => "stuck",
        (true, true, true) => "ok",
        (true, true, false) => "degraded",
    };
    let mut body =
        json!({"status": summary, "streams": streams, "stuck": stuck_json, "warnings": warnings});
    if let Some(lost) = lost {
        body["mongodb"] = json!(format!(
            "no writable primary for {} s: a majority of the replica set is down or cut off \
             (an election takes about 12 s); reading and checkpoints wait for it",
            lost.as_secs()
        ));
    }
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
