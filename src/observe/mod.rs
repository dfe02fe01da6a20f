//! Watching changeflow: Prometheus metrics, the health model behind `/healthz`, logs, and
//! error text fit for people.

pub mod error_text;
pub mod health;
pub(crate) mod locks;
pub mod metrics;
pub mod telemetry;
