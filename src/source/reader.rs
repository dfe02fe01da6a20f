//! The reader task of one stream: pulls changes (and, on quiet streams, post-batch resume
//! tokens) and hands them on raw through a bounded channel, so a slow consumer pauses
//! reading instead of growing a buffer. Decoding happens on the consumer's side: reading
//! and decoding then overlap instead of adding up on one task.
//!
//! Changes go on in chunks: everything the driver already holds, up to the moment it has
//! to ask the server for more. One hand-off (and one thread wake-up) per server batch
//! instead of one per change, and the next batch is requested before the consumer has
//! worked through the last. A chunk also ends at [`MAX_CHUNK_BYTES`] of changes: large
//! changes (memory threads with both images) would otherwise hold several times the
//! server's batch while the consumer waits at its read-ahead bound.

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use mongodb::bson::{self, DateTime, RawDocumentBuf, Timestamp};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ResumeToken;
use tokio::sync::mpsc;

use super::large::{Assembler, Piece};
use super::{RawChange, SourceError};
use crate::observe::health::SourceProgress;
use crate::observe::metrics::ReaderMetrics;

/// A chunk goes on once its changes hold this many bytes, however few they are: what waits
/// between reader and consumer (the chunk being filled, the queued ones, the one being
/// dispatched) stays a few MiB.
pub(crate) const MAX_CHUNK_BYTES: usize = 1 << 20;

/// A place in the stream the checkpoint can move to.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// Resume with `startAfter` from here: the resume token, kept raw because only the few
    /// positions that become checkpoints ever need it as a [`ResumeToken`].
    pub token: RawDocumentBuf,
    /// Cluster time of the change, when the position is a change.
    pub cluster_time: Option<Timestamp>,
    /// Wall time of the change, when the position is a change.
    pub wall_time: Option<DateTime>,
}

/// What the reader hands on.
#[derive(Debug)]
pub enum Item {
    /// A change, as read. Its times are left to the decoder, which reads the envelope
    /// anyway: the reader does no more per change than a plain driver loop.
    Change {
        /// Its resume token.
        token: RawDocumentBuf,
        /// The raw change event.
        raw: RawChange,
    },
    /// The stream is quiet and its resume token moved past filtered-out oplog entries.
    Idle(Position),
    /// Reading failed after the driver's own resume attempt; the reader has stopped.
    Failed(SourceError),
    /// The server closed the stream (an invalidate: the database was dropped).
    Closed,
    /// The stream reached its end (a replay's bound): nothing after it is read.
    End,
}

/// Where a change stands against a stream's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Before the end: hand it on.
    Within,
    /// The last change to hand on.
    Last,
    /// Beyond the end: the stream is done without it.
    Past,
}

/// Where a stream's reading ends: a replay's bound. A run's stream has none.
pub trait Reach: Send + Sync {
    /// Where the change with resume token `token` stands.
    fn change(&self, token: &RawDocumentBuf) -> Step;
    /// Whether a quiet stream's post-batch `token` shows the end was passed.
    fn idle(&self, token: &RawDocumentBuf) -> bool;
}

/// Reads `stream` until the receiver is dropped, reading fails or `reach` says the end
/// came ([`Item::End`]), handing on chunks of at most `max_chunk` items, reassembling
/// split events, counting its waits in `metrics` and recording each answer of the server
/// in `progress` (a stream that stops getting answers is stuck, not idle).
pub async fn read(
    mut stream: ChangeStream<RawChange>,
    database: String,
    max_chunk: usize,
    out: mpsc::Sender<Vec<Item>>,
    metrics: ReaderMetrics,
    progress: Arc<SourceProgress>,
    reach: Option<Arc<dyn Reach>>,
) {
    progress.answered();
    let out = Handoff { out, metrics };
    // The last post-batch token handed on, so a quiet stream reports each one once.
    let mut last_idle = stream.resume_token();
    let mut chunk = Chunk::new(max_chunk);
    let mut fragments = Assembler::default();
    loop {
        let next = {
            let mut next = pin!(stream.next_if_any());
            match futures::poll!(next.as_mut()) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    // The driver went to the server: pass on what we hold while it waits.
                    if !chunk.items.is_empty() && !out.send(chunk.take()).await {
                        return;
                    }
                    let fetching = Instant::now();
                    progress.fetching();
                    let next = next.await;
                    progress.answered();
                    out.metrics.server.inc_by(fetching.elapsed().as_secs_f64());
                    next
                }
            }
        };
        let item = match next {
            Ok(Some(raw)) => {
                let raw = match fragments.push(raw) {
                    Piece::Whole(raw) => raw,
                    Piece::Joined(raw) => {
                        out.metrics.split.inc();
                        raw
                    }
                    Piece::Partial { fragment, of } => {
                        tracing::debug!(stream = %database, "read fragment {fragment} of {of} of a split change");
                        continue;
                    }
                    // The checkpoint is before the first fragment: reading again from
                    // there gets the whole sequence.
                    Piece::Broken(reason) => {
                        chunk.push(Item::Failed(SourceError::Fragments {
                            database: database.clone(),
                            reason,
                        }));
                        out.send(chunk.take()).await;
                        return;
                    }
                };
                // The change's own `_id` is its token (the driver refuses a change without).
                let token = match raw.get_document("_id") {
                    Ok(token) => token.to_raw_document_buf(),
                    Err(_) => match stream.resume_token().as_ref().and_then(raw_token) {
                        Some(token) => token,
                        None => {
                            tracing::error!(stream = %database, "change without a resume token; skipped");
                            continue;
                        }
                    },
                };
                last_idle = None;
                Item::Change { token, raw }
            }
            Ok(None) if !stream.is_alive() => Item::Closed,
            // Inside a split event the stream's token names a fragment: no checkpoint there.
            Ok(None) if fragments.is_partial() => continue,
            Ok(None) => {
                let token = stream.resume_token();
                if token == last_idle {
                    continue;
                }
                last_idle = token.clone();
                match token.as_ref().and_then(raw_token) {
                    Some(token) => Item::Idle(Position {
                        token,
                        cluster_time: None,
                        wall_time: None,
                    }),
                    None => continue,
                }
            }
            Err(source) => Item::Failed(SourceError::Read {
                database: database.clone(),
                source,
            }),
        };
        let step = match (&reach, &item) {
            (Some(reach), Item::Change { token, .. }) => reach.change(token),
            (Some(reach), Item::Idle(position)) if reach.idle(&position.token) => Step::Last,
            _ => Step::Within,
        };
        if step == Step::Past {
            chunk.push(Item::End);
            out.send(chunk.take()).await;
            return;
        }
        let last_item = matches!(item, Item::Failed(_) | Item::Closed) || step == Step::Last;
        chunk.push(item);
        if step == Step::Last {
            chunk.push(Item::End);
        }
        if last_item {
            // Stopping either way; a gone receiver has nothing left to tell.
            out.send(chunk.take()).await;
            return;
        }
        if chunk.is_full() && !out.send(chunk.take()).await {
            return;
        }
    }
}

/// The reader's end of the channel, timing how long the dispatcher keeps it waiting.
struct Handoff {
    out: mpsc::Sender<Vec<Item>>,
    metrics: ReaderMetrics,
}

impl Handoff {
    /// False when the receiver is gone.
    async fn send(&self, chunk: Vec<Item>) -> bool {
        let started = Instant::now();
        let sent = self.out.send(chunk).await.is_ok();
        self.metrics
            .dispatcher
            .inc_by(started.elapsed().as_secs_f64());
        sent
    }
}

/// The items being gathered for the next hand-off, and the bytes of their changes.
struct Chunk {
    items: Vec<Item>,
    bytes: usize,
    capacity: usize,
}

impl Chunk {
    fn new(capacity: usize) -> Chunk {
        Chunk {
            items: Vec::with_capacity(capacity),
            bytes: 0,
            capacity,
        }
    }

    fn push(&mut self, item: Item) {
        if let Item::Change { raw, .. } = &item {
            self.bytes += raw.as_bytes().len();
        }
        self.items.push(item);
    }

    /// At `max_chunk` items or [`MAX_CHUNK_BYTES`].
    fn is_full(&self) -> bool {
        self.items.len() >= self.capacity || self.bytes >= MAX_CHUNK_BYTES
    }

    /// Takes the items, leaving room for the next chunk.
    fn take(&mut self) -> Vec<Item> {
        self.bytes = 0;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.capacity))
    }
}

/// `token` as a raw document (the shape the server sends it in).
fn raw_token(token: &ResumeToken) -> Option<RawDocumentBuf> {
    bson::to_raw_document_buf(token).ok()
}

/// A raw resume token as the driver's type, for `startAfter` and the checkpoint store.
pub fn resume_token(raw: &RawDocumentBuf) -> Result<ResumeToken, bson::de::Error> {
    bson::from_slice(raw.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn raw_token_round_trips_to_the_drivers_type() {
        let token: ResumeToken =
            bson::from_document(doc! {"_data": "8263A1B2C3000000012B022C0100296E5A1004"})
                .expect("a token document");
        let raw = raw_token(&token).expect("serialises");
        assert_eq!(
            raw.get_str("_data").ok(),
            Some("8263A1B2C3000000012B022C0100296E5A1004")
        );
        assert_eq!(resume_token(&raw).expect("deserialises"), token);
    }
}
