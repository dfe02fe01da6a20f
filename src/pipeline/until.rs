//! What makes an engine run a replay: where it ends, whether it only counts, and how far
//! it has come (for the progress bar).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use std::sync::Arc;

use mongodb::bson::{RawDocumentBuf, Timestamp};

use crate::source::position::{Until, data_time, raw_token_data};
use crate::source::reader::{Reach, Step};

/// How far one stream of a replay has come.
#[derive(Debug, Default)]
pub struct StreamProgress {
    /// Seconds of the newest cluster time read.
    time: AtomicU32,
    /// Set when the stream reached the end.
    done: AtomicBool,
}

impl StreamProgress {
    /// Records a position read at `time`.
    pub fn advance(&self, time: Timestamp) {
        self.time.fetch_max(time.time, Ordering::Relaxed);
    }

    /// Records that the stream reached its end.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Progress of every stream of a replay.
#[derive(Debug)]
pub struct Progress {
    streams: HashMap<String, StreamProgress>,
}

impl Progress {
    /// Progress of `streams`, none read yet.
    pub fn new<'a>(streams: impl IntoIterator<Item = &'a str>) -> Progress {
        Progress {
            streams: streams
                .into_iter()
                .map(|s| (s.to_owned(), StreamProgress::default()))
                .collect(),
        }
    }

    /// The progress of `stream`.
    pub fn stream(&self, stream: &str) -> Option<&StreamProgress> {
        self.streams.get(stream)
    }

    /// Seconds of the slowest unfinished stream's position (None before every unfinished
    /// stream has read something); finished streams count as at the end.
    pub fn slowest(&self) -> Option<u32> {
        self.streams
            .values()
            .filter(|s| !s.done.load(Ordering::Relaxed))
            .map(|s| s.time.load(Ordering::Relaxed))
            .min()
            .filter(|t| *t > 0)
    }

    /// Whether every stream reached the end.
    pub fn all_done(&self) -> bool {
        self.streams
            .values()
            .all(|s| s.done.load(Ordering::Relaxed))
    }
}

/// A replay's settings, shared by its stream workers.
#[derive(Debug)]
pub struct Bounds {
    /// Where it ends.
    pub until: Until,
    /// Decode and count only: no handler, no Kafka, no dead letter, no checkpoint.
    pub dry_run: bool,
    /// How far it has come.
    pub progress: Progress,
}

/// One stream of a replay: where its reading ends, recording its progress.
pub struct StreamReach {
    /// The replay's settings.
    pub bounds: Arc<Bounds>,
    /// The stream.
    pub stream: String,
}

impl StreamReach {
    fn advance(&self, data: &str) {
        if let (Some(p), Some(t)) = (self.bounds.progress.stream(&self.stream), data_time(data)) {
            p.advance(t);
        }
    }
}

impl Reach for StreamReach {
    fn change(&self, token: &RawDocumentBuf) -> Step {
        let data = raw_token_data(token).unwrap_or_default();
        let until = &self.bounds.until;
        if until.is_past(data) {
            return Step::Past;
        }
        self.advance(data);
        if until.is_last(data) {
            Step::Last
        } else {
            Step::Within
        }
    }

    fn idle(&self, token: &RawDocumentBuf) -> bool {
        let data = raw_token_data(token).unwrap_or_default();
        self.advance(data);
        self.bounds.until.idle_passed(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Token `_data` strings start with 82 + seconds (8 hex digits) + increment (8).
    const AT_100_1: &str = "82000000640000000146";
    const AT_100_2: &str = "82000000640000000246";
    const AT_101_1: &str = "82000000650000000146";

    #[test]
    fn a_time_end_includes_its_own_changes() {
        let until = Until::Time(Timestamp {
            time: 100,
            increment: 1,
        });
        assert!(!until.is_past(AT_100_1));
        assert!(until.is_past(AT_100_2));
        assert!(!until.idle_passed(AT_100_1));
        assert!(until.idle_passed(AT_101_1));
        assert!(!until.is_last(AT_100_1));
    }

    #[test]
    fn a_token_end_stops_after_its_change() {
        let until = Until::Token(AT_100_2.into());
        assert!(!until.is_past(AT_100_1));
        assert!(!until.is_past(AT_100_2));
        assert!(until.is_last(AT_100_2));
        assert!(until.is_past(AT_101_1));
        assert_eq!(
            until.time(),
            Some(Timestamp {
                time: 100,
                increment: 2
            })
        );
    }

    #[test]
    fn progress_follows_the_slowest_unfinished_stream() {
        let progress = Progress::new(["a", "b"]);
        assert_eq!(progress.slowest(), None);
        let at = |time| Timestamp { time, increment: 1 };
        progress.stream("a").unwrap().advance(at(50));
        progress.stream("b").unwrap().advance(at(40));
        assert_eq!(progress.slowest(), Some(40));
        progress.stream("b").unwrap().finish();
        assert_eq!(progress.slowest(), Some(50));
        assert!(!progress.all_done());
        progress.stream("a").unwrap().finish();
        assert!(progress.all_done());
    }
}
