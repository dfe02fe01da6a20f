//! The per-stream core: a synchronous state machine with no I/O and no await (the shape of
//! quinn-proto's protocol state machine). It decides *when*: which job may start (per-key
//! lanes), how far reading may run ahead of the stored checkpoint, when a checkpoint is
//! handed to the store, when the stream counts as stuck, and when a stop has drained.
//!
//! Inputs: a change read (with its routes), a mark (a position with nothing to handle), a
//! completion, a checkpoint stored or failed, a tick, a stop, a lease lost, and snapshot
//! chunks (`core/snapshot.rs`). Outputs: [`Action`]s polled
//! by the async shell (`stream::session`), which does the I/O, and a [`Report`] per tick.
//! Time comes in with the inputs, so every case is a unit test that runs in microseconds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::domain::EventId;
use crate::pipeline::acker::{AckError, Acker, Ticket, Tickets};
use crate::pipeline::lanes::Lanes;
use crate::pipeline::pause::Cause;

/// The core's limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `engine.max_in_flight_events`: changes read past the newest stored checkpoint.
    pub max_in_flight: u64,
    /// Changes between two checkpoints handed to the store.
    pub save_every: u64,
    /// `health.stuck_after_ms`.
    pub stuck_after: Duration,
    /// `engine.shutdown_timeout_ms`: how long a stop waits for running jobs.
    pub drain_timeout: Duration,
}

/// What the core asks its shell to do, in order.
#[derive(Debug, PartialEq)]
pub(crate) enum Action<P, J> {
    /// Start this job now.
    Start(J),
    /// Hand this checkpoint to the store; report back with [`Core::stored`] (its
    /// `sequence`) or [`Core::store_failed`].
    Store {
        /// The newest position whose change and every earlier one are handled.
        position: P,
        /// Changes and marks up to and including it, in this session.
        sequence: u64,
        /// Changes read since the stream started (across sessions), for the record.
        events: u64,
    },
    /// The stop's deadline passed: cancel the jobs still running (their changes stay
    /// behind the checkpoint and run again after a restart).
    Abandon {
        /// Changes not fully handled.
        unfinished: usize,
    },
    /// A snapshot chunk and everything before it finished: its progress may be stored.
    Delivered {
        /// The shell's number for the chunk.
        chunk: u64,
    },
    /// Nothing more will start: the shell waits for the last store and ends.
    Finished,
}

/// The oldest change with work left, and how long it has waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Oldest {
    /// How long since it was read.
    pub waited: Duration,
    /// Its event id.
    pub event_id: EventId,
    /// Its kind, as a metric label.
    pub kind: &'static str,
}

/// Where the stream stands, as of a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// The oldest unfinished change, if any.
    pub oldest: Option<Oldest>,
    /// It has waited `stuck_after` or longer.
    pub handlers_stuck: bool,
    /// While a handed checkpoint waits to be stored: how long none has been stored, and
    /// the last store error if writes fail.
    pub checkpoint_wait: Option<(Duration, Option<String>)>,
    /// That has lasted `stuck_after` or longer.
    pub checkpoint_stuck: bool,
}

/// What a change read must do: its routes (one job each), and what names it when it is
/// reported stuck.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routes {
    /// Routes, one ticket each.
    pub count: u32,
    /// The change's event id.
    pub event_id: EventId,
    /// Its kind, as a metric label.
    pub kind: &'static str,
}

/// A change with work left: its sequence number, when it was read, its id and kind.
type Unfinished = (u64, Instant, EventId, &'static str);

/// One stream's core. `P` is a stream position, `J` a job (opaque here).
pub(crate) struct Core<P, J> {
    limits: Limits,
    acker: Acker<P>,
    lanes: Lanes<J>,
    /// Jobs started and not yet completed.
    running: usize,
    /// Changes with work left, in read order (the acker forgets nothing before release;
    /// this keeps what the stuck check reports).
    unfinished: VecDeque<Unfinished>,
    /// Newest handled position not yet handed to the store, and its sequence number.
    unsaved: Option<(P, u64)>,
    /// Sequence number of the newest checkpoint handed to the store.
    submitted: u64,
    /// Sequence number of the newest checkpoint stored.
    stored: u64,
    /// Since when a handed checkpoint has waited with none stored, and the last error.
    waiting: Option<Instant>,
    last_error: Option<String>,
    since_save: u64,
    events: u64,
    /// Set by a stop: when running jobs are abandoned.
    deadline: Option<Instant>,
    finished: bool,
    actions: VecDeque<Action<P, J>>,
    /// Snapshot reads asked for and not yet arrived.
    windows: Vec<Window>,
    next_window: u64,
    /// Keys changed since the oldest open window, with the sequence they came at.
    touched: VecDeque<(u64, Box<[u8]>)>,
    /// Chunks in flight: the sequence just past each, and its number.
    chunks: VecDeque<(u64, u64)>,
    /// The lease is lost: nothing more goes to the store.
    fenced: bool,
}

impl<P, J> Core<P, J> {
    /// A core with nothing read; `events` counts the changes earlier sessions read.
    pub fn new(limits: Limits, events: u64) -> Core<P, J> {
        Core {
            limits,
            acker: Acker::new(),
            lanes: Lanes::new(),
            running: 0,
            unfinished: VecDeque::new(),
            unsaved: None,
            submitted: 0,
            stored: 0,
            waiting: None,
            last_error: None,
            since_save: 0,
            events,
            deadline: None,
            finished: false,
            actions: VecDeque::new(),
            windows: Vec::new(),
            next_window: 0,
            touched: VecDeque::new(),
            chunks: VecDeque::new(),
            fenced: false,
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action<P, J>> {
        self.actions.pop_front()
    }

    /// Whether another change may be read: fewer than `max_in_flight` were read past the
    /// newest stored checkpoint (so a crash repeats at most that many), and no stop came.
    pub fn may_read(&self) -> bool {
        self.deadline.is_none() && self.ahead() < self.limits.max_in_flight
    }

    fn ahead(&self) -> u64 {
        self.acker.tracked().saturating_sub(self.stored)
    }

    /// Why reading is held back, if it is (a stop is not a pause).
    pub fn held_back(&self) -> Option<Cause> {
        if self.deadline.is_some() || self.ahead() < self.limits.max_in_flight {
            None
        } else if self.acker.in_flight() as u64 >= self.limits.max_in_flight {
            Some(Cause::Handlers)
        } else {
            Some(Cause::Checkpoint)
        }
    }

    /// Changes read since the stream started, across sessions.
    pub fn events(&self) -> u64 {
        self.events + self.since_save
    }

    /// Changes (and marks) not yet fully handled.
    pub fn in_flight(&self) -> usize {
        self.acker.in_flight()
    }

    /// A change was read at `now`, with `routes` to finish (None: nothing to do): one
    /// ticket per route, to go with its jobs.
    pub fn change(&mut self, position: P, routes: Option<Routes>, now: Instant) -> Tickets {
        let count = routes.as_ref().map_or(0, |r| r.count);
        let tickets = self.acker.track(position, count);
        // Kept to what the acker has not released: at most the read-ahead bound.
        self.forget_released();
        if let Some(r) = routes.filter(|r| r.count > 0) {
            self.unfinished
                .push_back((self.acker.tracked(), now, r.event_id, r.kind));
        }
        self.since_save += 1;
        if self.since_save >= self.limits.save_every {
            self.save(now);
        }
        tickets
    }

    /// A position with nothing to handle (a quiet stream's post-batch resume token): the
    /// checkpoint reaches it once everything before it is handled.
    pub fn mark(&mut self, position: P, now: Instant) {
        self.acker.mark(position);
        self.settle(now);
    }

    /// Offers `job`: it starts now, or, with a `lane`, after the running job of its lane.
    pub fn enqueue(&mut self, lane: Option<&str>, job: J) {
        match lane {
            None => self.start(job),
            Some(lane) => {
                if let Some(job) = self.lanes.submit(lane, job) {
                    self.start(job);
                }
            }
        }
    }

    fn start(&mut self, job: J) {
        self.running += 1;
        self.actions.push_back(Action::Start(job));
    }

    /// A job ended: `ticket` is its route's ticket when the job finished its targets
    /// (None when it did not: cancelled, or fatal), `lane` its lane when it held one.
    pub fn complete(
        &mut self,
        ticket: Option<Ticket>,
        lane: Option<&str>,
        now: Instant,
    ) -> Result<(), AckError> {
        self.running = self.running.saturating_sub(1);
        let finished = ticket.is_some();
        let acked = ticket.map_or(Ok(()), |t| self.acker.route_done(t));
        // An unfinished job keeps its lane: a later change of its key must not overtake
        // it. Queued jobs run during a stop's drain too, until its deadline.
        if finished
            && let Some(lane) = lane
            && let Some(next) = self.lanes.finish(lane)
        {
            self.start(next);
        }
        self.settle(now);
        acked
    }

    /// When a stop abandons what still runs, once a stop came.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The store stored the checkpoint numbered `sequence`.
    pub fn stored(&mut self, sequence: u64, now: Instant) {
        self.stored = self.stored.max(sequence);
        self.last_error = None;
        // A newer one handed meanwhile waits from now.
        self.waiting = (self.submitted > self.stored).then_some(now);
        self.settle(now);
    }

    /// The store could not store a checkpoint (it retries by itself).
    pub fn store_failed(&mut self, error: String) {
        self.last_error = Some(error);
    }

    /// The clock: hands the store the newest handled position, checks for stuck work and
    /// for a stop's deadline.
    pub fn tick(&mut self, now: Instant) -> Report {
        self.save(now);
        if let Some(deadline) = self.deadline
            && now >= deadline
            && !self.finished
        {
            self.actions.push_back(Action::Abandon {
                unfinished: self.acker.in_flight(),
            });
            self.running = 0;
            self.lanes = Lanes::new();
            self.finish(now);
        }
        self.report(now)
    }

    fn report(&mut self, now: Instant) -> Report {
        self.forget_released();
        let oldest = self.unfinished.front().map(|(_, at, id, kind)| Oldest {
            waited: now.saturating_duration_since(*at),
            event_id: *id,
            kind,
        });
        let checkpoint_wait = self.waiting.map(|since| {
            (
                now.saturating_duration_since(since),
                self.last_error.clone(),
            )
        });
        Report {
            handlers_stuck: oldest.is_some_and(|o| o.waited >= self.limits.stuck_after),
            oldest,
            checkpoint_stuck: checkpoint_wait
                .as_ref()
                .is_some_and(|(w, _)| *w >= self.limits.stuck_after),
            checkpoint_wait,
        }
    }

    /// The stream's lease is lost (its checkpoint fenced by a newer term, or not renewed in
    /// time): another instance reads the stream now. Reading stops, running and queued jobs
    /// are dropped at once, and nothing more is handed to the store; what was read stays
    /// behind the successor's checkpoint and is repeated there with the same ids.
    pub fn lease_lost(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        self.fenced = true;
        self.deadline = Some(now);
        self.unsaved = None;
        self.actions
            .retain(|a| !matches!(a, Action::Store { .. } | Action::Start(_)));
        self.actions.push_back(Action::Abandon {
            unfinished: self.acker.in_flight(),
        });
        self.running = 0;
        self.lanes = Lanes::new();
        self.finish(now);
    }

    /// Stop reading; running and queued jobs get until `now` + `drain_timeout`.
    pub fn stop(&mut self, now: Instant) {
        if self.deadline.is_none() {
            self.deadline = Some(now + self.limits.drain_timeout);
        }
        self.settle(now);
    }

    /// After every input: take what the acker released, hand it on when reading waits on
    /// an idle store, and end a stop once nothing runs.
    fn settle(&mut self, now: Instant) {
        self.take_advanced();
        if self.held_back() == Some(Cause::Checkpoint) && self.stored >= self.submitted {
            // Reading waits on the store and the store is idle: give it the newest position.
            self.save(now);
        }
        if self.deadline.is_some() && self.running == 0 && !self.finished {
            self.finish(now);
        }
    }

    fn finish(&mut self, now: Instant) {
        self.save(now);
        self.finished = true;
        self.actions.push_back(Action::Finished);
    }

    fn take_advanced(&mut self) {
        if let Some(position) = self.acker.take_advanced() {
            self.unsaved = Some((position, self.acker.released()));
        }
        self.take_delivered();
    }

    /// Hands the newest handled position to the store, if it moved (never once fenced).
    fn save(&mut self, now: Instant) {
        self.take_advanced();
        if self.fenced {
            self.unsaved = None;
            return;
        }
        let Some((position, sequence)) = self.unsaved.take() else {
            return;
        };
        self.events += self.since_save;
        self.since_save = 0;
        self.submitted = sequence;
        self.waiting.get_or_insert(now);
        self.actions.push_back(Action::Store {
            position,
            sequence,
            events: self.events,
        });
    }

    fn forget_released(&mut self) {
        let released = self.acker.released();
        while self
            .unfinished
            .front()
            .is_some_and(|(seq, ..)| *seq <= released)
        {
            self.unfinished.pop_front();
        }
    }
}

mod lost;
pub(crate) mod schedule;
mod snapshot;
pub(crate) use lost::{OnLost, on_history_lost};
pub(crate) use snapshot::Window;

#[cfg(test)]
mod tests;
