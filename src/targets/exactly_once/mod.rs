//! Exactly-once effects under replay, crash and concurrency, group-committed.
//!
//! Every effect is a set of counters on one document (`$inc`, plus fields to `$set`). The
//! event's id goes into `changeflow_processed_events` in the same transaction as the
//! `$inc`, so a second delivery finds its id and changes nothing.
//!
//! One writer task per handler commits the effects of many events in one short transaction:
//! the ids that were not processed yet, and one summed `$inc` per document. Events that
//! arrive while a transaction runs wait for the next one. So however many events are in
//! flight, transactions of one process never fight over a hot counter document (hundreds
//! of transactions on a few documents used to abort each other with WriteConflict), and
//! a backlog drains at the speed of batches, not of single round trips.
//!
//! A transaction left open by a killed process holds its documents until the server gives
//! up on it (`transactionLifetimeLimitSeconds`, 60 s by default). The writer records its
//! session id in `changeflow_effect_sessions` ([`sessions`]); a new writer ends the
//! recorded sessions of its handler with `killSessions` before it commits, and again when
//! write conflicts persist, which aborts such orphans at once.

mod commit;
pub mod sessions;

use std::time::Duration;

use crate::domain::{DomainEvent, EventKind};
use futures::future::BoxFuture;

use super::batch::{self, Submit, Waiting};
use crate::domain::EventId;
use crate::pipeline::target::{Input, Routed, Target, TargetError};
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, IndexModel};

/// Collection of processed event ids (shared by exactly-once handlers; ids are prefixed
/// by the handler's name).
pub const PROCESSED_EVENTS: &str = "changeflow_processed_events";
/// Effects committed in one transaction at most.
const MAX_BATCH: usize = 1000;

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The effect took place.
    Counted,
    /// The event had been applied before: nothing changed.
    Duplicate,
}

/// The effect of one event: counters of one document move (`$inc`, whole numbers), other
/// fields are set (`$set`); the document is created when missing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Increment {
    /// The `_id` of the counters' document.
    pub id: String,
    /// `$inc`: field → amount (an `i64` or `i32`).
    pub inc: Document,
    /// `$set`: field → value.
    pub set: Document,
}

/// One event's effect: its processed id (`<handler>:<event id>`) and the increment.
struct Effect {
    processed_id: String,
    /// Whether the processed id expires (`processed_ttl`) or is kept for good.
    expires: bool,
    increment: Increment,
}

/// An effect waiting for the writer, and where its answer goes.
type Request = Waiting<Effect, Result<Applied, TargetError>>;

/// Applies effects at most once per event id, for one handler, on one collection.
#[derive(Debug, Clone)]
pub(crate) struct ExactlyOnce {
    requests: Submit<Effect, Result<Applied, TargetError>>,
    processed: Collection<Document>,
    sessions: sessions::Sessions,
    handler: &'static str,
    processed_ttl: Duration,
}

impl ExactlyOnce {
    /// Applies `handler`'s effects to `collection` of `database`, recording processed ids
    /// there, kept `processed_ttl` (longer than any replay you may run: an event replayed
    /// after its id expired applies again). Starts the writer task (it ends when the last
    /// clone is dropped), so it must be called within a Tokio runtime.
    pub fn new(
        client: &Client,
        database: &str,
        collection: &str,
        handler: &'static str,
        processed_ttl: Duration,
    ) -> ExactlyOnce {
        let db = client.database(database);
        let processed = db.collection(PROCESSED_EVENTS);
        let sessions = sessions::Sessions::new(client, &db, handler);
        let (requests, queue) = batch::queue(MAX_BATCH);
        let writer = commit::Writer::new(
            client.clone(),
            processed.clone(),
            db.collection(collection),
            sessions.clone(),
            handler,
        );
        tokio::spawn(writer.run(queue));
        ExactlyOnce {
            requests,
            processed,
            sessions,
            handler,
            processed_ttl,
        }
    }

    /// Creates the TTL indexes on processed ids and recorded sessions (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), TargetError> {
        let ttl = IndexModel::builder()
            .keys(doc! {"at": 1})
            .options(
                IndexOptions::builder()
                    .name("processed_ttl".to_owned())
                    .expire_after(self.processed_ttl)
                    .build(),
            )
            .build();
        self.processed
            .create_index(ttl)
            .await
            .map_err(|source| self.database_error(source))?;
        self.sessions
            .ensure_index()
            .await
            .map_err(|source| self.database_error(source))
    }

    fn database_error(&self, source: mongodb::error::Error) -> TargetError {
        TargetError::Database {
            handler: self.handler,
            source,
        }
    }

    /// Applies `effect` for `event_id` once; returns when the transaction that records it
    /// has committed (majority), or with why it could not.
    pub async fn apply(
        &self,
        event_id: EventId,
        effect: Increment,
    ) -> Result<Applied, TargetError> {
        let effect = Effect {
            processed_id: format!("{}:{event_id}", self.handler),
            expires: true,
            increment: effect,
        };
        self.requests.call(effect, self.handler).await?
    }

    /// Applies `effect` once per `key` for good: the processed id `<handler>:<key>` never
    /// expires (one small document per key; for effects that must hold across snapshots of
    /// any age, such as one count per payment).
    pub async fn apply_once_per(
        &self,
        key: &str,
        effect: Increment,
    ) -> Result<Applied, TargetError> {
        let effect = Effect {
            processed_id: format!("{}:{key}", self.handler),
            expires: false,
            increment: effect,
        };
        self.requests.call(effect, self.handler).await?
    }
}

/// A target that counts events exactly once through an [`ExactlyOnce`] writer: the
/// counters and the memory statistics. Their increments commute and each event counts
/// once, so order among a key's events is moot: they run outside the lanes.
pub trait Counting: Send + Sync {
    /// The target's name in `[routes]`, logs and metrics.
    const NAME: &'static str;
    /// The event kinds it can take.
    const KINDS: &'static [EventKind];
    /// Counts `event` once.
    fn count<'a>(&'a self, event: &'a DomainEvent) -> BoxFuture<'a, Result<(), TargetError>>;
}

impl<T: Counting> Target for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn wants(&self, input: Input) -> bool {
        matches!(input, Input::Typed(kind) if T::KINDS.contains(&kind))
    }

    fn ordered(&self) -> bool {
        false
    }

    fn routed_by_config(&self) -> bool {
        true
    }

    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>> {
        match event {
            Routed::Typed(event) => self.count(event),
            Routed::Raw(_) | Routed::Namespace { .. } => Box::pin(async { Ok(()) }),
        }
    }
}
