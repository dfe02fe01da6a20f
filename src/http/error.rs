//! API errors: a status and a JSON body `{"error": …, "field": …}`.

use crate::observe::error_text::Tidy;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// 400: the request is wrong; `field` names the offending field or parameter.
    pub fn bad_request(field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    /// 503: the database failed; the message is logged, the client gets a generic one.
    pub fn database(e: mongodb::error::Error) -> ApiError {
        tracing::warn!(error = %Tidy(&e), "HTTP request failed on the database");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the database is not available; try again".into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        (self.status, Json(body)).into_response()
    }
}
