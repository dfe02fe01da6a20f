//! The writer task of one exactly-once handler: takes every effect waiting, commits them
//! in one transaction (new processed ids, one summed `$inc` per document), answers each.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::sessions::Sessions;
use super::{Applied, Effect, Increment, Request};
use crate::observe::error_text::Tidy;
use crate::pipeline::target::TargetError;
use crate::targets::batch::Batches;
use crate::targets::write_errors::{is_permanent, is_write_conflict};
use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::Error as DriverError;
use mongodb::options::WriteConcern;
use mongodb::{Client, ClientSession, Collection};

/// How long one batch keeps retrying before its callers get the error (and retry it
/// themselves, with their own backoff).
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Write conflicts in a row after which the writer ends the other recorded sessions: one
/// of them may be a killed process's open transaction.
const CONFLICTS_BEFORE_KILL: u32 = 3;
/// Commits the effects of one handler.
pub(super) struct Writer {
    client: Client,
    processed: Collection<Document>,
    targets: Collection<Document>,
    sessions: Sessions,
    handler: &'static str,
    session: Option<ClientSession>,
    /// Whether the session is recorded (a kill by another writer removes the record).
    recorded: bool,
}

/// How one transaction ended.
enum Failure {
    /// Worth trying again: a conflict, an election, a network error.
    Transient(DriverError),
    /// The batch cannot commit as it is.
    Permanent(DriverError),
}

impl Writer {
    pub(super) fn new(
        client: Client,
        processed: Collection<Document>,
        targets: Collection<Document>,
        sessions: Sessions,
        handler: &'static str,
    ) -> Writer {
        Writer {
            client,
            processed,
            targets,
            sessions,
            handler,
            session: None,
            recorded: false,
        }
    }

    /// Commits batches until every handle is gone.
    pub(super) async fn run(mut self, mut batches: Batches<Effect, Result<Applied, TargetError>>) {
        while let Some(batch) = batches.next().await {
            self.commit(batch).await;
        }
    }

    /// Commits `batch` (retrying), splitting it when one effect cannot commit, and
    /// answers every request.
    async fn commit(&mut self, batch: Vec<Request>) {
        // The same event twice in one batch: the first carries the effect.
        let mut seen = HashSet::new();
        let (batch, repeats): (Vec<Request>, Vec<Request>) = batch
            .into_iter()
            .partition(|r| seen.insert(r.item.processed_id.clone()));
        let result = self.commit_with_retry(&batch).await;
        for repeat in repeats {
            repeat.answer(match &result {
                Ok(_) => Ok(Applied::Duplicate),
                Err(Failure::Permanent(e) | Failure::Transient(e)) => Err(TargetError::Database {
                    handler: self.handler,
                    source: e.clone(),
                }),
            });
        }
        match result {
            Ok(duplicates) => {
                for request in batch {
                    let applied = if duplicates.contains(&request.item.processed_id) {
                        Applied::Duplicate
                    } else {
                        Applied::Counted
                    };
                    request.answer(Ok(applied));
                }
            }
            Err(Failure::Permanent(e)) if batch.len() > 1 => {
                tracing::warn!(handler = self.handler, events = batch.len(), error = %Tidy(&e), "a batch of effects cannot commit; committing them one by one");
                for request in batch {
                    Box::pin(self.commit(vec![request])).await;
                }
            }
            Err(Failure::Permanent(e)) => {
                for request in batch {
                    request.answer(Err(TargetError::Permanent {
                        handler: self.handler,
                        reason: Tidy(&e).to_string(),
                    }));
                }
            }
            Err(Failure::Transient(e)) => {
                for request in batch {
                    request.answer(Err(TargetError::Database {
                        handler: self.handler,
                        source: e.clone(),
                    }));
                }
            }
        }
    }

    /// Commits `batch`, retrying transient failures within [`RETRY_BUDGET`]; returns the
    /// processed ids that were already recorded.
    async fn commit_with_retry(&mut self, batch: &[Request]) -> Result<HashSet<String>, Failure> {
        let started = Instant::now();
        let mut backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(5))
            .with_max_interval(Duration::from_secs(2))
            .with_max_elapsed_time(None)
            .build();
        let mut conflicts = 0;
        loop {
            let error = match self.attempt(batch).await {
                Ok(duplicates) => return Ok(duplicates),
                Err(Failure::Permanent(e)) => return Err(Failure::Permanent(e)),
                Err(Failure::Transient(e)) => e,
            };
            if started.elapsed() >= RETRY_BUDGET {
                return Err(Failure::Transient(error));
            }
            // Another writer may have ended this session: record it again.
            self.recorded = false;
            if is_write_conflict(&error) {
                conflicts += 1;
                if conflicts >= CONFLICTS_BEFORE_KILL {
                    conflicts = 0;
                    self.end_other_sessions().await;
                }
            } else {
                tracing::warn!(handler = self.handler, error = %Tidy(&error), "committing effects failed; retrying");
            }
            let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(2));
            tokio::time::sleep(pause).await;
        }
    }

    /// Ends the other recorded sessions of this handler (see [`super::sessions`]).
    async fn end_other_sessions(&mut self) {
        let Some(session) = &self.session else { return };
        match self.sessions.end_others(session.id()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                handler = self.handler,
                sessions = n,
                "ended the sessions of earlier or other runs (a killed process's open transaction would block the counters until the server's transaction lifetime passed)"
            ),
            Err(e) => tracing::warn!(
                handler = self.handler,
                error = %Tidy(&e),
                "cannot end the sessions of earlier runs; a transaction a killed process left open blocks its documents until transactionLifetimeLimitSeconds passes"
            ),
        }
    }

    /// One transaction over `batch`.
    async fn attempt(&mut self, batch: &[Request]) -> Result<HashSet<String>, Failure> {
        if self.session.is_none() {
            let session = self.client.start_session().await.map_err(classify)?;
            self.session = Some(session);
            self.end_other_sessions().await;
        }
        if !self.recorded {
            if let Some(session) = &self.session {
                self.sessions.record(session.id()).await.map_err(classify)?;
            }
            self.recorded = true;
        }
        let Some(session) = self.session.as_mut() else {
            unreachable!("the session was just started")
        };
        session
            .start_transaction()
            .write_concern(WriteConcern::majority())
            .await
            .map_err(classify)?;
        let body = transaction(session, &self.processed, &self.targets, batch).await;
        let duplicates = match body {
            Ok(duplicates) => duplicates,
            Err(e) => {
                let _ = session.abort_transaction().await;
                return Err(classify(e));
            }
        };
        // An unknown commit result is retried like any transient failure: the next attempt
        // finds the ids if this commit took effect, so nothing counts twice.
        session.commit_transaction().await.map_err(classify)?;
        Ok(duplicates)
    }
}

/// The body of one transaction: which ids are recorded already, the new ones recorded,
/// one `$inc` per document.
async fn transaction(
    session: &mut ClientSession,
    processed: &Collection<Document>,
    targets: &Collection<Document>,
    batch: &[Request],
) -> Result<HashSet<String>, DriverError> {
    let ids: Vec<&str> = batch.iter().map(|r| r.item.processed_id.as_str()).collect();
    let duplicates: HashSet<String> = processed
        .distinct("_id", doc! {"_id": {"$in": &ids}})
        .session(&mut *session)
        .await?
        .into_iter()
        .filter_map(|id| match id {
            Bson::String(s) => Some(s),
            _ => None,
        })
        .collect();
    let fresh: Vec<&Request> = batch
        .iter()
        .filter(|r| !duplicates.contains(&r.item.processed_id))
        .collect();
    if fresh.is_empty() {
        return Ok(duplicates);
    }
    let now = DateTime::now();
    let records = fresh.iter().map(|r| match r.item.expires {
        true => doc! {"_id": &r.item.processed_id, "at": now},
        // No `at`: the TTL index passes it by.
        false => doc! {"_id": &r.item.processed_id},
    });
    processed
        .insert_many(records)
        .session(&mut *session)
        .await?;
    // Documents in a fixed order: two writers lock them in the same order.
    for (id, increment) in summed(fresh.iter().map(|r| &r.item.increment)) {
        targets
            .update_one(
                doc! {"_id": id},
                doc! {"$inc": increment.inc, "$set": increment.set},
            )
            .upsert(true)
            .session(&mut *session)
            .await?;
    }
    Ok(duplicates)
}

/// The effects summed per document: `$inc` amounts added, the last `$set` of a field kept.
fn summed<'a>(effects: impl Iterator<Item = &'a Increment>) -> BTreeMap<&'a str, Increment> {
    let mut by_document: BTreeMap<&str, Increment> = BTreeMap::new();
    for effect in effects {
        let total = by_document
            .entry(effect.id.as_str())
            .or_insert_with(|| Increment {
                id: effect.id.clone(),
                inc: Document::new(),
                set: Document::new(),
            });
        for (field, amount) in &effect.inc {
            let before = total.inc.get(field).and_then(whole).unwrap_or(0);
            let add = whole(amount).unwrap_or(0);
            total.inc.insert(field.clone(), before.saturating_add(add));
        }
        for (field, value) in &effect.set {
            total.set.insert(field.clone(), value.clone());
        }
    }
    by_document
}

fn whole(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Permanent when the server refused the effect itself; transient otherwise.
fn classify(e: DriverError) -> Failure {
    if is_permanent(&e) {
        Failure::Permanent(e)
    } else {
        Failure::Transient(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(id: &str, field: &str, n: i64, name: &str) -> Increment {
        Increment {
            id: id.to_owned(),
            inc: doc! {field: n},
            set: doc! {"name": name},
        }
    }

    #[test]
    fn effects_sum_per_document_and_keep_the_last_set() {
        let effects = [
            effect("b", "ok", 1, "first"),
            effect("a", "ok", 2, "x"),
            effect("b", "ok", 3, "second"),
            effect("b", "failed", 1, "third"),
        ];
        let sums = summed(effects.iter());
        let ids: Vec<&str> = sums.keys().copied().collect();
        assert_eq!(ids, ["a", "b"], "documents in a fixed order");
        assert_eq!(sums["b"].inc, doc! {"ok": 4_i64, "failed": 1_i64});
        assert_eq!(sums["b"].set, doc! {"name": "third"});
        assert_eq!(sums["a"].inc, doc! {"ok": 2_i64});
    }
}
