//! The shell's side of snapshots: which collections of the stream are being snapshotted,
//! their chunk reads and progress writes (I/O, polled by the session's loop beside the
//! stream), and handing each chunk to the core, which decides where it enters the flow.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use mongodb::bson::{Bson, RawDocument, Timestamp};

use super::session::Session;
use crate::decode::Decoded;
use crate::pipeline::Shared;
use crate::pipeline::core::Window;
use crate::pipeline::job::{Routable, Work};
use crate::source::snapshot::{self, Chunk, SnapshotError, key_bytes};
use crate::state::dead_letters::DeadLetter;

/// How long a chunk waits before it is read again after a failed read.
const RETRY: Duration = Duration::from_secs(1);

/// One collection's snapshot: where the next chunk starts.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    collection: String,
    after: Option<Bson>,
    not_before: Option<Instant>,
}

/// A chunk handed to the core, until it is delivered.
struct InFlight {
    plan: Plan,
    last: Option<Bson>,
    documents: u64,
    end: bool,
}

/// What an I/O step of a snapshot came to.
pub(super) enum Outcome {
    Read {
        plan: Plan,
        window: Window,
        at: Timestamp,
        result: Result<Chunk, SnapshotError>,
    },
    Saved {
        plan: Plan,
        end: bool,
        result: Result<(), mongodb::error::Error>,
    },
}

/// A stream's snapshots in this session.
#[derive(Default)]
pub(super) struct Snapshots {
    waiting: VecDeque<Plan>,
    io: FuturesUnordered<BoxFuture<'static, Outcome>>,
    in_flight: HashMap<u64, InFlight>,
    /// Reads, chunks in flight and saves: at most `snapshot.parallelism`.
    active: usize,
    /// Changes before this cluster time may have been delivered before the session began
    /// (the stream repeats them from the checkpoint): no chunk is read before the stream
    /// passed it, so none can be older than a record already sent.
    not_before: Option<Timestamp>,
    next_chunk: u64,
}

impl Snapshots {
    /// The unfinished snapshots of `stream`, and the present cluster time they wait for.
    pub(super) async fn load(shared: &Shared, stream: &str) -> Snapshots {
        let mut snapshots = Snapshots::default();
        let progress = match shared.snapshots.of_stream(stream).await {
            Ok(progress) => progress,
            Err(e) => {
                tracing::warn!(stream = %stream, error = %e, "reading snapshot progress failed; snapshots wait for the next reopen");
                return snapshots;
            }
        };
        snapshots.waiting = progress
            .into_iter()
            .filter(|p| !p.done)
            .map(|p| {
                tracing::info!(stream = %stream, collection = %p.collection, reason = p.reason.as_str(), documents = p.documents, "snapshot continues");
                Plan {
                    collection: p.collection,
                    after: p.after,
                    not_before: None,
                }
            })
            .collect();
        if !snapshots.waiting.is_empty() {
            match snapshot::cluster_time_now(&shared.client).await {
                Ok(now) => snapshots.not_before = Some(now),
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "reading the cluster time failed; snapshots wait for the next reopen");
                    snapshots.waiting.clear();
                }
            }
        }
        snapshots
    }

    /// Whether an I/O step is pending.
    pub(super) fn busy(&self) -> bool {
        !self.io.is_empty()
    }

    /// The next finished I/O step.
    pub(super) async fn next(&mut self) -> Option<Outcome> {
        self.io.next().await
    }
}

impl Session<'_> {
    /// Starts the chunk reads the stream's position allows: once it passed the session's
    /// start, at its cluster time, up to `snapshot.parallelism` at once.
    pub(super) fn read_chunks(&mut self, at: Option<Timestamp>) {
        let (Some(at), Some(not_before)) = (at, self.snapshots.not_before) else {
            return;
        };
        if at < not_before {
            return;
        }
        let parallelism = self.shared.config.snapshot.parallelism as usize;
        let now = Instant::now();
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
                        tracing::info!(stream = %self.name, collection = %plan.collection, "snapshot done");
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
        changed: &std::collections::HashSet<Box<[u8]>>,
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
