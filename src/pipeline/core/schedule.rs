//! When snapshot chunks are read, and when a chunk read enters the flow: the rules that
//! keep a snapshot's records from being older than what was sent before them, and its
//! progress from running ahead of what was delivered. Decided here, without I/O; the
//! shell (`pipeline/stream/handover.rs`) does the reads and writes they ask for.
//!
//! - **Not before the session's start.** Changes before the cluster time at which this
//!   session began may have been delivered before a restart (the stream repeats them from
//!   the checkpoint). No chunk is read before the stream has passed that time, so no
//!   chunk is older than a record already sent.
//! - **One chunk ahead.** A collection's next chunk is read while the one before is being
//!   delivered, but enters the flow only once that one's progress is stored: a restart
//!   reads at most one chunk again.
//! - **Parallelism.** At most `snapshot.parallelism` collections at once; a failed read
//!   gives its slot back and its collection waits [`RETRY`] before it is read again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Timestamp};

use crate::state::snapshots::Reason;

/// How long a collection waits before it is read again after a failed read, or before
/// its progress is stored again after a failed write.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// One collection's snapshot: where its next chunk starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The collection.
    pub collection: String,
    /// Why it is snapshotted.
    pub reason: Reason,
    /// The `_id` after which the next chunk starts (None: from the first).
    pub after: Option<Bson>,
    /// Not read (or its progress not stored) before this.
    pub not_before: Option<Instant>,
}

/// What follows a chunk's stored progress.
#[derive(Debug, PartialEq)]
pub(crate) enum AfterStored<R> {
    /// The collection's snapshot is complete; its slot is free.
    Done(Plan),
    /// The next chunk, read ahead, enters the flow now.
    Enter(R),
    /// The next chunk is still being read; it enters when it arrives.
    Reading,
    /// Nothing read ahead: the collection waits for a slot again.
    Waits,
}

/// The snapshots of one stream in one session, as far as reading and entering go; `R`
/// is a chunk read (the shell's type).
#[derive(Debug)]
pub(crate) struct Schedule<R> {
    waiting: VecDeque<Plan>,
    /// Collections taken up: reading, delivering or storing.
    active: usize,
    /// Collections with a chunk read outstanding.
    reading: HashSet<String>,
    /// Collections with a chunk in the flow whose progress is not stored yet.
    delivering: HashSet<String>,
    /// Chunks read ahead, waiting for the chunk before them to be stored.
    ready: HashMap<String, R>,
    /// The cluster time at which this session began, once known.
    began: Option<Timestamp>,
}

impl<R> Default for Schedule<R> {
    fn default() -> Self {
        Schedule {
            waiting: VecDeque::new(),
            active: 0,
            reading: HashSet::new(),
            delivering: HashSet::new(),
            ready: HashMap::new(),
            began: None,
        }
    }
}

impl<R> Schedule<R> {
    /// The cluster time at which this session began, once known.
    pub fn began(&self) -> Option<Timestamp> {
        self.began
    }

    /// This session began at `at` (the first time known wins).
    pub fn begin_at(&mut self, at: Timestamp) {
        self.began.get_or_insert(at);
    }

    /// A collection to snapshot: it waits for a slot.
    pub fn take_up(&mut self, plan: Plan) {
        self.waiting.push_back(plan);
    }

    /// The collections whose next chunk is read now, with the stream at `at`: none before
    /// the stream passed the session's start; up to `parallelism` at once.
    pub fn reads_due(
        &mut self,
        at: Option<Timestamp>,
        now: Instant,
        parallelism: usize,
    ) -> Vec<Plan> {
        let (Some(at), Some(began)) = (at, self.began) else {
            return Vec::new();
        };
        if at < began {
            return Vec::new();
        }
        let mut due = Vec::new();
        while self.active < parallelism {
            let ready = self
                .waiting
                .iter()
                .position(|p| p.not_before.is_none_or(|t| t <= now));
            let Some(plan) = ready.and_then(|i| self.waiting.remove(i)) else {
                break;
            };
            self.active += 1;
            self.reading.insert(plan.collection.clone());
            due.push(plan);
        }
        due
    }

    /// The next chunk of `collection` is read now (it keeps its slot).
    pub fn read_next(&mut self, collection: &str) {
        self.reading.insert(collection.to_owned());
    }

    /// A chunk of `collection` was read: returned when it enters the flow now, kept
    /// while the chunk before it is not stored yet.
    pub fn arrived(&mut self, collection: &str, read: R) -> Option<R> {
        self.reading.remove(collection);
        if self.delivering.contains(collection) {
            self.ready.insert(collection.to_owned(), read);
            return None;
        }
        Some(read)
    }

    /// A chunk of `collection` entered the flow.
    pub fn entered(&mut self, collection: &str) {
        self.delivering.insert(collection.to_owned());
    }

    /// A read of `plan`'s collection failed: its slot is free, and it is read again after
    /// [`RETRY`].
    pub fn read_failed(&mut self, mut plan: Plan, now: Instant) {
        plan.not_before = Some(now + RETRY);
        self.active = self.active.saturating_sub(1);
        self.waiting.push_front(plan);
    }

    /// The progress of `plan`'s delivered chunk is stored (`end`: it was the last).
    pub fn stored(&mut self, plan: Plan, end: bool) -> AfterStored<R> {
        self.delivering.remove(&plan.collection);
        if end {
            self.active = self.active.saturating_sub(1);
            return AfterStored::Done(plan);
        }
        if let Some(read) = self.ready.remove(&plan.collection) {
            return AfterStored::Enter(read);
        }
        if self.reading.contains(&plan.collection) {
            return AfterStored::Reading;
        }
        self.active = self.active.saturating_sub(1);
        self.waiting.push_front(plan);
        AfterStored::Waits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(collection: &str) -> Plan {
        Plan {
            collection: collection.to_owned(),
            reason: Reason::Requested,
            after: None,
            not_before: None,
        }
    }

    fn ts(time: u32) -> Timestamp {
        Timestamp { time, increment: 1 }
    }

    /// A schedule begun at `ts(1)` with `collections` taken up, and the time.
    fn begun(collections: &[&str]) -> (Schedule<u32>, Instant) {
        let mut s = Schedule::default();
        s.begin_at(ts(1));
        for c in collections {
            s.take_up(plan(c));
        }
        (s, Instant::now())
    }

    /// Reads `collection`'s first chunk, which enters at once (nothing before it).
    fn first_chunk_entered(s: &mut Schedule<u32>, now: Instant, collection: &str) {
        assert_eq!(names(&s.reads_due(Some(ts(1)), now, 1)), [collection]);
        assert_eq!(s.arrived(collection, 1), Some(1));
        s.entered(collection);
    }

    fn names(plans: &[Plan]) -> Vec<&str> {
        plans.iter().map(|p| p.collection.as_str()).collect()
    }

    #[test]
    fn no_chunk_is_read_before_the_stream_passed_the_sessions_start() {
        let mut s: Schedule<u32> = Schedule::default();
        let now = Instant::now();
        s.take_up(plan("a"));
        assert!(
            s.reads_due(Some(ts(200)), now, 2).is_empty(),
            "start unknown"
        );
        s.begin_at(ts(100));
        s.begin_at(ts(300));
        assert_eq!(s.began(), Some(ts(100)), "the first time known wins");
        assert!(
            s.reads_due(Some(ts(99)), now, 2).is_empty(),
            "repeating older changes"
        );
        assert!(s.reads_due(None, now, 2).is_empty(), "position unknown");
        assert_eq!(names(&s.reads_due(Some(ts(100)), now, 2)), ["a"]);
    }

    #[test]
    fn at_most_parallelism_collections_at_once_and_a_done_one_frees_its_slot() {
        let (mut s, now) = begun(&["a", "b", "c"]);
        assert_eq!(names(&s.reads_due(Some(ts(1)), now, 2)), ["a", "b"]);
        assert!(
            s.reads_due(Some(ts(1)), now, 2).is_empty(),
            "both slots taken"
        );
        assert_eq!(
            s.arrived("a", 1),
            Some(1),
            "nothing before it: enters at once"
        );
        s.entered("a");
        assert_eq!(s.stored(plan("a"), true), AfterStored::Done(plan("a")));
        assert_eq!(names(&s.reads_due(Some(ts(1)), now, 2)), ["c"]);
    }

    #[test]
    fn a_chunk_read_ahead_enters_only_once_the_one_before_is_stored() {
        let (mut s, now) = begun(&["a"]);
        first_chunk_entered(&mut s, now, "a");
        s.read_next("a");
        // Chunk 2 arrives while chunk 1 is delivered: it waits.
        assert_eq!(s.arrived("a", 2), None);
        assert_eq!(s.stored(plan("a"), false), AfterStored::Enter(2));
        s.entered("a");
        s.read_next("a");
        // Chunk 2 stored while chunk 3 is still read: chunk 3 enters when it arrives.
        assert_eq!(s.stored(plan("a"), false), AfterStored::Reading);
        assert_eq!(s.arrived("a", 3), Some(3));
    }

    #[test]
    fn a_failed_read_gives_its_slot_back_and_waits_before_it_is_read_again() {
        let (mut s, now) = begun(&["a", "b"]);
        let due = s.reads_due(Some(ts(1)), now, 1);
        assert_eq!(names(&due), ["a"]);
        assert_eq!(s.arrived("a", 1), Some(1));
        s.read_failed(due.into_iter().next().expect("a"), now);
        // a waits RETRY; b takes the free slot meanwhile.
        assert_eq!(names(&s.reads_due(Some(ts(1)), now, 1)), ["b"]);
        s.read_failed(plan("b"), now);
        assert!(s.reads_due(Some(ts(1)), now, 1).is_empty(), "both wait");
        // After RETRY both are due again, the last failed first.
        let later = now + RETRY;
        assert_eq!(names(&s.reads_due(Some(ts(1)), later, 2)), ["b", "a"]);
    }

    #[test]
    fn stored_progress_without_a_read_ahead_puts_the_collection_back_in_line() {
        let (mut s, now) = begun(&["a"]);
        first_chunk_entered(&mut s, now, "a");
        assert_eq!(s.stored(plan("a"), false), AfterStored::Waits);
        assert_eq!(names(&s.reads_due(Some(ts(1)), now, 1)), ["a"]);
    }
}
