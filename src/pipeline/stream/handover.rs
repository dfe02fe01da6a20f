//! Snapshot chunks through the session: reading one at the stream's position, handing
//! it to the core (which decides where it enters the ordered flow and which of its
//! documents it leaves out) with one job per route, and storing how far it got once the
//! core says it was delivered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use mongodb::bson::{RawDocument, Timestamp};

use super::session::Session;
use super::snapshot::{InFlight, Outcome, Plan, RETRY};
use crate::decode::Decoded;
use crate::pipeline::job::{Routable, Work};
use crate::source::snapshot::{self, Chunk, key_bytes};
use crate::state::dead_letters::DeadLetter;
use crate::state::snapshots::Reason;

impl Session<'_> {
    /// Starts the chunk reads the stream's position allows: once it passed the session's
    /// start, at its cluster time, up to `snapshot.parallelism` at once.
    pub(super) fn read_chunks(&mut self, at: Option<Timestamp>) {
        let now = Instant::now();
        self.snapshots.poll(self.shared, &self.name, now);
        self.snapshots.report(&self.name, now);
        let (Some(at), Some(not_before)) = (at, self.snapshots.not_before) else {
            return;
        };
        if at < not_before {
            return;
        }
        let parallelism = self.shared.config.snapshot.parallelism as usize;
        while self.snapshots.active < parallelism {
            let ready = self
                .snapshots
                .waiting
                .iter()
                .position(|p| p.not_before.is_none_or(|t| t <= now));
            let Some(plan) = ready.and_then(|i| self.snapshots.waiting.remove(i)) else {
                return;
            };
            self.snapshots.active += 1;
            let window = self.core.open_window();
            let client = self.shared.client.clone();
            let database = self.name.to_string();
            let limit = self.shared.config.snapshot.chunk_size;
            self.snapshots.io.push(
                async move {
                    let result = snapshot::read_chunk(
                        &client,
                        &database,
                        &plan.collection,
                        plan.after.as_ref(),
                        limit,
                        at,
                    )
                    .await;
                    Outcome::Read {
                        plan,
                        window,
                        at,
                        result,
                    }
                }
                .boxed(),
            );
        }
    }

    /// Feeds the core a chunk read, or stores the progress of a delivered one.
    pub(super) fn snapshot_step(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Polled { progress, now } => {
                self.snapshots.polled(&self.name, progress, now);
            }
            Outcome::Repaired(Ok(())) => {
                tracing::info!(stream = %self.name, "history repaired: the snapshot after the gap is done (changeflow_gaps)");
            }
            Outcome::Repaired(Err(e)) => {
                tracing::warn!(stream = %self.name, error = %e, "marking the gap repaired failed (the snapshot itself is done)");
            }
            Outcome::Read {
                mut plan,
                window,
                at,
                result,
            } => {
                let changed = self.core.close_window(window);
                match result {
                    Ok(chunk) => self.enter_chunk(plan, chunk, &changed, at),
                    Err(e) => {
                        if e.is_too_old() {
                            tracing::info!(stream = %self.name, collection = %plan.collection, "snapshot waits: the stream is further behind than the server keeps snapshots");
                        } else {
                            tracing::warn!(stream = %self.name, collection = %plan.collection, error = %e, "snapshot chunk read failed; retrying");
                        }
                        plan.not_before = Some(Instant::now() + RETRY);
                        self.snapshots.active -= 1;
                        self.snapshots.waiting.push_front(plan);
                    }
                }
            }
            Outcome::Saved { plan, end, result } => {
                self.snapshots.active -= 1;
                match result {
                    Ok(()) if end => {
                        self.snapshots.running.remove(&plan.collection);
                        // Every snapshot of the stream is done: the repair is complete.
                        let last_repair =
                            plan.reason == Reason::Resnapshot && self.snapshots.running.is_empty();
                        if last_repair {
                            let (gaps, stream) = (self.shared.gaps.clone(), self.name.to_string());
                            self.snapshots.io.push(
                                async move { Outcome::Repaired(gaps.repaired(&stream).await) }
                                    .boxed(),
                            );
                        }
                        tracing::info!(stream = %self.name, collection = %plan.collection, documents = plan.documents, "snapshot done");
                    }
                    Ok(()) => self.snapshots.waiting.push_front(plan),
                    Err(e) => {
                        // The chunk is read again: its records repeat with the same ids.
                        tracing::warn!(stream = %self.name, collection = %plan.collection, error = %e, "storing snapshot progress failed; the chunk is read again");
                        self.snapshots.waiting.push_front(Plan {
                            not_before: Some(Instant::now() + RETRY),
                            ..plan
                        });
                    }
                }
            }
        }
    }

    /// A chunk enters the flow: its documents not changed since the read, each routed
    /// like a change of its key.
    fn enter_chunk(
        &mut self,
        plan: Plan,
        chunk: Chunk,
        changed: &HashSet<Box<[u8]>>,
        at: Timestamp,
    ) {
        let shared = self.shared;
        let mut items = Vec::with_capacity(chunk.documents.len());
        let documents = chunk.documents.len() as u64;
        for document in chunk.documents {
            let key = id_key(&plan.collection, &document);
            if key.as_ref().is_some_and(|k| changed.contains(k)) {
                continue;
            }
            match shared
                .domains
                .observe(&self.name, &plan.collection, document, at)
            {
                Decoded::Event(event) => items.push(Ok(Routable::Typed(Arc::new(event)))),
                Decoded::Raw(event) => {
                    let lane: Arc<str> = format!("{}:{}", event.namespace, event.key).into();
                    items.push(Ok(Routable::Raw {
                        event: Arc::new(event),
                        lane,
                    }));
                }
                Decoded::Invalid {
                    raw,
                    event_id,
                    error,
                } => {
                    let letter = DeadLetter::from_raw(
                        "snapshot",
                        &self.name,
                        event_id.as_str(),
                        &raw,
                        error.to_string(),
                    );
                    items.push(Err(letter));
                }
                Decoded::Other | Decoded::Namespace(_) => {}
            }
        }
        let routes: u32 = items
            .iter()
            .map(|item| match item {
                Ok(item) => self.parts(item),
                Err(_) => 1,
            })
            .sum();
        self.snapshots.next_chunk += 1;
        let id = self.snapshots.next_chunk;
        let mut tickets = self.core.chunk(id, routes, Instant::now());
        for item in items {
            match item {
                Ok(item) => {
                    let parts = self.parts(&item) as usize;
                    self.start_route(item, tickets.by_ref().take(parts));
                }
                Err(letter) => {
                    if let Some(ticket) = tickets.next() {
                        let lane: Arc<str> = format!("dl:{}", letter.event_id).into();
                        let work = Work::DeadLetter {
                            letter: Arc::new(letter),
                            lane: lane.clone(),
                        };
                        self.laned(&lane, ticket, work);
                    }
                }
            }
        }
        self.snapshots.in_flight.insert(
            id,
            InFlight {
                last: chunk.last.clone(),
                plan,
                documents,
                end: chunk.end,
            },
        );
    }

    /// A chunk and everything before it finished: store how far the snapshot got.
    pub(super) fn chunk_delivered(&mut self, chunk: u64) {
        let Some(done) = self.snapshots.in_flight.remove(&chunk) else {
            return;
        };
        let store = self.shared.snapshots.clone();
        let stream = self.name.to_string();
        let mut plan = done.plan;
        if done.last.is_some() {
            plan.after = done.last.clone();
        }
        plan.documents += done.documents;
        let end = done.end;
        self.snapshots.io.push(
            async move {
                let result = store
                    .advance(
                        &stream,
                        &plan.collection,
                        done.last.as_ref(),
                        done.documents,
                        end,
                    )
                    .await;
                Outcome::Saved { plan, end, result }
            }
            .boxed(),
        );
    }
}

/// The key the core compares a snapshot document with the changes by.
fn id_key(collection: &str, document: &RawDocument) -> Option<Box<[u8]>> {
    let id = document.get("_id").ok().flatten()?;
    Some(key_bytes(collection, id))
}
