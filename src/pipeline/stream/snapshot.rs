//! The shell's state of a stream's snapshots: which collections are being snapshotted,
//! where each stands, and their chunk reads, progress writes and polls for new requests
//! in flight (I/O, polled by the session's loop beside the stream). `handover` hands each
//! chunk to the core.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use mongodb::bson::{Bson, Timestamp};

use crate::observe::health::Health;
use crate::pipeline::Shared;
use crate::pipeline::core::Window;
use crate::pipeline::core::schedule::{Plan, Schedule};
use crate::source::position::human_seconds;
use crate::source::snapshot::{self, Chunk, SnapshotError};
use crate::state::snapshots::Progress;

/// How often the stream looks for snapshots asked for (`changeflow snapshot`).
const POLL: Duration = Duration::from_secs(5);
/// Documents a session delivers before the guard trusts its rate.
const GUARD_AFTER_DOCUMENTS: u64 = 3_000;
/// How often a running snapshot logs its progress.
pub(super) const REPORT: Duration = Duration::from_secs(10);

/// A chunk handed to the core, until it is delivered.
pub(super) struct InFlight {
    pub(super) plan: Plan,
    pub(super) last: Option<Bson>,
    pub(super) documents: u64,
    pub(super) end: bool,
}

/// What an I/O step of a snapshot came to.
pub(super) enum Outcome {
    /// The stream's snapshots as stored, with estimated counts, and the cluster time.
    Polled {
        progress: Result<Vec<(Progress, Option<u64>)>, mongodb::error::Error>,
        now: Option<Timestamp>,
    },
    Read {
        plan: Plan,
        window: Window,
        at: Timestamp,
        result: Result<Chunk, SnapshotError>,
    },
    Saved {
        plan: Plan,
        last: Option<Bson>,
        documents: u64,
        end: bool,
        result: Result<(), mongodb::error::Error>,
    },
    /// The stream's gaps were marked repaired (a `resnapshot` ended).
    Repaired(Result<(), mongodb::error::Error>),
}

/// A chunk read, waiting to enter the flow.
pub(super) struct Read {
    pub(super) plan: Plan,
    pub(super) window: Window,
    pub(super) at: Timestamp,
    pub(super) result: Result<Chunk, SnapshotError>,
}

/// A stream's snapshots in this session.
pub(super) struct Snapshots {
    /// When chunks are read and enter the flow (the core's rules).
    pub(super) schedule: Schedule<Read>,
    pub(super) io: FuturesUnordered<BoxFuture<'static, Outcome>>,
    pub(super) in_flight: HashMap<u64, InFlight>,
    /// Documents delivered per collection, across restarts.
    pub(super) delivered: HashMap<String, u64>,
    /// Per collection: when and at how many documents this session took it up, and its
    /// estimated document count then (for the progress line).
    pub(super) taken_up: HashMap<String, (Instant, u64, Option<u64>)>,
    pub(super) next_chunk: u64,
    next_poll: Option<Instant>,
    pub(super) next_report: Instant,
    /// The oplog guard's warning, while it holds.
    guard_warning: Option<String>,
    /// Standard error is a terminal: progress is drawn as bars.
    terminal: bool,
    bars: HashMap<String, indicatif::ProgressBar>,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            schedule: Schedule::default(),
            io: FuturesUnordered::new(),
            in_flight: HashMap::new(),
            delivered: HashMap::new(),
            taken_up: HashMap::new(),
            next_chunk: 0,
            next_poll: Some(Instant::now()),
            next_report: Instant::now() + REPORT,
            guard_warning: None,
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            bars: HashMap::new(),
        }
    }
}

impl Snapshots {
    /// None for a session that never snapshots (a replay).
    pub(super) fn none() -> Snapshots {
        Snapshots {
            next_poll: None,
            ..Snapshots::default()
        }
    }

    /// Whether an I/O step is pending.
    pub(super) fn busy(&self) -> bool {
        !self.io.is_empty()
    }

    /// The next finished I/O step.
    pub(super) async fn next(&mut self) -> Option<Outcome> {
        self.io.next().await
    }

    /// Looks for new or unfinished snapshots of `stream` when it is time to.
    pub(super) fn poll(&mut self, shared: &Shared, stream: &str, now: Instant) {
        if self.next_poll.is_none_or(|at| now < at) {
            return;
        }
        // The next poll is set when this one answers.
        self.next_poll = Some(now + Duration::from_secs(3600));
        let store = shared.snapshots.clone();
        let client = shared.client.clone();
        let (stream, known) = (stream.to_owned(), self.schedule.began());
        self.io.push(
            async move {
                let progress = match store.of_stream(&stream).await {
                    Ok(all) => {
                        let mut counted = Vec::new();
                        for p in all.into_iter().filter(|p| !p.done) {
                            let estimate = client
                                .database(&stream)
                                .collection::<mongodb::bson::Document>(&p.collection)
                                .estimated_document_count()
                                .await
                                .ok();
                            counted.push((p, estimate));
                        }
                        Ok(counted)
                    }
                    Err(e) => Err(e),
                };
                let now = match (&progress, known) {
                    (Ok(p), None) if !p.is_empty() => {
                        snapshot::cluster_time_now(&client, &stream).await.ok()
                    }
                    _ => known,
                };
                Outcome::Polled { progress, now }
            }
            .boxed(),
        );
    }

    /// Takes up the snapshots a poll found.
    pub(super) fn polled(
        &mut self,
        stream: &str,
        progress: Result<Vec<(Progress, Option<u64>)>, mongodb::error::Error>,
        now: Option<Timestamp>,
    ) {
        self.next_poll = Some(Instant::now() + POLL);
        let progress = match progress {
            Ok(progress) => progress,
            Err(e) => {
                tracing::warn!(stream = %stream, error = %e, "reading snapshot progress failed; trying again");
                return;
            }
        };
        let Some(now) = now else {
            if !progress.is_empty() {
                tracing::warn!(stream = %stream, "reading the cluster time failed; snapshots wait for the next poll");
            }
            return;
        };
        self.schedule.begin_at(now);
        for (p, estimated) in progress {
            // Taken up already: `taken_up` holds every collection this session runs.
            if self.taken_up.contains_key(&p.collection) {
                continue;
            }
            self.delivered.insert(p.collection.clone(), p.documents);
            self.taken_up.insert(
                p.collection.clone(),
                (Instant::now(), p.documents, estimated),
            );
            tracing::info!(stream = %stream, collection = %p.collection, reason = p.reason.as_str(),
                documents = p.documents, estimated_documents = ?estimated,
                "snapshot {}", if p.documents > 0 { "continues" } else { "starts" });
            self.schedule.take_up(Plan {
                collection: p.collection,
                reason: p.reason,
                after: p.after,
                not_before: None,
            });
        }
    }

    /// The oplog window guard: the stream's position must stay inside the oplog while its
    /// snapshots run. From the rate so far (after a few chunks), the time left to the
    /// estimated counts is set against the stream's headroom; when it is longer, a warning
    /// goes to the log and `/healthz` (degraded) until it no longer is.
    pub(super) fn guard(
        &mut self,
        stream: &str,
        headroom_seconds: Option<f64>,
        health: &Health,
        now: Instant,
    ) {
        let mut left: Option<f64> = None;
        for (collection, (since, at_start, estimated)) in &self.taken_up {
            let documents = self.delivered.get(collection).copied().unwrap_or(0);
            let done = documents.saturating_sub(*at_start);
            let seconds = now.saturating_duration_since(*since).as_secs_f64();
            let Some(estimated) = estimated else { continue };
            if done < GUARD_AFTER_DOCUMENTS || seconds <= 0.0 {
                continue;
            }
            let rate = done as f64 / seconds;
            let remaining = estimated.saturating_sub(documents) as f64 / rate;
            // Collections run side by side: the longest decides.
            left = Some(left.map_or(remaining, |l| l.max(remaining)));
        }
        let warning = match (left, headroom_seconds) {
            (Some(left), Some(headroom)) if left > headroom => Some(format!(
                "its snapshot needs about {} more, longer than the oplog headroom ({}): the stream must stay inside the oplog until it ends (a larger oplog, or fewer writes, helps)",
                human_seconds(left as i64),
                human_seconds(headroom as i64)
            )),
            _ => None,
        };
        if warning != self.guard_warning {
            match &warning {
                Some(w) => tracing::warn!(stream = %stream, "{w}"),
                None if self.guard_warning.is_some() => {
                    tracing::info!(stream = %stream, "the snapshot now fits in the oplog headroom")
                }
                None => {}
            }
            health.set_snapshot_warning(stream, warning.clone());
            self.guard_warning = warning;
        }
    }

    /// Logs each running snapshot's progress, every [`REPORT`].
    /// On a terminal, a bar per collection instead, kept up to date.
    pub(super) fn report(&mut self, stream: &str, now: Instant) {
        if self.terminal {
            self.draw_bars(stream, now);
            return;
        }
        if now < self.next_report {
            return;
        }
        self.next_report = now + REPORT;
        for (collection, (_, _, estimated)) in &self.taken_up {
            let (documents, rate) = self.rate(collection, now);
            let percent = estimated
                .filter(|e| *e > 0)
                .map(|e| format!("{:.1}", (documents as f64 * 100.0 / e as f64).min(100.0)));
            tracing::info!(stream = %stream, collection = %collection, documents,
                docs_per_second = rate.round() as u64, percent_of_estimate = ?percent, "snapshot progress");
        }
    }

    /// Documents `collection` delivered, and the rate this session delivered them at.
    fn rate(&self, collection: &str, now: Instant) -> (u64, f64) {
        let documents = self.delivered.get(collection).copied().unwrap_or(0);
        let Some((since, at_start, _)) = self.taken_up.get(collection) else {
            return (documents, 0.0);
        };
        let seconds = now
            .saturating_duration_since(*since)
            .as_secs_f64()
            .max(0.001);
        (
            documents,
            documents.saturating_sub(*at_start) as f64 / seconds,
        )
    }

    fn draw_bars(&mut self, stream: &str, now: Instant) {
        self.bars.retain(|collection, bar| {
            let running = self.taken_up.contains_key(collection);
            if !running {
                bar.finish_and_clear();
            }
            running
        });
        let rates: HashMap<String, f64> = self
            .taken_up
            .keys()
            .map(|c| (c.clone(), self.rate(c, now).1))
            .collect();
        for (collection, (_, _, estimated)) in &self.taken_up {
            let bar = self.bars.entry(collection.clone()).or_insert_with(|| {
                let bar = indicatif::ProgressBar::new(estimated.unwrap_or(0).max(1));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "snapshot {prefix} [{bar:30}] {percent:>3}%  {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{stream}.{collection}"));
                bar
            });
            let (documents, rate) = (
                self.delivered.get(collection).copied().unwrap_or(0),
                rates[collection],
            );
            bar.set_length(estimated.unwrap_or(0).max(documents).max(1));
            bar.set_position(documents);
            bar.set_message(format!("{documents} documents, {rate:.0}/s"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_warns_while_the_snapshot_would_outlast_the_headroom() {
        let health = Health::new(["db"]);
        let mut snapshots = Snapshots::default();
        let start = Instant::now();
        // 10 000 of 1 000 000 documents in 10 s: 990 s left.
        snapshots
            .taken_up
            .insert("payments".into(), (start, 0, Some(1_000_000)));
        snapshots.delivered.insert("payments".into(), 10_000);
        let now = start + Duration::from_secs(10);
        snapshots.guard("db", Some(3_600.0), &health, now);
        assert!(health.warnings().is_empty(), "990 s fit in an hour");
        snapshots.guard("db", Some(600.0), &health, now);
        let warning = health.warnings().remove("db").expect("a warning");
        assert!(
            warning.contains("longer than the oplog headroom"),
            "{warning}"
        );
        // Unknown headroom, or the snapshot done: no warning.
        snapshots.guard("db", None, &health, now);
        assert!(health.warnings().is_empty());
    }
}
