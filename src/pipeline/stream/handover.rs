//! Snapshot chunks through the session: reading one at the stream's position, handing
//! it to the core (which decides where it enters the ordered flow and which of its
//! documents it leaves out) with one job per route, and storing how far it got once the
//! core says it was delivered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use mongodb::bson::{Bson, RawDocument, Timestamp};

use super::session::Session;
use super::snapshot::{InFlight, Outcome, Read};
use crate::decode::Decoded;
use crate::pipeline::core::schedule::{AfterStored, Plan, RETRY};
use crate::pipeline::job::{Routable, Work};
use crate::source::snapshot::{self, Chunk, key_bytes};
use crate::state::dead_letters::DeadLetter;
use crate::state::snapshots::Reason;

impl Session<'_> {
    /// Starts the chunk reads the core's schedule allows at `at`, the stream's position.
    pub(super) fn read_chunks(&mut self, at: Option<Timestamp>) {
        let now = Instant::now();
        self.snapshots.poll(self.shared, &self.name, now);
        self.snapshots.report(&self.name, now);
        let parallelism = self.shared.config.snapshot.parallelism as usize;
        let due = self.snapshots.schedule.reads_due(at, now, parallelism);
        if let Some(at) = at {
            for plan in due {
                self.start_read(plan, at);
            }
        }
    }

    /// Reads the next chunk of `plan`'s collection at `at`, the stream's position.
    fn start_read(&mut self, plan: Plan, at: Timestamp) {
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
                plan,
                window,
                at,
                result,
            } => {
                let collection = plan.collection.clone();
                let read = Read {
                    plan,
                    window,
                    at,
                    result,
                };
                if let Some(read) = self.snapshots.schedule.arrived(&collection, read) {
                    self.take_read(read);
                }
            }
            Outcome::Saved {
                mut plan,
                last,
                documents,
                end,
                result,
            } => {
                if let Err(e) = result {
                    tracing::warn!(stream = %self.name, collection = %plan.collection, error = %e, "storing snapshot progress failed; retrying");
                    plan.not_before = Some(Instant::now() + RETRY);
                    self.save_progress(plan, last, documents, end);
                    return;
                }
                *self
                    .snapshots
                    .delivered
                    .entry(plan.collection.clone())
                    .or_default() += documents;
                let metrics = &self.shared.metrics;
                let headroom = metrics
                    .oplog_headroom
                    .with_label_values(&[&self.name])
                    .get();
                // The gauge reads 0 until the headroom watch measured it.
                let headroom = (headroom != 0.0).then_some(headroom);
                self.snapshots
                    .guard(&self.name, headroom, &self.shared.health, Instant::now());
                match self.snapshots.schedule.stored(plan, end) {
                    AfterStored::Done(plan) => self.snapshot_done(plan),
                    AfterStored::Enter(read) => self.take_read(read),
                    AfterStored::Reading | AfterStored::Waits => {}
                }
            }
        }
    }

    /// A chunk read arrived and may enter: in the flow it goes, or back to waiting.
    fn take_read(&mut self, read: Read) {
        let Read {
            plan,
            window,
            at,
            result,
        } = read;
        let changed = self.core.close_window(window);
        match result {
            Ok(chunk) => {
                let next = (!chunk.end).then(|| Plan {
                    after: chunk.last.clone(),
                    ..plan.clone()
                });
                self.enter_chunk(plan, chunk, &changed, at);
                if let Some(next) = next {
                    let now = self.last_time.unwrap_or(at);
                    self.snapshots.schedule.read_next(&next.collection);
                    self.start_read(next, now.max(at));
                }
            }
            Err(e) => {
                if e.is_too_old() {
                    tracing::info!(stream = %self.name, collection = %plan.collection, "snapshot waits: the stream is further behind than the server keeps snapshots");
                } else {
                    tracing::warn!(stream = %self.name, collection = %plan.collection, error = %e, "snapshot chunk read failed; retrying");
                }
                self.snapshots.schedule.read_failed(plan, Instant::now());
            }
        }
    }

    fn snapshot_done(&mut self, plan: Plan) {
        let documents = self.snapshots.delivered.remove(&plan.collection);
        self.snapshots.taken_up.remove(&plan.collection);
        if self.snapshots.taken_up.is_empty() {
            // Every snapshot of the stream is done: a repair is complete.
            if plan.reason == Reason::Resnapshot {
                let (gaps, stream) = (self.shared.gaps.clone(), self.name.to_string());
                self.snapshots
                    .io
                    .push(async move { Outcome::Repaired(gaps.repaired(&stream).await) }.boxed());
            }
            self.snapshots
                .guard(&self.name, None, &self.shared.health, Instant::now());
        }
        tracing::info!(stream = %self.name, collection = %plan.collection, documents = ?documents, "snapshot done");
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
        self.snapshots.schedule.entered(&plan.collection);
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
        let mut plan = done.plan;
        if done.last.is_some() {
            plan.after = done.last.clone();
        }
        plan.not_before = None;
        self.save_progress(plan, done.last, done.documents, done.end);
    }

    /// Stores the progress of a delivered chunk (after `plan.not_before`, when retried).
    fn save_progress(&mut self, plan: Plan, last: Option<Bson>, documents: u64, end: bool) {
        let store = self.shared.snapshots.clone();
        let stream = self.name.to_string();
        self.snapshots.io.push(
            async move {
                if let Some(at) = plan.not_before {
                    tokio::time::sleep_until(at.into()).await;
                }
                let result = store
                    .advance(&stream, &plan.collection, last.as_ref(), documents, end)
                    .await;
                Outcome::Saved {
                    plan,
                    last,
                    documents,
                    end,
                    result,
                }
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
