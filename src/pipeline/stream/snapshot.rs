//! The shell's state of a stream's snapshots: which collections are being snapshotted,
//! where each stands, and their chunk reads and progress writes in flight (I/O, polled by
//! the session's loop beside the stream). `handover` hands each chunk to the core.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use mongodb::bson::{Bson, Timestamp};

use crate::pipeline::Shared;
use crate::pipeline::core::Window;
use crate::source::snapshot::{self, Chunk, SnapshotError};

/// How long a chunk waits before it is read again after a failed read.
pub(super) const RETRY: Duration = Duration::from_secs(1);

/// One collection's snapshot: where the next chunk starts.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) collection: String,
    pub(super) after: Option<Bson>,
    pub(super) not_before: Option<Instant>,
}

/// A chunk handed to the core, until it is delivered.
pub(super) struct InFlight {
    pub(super) plan: Plan,
    pub(super) last: Option<Bson>,
    pub(super) documents: u64,
    pub(super) end: bool,
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
    pub(super) waiting: VecDeque<Plan>,
    pub(super) io: FuturesUnordered<BoxFuture<'static, Outcome>>,
    pub(super) in_flight: HashMap<u64, InFlight>,
    /// Reads, chunks in flight and saves: at most `snapshot.parallelism`.
    pub(super) active: usize,
    /// Changes before this cluster time may have been delivered before the session began
    /// (the stream repeats them from the checkpoint): no chunk is read before the stream
    /// passed it, so none can be older than a record already sent.
    pub(super) not_before: Option<Timestamp>,
    pub(super) next_chunk: u64,
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
