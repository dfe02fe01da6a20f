//! The reader task of one stream: pulls changes (and, on quiet streams, post-batch resume
//! tokens) and hands them on raw through a bounded channel, so a slow consumer pauses
//! reading instead of growing a buffer. Decoding happens on the consumer's side: reading
//! and decoding then overlap instead of adding up on one task.

use mongodb::bson::{DateTime, Timestamp};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ResumeToken;
use tokio::sync::mpsc;

use super::{RawChange, SourceError};

/// A place in the stream the checkpoint can move to.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// Resume with `startAfter` from here.
    pub token: ResumeToken,
    /// Cluster time of the change, when the position is a change.
    pub cluster_time: Option<Timestamp>,
    /// Wall time of the change, when the position is a change.
    pub wall_time: Option<DateTime>,
}

/// What the reader hands on.
#[derive(Debug)]
pub enum Item {
    /// A change, as read.
    Change {
        /// Where it is.
        position: Position,
        /// The raw change event.
        raw: RawChange,
    },
    /// The stream is quiet and its resume token moved past filtered-out oplog entries.
    Idle(Position),
    /// Reading failed after the driver's own resume attempt; the reader has stopped.
    Failed(SourceError),
    /// The server closed the stream (an invalidate: the database was dropped).
    Closed,
}

/// Reads `stream` until the receiver is dropped or reading fails.
pub async fn read(mut stream: ChangeStream<RawChange>, database: String, out: mpsc::Sender<Item>) {
    let mut last = stream.resume_token();
    loop {
        let item = match stream.next_if_any().await {
            Ok(Some(raw)) => {
                let Some(token) = stream.resume_token() else {
                    continue; // the driver always has a token after a change
                };
                last = Some(token.clone());
                Item::Change {
                    position: Position {
                        token,
                        cluster_time: raw.get_timestamp("clusterTime").ok(),
                        wall_time: raw.get_datetime("wallTime").ok(),
                    },
                    raw,
                }
            }
            Ok(None) if !stream.is_alive() => Item::Closed,
            Ok(None) => {
                let token = stream.resume_token();
                if token == last {
                    continue;
                }
                last = token.clone();
                match token {
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
        let last_item = matches!(item, Item::Failed(_) | Item::Closed);
        if out.send(item).await.is_err() || last_item {
            return;
        }
    }
}
