//! In-process handlers behind one trait: each declares the event kinds it wants and
//! applies its effect idempotently, so a replay after a crash changes nothing twice.

mod batch;
pub mod counters;
pub mod exactly_once;
pub mod kafka;
pub mod memory_stats;
pub mod provider_simulator;
pub mod status_updater;
pub mod stdout;
pub mod write_errors;

use futures::future::BoxFuture;

use crate::domain::{DomainEvent, EventKind};

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The database failed; trying again may succeed.
    #[error("{handler}: {source}")]
    Database {
        /// The handler.
        handler: &'static str,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// A broker did not acknowledge the record (in time); sending again may succeed.
    #[error("{handler}: {source}")]
    Delivery {
        /// The handler.
        handler: &'static str,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// The event can neither be applied nor set aside: the stream must stop rather than
    /// skip it.
    #[error("{handler}: {reason}")]
    Fatal {
        /// The handler.
        handler: &'static str,
        /// Why.
        reason: String,
    },
    /// The event cannot be applied however often it is tried.
    #[error("{handler}: {reason}")]
    Permanent {
        /// The handler.
        handler: &'static str,
        /// Why.
        reason: String,
    },
}

impl HandlerError {
    /// Whether retrying the same event may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HandlerError::Database { .. } | HandlerError::Delivery { .. }
        )
    }
}

/// An in-process consumer of typed events.
pub trait Handler: Send + Sync {
    /// Name for logs and metrics.
    fn name(&self) -> &'static str;
    /// Whether this handler wants events of `kind`.
    fn wants(&self, kind: EventKind) -> bool;
    /// Applies `event`. Must be idempotent: the same event may arrive again after a crash.
    fn handle<'a>(&'a self, event: &'a DomainEvent) -> BoxFuture<'a, Result<(), HandlerError>>;
    /// Whether this handler must see the events of one key (one payment, one user) one at
    /// a time, in stream order. Handlers whose effects commute (exactly-once counters) say
    /// false: they get a key's events together, outside its lane.
    fn ordered(&self) -> bool {
        true
    }
}
