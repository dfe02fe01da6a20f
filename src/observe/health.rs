//! Stream health: `/healthz` answers 200 only while every configured stream is open and
//! none is stuck, and reports `degraded` (still 200) while a stream's oplog headroom is
//! below the warning.
//!
//! Idle is not stuck. A stream is stuck when its oldest unfinished event has not finished
//! for `health.stuck_after_ms` while work waits (a handler or the broker failing), or when
//! it received nothing that long while its database's oplog moved on (a frozen stream),
//! or when no checkpoint could be stored that long (reading then holds at the read-ahead
//! bound). The session reports the first and the last, the oplog watch the second; each
//! clears its own.

use crate::observe::locks::{lock, read, write};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who found a stream stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StuckCause {
    /// An event did not finish: its handlers or the broker keep failing.
    Handlers,
    /// Nothing arrives although the oplog moved on, or the server does not answer.
    Source,
    /// No checkpoint can be stored (a write fails, or waits for a majority that is not
    /// there), so reading holds at the read-ahead bound.
    Checkpoint,
}

impl StuckCause {
    /// Its name in `/healthz` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StuckCause::Handlers => "handlers",
            StuckCause::Source => "source",
            StuckCause::Checkpoint => "checkpoint",
        }
    }
}

/// Why a stream is stuck.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    /// Who found it.
    pub cause: StuckCause,
    /// How long it has not moved, in seconds.
    pub for_seconds: f64,
    /// The oldest unfinished event, if an event is what waits.
    pub event_id: Option<String>,
    /// The target that keeps failing on it, if known.
    pub handler: Option<String>,
    /// That target's last error, if known.
    pub last_error: Option<String>,
    /// One sentence for people.
    pub detail: String,
}

impl Stuck {
    /// One line for `status` and the run's heartbeat.
    pub fn line(&self) -> String {
        let mut line = format!("{}: {}", self.cause.as_str(), self.detail);
        if let Some(e) = &self.event_id {
            line += &format!("; event {e}");
        }
        if let Some(h) = &self.handler {
            line += &format!("; handler {h}");
        }
        if let Some(e) = &self.last_error {
            line += &format!("; last error: {e}");
        }
        line
    }

    /// As `/healthz` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cause": self.cause.as_str(),
            "for_seconds": (self.for_seconds * 10.0).round() / 10.0,
            "event_id": self.event_id,
            "handler": self.handler,
            "last_error": self.last_error,
            "detail": self.detail,
        })
    }
}

/// Whether the reader of one stream is waiting for the server, written once per batch.
#[derive(Debug, Default)]
pub struct SourceProgress {
    /// Unix milliseconds since which the reader has waited for the server (0: it is not).
    fetching_since_ms: AtomicU64,
}

impl SourceProgress {
    /// The reader asks the server for the next batch.
    pub fn fetching(&self) {
        self.fetching_since_ms
            .store(unix_millis().max(1), Ordering::Relaxed);
    }

    /// The server answered (or the read was given up).
    pub fn answered(&self) {
        self.fetching_since_ms.store(0, Ordering::Relaxed);
    }

    /// How long the reader has waited for the server's answer (None: it is not waiting;
    /// an idle stream's server answers within a second or so, with nothing).
    pub fn waiting_for_server_ms(&self) -> Option<u64> {
        match self.fetching_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(unix_millis().saturating_sub(since)),
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Open, stuck and warning state of each stream.
#[derive(Debug, Default)]
pub struct Health {
    streams: RwLock<BTreeMap<String, bool>>,
    warnings: RwLock<BTreeMap<String, String>>,
    /// Streams another instance reads (this one holds no lease on them and stands by).
    standby: RwLock<std::collections::BTreeSet<String>>,
    /// Snapshots expected to outlast a stream's oplog headroom.
    snapshot_warnings: RwLock<BTreeMap<String, String>>,
    stuck: RwLock<BTreeMap<(String, StuckCause), Stuck>>,
    sources: RwLock<BTreeMap<String, Arc<SourceProgress>>>,
    /// Since when the MongoDB client has seen no writable primary (None: it has one, or
    /// nothing is known yet).
    no_primary_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// How long without a writable primary counts as unavailable.
    no_primary_after: std::time::Duration,
    /// Woken when a writable primary is seen again after none was.
    primary_back: tokio::sync::Notify,
}

impl Health {
    /// Health of `streams`, all closed.
    pub fn new<'a>(streams: impl IntoIterator<Item = &'a str>) -> Health {
        Health {
            streams: RwLock::new(streams.into_iter().map(|s| (s.to_owned(), false)).collect()),
            no_primary_after: std::time::Duration::from_secs(15),
            ..Health::default()
        }
    }

    /// Sets how long without a writable primary counts as unavailable
    /// (`health.no_primary_after_ms`).
    pub fn with_primary_bound(mut self, bound: std::time::Duration) -> Health {
        self.no_primary_after = bound;
        self
    }

    /// Records whether `stream` is open.
    pub fn set_open(&self, stream: &str, open: bool) {
        write(&self.streams).insert(stream.to_owned(), open);
    }

    /// Each stream and whether it is open.
    pub fn snapshot(&self) -> BTreeMap<String, bool> {
        read(&self.streams).clone()
    }

    /// Records why `stream` needs attention, or that it no longer does.
    pub fn set_warning(&self, stream: &str, warning: Option<String>) {
        let mut warnings = write(&self.warnings);
        match warning {
            Some(w) => warnings.insert(stream.to_owned(), w),
            None => warnings.remove(stream),
        };
    }

    /// Records that a snapshot of `stream` is expected to outlast its oplog headroom, or
    /// no longer is (kept apart from the headroom watch, which sets its own warning).
    pub fn set_snapshot_warning(&self, stream: &str, warning: Option<String>) {
        let mut warnings = write(&self.snapshot_warnings);
        match warning {
            Some(w) => warnings.insert(stream.to_owned(), w),
            None => warnings.remove(stream),
        };
    }

    /// Each stream that needs attention and why.
    pub fn warnings(&self) -> BTreeMap<String, String> {
        let mut all = read(&self.warnings).clone();
        for (stream, warning) in read(&self.snapshot_warnings).iter() {
            all.entry(stream.clone())
                .and_modify(|w| {
                    w.push_str("; ");
                    w.push_str(warning);
                })
                .or_insert_with(|| warning.clone());
        }
        all
    }

    /// Records that `stream` is stuck for `cause` (with why), or no longer is; true when
    /// that changed whether it is stuck for `cause`.
    pub fn set_stuck(&self, stream: &str, cause: StuckCause, stuck: Option<Stuck>) -> bool {
        let mut all = write(&self.stuck);
        let key = (stream.to_owned(), cause);
        match stuck {
            Some(s) => all.insert(key, s).is_none(),
            None => all.remove(&key).is_some(),
        }
    }

    /// Every stuck stream and why (a stream may be stuck for both causes).
    pub fn stuck(&self) -> Vec<(String, Stuck)> {
        read(&self.stuck)
            .iter()
            .map(|((stream, _), s)| (stream.clone(), s.clone()))
            .collect()
    }

    /// Why `stream` is stuck, one line per cause (empty: it is not).
    pub fn stuck_lines(&self, stream: &str) -> Vec<String> {
        self.stuck()
            .into_iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, stuck)| stuck.line())
            .collect()
    }

    /// What the reader of `stream` last saw (shared with the reader, created on first use).
    pub fn source(&self, stream: &str) -> Arc<SourceProgress> {
        if let Some(p) = read(&self.sources).get(stream).cloned() {
            return p;
        }
        write(&self.sources)
            .entry(stream.to_owned())
            .or_default()
            .clone()
    }

    /// Records whether the MongoDB client sees a writable primary.
    pub fn set_primary(&self, writable: bool) {
        let mut since = lock(&self.no_primary_since);
        match (writable, *since) {
            (true, Some(_)) => {
                *since = None;
                self.primary_back.notify_waiters();
            }
            (true, None) => {}
            (false, None) => *since = Some(std::time::Instant::now()),
            (false, Some(_)) => {}
        }
    }

    /// Completes when a writable primary is seen again after none was: a stream waiting
    /// to reopen need not sit out the rest of its backoff.
    pub async fn primary_back(&self) {
        self.primary_back.notified().await;
    }

    /// How long the client has seen no writable primary, once that is past the bound.
    pub fn primary_lost_for(&self) -> Option<std::time::Duration> {
        self.no_primary_for()
            .filter(|d| *d >= self.no_primary_after)
    }

    /// How long the client has seen no writable primary.
    pub fn no_primary_for(&self) -> Option<std::time::Duration> {
        lock(&self.no_primary_since).map(|s| s.elapsed())
    }

    /// Whether every stream is open (false when there is none).
    pub fn all_open(&self) -> bool {
        let streams = self.snapshot();
        let standby = read(&self.standby);
        !streams.is_empty()
            && streams
                .iter()
                .all(|(stream, open)| *open || standby.contains(stream))
    }

    /// Records whether this instance stands by on `stream` (another holds its lease): a
    /// standby stream is closed here and healthy.
    pub fn set_standby(&self, stream: &str, standby: bool) {
        let mut all = write(&self.standby);
        if standby {
            all.insert(stream.to_owned());
        } else {
            all.remove(stream);
        }
    }

    /// Whether this instance stands by on `stream`.
    pub fn is_standby(&self, stream: &str) -> bool {
        read(&self.standby).contains(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuck(cause: StuckCause) -> Stuck {
        Stuck {
            cause,
            for_seconds: 61.0,
            event_id: Some("e1".into()),
            handler: Some("counters".into()),
            last_error: Some("boom".into()),
            detail: "oldest event unfinished".into(),
        }
    }

    #[test]
    fn healthy_only_when_every_stream_is_open() {
        let health = Health::new(["a", "b"]);
        assert!(!health.all_open());
        health.set_open("a", true);
        assert!(!health.all_open());
        health.set_open("b", true);
        assert!(health.all_open());
        health.set_open("a", false);
        assert!(!health.all_open());
        health.set_warning("b", Some("low headroom".into()));
        assert_eq!(
            health.warnings().get("b").map(String::as_str),
            Some("low headroom")
        );
        health.set_warning("b", None);
        assert!(health.warnings().is_empty());
    }

    #[test]
    fn each_cause_sets_and_clears_its_own_stuck_state() {
        let health = Health::new(["a"]);
        assert!(health.set_stuck("a", StuckCause::Handlers, Some(stuck(StuckCause::Handlers))));
        assert!(!health.set_stuck("a", StuckCause::Handlers, Some(stuck(StuckCause::Handlers))));
        assert!(health.set_stuck("a", StuckCause::Source, Some(stuck(StuckCause::Source))));
        assert_eq!(health.stuck().len(), 2);
        assert!(health.set_stuck("a", StuckCause::Handlers, None));
        let left = health.stuck();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.cause, StuckCause::Source);
        assert_eq!(left[0].1.to_json()["handler"], "counters");
    }

    #[test]
    fn a_lost_primary_is_timed_from_its_first_report() {
        let health = Health::new(["a"]);
        assert_eq!(health.no_primary_for(), None);
        health.set_primary(false);
        let first = health.no_primary_for().expect("lost");
        health.set_primary(false);
        assert!(health.no_primary_for().expect("still lost") >= first);
        health.set_primary(true);
        assert_eq!(health.no_primary_for(), None);
    }

    #[test]
    fn source_progress_tells_waiting_for_the_server() {
        let progress = SourceProgress::default();
        assert_eq!(progress.waiting_for_server_ms(), None);
        progress.fetching();
        assert!(progress.waiting_for_server_ms().is_some_and(|ms| ms < 1000));
        progress.answered();
        assert_eq!(progress.waiting_for_server_ms(), None);
    }
}
