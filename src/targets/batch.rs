//! A queue that turns one-at-a-time calls into batches: callers submit an item and wait for
//! its answer; one writer task takes every item waiting (up to a bound) and answers each.
//! The exactly-once writer and the status updater both commit this way, so a backlog moves
//! at the speed of batches, not of one round trip per event.

use tokio::sync::{mpsc, oneshot};

use crate::pipeline::target::TargetError;

/// Items waiting for the writer at most; callers wait beyond that (reading pauses behind
/// them, as it does for any slow handler).
const QUEUE: usize = 4096;

/// One item waiting in a batch, and where its answer goes.
pub(crate) struct Waiting<T, R> {
    /// What the caller submitted.
    pub item: T,
    reply: oneshot::Sender<R>,
}

impl<T, R> Waiting<T, R> {
    /// Answers the caller (who may be gone: shutdown abandoned the event).
    pub fn answer(self, answer: R) {
        let _ = self.reply.send(answer);
    }
}

/// The callers' side: submit an item, wait for its answer.
pub(crate) struct Submit<T, R> {
    queue: mpsc::Sender<Waiting<T, R>>,
}

impl<T, R> Clone for Submit<T, R> {
    fn clone(&self) -> Self {
        Submit {
            queue: self.queue.clone(),
        }
    }
}

impl<T, R> std::fmt::Debug for Submit<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Submit")
    }
}

impl<T, R> Submit<T, R> {
    /// Queues `item` and waits for its answer; `handler` names the writer when it has
    /// stopped (a bug: it runs as long as a caller holds this handle).
    pub async fn call(&self, item: T, handler: &'static str) -> Result<R, TargetError> {
        let stopped = || TargetError::Fatal {
            handler,
            reason: "its writer task stopped (a bug; see the log)".into(),
        };
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Waiting { item, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

/// The writer's side: batches of waiting items.
pub(crate) struct Batches<T, R> {
    queue: mpsc::Receiver<Waiting<T, R>>,
    max: usize,
}

impl<T, R> Batches<T, R> {
    /// The next batch of at most `max` items, without those whose caller is gone (the
    /// event runs again after the restart); None once every caller's handle is dropped.
    pub async fn next(&mut self) -> Option<Vec<Waiting<T, R>>> {
        loop {
            let mut batch = Vec::with_capacity(self.max);
            if self.queue.recv_many(&mut batch, self.max).await == 0 {
                return None;
            }
            batch.retain(|w| !w.reply.is_closed());
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }
}

/// A queue whose writer takes batches of at most `max` items.
pub(crate) fn queue<T, R>(max: usize) -> (Submit<T, R>, Batches<T, R>) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    (
        Submit { queue },
        Batches {
            queue: receiver,
            max,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_waiting_together_are_answered_from_one_batch() {
        let (submit, mut batches) = queue::<u32, u32>(10);
        let writer = tokio::spawn(async move {
            let mut sizes = Vec::new();
            while let Some(batch) = batches.next().await {
                sizes.push(batch.len());
                for w in batch {
                    let doubled = w.item * 2;
                    w.answer(doubled);
                }
            }
            sizes
        });
        let calls = (0..25).map(|i| {
            let submit = submit.clone();
            async move { submit.call(i, "test").await.map_err(|e| e.to_string()) }
        });
        let answers = futures::future::join_all(calls).await;
        assert_eq!(answers, (0..25).map(|i| Ok(i * 2)).collect::<Vec<_>>());
        drop(submit);
        let sizes = writer.await.expect("writer");
        assert!(sizes.iter().all(|s| *s <= 10), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 25);
    }
}
